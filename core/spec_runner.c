/* spec_runner.c — `sluice spec`: busted inside the same LuaJIT state the
 * gateway's workers use, runtime loaded (see spec_runner.h), so a plugin
 * spec exercises the real sandbox, schema checker, ctx and services. */
#include "spec_runner.h"
#include "config.h"
#include "lua_bridge.h"
#include "lua_crypto.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *sl_home(void)
{
    const char *h = getenv("SLUICE_HOME");
    return h && *h ? h : SLUICE_SOURCE_DIR;
}

int sl_spec_main(int argc, char **argv)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        setenv("SLUICE_BIN", exe, 0); /* specs start this very binary */
    }
    char err[512];
    sl_config cfg;
    sl_config_defaults(&cfg);
    sl_lua *lua = sl_lua_new(&cfg, err, sizeof(err));
    sl_config_free(&cfg);
    if (!lua) {
        fprintf(stderr, "sluice spec: %s\n", err);
        return 1;
    }
    lua_State *L = sl_lua_state(lua);
    /* The gateway's path holds only the runtime; specs also need busted
     * and its helpers from the system, and the repository's spec/. */
    const char *home = sl_home();
    lua_getglobal(L, "package");
    lua_pushfstring(L,
                    "%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua;"
                    "/usr/local/share/lua/5.1/?.lua;"
                    "/usr/local/share/lua/5.1/?/init.lua;"
                    "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua",
                    home, home, home);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "/usr/local/lib/lua/5.1/?.so;"
                      "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;"
                      "/usr/lib/lua/5.1/?.so");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);

    lua_createtable(L, argc, 1);
    lua_pushstring(L, "busted");
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");

    static const char boot[] =
        "local ok, runner = pcall(require, 'busted.runner')\n"
        "if not ok then\n"
        "  io.stderr:write('sluice spec: busted is not installed (Debian: "
        "lua-busted): ', tostring(runner), '\\n')\n"
        "  os.exit(1)\n"
        "end\n"
        "runner({ standalone = false })\n";
    int rc = luaL_loadbuffer(L, boot, sizeof(boot) - 1, "=spec");
    if (rc == 0)
        rc = lua_pcall(L, 0, 0, 0);
    if (rc != 0)
        fprintf(stderr, "sluice spec: %s\n", lua_tostring(L, -1));
    sl_lua_free(lua);
    sl_crypto_quiesce(10000); /* JWKS fetches a spec started */
    return rc != 0;
}
