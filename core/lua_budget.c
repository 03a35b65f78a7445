/* lua_budget.c — the time budget of plugin code: a watchdog, not a
 * per-bytecode check.
 *
 * A count hook would make every bytecode of plugin code pay for a check
 * (plugin code ran 1.6-2x slower under one), and setting and clearing it
 * around each plugin call rewrites LuaJIT's dispatch table twice per call.
 * Instead a plugin call only writes its deadline where one watchdog
 * thread can read it. The watchdog looks every WATCH_TICK_MS; a thread
 * found past its deadline gets a signal whose handler, on that thread,
 * sets the count hook (lua_sethook may be called asynchronously, the way
 * LuaJIT's own interpreter stops a script on Ctrl-C). The hook raises at
 * the next bytecode of interpreted code. Compiled code runs no hooks: the
 * plugin source carries budget ticks in every loop and function
 * (lua/sluice/instrument.lua) that call core.check_budget now and then.
 * C services check the deadline themselves too, so a loop of expensive C
 * calls stops as well.
 *
 * A budget therefore holds to within a tick or two. Every state is used by
 * the one thread that made it (DESIGN: no Lua state is touched by two
 * threads), and frees it on that thread, so the watchdog only signals
 * threads that are alive: it signals under the registry lock, and a state
 * leaves the registry before it is freed. */
#include "lua_state.h"
#include "util.h"

#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define WATCH_TICK_MS 2
#define BUDGET_SIGNAL SIGURG /* ignored by default: a stray one is harmless */

static __thread sl_lua *hook_owner; /* the state whose plugin is running */

static pthread_mutex_t life_mu = PTHREAD_MUTEX_INITIALIZER; /* start/stop */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static sl_lua *reg_head; /* registered states, linked by wd_next */
static pthread_t watch_thread;
static int watch_running; /* under reg_mu */
static atomic_int watch_stop;

static uint64_t deadline_of(const sl_lua *lua)
{
    return atomic_load_explicit(&lua->deadline_ns, memory_order_relaxed);
}

static void set_deadline(sl_lua *lua, uint64_t ns)
{
    atomic_store_explicit(&lua->deadline_ns, ns, memory_order_relaxed);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sl_lua *lua = hook_owner;
    if (!lua || !deadline_of(lua))
        return;
    if (lua->exceeded || sl_now_ns() > deadline_of(lua)) {
        /* Keep raising: a plugin's own pcall must not outlive its budget
         * (the sandbox's pcall re-raises too). */
        lua->exceeded = 1;
        lua_pushstring(L, lua->budget_msg);
        lua_error(L);
    }
}

/* On the thread the watchdog found past its deadline. */
static void on_budget_signal(int sig)
{
    (void)sig;
    int saved = errno;
    sl_lua *lua = hook_owner;
    if (lua && !lua->armed) {
        uint64_t d = deadline_of(lua);
        if (d && sl_now_ns() > d) {
            lua->armed = 1;
            lua_sethook(lua->L, budget_hook, LUA_MASKCOUNT, 1);
        }
    }
    errno = saved;
}

static void *watch_main(void *arg)
{
    (void)arg;
    struct timespec tick = {0, WATCH_TICK_MS * 1000000L};
    while (!watch_stop) {
        nanosleep(&tick, NULL);
        uint64_t now = sl_now_ns();
        pthread_mutex_lock(&reg_mu);
        for (sl_lua *l = reg_head; l; l = l->wd_next) {
            uint64_t d = deadline_of(l);
            if (d && now > d && l->wd_signalled != d) {
                l->wd_signalled = d; /* once per call */
                pthread_kill(l->thread, BUDGET_SIGNAL);
            }
        }
        pthread_mutex_unlock(&reg_mu);
    }
    return NULL;
}

int sl_lua_budget_register(sl_lua *lua)
{
    lua->thread = pthread_self();
    pthread_mutex_lock(&life_mu);
    pthread_mutex_lock(&reg_mu);
    if (!watch_running) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_budget_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        watch_stop = 0;
        if (sigaction(BUDGET_SIGNAL, &sa, NULL) == 0 &&
            pthread_create(&watch_thread, NULL, watch_main, NULL) == 0)
            watch_running = 1;
    }
    int ok = watch_running;
    if (ok) {
        lua->wd_next = reg_head;
        reg_head = lua;
    }
    pthread_mutex_unlock(&reg_mu);
    pthread_mutex_unlock(&life_mu);
    return ok ? 0 : -1;
}

/* The last state out stops the watchdog, so a process that frees every
 * state ends with no thread of ours left. */
void sl_lua_budget_unregister(sl_lua *lua)
{
    int join = 0;
    pthread_mutex_lock(&life_mu); /* no new watchdog while this one ends */
    pthread_mutex_lock(&reg_mu);
    for (sl_lua **p = &reg_head; *p; p = &(*p)->wd_next)
        if (*p == lua) {
            *p = lua->wd_next;
            break;
        }
    if (!reg_head && watch_running) {
        watch_stop = 1;
        watch_running = 0;
        join = 1;
    }
    pthread_mutex_unlock(&reg_mu);
    if (join)
        pthread_join(watch_thread, NULL);
    pthread_mutex_unlock(&life_mu);
}

/* core.call_plugin(fn, budget_ms, ...) -> true, result | false, err */
int sl_lua_core_call_plugin(lua_State *L)
{
    sl_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TFUNCTION);
    double ms = luaL_optnumber(L, 2, (double)lua->time_budget);
    lua_remove(L, 2);
    int nargs = lua_gettop(L) - 1;
    sl_lua *outer = hook_owner;
    uint64_t saved_deadline = deadline_of(lua);
    size_t saved_limit = lua->mem_limit;
    lua->exceeded = 0;
    /* Garbage counts against the state's ceiling: collect it before a
     * plugin call would find the state nearly full. */
    if (lua->mem_total > lua->mem_cap / 2)
        lua_gc(L, LUA_GCCOLLECT, 0);
    /* Per call, and for the state as a whole: a plugin that hoards a
     * little on every request must hit a wall too. */
    lua->mem_limit = lua->mem_total + lua->mem_budget;
    if (lua->mem_limit > lua->mem_cap)
        lua->mem_limit =
            lua->mem_cap > lua->mem_total ? lua->mem_cap : lua->mem_total;
    if (ms != lua->budget_msg_ms) { /* the message only changes with ms */
        snprintf(lua->budget_msg, sizeof(lua->budget_msg),
                 "plugin exceeded its time budget (%.0f ms)", ms);
        lua->budget_msg_ms = ms;
    }
    hook_owner = lua;
    set_deadline(lua, sl_now_ns() + (uint64_t)(ms * 1e6));
    int rc = lua_pcall(L, nargs, 1, 0);
    set_deadline(lua, saved_deadline);
    hook_owner = outer;
    /* The signal handler only arms an unarmed state, so from here on it
     * cannot race this disarming. An outer call already past its own
     * deadline keeps the hook. */
    if (lua->armed && !(saved_deadline && sl_now_ns() > saved_deadline)) {
        lua_sethook(L, NULL, 0, 0);
        lua->armed = 0;
    }
    lua->mem_limit = saved_limit;
    lua->exceeded = 0;
    lua_pushboolean(L, rc == 0);
    lua_insert(L, -2);
    return 2;
}

/* core.check_budget(): raise when the running plugin is past its
 * deadline. Plugins reach C services through wrappers that call this
 * first, so a loop of expensive C calls (which no hook sees) overruns by
 * one call at most. */
int sl_lua_core_check_budget(lua_State *L)
{
    sl_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    uint64_t d = deadline_of(lua);
    if (d && (lua->exceeded || sl_now_ns() > d)) {
        lua->exceeded = 1;
        lua_pushstring(L, lua->budget_msg);
        return lua_error(L);
    }
    return 0;
}

int sl_lua_core_over_budget(lua_State *L)
{
    sl_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushboolean(L, lua->exceeded);
    return 1;
}

int sl_lua_core_budget_error(lua_State *L)
{
    sl_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushstring(L, lua->budget_msg);
    return 1;
}
