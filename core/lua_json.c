/* lua_json.c — sluice.json: JSON to Lua and back, on the request hot path.
 *
 * decode lets cJSON parse (it reports where input went wrong) and converts
 * its tree to Lua tables sized from the child counts. encode walks the Lua
 * value straight into a byte buffer owned by a userdata upvalue: no cJSON
 * tree, no malloc per call once the buffer has grown, and nothing leaks if
 * Lua unwinds mid-encode.
 *
 * Choices a plugin author can see:
 * - json.null is lightuserdata NULL, the same value as cjson.null and
 *   ngx.null, so code ported from OpenResty compares equal.
 * - Decoded arrays / objects carry array_mt / object_mt, shared by every
 *   opening of the module in one lua_State, so they re-encode as [] / {}
 *   even when empty.
 * - cJSON keeps strings NUL-terminated, so input holding "\u0000" (or a raw
 *   NUL byte) is rejected rather than silently truncated. encode writes NUL
 *   as \u0000.
 * - Numbers are doubles: integers are exact up to 2^53.
 * - Object keys come out in Lua's table order, not insertion order. */
#include "lua_services.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 200
#define KEEP_BUF 65536 /* encode buffer above this is shrunk after use */

static char array_mt_key, object_mt_key;

/* Per-module state in a userdata upvalue, so memory survives a Lua error:
 * the encode buffer, and the cJSON tree of a decode in progress (freed by
 * the next decode or __gc if converting it raised). */
typedef struct {
    char *p;
    size_t len, cap;
    cJSON *pending;
} outbuf;

/* ---- decode ------------------------------------------------------------ */

typedef struct {
    lua_State *L;
    int array_mt, object_mt; /* upvalue pseudo-indices */
} decoder;

static int push_node(decoder *dc, const cJSON *n, int depth);

static int push_children(decoder *dc, const cJSON *n, int depth, int is_obj)
{
    lua_State *L = dc->L;
    int count = 0;
    for (const cJSON *c = n->child; c; c = c->next)
        count++;
    if (depth > MAX_DEPTH)
        return -1;
    if (!lua_checkstack(L, 4))
        return -1;
    if (is_obj)
        lua_createtable(L, 0, count);
    else
        lua_createtable(L, count, 0);
    int i = 1;
    for (const cJSON *c = n->child; c; c = c->next) {
        if (is_obj)
            lua_pushstring(L, c->string ? c->string : "");
        if (push_node(dc, c, depth + 1) < 0)
            return -1;
        if (is_obj)
            lua_rawset(L, -3);
        else
            lua_rawseti(L, -2, i++);
    }
    lua_pushvalue(L, is_obj ? dc->object_mt : dc->array_mt);
    lua_setmetatable(L, -2);
    return 0;
}

/* -1 means "nested too deeply"; the partial result is left for Lua to
 * collect. */
static int push_node(decoder *dc, const cJSON *n, int depth)
{
    lua_State *L = dc->L;
    switch (n->type & 0xff) {
    case cJSON_NULL:
        lua_pushlightuserdata(L, NULL);
        return 0;
    case cJSON_False:
        lua_pushboolean(L, 0);
        return 0;
    case cJSON_True:
        lua_pushboolean(L, 1);
        return 0;
    case cJSON_Number:
        lua_pushnumber(L, n->valuedouble);
        return 0;
    case cJSON_String:
        lua_pushstring(L, n->valuestring);
        return 0;
    case cJSON_Array:
        return push_children(dc, n, depth, 0);
    case cJSON_Object:
        return push_children(dc, n, depth, 1);
    }
    lua_pushnil(L);
    return 0;
}

static int fail_at(lua_State *L, const char *s, size_t off, const char *why)
{
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (s[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    lua_pushnil(L);
    lua_pushfstring(L, "invalid JSON at byte %d (line %d, column %d): %s",
                    (int)off + 1, (int)line, (int)col, why);
    return 2;
}

/* Walk brackets and strings in s[0..end): returns the offset where
 * nesting first passes MAX_DEPTH, or -1; `open` says whether a string or
 * container is still open at `end`. Only used on error paths. */
static long scan_depth(const char *s, size_t end, int *open)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < end; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > MAX_DEPTH)
                return (long)i;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    *open = in_str || depth > 0;
    return -1;
}

/* cJSON's error position is bare, and clamped to the last byte when input
 * runs out: name the reason, and move `*off` past the end for the latter. */
static const char *diagnose(const char *s, size_t *off, size_t len)
{
    int open = 0;
    long deep = scan_depth(s, *off + 1 < len ? *off + 1 : len, &open);
    if (deep >= 0) {
        *off = (size_t)deep;
        return "nested deeper than 200 levels";
    }
    if (*off + 1 >= len && open) {
        *off = len;
        return "unexpected end of input";
    }
    return "syntax error";
}

/* Offset of a "\u0000" escape or a raw NUL byte, or -1. Jumping from
 * backslash to backslash keeps this near memchr speed on chat bodies, and
 * skipping the escaped character keeps "\\u0000" (a literal backslash)
 * from counting. */
static long find_nul(const char *s, size_t len)
{
    const char *raw = memchr(s, '\0', len);
    const char *p = s, *end = raw ? raw : s + len;
    while (p < end && (p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && memcmp(p + 1, "u0000", 5) == 0)
            return (long)(p - s);
        p += 2;
    }
    return raw ? (long)(raw - s) : -1;
}

static int json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!root) {
        size_t off = end && end >= s ? (size_t)(end - s) : 0;
        if (len == 0)
            return fail_at(L, s, 0, "empty input");
        const char *why = diagnose(s, &off, len);
        return fail_at(L, s, off, why);
    }
    size_t off = (size_t)(end - s);
    while (off < len && (s[off] == ' ' || s[off] == '\t' || s[off] == '\n' ||
                         s[off] == '\r'))
        off++;
    if (off < len) {
        cJSON_Delete(root);
        return fail_at(L, s, off, "trailing characters after the value");
    }
    long nul = find_nul(s, len);
    if (nul >= 0) {
        cJSON_Delete(root);
        return fail_at(L, s, (size_t)nul, "NUL characters are not supported");
    }
    outbuf *ub = lua_touserdata(L, lua_upvalueindex(3));
    cJSON_Delete(ub->pending);
    ub->pending = root;
    decoder dc = {L, lua_upvalueindex(1), lua_upvalueindex(2)};
    int top = lua_gettop(L);
    int rc = push_node(&dc, root, 1);
    ub->pending = NULL;
    cJSON_Delete(root);
    if (rc < 0) {
        int open;
        long deep = scan_depth(s, len, &open);
        lua_settop(L, top);
        return fail_at(L, s, deep >= 0 ? (size_t)deep : 0,
                       "nested deeper than 200 levels");
    }
    return 1;
}

/* ---- encode ------------------------------------------------------------ */

typedef struct {
    lua_State *L;
    outbuf *b;
    int array_mt;
    const void *open[MAX_DEPTH + 1]; /* tables being written: cycles */
    const char *err;
    char msg[80];
} encoder;

static const char *set_msg(encoder *en, const char *fmt, const char *what)
{
    snprintf(en->msg, sizeof(en->msg), fmt, what);
    return en->msg;
}

static int outbuf_gc(lua_State *L)
{
    outbuf *b = lua_touserdata(L, 1);
    free(b->p);
    b->p = NULL;
    cJSON_Delete(b->pending);
    b->pending = NULL;
    return 0;
}

static int reserve(encoder *en, size_t n)
{
    outbuf *b = en->b;
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        en->err = "out of memory";
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put(encoder *en, const char *s, size_t n)
{
    if (reserve(en, n) < 0)
        return -1;
    memcpy(en->b->p + en->b->len, s, n);
    en->b->len += n;
    return 0;
}

/* 0: copy as is; 1: short escape; 2: \u00XX. RFC 8259 §7: quote,
 * backslash and the control characters must be escaped. */
/* clang-format off */
static const unsigned char esc_class[256] = {
    2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 1, 1, 2, 2, /* 0x00 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50: '\\' */
};                                                  /* the rest: 0 */
/* clang-format on */

static int put_string(encoder *en, const char *s, size_t n)
{
    /* worst case 6 bytes per input byte, plus quotes */
    if (reserve(en, n * 6 + 2) < 0)
        return -1;
    char *o = en->b->p + en->b->len;
    *o++ = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!esc_class[c])
            continue;
        memcpy(o, s + run, i - run);
        o += i - run;
        run = i + 1;
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            o += sprintf(o, "u%04x", c);
        }
    }
    memcpy(o, s + run, n - run);
    o += n - run;
    *o++ = '"';
    en->b->len = (size_t)(o - en->b->p);
    return 0;
}

static int put_number(encoder *en, double d)
{
    if (!isfinite(d)) {
        en->err = "cannot encode NaN or infinity";
        return -1;
    }
    char tmp[32];
    int n;
    if (d == (double)(long long)d && fabs(d) < 1e18) {
        n = snprintf(tmp, sizeof(tmp), "%lld", (long long)d);
    } else {
        /* shortest of %.15g / %.17g that reads back as the same double */
        n = snprintf(tmp, sizeof(tmp), "%.15g", d);
        if (strtod(tmp, NULL) != d)
            n = snprintf(tmp, sizeof(tmp), "%.17g", d);
    }
    return put(en, tmp, (size_t)n);
}

static int put_value(encoder *en, int idx, int depth);

/* A key that fits neither an array nor an object; pops the key/value pair
 * lua_next left. */
static int bad_key(encoder *en)
{
    int t = lua_type(en->L, -2);
    if (t == LUA_TSTRING || t == LUA_TNUMBER)
        en->err = "cannot encode a table with mixed keys";
    else
        en->err = set_msg(en, "cannot encode a table key of type %s",
                          lua_typename(en->L, t));
    lua_pop(en->L, 2);
    return -1;
}

static int put_array(encoder *en, int idx, int depth, size_t n)
{
    lua_State *L = en->L;
    if (put(en, "[", 1) < 0)
        return -1;
    for (size_t i = 1; i <= n; i++) {
        if (i > 1 && put(en, ",", 1) < 0)
            return -1;
        lua_rawgeti(L, idx, (int)i);
        int rc = put_value(en, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        if (rc < 0)
            return -1;
    }
    return put(en, "]", 1);
}

/* Called with the first key/value pair from lua_next on the stack. */
static int put_object(encoder *en, int idx, int depth)
{
    lua_State *L = en->L;
    int first = 1;
    if (put(en, "{", 1) < 0)
        return -1;
    do {
        if (lua_type(L, -2) != LUA_TSTRING)
            return bad_key(en);
        size_t kn;
        const char *k = lua_tolstring(L, -2, &kn);
        if ((!first && put(en, ",", 1) < 0) || put_string(en, k, kn) < 0 ||
            put(en, ":", 1) < 0 ||
            put_value(en, lua_gettop(L), depth + 1) < 0) {
            lua_pop(L, 2);
            return -1;
        }
        first = 0;
        lua_pop(L, 1);
    } while (lua_next(L, idx));
    return put(en, "}", 1);
}

static int put_table(encoder *en, int idx, int depth)
{
    lua_State *L = en->L;
    if (depth > MAX_DEPTH) {
        en->err = "cannot encode: nested deeper than 200 levels";
        return -1;
    }
    const void *self = lua_topointer(L, idx);
    for (int i = 1; i < depth; i++) {
        if (en->open[i] == self) {
            en->err = "cannot encode a table that contains itself";
            return -1;
        }
    }
    en->open[depth] = self;
    if (!lua_checkstack(L, 6)) {
        en->err = "cannot encode: Lua stack exhausted";
        return -1;
    }
    int marked_array = 0;
    if (lua_getmetatable(L, idx)) {
        marked_array = lua_rawequal(L, -1, en->array_mt);
        lua_pop(L, 1);
    }
    if (marked_array)
        return put_array(en, idx, depth, lua_objlen(L, idx));

    lua_pushnil(L);
    if (!lua_next(L, idx))
        return put(en, "{}", 2);
    if (lua_type(L, -2) == LUA_TSTRING)
        return put_object(en, idx, depth);

    /* Keys must be exactly 1..n to make an array. */
    size_t count = 0;
    double max = 0;
    do {
        double k;
        if (lua_type(L, -2) != LUA_TNUMBER)
            return bad_key(en);
        k = lua_tonumber(L, -2);
        if (k < 1 || k != floor(k))
            return bad_key(en);
        if (k > max)
            max = k;
        count++;
        lua_pop(L, 1);
    } while (lua_next(L, idx));
    if ((double)count != max) {
        en->err = "cannot encode a sparse array";
        return -1;
    }
    return put_array(en, idx, depth, count);
}

static int put_value(encoder *en, int idx, int depth)
{
    lua_State *L = en->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return put(en, "null", 4);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? put(en, "true", 4) : put(en, "false", 5);
    case LUA_TNUMBER:
        return put_number(en, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_string(en, s, n);
    }
    case LUA_TTABLE:
        return put_table(en, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return put(en, "null", 4);
        /* fall through */
    default:
        en->err = set_msg(en, "cannot encode a value of type %s",
                          luaL_typename(L, idx));
        return -1;
    }
}

static int json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    encoder en = {L,
                  lua_touserdata(L, lua_upvalueindex(3)),
                  lua_upvalueindex(1),
                  {0},
                  NULL,
                  {0}};
    en.b->len = 0;
    int rc = put_value(&en, 1, 1);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, en.err);
    } else {
        lua_pushlstring(L, en.b->p, en.b->len);
    }
    if (en.b->cap > KEEP_BUF) {
        free(en.b->p);
        en.b->p = NULL;
        en.b->cap = 0;
    }
    return rc < 0 ? 2 : 1;
}

static int json_empty_array(lua_State *L)
{
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);
    return 1;
}

/* One metatable per lua_State, whoever opens the module first. */
static void push_shared_mt(lua_State *L, void *key, const char *kind)
{
    lua_pushlightuserdata(L, key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "__jsontype");
    lua_pushlightuserdata(L, key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

int sl_luaopen_json(lua_State *L)
{
    lua_createtable(L, 0, 8);
    push_shared_mt(L, &array_mt_key, "array");
    int amt = lua_gettop(L);
    push_shared_mt(L, &object_mt_key, "object");
    int omt = lua_gettop(L);

    outbuf *b = lua_newuserdata(L, sizeof(outbuf));
    memset(b, 0, sizeof(*b));
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, outbuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    int ub = lua_gettop(L);

    lua_pushvalue(L, amt);
    lua_pushvalue(L, omt);
    lua_pushvalue(L, ub);
    lua_pushcclosure(L, json_decode, 3);
    lua_setfield(L, -5, "decode");
    lua_pushvalue(L, amt);
    lua_pushvalue(L, omt);
    lua_pushvalue(L, ub);
    lua_pushcclosure(L, json_encode, 3);
    lua_setfield(L, -5, "encode");
    lua_pushvalue(L, amt);
    lua_pushcclosure(L, json_empty_array, 1);
    lua_setfield(L, -5, "empty_array");
    lua_pop(L, 1); /* buffer userdata */
    lua_setfield(L, -3, "object_mt");
    lua_setfield(L, -2, "array_mt");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
