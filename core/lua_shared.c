/* lua_shared.c — sluice.shared: the process-wide dictionary (shdict.h) as
 * seen from plugins, in the spirit of OpenResty's ngx.shared.DICT.
 *
 * get, set, incr and delete take a last, optional table
 * `{ scope = "cluster", fail = "open"|"closed", share = N }`: with a
 * `cluster:` section in sluice.yaml, counters then count across every
 * instance and set/delete reach every instance (cluster.h); without one,
 * the scope is the process, as always.
 *
 * Wrong argument types raise (a plugin bug); conditions that depend on the
 * data — a key too long, a full dictionary, incr on a string — come back as
 * nil, err so a policy can decide to fail open or closed. */
#include "lua_services.h"

#include <lauxlib.h>
#include <math.h>

#include "cluster.h"
#include "shdict.h"

static sl_shdict *dict(lua_State *L)
{
    sl_shdict *d = sl_shdict_global();
    if (!d)
        luaL_error(L, "no memory in shared dict");
    return d;
}

static const char *check_key(lua_State *L, size_t *n)
{
    return luaL_checklstring(L, 1, n);
}

static double opt_ttl(lua_State *L, int idx)
{
    double ttl = luaL_optnumber(L, idx, 0);
    if (!(ttl >= 0) || isinf(ttl))
        luaL_argerror(L, idx, "ttl must be a number of seconds >= 0");
    return ttl;
}

static int push_error(lua_State *L, int rc, size_t klen)
{
    lua_pushnil(L);
    switch (rc) {
    case SL_ENOMEM:
        lua_pushliteral(L, "no memory in shared dict");
        break;
    case SL_ETOOLARGE:
        lua_pushliteral(L, "value too large for shared dict");
        break;
    default:
        if (klen == 0)
            lua_pushliteral(L, "empty key");
        else if (klen > SL_SHD_MAX_KEY)
            lua_pushliteral(L, "key too long");
        else
            lua_pushliteral(L, "invalid value");
    }
    return 2;
}

static void check_value(lua_State *L, int idx, sl_shd_value *v)
{
    v->type = SL_SHD_NIL;
    v->heap = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TNONE:
        return;
    case LUA_TNUMBER:
        v->type = SL_SHD_NUMBER;
        v->num = lua_tonumber(L, idx);
        return;
    case LUA_TBOOLEAN:
        v->type = SL_SHD_BOOLEAN;
        v->boolean = lua_toboolean(L, idx);
        return;
    case LUA_TSTRING:
        v->type = SL_SHD_STRING;
        v->str = lua_tolstring(L, idx, &v->len);
        return;
    }
    luaL_argerror(L, idx, "value must be a number, string or boolean");
}

typedef struct {
    int cluster; /* cluster scope asked for and configured */
    int fail;    /* SL_CLUSTER_FAIL_* */
    double share;
} scope_opts;

/* The optional scope table at `idx`. A cluster scope without a cluster
 * configured is the process: the same plugin runs on one instance or many. */
static void check_scope(lua_State *L, int idx, scope_opts *o)
{
    o->cluster = 0;
    o->fail = SL_CLUSTER_FAIL_DEFAULT;
    o->share = 0;
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "scope");
    const char *scope = lua_tostring(L, -1);
    if (scope && strcmp(scope, "cluster") == 0)
        o->cluster = sl_cluster_enabled();
    else if (scope && strcmp(scope, "local") != 0)
        luaL_argerror(L, idx, "scope is \"local\" or \"cluster\"");
    lua_getfield(L, idx, "fail");
    const char *fail = lua_tostring(L, -1);
    if (fail && strcmp(fail, "open") == 0)
        o->fail = SL_CLUSTER_FAIL_OPEN;
    else if (fail && strcmp(fail, "closed") == 0)
        o->fail = SL_CLUSTER_FAIL_CLOSED;
    else if (fail)
        luaL_argerror(L, idx, "fail is \"open\" or \"closed\"");
    lua_getfield(L, idx, "share");
    if (!lua_isnil(L, -1)) {
        o->share = lua_tonumber(L, -1);
        if (!(o->share > 0) || isinf(o->share))
            luaL_argerror(L, idx, "share is a number of increments > 0");
    }
    lua_pop(L, 3);
}

static int shared_get(lua_State *L)
{
    size_t n;
    const char *k = check_key(L, &n);
    scope_opts o;
    check_scope(L, 2, &o);
    double total;
    if (o.cluster && sl_cluster_get(k, n, &total)) {
        lua_pushnumber(L, total);
        return 1;
    }
    sl_shd_value v;
    int rc = sl_shdict_get(dict(L), k, n, &v, NULL);
    if (rc < 0)
        return push_error(L, rc, n);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    switch (v.type) {
    case SL_SHD_NUMBER:
        lua_pushnumber(L, v.num);
        break;
    case SL_SHD_BOOLEAN:
        lua_pushboolean(L, v.boolean);
        break;
    case SL_SHD_STRING:
        lua_pushlstring(L, v.str, v.len);
        sl_shd_value_free(&v);
        break;
    default:
        lua_pushnil(L);
    }
    return 1;
}

static int shared_set(lua_State *L)
{
    size_t n;
    const char *k = check_key(L, &n);
    sl_shd_value v;
    check_value(L, 2, &v);
    double ttl = opt_ttl(L, 3);
    scope_opts o;
    check_scope(L, 4, &o);
    int rc = o.cluster ? sl_cluster_set(dict(L), k, n, &v, ttl)
                       : sl_shdict_set(dict(L), k, n, &v, ttl);
    if (rc < 0)
        return push_error(L, rc, n);
    lua_pushboolean(L, 1);
    return 1;
}

/* true | false, "exists" | nil, err */
static int shared_add(lua_State *L)
{
    size_t n;
    const char *k = check_key(L, &n);
    sl_shd_value v;
    check_value(L, 2, &v);
    if (v.type == SL_SHD_NIL)
        luaL_argerror(L, 2, "value must be a number, string or boolean");
    int rc = sl_shdict_add(dict(L), k, n, &v, opt_ttl(L, 3));
    if (rc < 0)
        return push_error(L, rc, n);
    if (rc == SL_SHD_EXISTS) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "exists");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* incr(key, delta, init = 0, ttl = 0, scope): a missing key starts at
 * init. In the cluster scope the answer is this instance's view of the
 * cluster total, or nil, "cluster share in use" (a flush is in flight and
 * the local share of increments is full) or nil, "cluster unavailable"
 * (Redis is down and the counter fails closed); nothing is counted then. */
static int shared_incr(lua_State *L)
{
    size_t n;
    const char *k = check_key(L, &n);
    double delta = luaL_checknumber(L, 2);
    double init = luaL_optnumber(L, 3, 0);
    double ttl = opt_ttl(L, 4);
    scope_opts o;
    check_scope(L, 5, &o);
    double out;
    int rc;
    if (o.cluster) {
        if (init != 0)
            luaL_argerror(L, 3, "cluster counters start at 0");
        rc = sl_cluster_incr(k, n, delta, ttl, o.fail, o.share, &out);
        if (rc == SL_EAGAIN || rc == SL_ECONNECT) {
            lua_pushnil(L);
            if (rc == SL_EAGAIN)
                lua_pushliteral(L, "cluster share in use");
            else
                lua_pushliteral(L, "cluster unavailable");
            return 2;
        }
    } else {
        rc = sl_shdict_incr(dict(L), k, n, delta, init, ttl, &out);
    }
    if (rc == SL_EINVAL && n > 0 && n <= SL_SHD_MAX_KEY) {
        lua_pushnil(L);
        lua_pushliteral(L, "not a number");
        return 2;
    }
    if (rc < 0)
        return push_error(L, rc, n);
    lua_pushnumber(L, out);
    return 1;
}

static int shared_delete(lua_State *L)
{
    size_t n;
    const char *k = check_key(L, &n);
    scope_opts o;
    check_scope(L, 2, &o);
    int removed = sl_shdict_delete(dict(L), k, n);
    if (o.cluster) {
        sl_shd_value nil = {.type = SL_SHD_NIL};
        sl_cluster_set(dict(L), k, n, &nil, 0);
    }
    lua_pushboolean(L, removed);
    return 1;
}

/* seconds left (0 = never expires) | nil, "not found" */
static int shared_ttl(lua_State *L)
{
    size_t n;
    const char *k = check_key(L, &n);
    double left;
    if (!sl_shdict_ttl(dict(L), k, n, &left)) {
        lua_pushnil(L);
        lua_pushliteral(L, "not found");
        return 2;
    }
    lua_pushnumber(L, left);
    return 1;
}

static int shared_flush_expired(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)sl_shdict_flush_expired(dict(L)));
    return 1;
}

int sl_luaopen_shared(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"get", shared_get},
        {"set", shared_set},
        {"add", shared_add},
        {"incr", shared_incr},
        {"delete", shared_delete},
        {"ttl", shared_ttl},
        {"flush_expired", shared_flush_expired},
        {NULL, NULL},
    };
    lua_createtable(L, 0, (int)(sizeof(fns) / sizeof(fns[0]) - 1));
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
