/* lua_json.c — sluice.json: JSON to Lua and back, on the request hot path.
 *
 * decode parses straight into Lua values (no intermediate tree: a chat body
 * costs a few table and string creations), and reports where input went
 * wrong by byte, line and column. encode (lua_json_encode.c) walks the Lua
 * value straight into a byte buffer owned by a userdata upvalue: no malloc
 * per call once the buffer has grown, and nothing leaks if Lua unwinds
 * mid-encode.
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

static char array_mt_key, object_mt_key;

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

static int outbuf_gc(lua_State *L)
{
    outbuf *b = lua_touserdata(L, 1);
    free(b->p);
    b->p = NULL;
    return 0;
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
    lua_pushcclosure(L, sl_json__encode, 3);
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
