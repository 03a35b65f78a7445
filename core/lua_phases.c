/* lua_phases.c — the calls from the request path into the Lua runtime:
 * access and route, upstream_response, body_filter, log (see lua_bridge.h).
 * Each copies what Lua decided into C memory the proxy owns, so nothing
 * the request keeps points into the Lua state. */
#include "log.h"
#include "lua_state.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

static void copy_str(char *dst, size_t cap, lua_State *L, int idx)
{
    size_t n = 0;
    const char *s = lua_tolstring(L, idx, &n);
    if (!s) {
        dst[0] = '\0';
        return;
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* A flat { name, value, … } table at idx into "name: value\r\n" lines. */
static int flat_to_lines(lua_State *L, int idx, sl_buf *b)
{
    int n = (int)lua_objlen(L, idx);
    for (int i = 1; i + 1 <= n; i += 2) {
        size_t nl, vl;
        lua_rawgeti(L, idx, i);
        lua_rawgeti(L, idx, i + 1);
        const char *name = lua_tolstring(L, -2, &nl);
        const char *value = lua_tolstring(L, -1, &vl);
        int bad = !name || !value || nl == 0 || memchr(value, '\r', vl) ||
                  memchr(value, '\n', vl) || memchr(value, '\0', vl);
        for (size_t j = 0; !bad && j < nl; j++) {
            unsigned char ch = (unsigned char)name[j];
            /* RFC 9110 §5.6.2 tchar only: no CR, LF, colon or space */
            bad =
                !(ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch));
        }
        if (!bad) {
            sl_buf_append(b, name, nl);
            sl_buf_append(b, ": ", 2);
            sl_buf_append(b, value, vl);
            sl_buf_append(b, "\r\n", 2);
        }
        lua_pop(L, 2);
        if (bad)
            return SL_EINVAL;
    }
    return 0;
}

static void verdict_error(sl_lua_verdict *v, const char *plugin,
                          const char *msg)
{
    v->action = SL_LUA_ERROR;
    snprintf(v->plugin, sizeof(v->plugin), "%s", plugin ? plugin : "runtime");
    snprintf(v->message, sizeof(v->message), "%s", msg ? msg : "error");
}

int sl_lua_request(sl_lua *lua, const sl_chain *c, sl_http_req *r,
                   const char *version, sl_lua_verdict *v)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    v->action = SL_LUA_OK;
    v->ctx_ref = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->fn_request);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    sl_lua_reqbox *box = lua_newuserdata(L, sizeof(*box));
    box->r = r;
    lua_pushvalue(L, -1);
    v->box = box;
    v->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushstring(L, r->id);
    lua_pushlstring(L, r->method_name.p, r->method_name.n);
    lua_pushlstring(L, r->path.p, r->path.n);
    lua_pushlstring(L, r->query.p, r->query.n);
    (void)version;
    if (lua_pcall(L, 6, 8, 0) != 0) {
        verdict_error(v, "runtime", lua_tostring(L, -1));
        lua_settop(L, top);
        return 0;
    }
    int base = top + 1; /* action, ctx, … */
    const char *action = lua_tostring(L, base);
    if (!lua_isnil(L, base + 1)) {
        lua_pushvalue(L, base + 1);
        v->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (action && strcmp(action, "ok") == 0) {
        if (lua_istable(L, base + 2)) {
            v->headers_changed = 1;
            if (flat_to_lines(L, base + 2, &v->headers) < 0)
                verdict_error(v, "runtime", "a plugin set an invalid header");
        }
        if (lua_isstring(L, base + 3)) {
            size_t n;
            const char *b = lua_tolstring(L, base + 3, &n);
            v->body_changed = 1;
            v->body.len = 0;
            sl_buf_append(&v->body, b, n);
        }
        if (lua_istable(L, base + 4)) {
            int n = (int)lua_objlen(L, base + 4);
            for (int i = 1; i <= n && v->ntargets < SL_LUA_MAX_TARGETS; i++) {
                lua_rawgeti(L, base + 4, i);
                copy_str(v->targets[v->ntargets++], sizeof(v->targets[0]), L,
                         -1);
                lua_pop(L, 1);
            }
        }
        if (lua_isstring(L, base + 5)) { /* the AI front door took it */
            v->ai = 1;
            copy_str(v->model, sizeof(v->model), L, base + 5);
        }
        if (lua_istable(L, base + 6) &&
            flat_to_lines(L, base + 6, &v->resp_headers) < 0)
            verdict_error(v, "runtime", "a plugin set an invalid header");
    } else if (action && strcmp(action, "respond") == 0) {
        size_t n;
        const char *b = lua_tolstring(L, base + 3, &n);
        v->action = SL_LUA_RESPOND;
        v->status = (int)lua_tointeger(L, base + 2);
        v->body.len = 0;
        if (b)
            sl_buf_append(&v->body, b, n);
        if (lua_istable(L, base + 4))
            flat_to_lines(L, base + 4, &v->resp_headers);
    } else if (action && strcmp(action, "deny") == 0) {
        v->action = SL_LUA_DENY;
        v->status = (int)lua_tointeger(L, base + 2);
        copy_str(v->code, sizeof(v->code), L, base + 3);
        copy_str(v->message, sizeof(v->message), L, base + 4);
        if (lua_istable(L, base + 5))
            flat_to_lines(L, base + 5, &v->resp_headers);
        copy_str(v->plugin, sizeof(v->plugin), L, base + 6);
    } else {
        verdict_error(v, lua_tostring(L, base + 2), lua_tostring(L, base + 3));
    }
    lua_settop(L, top);
    return 0;
}

void sl_lua_request_done(sl_lua *lua, sl_lua_verdict *v)
{
    if (v->box) {
        v->box->r = NULL;
        v->box = NULL;
        sl_lua_unref(lua, v->box_ref);
    }
    if (v->ctx_ref != LUA_NOREF) {
        sl_lua_unref(lua, v->ctx_ref);
        v->ctx_ref = LUA_NOREF;
    }
}

int sl_lua_prepare(sl_lua *lua, const sl_chain *c, int ctx_ref, int attempt,
                   const char *backend, sl_buf *path, sl_lua_verdict *v)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->fn_prepare);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
    lua_pushinteger(L, attempt);
    lua_pushstring(L, backend);
    int rc = 0;
    if (lua_pcall(L, 4, 4, 0) != 0) {
        verdict_error(v, "runtime", lua_tostring(L, -1));
        lua_settop(L, top);
        return SL_EIO;
    }
    const char *action = lua_tostring(L, top + 1);
    if (action && strcmp(action, "ok") == 0) {
        size_t n;
        const char *p = lua_tolstring(L, top + 2, &n);
        path->len = 0;
        v->headers.len = 0;
        v->body.len = 0;
        if (p)
            sl_buf_append(path, p, n);
        v->headers_changed = 1;
        if (!lua_istable(L, top + 3) ||
            flat_to_lines(L, top + 3, &v->headers) < 0) {
            verdict_error(v, "adapter", "an adapter set an invalid header");
            rc = SL_EIO;
        }
        const char *b = lua_tolstring(L, top + 4, &n);
        v->body_changed = 1;
        if (b)
            sl_buf_append(&v->body, b, n);
    } else if (action && strcmp(action, "deny") == 0) {
        v->status = (int)lua_tointeger(L, top + 2);
        copy_str(v->code, sizeof(v->code), L, top + 3);
        copy_str(v->message, sizeof(v->message), L, top + 4);
        rc = SL_EINVAL;
    } else {
        verdict_error(v, lua_tostring(L, top + 2), lua_tostring(L, top + 3));
        rc = SL_EIO;
    }
    lua_settop(L, top);
    return rc;
}

int sl_lua_upstream_response(sl_lua *lua, const sl_chain *c, int ctx_ref,
                             int status, const sl_http_hdr *hdrs, int n,
                             const char *backend, int attempt, int more,
                             const char *error, double ms, const char *body,
                             size_t bodylen, sl_lua_verdict *v)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->fn_upstream_response);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
    lua_pushinteger(L, status);
    lua_createtable(L, n * 2, 0);
    char name[256];
    for (int i = 0; i < n; i++) {
        size_t nl =
            hdrs[i].name.n < sizeof(name) ? hdrs[i].name.n : sizeof(name) - 1;
        for (size_t j = 0; j < nl; j++) {
            char ch = hdrs[i].name.p[j];
            name[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        lua_pushlstring(L, name, nl);
        lua_rawseti(L, -2, i * 2 + 1);
        lua_pushlstring(L, hdrs[i].value.p, hdrs[i].value.n);
        lua_rawseti(L, -2, i * 2 + 2);
    }
    lua_pushstring(L, backend);
    lua_pushinteger(L, attempt);
    lua_pushboolean(L, more);
    if (error)
        lua_pushstring(L, error);
    else
        lua_pushnil(L);
    lua_pushnumber(L, ms);
    if (body)
        lua_pushlstring(L, body, bodylen);
    else
        lua_pushnil(L);
    int rc = 0;
    if (lua_pcall(L, 10, 3, 0) != 0) {
        verdict_error(v, "runtime", lua_tostring(L, -1));
        rc = SL_EIO;
    } else {
        const char *res = lua_tostring(L, top + 1);
        if (res && strcmp(res, "error") == 0) {
            verdict_error(v, lua_tostring(L, top + 2),
                          lua_tostring(L, top + 3));
            rc = SL_EIO;
        } else if (res && strcmp(res, "next") == 0) {
            rc = 1;
            if (lua_istable(L, top + 2)) { /* a plugin chose new targets */
                int nt = (int)lua_objlen(L, top + 2);
                v->ntargets = 0;
                for (int i = 1; i <= nt && i <= SL_LUA_MAX_TARGETS; i++) {
                    lua_rawgeti(L, top + 2, i);
                    copy_str(v->targets[v->ntargets++], sizeof(v->targets[0]),
                             L, -1);
                    lua_pop(L, 1);
                }
                rc = 2;
            }
        }
    }
    lua_settop(L, top);
    return rc;
}

static uint64_t smaller_limit(uint64_t cur, lua_State *L, int conf,
                              const char *key)
{
    lua_getfield(L, conf, key);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        double ms = lua_tonumber(L, -1);
        if (ms >= 1 && (cur == 0 || ms < (double)cur))
            cur = (uint64_t)ms;
    }
    lua_pop(L, 1);
    return cur;
}

void sl_lua_attempt_limits(sl_lua *lua, const sl_chain *c, uint64_t *attempt_ms,
                           uint64_t *total_ms)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    *attempt_ms = *total_ms = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    lua_getfield(L, -1, "upstream_response");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, top + 2, i);
            lua_getfield(L, -1, "conf");
            if (lua_istable(L, -1)) {
                int conf = lua_gettop(L);
                *attempt_ms =
                    smaller_limit(*attempt_ms, L, conf, "attempt_timeout");
                *total_ms = smaller_limit(*total_ms, L, conf, "total_timeout");
            }
            lua_pop(L, 2);
        }
    }
    lua_settop(L, top);
}

int sl_lua_body_filter(sl_lua *lua, const sl_chain *c, int ctx_ref,
                       const char *data, size_t len, int last, const char **out,
                       size_t *outlen, sl_lua_verdict *v)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->fn_body_filter);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
    lua_pushlstring(L, data, len);
    lua_pushboolean(L, last);
    if (lua_pcall(L, 4, 3, 0) != 0) {
        verdict_error(v, "runtime", lua_tostring(L, -1));
        lua_settop(L, top);
        return SL_EIO;
    }
    if (lua_type(L, top + 1) == LUA_TSTRING &&
        (lua_isnil(L, top + 2) || lua_type(L, top + 2) == LUA_TNUMBER)) {
        /* A number: the status the answer must carry instead (an adapter
         * that could not read the backend's answer). */
        if (lua_type(L, top + 2) == LUA_TNUMBER)
            v->status = (int)lua_tointeger(L, top + 2);
        /* A third result "end": a filter ended the answer here. */
        if (lua_type(L, top + 3) == LUA_TSTRING)
            v->end_stream = 1;
        /* Anchored until the next call, so the bytes stay valid. */
        *out = lua_tolstring(L, top + 1, outlen);
        lua_rawgeti(L, LUA_REGISTRYINDEX, lua->anchor_ref);
        lua_pushvalue(L, top + 1);
        lua_rawseti(L, -2, 1);
        lua_settop(L, top);
        return 0;
    }
    verdict_error(v, lua_tostring(L, top + 2), lua_tostring(L, top + 3));
    lua_settop(L, top);
    return SL_EIO;
}

/* The attempts as a Lua list of { backend, status, error, latency_ms,
 * outcome }, pushed on the stack. */
static void push_attempts(lua_State *L, const sl_lua_attempt *a, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, a[i].backend);
        lua_setfield(L, -2, "backend");
        lua_pushinteger(L, a[i].status);
        lua_setfield(L, -2, "status");
        if (a[i].error) {
            lua_pushstring(L, a[i].error);
            lua_setfield(L, -2, "error");
        }
        /* milliseconds to the microsecond: a stable, short audit value */
        lua_pushnumber(L, (double)(int64_t)(a[i].ms * 1000 + 0.5) / 1000);
        lua_setfield(L, -2, "latency_ms");
        lua_pushstring(L, a[i].outcome);
        lua_setfield(L, -2, "outcome");
        lua_rawseti(L, -2, i + 1);
    }
}

static void append_str(sl_buf *b, const char *key, const char *v)
{
    sl_buf_puts(b, key);
    sl_buf_append_json(b, v, strlen(v));
    sl_buf_append(b, "\"", 1);
}

/* The attempts as the audit's "attempts" member, straight from C: the
 * same fields push_attempts gives log plugins. */
static void append_attempts(sl_buf *b, const sl_lua_attempt *a, int n)
{
    sl_buf_puts(b, ",\"attempts\":[");
    for (int i = 0; i < n; i++) {
        append_str(b, i ? ",{\"backend\":\"" : "{\"backend\":\"",
                   a[i].backend ? a[i].backend : "");
        sl_buf_puts(b, ",\"status\":");
        sl_buf_append_u64(b, a[i].status > 0 ? (uint64_t)a[i].status : 0);
        if (a[i].error)
            append_str(b, ",\"error\":\"", a[i].error);
        sl_buf_puts(b, ",\"latency_ms\":");
        sl_buf_append_ms(b, a[i].ms > 0 ? (uint64_t)(a[i].ms * 1e6) : 0);
        append_str(b, ",\"outcome\":\"", a[i].outcome ? a[i].outcome : "");
        sl_buf_append(b, "}", 1);
    }
    sl_buf_append(b, "]", 1);
}

void sl_lua_log(sl_lua *lua, const sl_chain *c, int ctx_ref, int status,
                const char *backend, const sl_lua_attempt *attempts,
                int nattempts, sl_buf *record)
{
    lua_State *L = lua->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua->fn_log);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    if (backend) {
        lua_pushstring(L, backend);
        lua_setfield(L, -2, "backend");
    }
    if (!record) { /* nowhere to write the audit fields: skip building them */
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "no_audit");
    }
    if (nattempts > 0 && (c->mask & SL_PHASE_LOG) && lua_istable(L, top + 3)) {
        /* What C saw is the record of the attempts: for log plugins it
         * replaces what the runtime noted along the way (the request state
         * is ctx's). */
        push_attempts(L, attempts, nattempts);
        lua_pushvalue(L, -1);
        lua_setfield(L, top + 3, "attempts");
        lua_setfield(L, -2, "attempts");
    }
    if (nattempts > 0 && record) { /* the audit's attempts are written here */
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "attempts_written");
    }
    if (lua_pcall(L, 3, 1, 0) != 0) {
        sl_log_error("log phase failed: %s", lua_tostring(L, -1));
    } else if (record && lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        if (n >= 2 && s[0] == '{' && s[n - 1] == '}') {
            /* a JSON object: its members join the record's */
            if (n > 2) {
                sl_buf_append(record, ",", 1);
                sl_buf_append(record, s + 1, n - 2);
            }
        } else {
            sl_buf_append(record, s, n); /* members, each with a comma */
        }
    }
    if (record && nattempts > 0)
        append_attempts(record, attempts, nattempts);
    lua_settop(L, top);
}
