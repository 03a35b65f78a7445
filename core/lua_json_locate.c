/* lua_json_locate.c — json.locate (see lua_services.h): where members of
 * a JSON object lie, for splicing instead of decoding and re-encoding.
 *
 * json.locate(s, key, ...) -> true, from, to, ... | nil: where the values of
 * the top-level members `key`… of the JSON object s lie (1-based, both
 * ends included; false, false for an absent member), so that code which
 * changes one member can splice the document instead of decoding and
 * re-encoding it. nil when s is not one JSON object the decoder would read,
 * or when a splice could be read differently than the decoded value: a key
 * written with escapes, or an object that repeats a key (parsers disagree
 * on which one wins), or an object with more keys than this checks. */

#include "lua_json_int.h"
#include "lua_services.h"

#include <lauxlib.h>
#include <string.h>

#define LOCATE_KEYS 512   /* keys of all open objects */
#define LOCATE_PER_OBJ 64 /* keys compared pairwise in one object */
#define LOCATE_WANT 8

typedef struct {
    const char *p;
    size_t n;
} span;

typedef struct {
    const char *s, *p, *end;
    int nkeys;
    int nwant;
    span want[LOCATE_WANT];
    const char *from[LOCATE_WANT], *to[LOCATE_WANT];
    span keys[LOCATE_KEYS];
} jscan;

static void scan_ws(jscan *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* Past the string at s->p (its quote), checked as dec_string would. */
static int scan_string(jscan *s, int *escaped)
{
    const char *q = s->p + 1;
    *escaped = 0;
    for (;;) {
        q += sl_json__plain_run(q, (size_t)(s->end - q));
        if (q >= s->end || (unsigned char)*q < 0x20)
            return -1;
        if (*q == '"') {
            s->p = q + 1;
            return 0;
        }
        *escaped = 1;
        if (s->end - q < 2)
            return -1;
        char c = q[1];
        if (c && strchr("\"\\/bfnrt", c)) {
            q += 2;
            continue;
        }
        unsigned cp, lo;
        if (c != 'u' || s->end - q < 6 || sl_json__hex4(q + 2, &cp) < 0 ||
            cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
            return -1;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (s->end - q < 12 || q[6] != '\\' || q[7] != 'u' ||
                sl_json__hex4(q + 8, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                return -1;
            q += 6;
        }
        q += 6;
    }
}

static int is_digit(jscan *s, const char *p)
{
    return p < s->end && *p >= '0' && *p <= '9';
}

static int scan_number(jscan *s)
{
    const char *p = s->p;
    if (p < s->end && *p == '-')
        p++;
    if (!is_digit(s, p))
        return -1;
    if (*p == '0') {
        if (is_digit(s, ++p))
            return -1;
    } else {
        while (is_digit(s, p))
            p++;
    }
    if (p < s->end && *p == '.') {
        if (!is_digit(s, ++p))
            return -1;
        while (is_digit(s, p))
            p++;
    }
    if (p < s->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < s->end && (*p == '+' || *p == '-'))
            p++;
        if (!is_digit(s, p))
            return -1;
        while (is_digit(s, p))
            p++;
    }
    s->p = p;
    return 0;
}

static int scan_value(jscan *s, int depth);

static int scan_container(jscan *s, int depth, int is_obj)
{
    if (depth > SL_JSON_MAX_DEPTH)
        return -1;
    char close = is_obj ? '}' : ']';
    int base = s->nkeys;
    s->p++;
    scan_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    for (;;) {
        int want = -1;
        if (is_obj) {
            int escaped;
            if (s->p >= s->end || *s->p != '"')
                return -1;
            const char *k = s->p + 1;
            if (scan_string(s, &escaped) < 0 || escaped)
                return -1;
            size_t kn = (size_t)(s->p - 1 - k);
            for (int i = base; i < s->nkeys; i++)
                if (s->keys[i].n == kn && memcmp(s->keys[i].p, k, kn) == 0)
                    return -1;
            if (s->nkeys - base >= LOCATE_PER_OBJ || s->nkeys >= LOCATE_KEYS)
                return -1;
            s->keys[s->nkeys].p = k;
            s->keys[s->nkeys++].n = kn;
            for (int i = 0; depth == 1 && i < s->nwant; i++)
                if (s->want[i].n == kn && memcmp(s->want[i].p, k, kn) == 0)
                    want = i;
            scan_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return -1;
            s->p++;
            scan_ws(s);
        }
        const char *v = s->p;
        if (scan_value(s, depth + 1) < 0)
            return -1;
        if (want >= 0) {
            s->from[want] = v;
            s->to[want] = s->p;
        }
        scan_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == close) {
            s->p++;
            break;
        }
        if (*s->p != ',')
            return -1;
        s->p++;
        scan_ws(s);
    }
    s->nkeys = base;
    return 0;
}

static int scan_value(jscan *s, int depth)
{
    int escaped;
    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '{':
        return scan_container(s, depth, 1);
    case '[':
        return scan_container(s, depth, 0);
    case '"':
        return scan_string(s, &escaped);
    case 't':
        return s->end - s->p >= 4 && memcmp(s->p, "true", 4) == 0
                   ? (s->p += 4, 0)
                   : -1;
    case 'f':
        return s->end - s->p >= 5 && memcmp(s->p, "false", 5) == 0
                   ? (s->p += 5, 0)
                   : -1;
    case 'n':
        return s->end - s->p >= 4 && memcmp(s->p, "null", 4) == 0
                   ? (s->p += 4, 0)
                   : -1;
    default:
        return scan_number(s);
    }
}

static int json_locate(lua_State *L)
{
    size_t len;
    const char *str = luaL_checklstring(L, 1, &len);
    int nwant = lua_gettop(L) - 1;
    luaL_argcheck(L, nwant >= 1 && nwant <= LOCATE_WANT, 2,
                  "one to eight member names");
    jscan *s = lua_touserdata(L, lua_upvalueindex(1));
    s->s = s->p = str;
    s->end = str + len;
    s->nkeys = 0;
    s->nwant = nwant;
    for (int i = 0; i < nwant; i++) {
        s->want[i].p = luaL_checklstring(L, i + 2, &s->want[i].n);
        s->from[i] = s->to[i] = NULL;
    }
    scan_ws(s);
    int ok = s->p < s->end && *s->p == '{' && scan_container(s, 1, 1) == 0;
    if (ok) {
        scan_ws(s);
        ok = s->p == s->end;
    }
    if (!ok) {
        lua_pushnil(L);
        return 1;
    }
    luaL_checkstack(L, 2 * nwant + 1, "too many members");
    lua_pushboolean(L, 1);
    for (int i = 0; i < nwant; i++) {
        if (s->from[i]) {
            lua_pushinteger(L, (lua_Integer)(s->from[i] - str) + 1);
            lua_pushinteger(L, (lua_Integer)(s->to[i] - str));
        } else {
            lua_pushboolean(L, 0);
            lua_pushboolean(L, 0);
        }
    }
    return 2 * nwant + 1;
}

void sl_json_push_locate(lua_State *L)
{
    /* the scanner's key stack (8 KiB) lives with the closure, not on the C
     * stack */
    memset(lua_newuserdata(L, sizeof(jscan)), 0, sizeof(jscan));
    lua_pushcclosure(L, json_locate, 1);
}
