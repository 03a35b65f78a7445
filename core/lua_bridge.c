/* lua_bridge.c — the worker's LuaJIT state and the phase calls (see
 * lua_bridge.h).
 *
 * Plugins never see anything defined here directly: the runtime receives
 * the C functions in a private `core` table and hands plugins sandboxed
 * views. The request is passed as a light userdata that only these
 * functions understand. */
#include "lua_state.h"
#include "log.h"
#include "secret.h"
#include "lua_crypto.h"
#include "lua_services.h"
#include "metrics.h"
#include "spec_runner.h"
#include "util.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

static int core_log(lua_State *L)
{
    static const char *const levels[] = {"error", "warn", "info", "debug",
                                         NULL};
    int level = luaL_checkoption(L, 1, "info", levels);
    size_t n;
    const char *msg = luaL_checklstring(L, 2, &n);
    if (sl_log_enabled(level))
        sl_log(level, "%.*s", (int)(n > 1500 ? 1500 : n), msg);
    return 0;
}

/* ---- services that need the bridge ------------------------------------------
 */

static int time_now(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
    return 1;
}

static int time_monotonic_ms(lua_State *L)
{
    lua_pushnumber(L, (double)sl_now_ns() / 1e6);
    return 1;
}

/* sluice.secret("env:NAME" | "file:/path") -> value | nil, err. Files only
 * from the configured secret directories: a plugin must not read the
 * gateway's other files. */
static int secret(lua_State *L)
{
    sl_lua *lua = lua_touserdata(L, lua_upvalueindex(1));
    const char *ref = luaL_checkstring(L, 1);
    if (strncmp(ref, "env:", 4) != 0 && strncmp(ref, "file:", 5) != 0)
        return luaL_error(L, "secret references are env:NAME or file:/path");
    sl_secret_rules rules = {lua->secret_dirs, lua->nsecret_dirs,
                             lua->secret_env, lua->nsecret_env};
    char *v;
    size_t n;
    const char *why;
    if (sl_secret_resolve(ref, &rules, &v, &n, &why) < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "secret %s: %s", ref, why);
        return 2;
    }
    lua_pushlstring(L, v, n);
    sl_secret_free(v);
    return 1;
}

/* ---- the request as Lua sees it -------------------------------------------
 */

/* The request behind a handle, or a Lua error once it is over. */
static sl_http_req *live_request(lua_State *L)
{
    sl_lua_reqbox *box = lua_touserdata(L, 1);
    if (!box || lua_type(L, 1) != LUA_TUSERDATA)
        luaL_error(L, "request handle expected");
    if (!box->r)
        luaL_error(L, "this request is over");
    return box->r;
}

static int req_headers(lua_State *L)
{
    sl_http_req *r = live_request(L);
    lua_createtable(L, r->nheaders * 2, 0);
    char name[256];
    for (int i = 0; i < r->nheaders; i++) {
        size_t n = r->headers[i].name.n;
        if (n >= sizeof(name))
            n = sizeof(name) - 1;
        for (size_t j = 0; j < n; j++) {
            char ch = r->headers[i].name.p[j];
            name[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        lua_pushlstring(L, name, n);
        lua_rawseti(L, -2, i * 2 + 1);
        lua_pushlstring(L, r->headers[i].value.p, r->headers[i].value.n);
        lua_rawseti(L, -2, i * 2 + 2);
    }
    return 1;
}

static int req_body(lua_State *L)
{
    sl_http_req *r = live_request(L);
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    return 1;
}

/* ---- policy trees to Lua ----------------------------------------------------
 */

static int is_number(const char *s, double *out)
{
    char *end;
    if (!*s || strchr(s, 'x') || strchr(s, 'X') || strpbrk(s, "iInN"))
        return 0; /* no hex, inf or nan from YAML */
    errno = 0;
    double d = strtod(s, &end);
    if (*end || errno)
        return 0;
    *out = d;
    return 1;
}

/* Push node as a Lua value; record lines in the table at index `lines`. */
static void push_node(lua_State *L, const sl_node *n, int lines)
{
    double d;
    if (n->type == SL_NODE_SCALAR) {
        if (n->plain && strcmp(n->value, "true") == 0)
            lua_pushboolean(L, 1);
        else if (n->plain && strcmp(n->value, "false") == 0)
            lua_pushboolean(L, 0);
        else if (sl_node_is_null(n))
            lua_pushnil(L);
        else if (n->plain && is_number(n->value, &d))
            lua_pushnumber(L, d);
        else
            lua_pushlstring(L, n->value, n->len);
        return;
    }
    lua_createtable(L, n->type == SL_NODE_SEQ ? n->n : 0,
                    n->type == SL_NODE_MAP ? n->n : 0);
    lua_createtable(L, 0, n->n + 1); /* this table's lines */
    lua_pushboolean(L, 1);
    lua_pushinteger(L, n->line);
    lua_rawset(L, -3);
    int i = 1;
    for (const sl_node *c = n->child; c; c = c->next, i++) {
        if (n->type == SL_NODE_MAP)
            lua_pushstring(L, c->key);
        else
            lua_pushinteger(L, i);
        lua_pushvalue(L, -1);
        lua_pushinteger(L, c->line);
        lua_rawset(L, -4); /* lines[key] = line */
        push_node(L, c, lines);
        lua_rawset(L, -4); /* tbl[key] = value */
    }
    /* stack: tbl, tbl_lines → lines[tbl] = tbl_lines */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, lines);
}

/* ---- state -----------------------------------------------------------------
 */

static int ref_field(lua_State *L, int idx, const char *name)
{
    lua_getfield(L, idx, name);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static void push_closure(lua_State *L, sl_lua *lua, lua_CFunction f,
                         const char *name)
{
    lua_pushlightuserdata(L, lua);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, name);
}

static int boot(lua_State *L)
{
    sl_lua *lua = lua_touserdata(L, 1);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua", sl_home());
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);

    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.runtime");
    lua_call(L, 1, 1);
    int rt = lua_gettop(L);

    lua_newtable(L); /* core */
    int core = lua_gettop(L);
    push_closure(L, lua, sl_lua_core_call_plugin, "call_plugin");
    push_closure(L, lua, sl_lua_core_over_budget, "over_budget");
    push_closure(L, lua, sl_lua_core_check_budget, "check_budget");
    push_closure(L, lua, sl_lua_core_budget_error, "budget_error");
    lua_pushcfunction(L, core_log);
    lua_setfield(L, core, "log");
    lua_pushcfunction(L, sl_metrics_lua); /* the log phase's metrics */
    lua_setfield(L, core, "metric");

    lua_newtable(L); /* services */
    sl_luaopen_json(L);
    /* Lock the JSON markers: they are shared by every plugin's tables. */
    static const char *const marks[] = {"array_mt", "object_mt"};
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, -1, marks[i]);
        if (lua_istable(L, -1)) {
            lua_pushstring(L, marks[i]);
            lua_setfield(L, -2, "__metatable");
        }
        lua_pop(L, 1);
    }
    lua_setfield(L, -2, "json");
    sl_luaopen_re(L);
    lua_setfield(L, -2, "re");
    sl_luaopen_hash(L);
    lua_setfield(L, -2, "hash");
    sl_luaopen_crypto(L);
    lua_setfield(L, -2, "crypto");
    sl_luaopen_shared(L);
    lua_setfield(L, -2, "shared");
    lua_newtable(L);
    lua_pushcfunction(L, time_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, time_monotonic_ms);
    lua_setfield(L, -2, "monotonic_ms");
    lua_setfield(L, -2, "time");
    lua_pushlightuserdata(L, lua);
    lua_pushcclosure(L, secret, 1);
    lua_setfield(L, -2, "secret");

    /* require "sluice.json" (specs, tools) must give the very modules the
     * runtime uses: json.null and the array marker are identities. */
    int svc = lua_gettop(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    static const char *const names[] = {"json",   "re",     "hash",
                                        "crypto", "shared", "time"};
    for (size_t i = 0; i < SL_ARRAY_LEN(names); i++) {
        char key[32];
        snprintf(key, sizeof(key), "sluice.%s", names[i]);
        lua_getfield(L, svc, names[i]);
        lua_setfield(L, -2, key);
    }
    lua_pop(L, 2);

    lua_getfield(L, rt, "init");
    lua_pushvalue(L, core);
    lua_pushvalue(L, svc);
    lua_call(L, 2, 0);
    lua_pop(L, 2); /* services, core */

    lua_getfield(L, rt, "set_request_source");
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, req_headers);
    lua_setfield(L, -2, "headers");
    lua_pushcfunction(L, req_body);
    lua_setfield(L, -2, "body");
    lua_call(L, 1, 0);

    lua->fn_request = ref_field(L, rt, "request");
    lua->fn_upstream_response = ref_field(L, rt, "upstream_response");
    lua->fn_body_filter = ref_field(L, rt, "body_filter");
    lua->fn_log = ref_field(L, rt, "log");
    lua->fn_compile = ref_field(L, rt, "compile");
    lua->fn_prepare = ref_field(L, rt, "prepare");
    lua_newtable(L);
    lua->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static void free_secret_dirs(sl_lua *lua)
{
    free_list(lua->secret_dirs, lua->nsecret_dirs);
    free_list(lua->secret_env, lua->nsecret_env);
}

/* Copied: the state may outlive the configuration (sluice spec). */
static char **copy_list(char **src, int n, int *count)
{
    char **l = calloc((size_t)n + 1, sizeof(char *));
    *count = 0;
    for (int i = 0; l && i < n; i++)
        if ((l[i] = strdup(src[i])))
            *count = i + 1;
    return l;
}

sl_lua *sl_lua_new(const sl_config *cfg, char *err, size_t errlen)
{
    sl_lua *lua = calloc(1, sizeof(*lua));
    if (!lua) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    lua->mem_budget = cfg->lua_memory_budget;
    lua->mem_cap = cfg->lua_memory_limit;
    lua->time_budget = cfg->lua_time_budget;
    sl_metrics_configure(cfg->metrics.consumer_labels, cfg->metrics.max_series);
    lua->secret_dirs =
        copy_list(cfg->secret_dirs, cfg->nsecret_dirs, &lua->nsecret_dirs);
    lua->secret_env =
        copy_list(cfg->secret_env, cfg->nsecret_env, &lua->nsecret_env);
    lua->L = sl_lua__newstate(lua);
    if (!lua->L) {
        snprintf(err, errlen, "cannot create a Lua state");
        free_secret_dirs(lua);
        free(lua);
        return NULL;
    }
    if (sl_lua_budget_register(lua) < 0) {
        snprintf(err, errlen, "cannot start the plugin time-budget watchdog");
        sl_lua__close(lua);
        free_secret_dirs(lua);
        free(lua);
        return NULL;
    }
    lua_State *L = lua->L;
    lua_pushcfunction(L, boot);
    lua_pushlightuserdata(L, lua);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        snprintf(err, errlen, "cannot load the Lua runtime: %s",
                 lua_tostring(L, -1));
        sl_lua_budget_unregister(lua);
        sl_lua__close(lua);
        free_secret_dirs(lua);
        free(lua);
        return NULL;
    }
    return lua;
}

void sl_lua_free(sl_lua *lua)
{
    if (!lua)
        return;
    sl_lua_budget_unregister(lua);
    sl_lua__close(lua);
    free_secret_dirs(lua);
    free(lua);
}

lua_State *sl_lua_state(sl_lua *lua)
{
    return lua->L;
}

void sl_lua_unref(sl_lua *lua, int ref)
{
    if (ref != LUA_NOREF && ref != LUA_REFNIL)
        luaL_unref(lua->L, LUA_REGISTRYINDEX, ref);
}

int sl_lua_compile(sl_lua *lua, const sl_policy *p, sl_chain *out, char *err,
                   size_t errlen)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->fn_compile);
    lua_createtable(L, 0, 6); /* doc */
    int doc = lua_gettop(L);
    lua_pushstring(L, p->version);
    lua_setfield(L, doc, "version");
    lua_pushnumber(L, (double)lua->time_budget);
    lua_setfield(L, doc, "time_budget");

    lua_createtable(L, p->nfiles, 0);
    for (int i = 0; i < p->nfiles; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, p->files[i].path);
        lua_setfield(L, -2, "path");
        lua_newtable(L); /* lines, keyed by table */
        int lines = lua_gettop(L);
        push_node(L, p->files[i].root, lines);
        lua_setfield(L, -3, "root");
        lua_setfield(L, -2, "lines");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, doc, "files");

    lua_createtable(L, 0, p->nplugins);
    for (int i = 0; i < p->nplugins; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, p->plugins[i].path);
        lua_setfield(L, -2, "path");
        lua_pushlstring(L, p->plugins[i].code, p->plugins[i].len);
        lua_setfield(L, -2, "code");
        lua_setfield(L, -2, p->plugins[i].name);
    }
    lua_setfield(L, doc, "plugins");

    lua_createtable(L, 0, p->nbackends);
    for (int i = 0; i < p->nbackends; i++) {
        const sl_backend *b = &p->backends[i];
        lua_createtable(L, 0, 4); /* what adapters may know: no secret */
        lua_pushstring(L, b->provider);
        lua_setfield(L, -2, "provider");
        if (b->region) {
            lua_pushstring(L, b->region);
            lua_setfield(L, -2, "region");
        }
        if (b->api_version) {
            lua_pushstring(L, b->api_version);
            lua_setfield(L, -2, "api_version");
        }
        lua_pushstring(L, b->path_prefix);
        lua_setfield(L, -2, "base_path");
        lua_setfield(L, -2, b->name);
    }
    lua_setfield(L, doc, "backends");
    if (p->default_backend >= 0) {
        lua_pushstring(L, p->backends[p->default_backend].name);
        lua_setfield(L, doc, "default_backend");
    }

    if (lua_pcall(L, 1, 2, 0) != 0) {
        snprintf(err, errlen, "policy compiler failed: %s",
                 lua_tostring(L, -1));
        lua_settop(L, top);
        return SL_ECONFIG;
    }
    if (lua_isnil(L, -2)) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_settop(L, top);
        return SL_ECONFIG;
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "mask");
    out->mask = (unsigned)lua_tointeger(L, -1);
    lua_pop(L, 1);
    out->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT, 0); /* compile garbage is not request garbage */
    return 0;
}

int sl_lua_chain_report(sl_lua *lua, const sl_chain *c, const char *what,
                        const char *format, sl_buf *out)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    int rc = SL_EIO;
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED"); /* package.loaded */
    lua_getfield(L, -1, "sluice.runtime");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, what);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
        lua_pushstring(L, format);
        if (lua_isfunction(L, -3) && lua_pcall(L, 2, 1, 0) == 0 &&
            lua_type(L, -1) == LUA_TSTRING) {
            size_t n;
            const char *s = lua_tolstring(L, -1, &n);
            rc = sl_buf_append(out, s, n);
        }
    }
    lua_settop(L, top);
    return rc;
}

void sl_lua_chain_release(sl_lua *lua, sl_chain *c)
{
    sl_lua_unref(lua, c->ref);
    c->ref = LUA_NOREF;
}
