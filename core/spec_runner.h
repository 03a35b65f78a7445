/* spec_runner.h — `sluice spec`: busted inside sluice's own LuaJIT, so
 * specs run against the same runtime the gateway embeds. */
#ifndef SL_SPEC_RUNNER_H
#define SL_SPEC_RUNNER_H

/* Run busted with argv[0..argc) as its command line; returns the exit
 * status busted chose. */
int sl_spec_main(int argc, char **argv);

/* Where the Lua runtime lives (lua/ of the source tree unless SLUICE_HOME
 * names another root). */
const char *sl_home(void);

#endif
