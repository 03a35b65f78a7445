/* lua_json_encode.c — sluice.json.encode (see lua_json.c for the module
 * and its choices): a Lua value walked straight into the module's byte
 * buffer, a userdata upvalue, so nothing leaks if Lua unwinds mid-encode
 * and no malloc happens per call once the buffer has grown. */
#include "lua_json_int.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    lua_State *L;
    outbuf *b;
    int array_mt;
    const void *open[SL_JSON_MAX_DEPTH + 1]; /* tables being written: cycles */
    const char *err;
    char msg[80];
} encoder;

static const char *set_msg(encoder *en, const char *fmt, const char *what)
{
    snprintf(en->msg, sizeof(en->msg), fmt, what);
    return en->msg;
}

/* Room for n more bytes: the check is inlined at every write, the growth
 * is not. */
static int grow(encoder *en, size_t n)
{
    outbuf *b = en->b;
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

static inline int reserve(encoder *en, size_t n)
{
    outbuf *b = en->b;
    return __builtin_expect(b->cap - b->len >= n, 1) ? 0 : grow(en, n);
}

static inline int put(encoder *en, const char *s, size_t n)
{
    if (reserve(en, n) < 0)
        return -1;
    memcpy(en->b->p + en->b->len, s, n);
    en->b->len += n;
    return 0;
}

/* RFC 8259 §7: quote, backslash and the control characters must be
 * escaped; the rest is copied as it is, in runs. */
static int put_quoted(encoder *en, const char *s, size_t n, char before,
                      char after)
{
    /* worst case 6 bytes per input byte, plus quotes and the separators */
    if (reserve(en, n * 6 + 4) < 0)
        return -1;
    char *o = en->b->p + en->b->len;
    if (before)
        *o++ = before;
    *o++ = '"';
    size_t run = 0;
    for (size_t i = 0;; i++) {
        i += sl_json__plain_run(s + i, n - i);
        if (i >= n)
            break;
        unsigned char c = (unsigned char)s[i];
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
    if (after)
        *o++ = after;
    en->b->len = (size_t)(o - en->b->p);
    return 0;
}

static int put_string(encoder *en, const char *s, size_t n)
{
    return put_quoted(en, s, n, 0, 0);
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
        /* integers (counts, statuses, token numbers): no printf */
        long long v = (long long)d;
        unsigned long long u =
            v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
        char *e = tmp + sizeof(tmp), *q = e;
        do {
            *--q = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0)
            *--q = '-';
        return put(en, q, (size_t)(e - q));
    } else if (fabs(d) < 1e9) {
        /* Latencies, prices, temperatures: a few decimals. The fewest k
         * (up to 6) with m / 10^k == d for an integer m: division rounds
         * correctly and m and 10^k are exact, so d is the double nearest
         * m / 10^k, which is what a reader makes of the digits. No printf
         * on the hot path. */
        static const double p10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6};
        for (int k = 1; k <= 6; k++) {
            double m = nearbyint(d * p10[k]);
            if (m / p10[k] != d)
                continue;
            unsigned long long u = (unsigned long long)fabs(m);
            char *e = tmp + sizeof(tmp), *q = e;
            for (int i = 0; i < k; i++, u /= 10)
                *--q = (char)('0' + u % 10);
            *--q = '.';
            do {
                *--q = (char)('0' + u % 10);
                u /= 10;
            } while (u);
            if (d < 0)
                *--q = '-';
            return put(en, q, (size_t)(e - q));
        }
    }
    {
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
        if (put_quoted(en, k, kn, first ? 0 : ',', ':') < 0 ||
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
    if (depth > SL_JSON_MAX_DEPTH) {
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

int sl_json__encode(lua_State *L)
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
