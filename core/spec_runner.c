/* spec_runner.c — run busted in an embedded LuaJIT state (see
 * spec_runner.h). */
#include "spec_runner.h"
#include "lua_services.h"

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
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "sluice spec: cannot create a Lua state\n");
        return 1;
    }
    luaL_openlibs(L);
    /* specs reach the runtime services with require "sluice.json" etc. */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, sl_luaopen_json);
    lua_setfield(L, -2, "sluice.json");
    lua_pushcfunction(L, sl_luaopen_re);
    lua_setfield(L, -2, "sluice.re");
    lua_pushcfunction(L, sl_luaopen_hash);
    lua_setfield(L, -2, "sluice.hash");
    lua_pushcfunction(L, sl_luaopen_shared);
    lua_setfield(L, -2, "sluice.shared");
    lua_pop(L, 2);
    const char *home = sl_home();
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua;%s", home,
                    home, home, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);

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
    if (rc != 0) {
        fprintf(stderr, "sluice spec: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 1;
    }
    lua_close(L);
    return 0;
}
