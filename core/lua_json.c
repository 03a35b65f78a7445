/* lua_json.c — sluice.json: JSON to Lua and back, on the request hot path.
 *
 * decode parses straight into Lua values (no intermediate tree: a chat body
 * costs a few table and string creations), and reports where input went
 * wrong by byte, line and column. encode walks the Lua value straight into a
 * byte buffer owned by a userdata upvalue: no malloc per call once the
 * buffer has grown, and nothing leaks if Lua unwinds mid-encode.
 *
 * Choices a plugin author can see:
 * - json.null is lightuserdata NULL, the same value as cjson.null and
 *   ngx.null, so code ported from OpenResty compares equal.
 * - Decoded arrays / objects carry array_mt / object_mt, shared by every
 *   opening of the module in one lua_State, so they re-encode as [] / {}
 *   even when empty.
 * - Input holding "\u0000" (or a raw NUL byte) is rejected, as it was when
 *   cJSON parsed it; encode writes NUL as \u0000.
 * - Numbers are doubles: integers are exact up to 2^53.
 * - Object keys come out in Lua's table order, not insertion order. */
#include "lua_json_int.h"
#include "lua_services.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEEP_BUF 65536 /* encode buffer above this is shrunk after use */

static char array_mt_key, object_mt_key;

/* Per-module state in a userdata upvalue, so memory survives a Lua error:
 * the encode buffer, which decode also uses to unescape strings. */
typedef struct {
    char *p;
    size_t len, cap;
} outbuf;

/* ---- decode ------------------------------------------------------------
 *
 * A recursive-descent parser that builds Lua values as it reads: no
 * intermediate tree, no malloc per node. Strings without escapes go to Lua
 * straight from the input; escaped ones are unescaped into the module's
 * scratch buffer. Strict RFC 8259: no leading zeros, no trailing commas, no
 * control characters inside strings. */

typedef struct {
    lua_State *L;
    const char *s, *p, *end;
    int array_mt, object_mt; /* upvalue pseudo-indices */
    outbuf *scratch;
    const char *why; /* set on failure, with p at the offending byte */
} jdec;

static int dec_value(jdec *d, int depth);

static int dec_fail(jdec *d, const char *why)
{
    if (!d->why)
        d->why = why;
    return -1;
}

static void skip_ws(jdec *d)
{
    while (d->p < d->end &&
           (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int scratch_put(outbuf *b, const char *p, size_t n)
{
    if (n == 0) /* memcpy's pointers must be valid even for 0 bytes */
        return 0;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int sl_json__hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int put_utf8(outbuf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return scratch_put(b, u, n);
}

/* One escape after a backslash at d->p; appends to the scratch buffer. */
static int dec_escape(jdec *d)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (d->end - d->p < 2)
        return dec_fail(d, "unexpected end of input");
    char c = d->p[1];
    const char *m = c ? strchr(from, c) : NULL;
    if (m) {
        d->p += 2;
        return scratch_put(d->scratch, &to[m - from], 1);
    }
    if (c != 'u')
        return dec_fail(d, "invalid escape in a string");
    unsigned cp, lo;
    if (d->end - d->p < 6 || sl_json__hex4(d->p + 2, &cp) < 0)
        return dec_fail(d, "invalid \\u escape");
    if (cp == 0)
        return dec_fail(d, "NUL characters are not supported");
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return dec_fail(d, "invalid \\u escape (lone surrogate)");
    if (cp >= 0xd800 && cp <= 0xdbff) { /* a surrogate pair */
        if (d->end - d->p < 12 || d->p[6] != '\\' || d->p[7] != 'u' ||
            sl_json__hex4(d->p + 8, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
            return dec_fail(d, "invalid \\u escape (lone surrogate)");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        d->p += 6;
    }
    d->p += 6;
    return put_utf8(d->scratch, cp);
}

static int dec_string(jdec *d)
{
    const char *start = ++d->p; /* past the quote */
    const char *q = start + sl_json__plain_run(start, (size_t)(d->end - start));
    if (q < d->end && *q == '"') { /* no escapes: straight from the input */
        lua_pushlstring(d->L, start, (size_t)(q - start));
        d->p = q + 1;
        return 0;
    }
    d->scratch->len = 0;
    if (scratch_put(d->scratch, start, (size_t)(q - start)) < 0)
        return dec_fail(d, "out of memory");
    d->p = q;
    for (;;) {
        if (d->p >= d->end)
            return dec_fail(d, "unexpected end of input");
        unsigned char c = (unsigned char)*d->p;
        if (c == '"')
            break;
        if (c == '\\') {
            if (dec_escape(d) < 0)
                return dec_fail(d, "out of memory");
            continue;
        }
        if (c < 0x20)
            return dec_fail(d, c ? "control character in a string"
                                 : "NUL characters are not supported");
        const char *run = d->p;
        d->p += sl_json__plain_run(run, (size_t)(d->end - run));
        if (scratch_put(d->scratch, run, (size_t)(d->p - run)) < 0)
            return dec_fail(d, "out of memory");
    }
    lua_pushlstring(d->L, d->scratch->p, d->scratch->len);
    d->p++;
    return 0;
}

static int dec_number(jdec *d)
{
    const char *p = d->p, *start = p;
    int neg = 0, frac = 0;
    if (p < d->end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= d->end || *p < '0' || *p > '9')
        return dec_fail(d, "invalid number");
    double v = 0;
    int digits = 0;
    if (*p == '0') {
        p++;
        if (p < d->end && *p >= '0' && *p <= '9')
            return dec_fail(d, "invalid number (leading zero)");
    } else {
        while (p < d->end && *p >= '0' && *p <= '9') {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
    }
    if (p < d->end && *p == '.') {
        frac = 1;
        p++;
        if (p >= d->end || *p < '0' || *p > '9')
            return dec_fail(d, "invalid number");
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        frac = 1;
        p++;
        if (p < d->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= d->end || *p < '0' || *p > '9')
            return dec_fail(d, "invalid number");
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (!frac && digits <= 15) { /* exact: integers below 10^15 */
        lua_pushnumber(d->L, neg ? -v : v);
    } else {
        /* Lua strings end in a NUL, so strtod stops inside the input */
        lua_pushnumber(d->L, strtod(start, NULL));
    }
    d->p = p;
    return 0;
}

static int dec_literal(jdec *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return dec_fail(d, d->end - d->p < (long)n ? "unexpected end of input"
                                                   : "syntax error");
    d->p += n;
    return 0;
}

static int dec_container(jdec *d, int depth, int is_obj)
{
    lua_State *L = d->L;
    if (depth > SL_JSON_MAX_DEPTH)
        return dec_fail(d, "nested deeper than 200 levels");
    if (!lua_checkstack(L, 4))
        return dec_fail(d, "out of memory");
    char close = is_obj ? '}' : ']';
    if (is_obj)
        lua_createtable(L, 0, 4);
    else
        lua_createtable(L, 4, 0);
    d->p++;
    skip_ws(d);
    int i = 1;
    if (d->p < d->end && *d->p == close) {
        d->p++;
    } else {
        for (;;) {
            if (is_obj) {
                if (d->p >= d->end)
                    return dec_fail(d, "unexpected end of input");
                if (*d->p != '"')
                    return dec_fail(d, "expected a string key");
                if (dec_string(d) < 0)
                    return -1;
                skip_ws(d);
                if (d->p >= d->end)
                    return dec_fail(d, "unexpected end of input");
                if (*d->p != ':')
                    return dec_fail(d, "expected ':'");
                d->p++;
                skip_ws(d);
            }
            if (dec_value(d, depth + 1) < 0)
                return -1;
            if (is_obj)
                lua_rawset(L, -3);
            else
                lua_rawseti(L, -2, i++);
            skip_ws(d);
            if (d->p >= d->end)
                return dec_fail(d, "unexpected end of input");
            if (*d->p == close) {
                d->p++;
                break;
            }
            if (*d->p != ',')
                return dec_fail(d, is_obj ? "expected ',' or '}'"
                                          : "expected ',' or ']'");
            d->p++;
            skip_ws(d);
        }
    }
    lua_pushvalue(L, is_obj ? d->object_mt : d->array_mt);
    lua_setmetatable(L, -2);
    return 0;
}

static int dec_value(jdec *d, int depth)
{
    if (d->p >= d->end)
        return dec_fail(d, "unexpected end of input");
    switch (*d->p) {
    case '{':
        return dec_container(d, depth, 1);
    case '[':
        return dec_container(d, depth, 0);
    case '"':
        return dec_string(d);
    case 't':
        if (dec_literal(d, "true", 4) < 0)
            return -1;
        lua_pushboolean(d->L, 1);
        return 0;
    case 'f':
        if (dec_literal(d, "false", 5) < 0)
            return -1;
        lua_pushboolean(d->L, 0);
        return 0;
    case 'n':
        if (dec_literal(d, "null", 4) < 0)
            return -1;
        lua_pushlightuserdata(d->L, NULL);
        return 0;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return dec_number(d);
        return dec_fail(d, *d->p ? "syntax error"
                                 : "NUL characters are not supported");
    }
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

static int json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int top = lua_gettop(L);
    jdec d = {L,
              s,
              s,
              s + len,
              lua_upvalueindex(1),
              lua_upvalueindex(2),
              lua_touserdata(L, lua_upvalueindex(3)),
              NULL};
    skip_ws(&d);
    if (d.p >= d.end)
        return fail_at(L, s, len,
                       len ? "unexpected end of input" : "empty input");
    int rc = dec_value(&d, 1);
    if (rc == 0) {
        skip_ws(&d);
        if (d.p < d.end)
            rc = dec_fail(&d, "trailing characters after the value");
    }
    if (d.scratch->cap > KEEP_BUF) { /* one huge string: do not keep it */
        free(d.scratch->p);
        d.scratch->p = NULL;
        d.scratch->cap = 0;
    }
    d.scratch->len = 0;
    if (rc < 0) {
        lua_settop(L, top);
        return fail_at(L, s, (size_t)(d.p - s), d.why ? d.why : "syntax error");
    }
    return 1;
}

/* ---- encode ------------------------------------------------------------ */

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

static int outbuf_gc(lua_State *L)
{
    outbuf *b = lua_touserdata(L, 1);
    free(b->p);
    b->p = NULL;
    return 0;
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
    sl_json_push_locate(L);
    lua_setfield(L, -5, "locate");
    lua_pop(L, 1); /* buffer userdata */
    lua_setfield(L, -3, "object_mt");
    lua_setfield(L, -2, "array_mt");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
