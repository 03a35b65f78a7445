/* lua_state.h — the worker Lua state's internals, shared by the bridge's
 * files: lua_bridge.c (state, services, compile), lua_phases.c (the
 * per-request phase calls), lua_alloc.c (memory: budget and pools) and
 * lua_budget.c (the time budget). Nothing else includes it. */
#ifndef SL_LUA_STATE_H
#define SL_LUA_STATE_H

#include "lua_bridge.h"

#include <lua.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

struct sl_lua {
    lua_State *L;
    /* memory (lua_alloc.c) */
    int pooled;          /* small blocks from our pools (GC64 builds) */
    void *pool_free[17]; /* free lists by 16-byte class, up to 256 bytes */
    char *slabs;         /* the slabs they are carved from, linked */
    char *slab_next, *slab_end;
    lua_Alloc base_alloc; /* else LuaJIT's own allocator, which we wrap */
    void *base_ud;
    size_t mem_total;     /* bytes the state holds now */
    size_t mem_limit;     /* 0, or the ceiling during a plugin call */
    uint64_t mem_budget;  /* bytes one plugin call may add */
    uint64_t time_budget; /* default ms per plugin call */
    size_t mem_cap;       /* the most the whole state may hold */
    /* time budget (lua_budget.c) */
    _Atomic uint64_t deadline_ns; /* 0, or when the running call must end */
    volatile sig_atomic_t armed;  /* the count hook is set */
    int exceeded;
    pthread_t thread;       /* the one thread using this state */
    struct sl_lua *wd_next; /* the watchdog's registry */
    uint64_t wd_signalled;  /* the deadline last signalled */
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

/* lua_alloc.c */
lua_State *sl_lua__newstate(sl_lua *lua);
void sl_lua__close(sl_lua *lua);

/* lua_budget.c */
int sl_lua_budget_register(sl_lua *lua);
void sl_lua_budget_unregister(sl_lua *lua);
int sl_lua_core_call_plugin(lua_State *L);
int sl_lua_core_check_budget(lua_State *L);
int sl_lua_core_over_budget(lua_State *L);
int sl_lua_core_budget_error(lua_State *L);

#endif
