/* lua_state.h — the worker Lua state's internals, shared by the bridge's
 * two files: lua_bridge.c (state, budgets, services, compile) and
 * lua_phases.c (the per-request phase calls). Nothing else includes it. */
#ifndef SL_LUA_STATE_H
#define SL_LUA_STATE_H

#include "lua_bridge.h"

#include <lua.h>

struct sl_lua {
    lua_State *L;
    lua_Alloc base_alloc; /* LuaJIT's own allocator, which we wrap */
    void *base_ud;
    size_t mem_total;     /* bytes the state holds now */
    size_t mem_limit;     /* 0, or the ceiling during a plugin call */
    uint64_t mem_budget;  /* bytes one plugin call may add */
    uint64_t time_budget; /* default ms per plugin call */
    size_t mem_cap;       /* the most the whole state may hold */
    uint64_t deadline_ns;
    int exceeded;
    char budget_msg[96];
    double budget_msg_ms;
    int fn_request, fn_upstream_response, fn_body_filter, fn_log, fn_compile,
        fn_prepare;
    int anchor_ref; /* a table keeping the last filtered body piece alive */
    char **secret_dirs;
    int nsecret_dirs;
    char **secret_env;
    int nsecret_env;
};

/* What Lua holds for a request: a full userdata, so its life is Lua's, and
 * the pointer inside is cleared when the request ends. */
typedef struct sl_lua_reqbox {
    sl_http_req *r;
} sl_lua_reqbox;

#endif
