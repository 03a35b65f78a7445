/* lua_re.c — sluice.re: PCRE2 regular expressions for plugins.
 *
 * Plugins pass patterns as strings on every request, so compiled code is
 * cached per lua_State, keyed by (pattern, options), in a bounded LRU (a
 * plugin building patterns from request data cannot grow it without end).
 * Patterns are JIT-compiled when the platform allows, else interpreted.
 * Every match runs under a match/depth limit and a bounded JIT stack, so a
 * catastrophic pattern raises "regex match limit exceeded" instead of
 * stalling the worker. One match-data block per state is reused; it is only
 * read right after a match, because a gsub callback may run other matches.
 *
 * Cache entries are refcounted: the cache holds one reference, and a gsub
 * or gmatch in flight holds another, so eviction during a callback (or
 * between gmatch steps) never frees code still in use. Everything is freed
 * by the cache userdata's __gc when the state closes. */
#include "lua_services.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <lauxlib.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX 512
#define NBUCKETS 1024 /* power of two */
#define MATCH_LIMIT 100000
#define DEPTH_LIMIT 10000
#define JIT_STACK_MAX (1024 * 1024)

typedef struct re_entry {
    struct re_entry *hnext;       /* hash chain */
    struct re_entry *prev, *next; /* LRU list, most recent first */
    pcre2_code *code;
    uint32_t hash, opts, ncap;
    int refs;
    size_t plen;
    char pattern[];
} re_entry;

typedef struct {
    re_entry *buckets[NBUCKETS];
    re_entry lru; /* sentinel */
    int count;
    double hits, misses;
    pcre2_match_data *md;
    uint32_t md_pairs;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
} re_cache;

static char cache_key;

static void release(re_entry *e)
{
    if (--e->refs == 0) {
        pcre2_code_free(e->code);
        free(e);
    }
}

static void evict(re_cache *c, re_entry *e)
{
    re_entry **link = &c->buckets[e->hash & (NBUCKETS - 1)];
    while (*link != e)
        link = &(*link)->hnext;
    *link = e->hnext;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    c->count--;
    release(e);
}

static int cache_gc(lua_State *L)
{
    re_cache *c = lua_touserdata(L, 1);
    while (c->count > 0)
        evict(c, c->lru.prev);
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jit_stack);
    c->md = NULL;
    c->mctx = NULL;
    c->jit_stack = NULL;
    return 0;
}

/* "o" and "j" (OpenResty's compile-once and JIT) are accepted and implied.
 * "u" is UTF-8 with Unicode properties (\b, \w and case folding beyond
 * ASCII), and a subject that is not valid UTF-8 is still searched (its
 * valid parts can match) rather than refused: a policy rule must not be
 * dodged by one bad byte. */
static uint32_t opts_from_flags(lua_State *L, int idx)
{
    static const char letters[] = "imsxuoj";
    static const uint32_t opts[] = {PCRE2_CASELESS,
                                    PCRE2_MULTILINE,
                                    PCRE2_DOTALL,
                                    PCRE2_EXTENDED,
                                    PCRE2_UTF | PCRE2_UCP |
                                        PCRE2_MATCH_INVALID_UTF,
                                    0,
                                    0};
    size_t n;
    const char *f = luaL_optlstring(L, idx, "", &n);
    uint32_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *at = f[i] ? strchr(letters, f[i]) : NULL;
        if (!at)
            luaL_argerror(L, idx,
                          lua_pushfstring(L, "unknown regex flag '%c'", f[i]));
        o |= opts[at - letters];
    }
    return o;
}

/* The bucket of a pattern: its length and its first and last 32 bytes
 * (FNV-1a). A plugin's long pattern is looked up on every call; hashing
 * all of it cost more than the match of a short message. Entries are
 * still compared whole (memcmp), so a shared bucket is only slower. */
static uint32_t hash_pattern(const char *p, size_t n, uint32_t opts)
{
    uint32_t h = (2166136261u ^ opts ^ (uint32_t)n) * 16777619u;
    size_t head = n < 32 ? n : 32;
    for (size_t i = 0; i < head; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    for (size_t i = n > 32 ? n - 32 : n; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static void lru_push_front(re_cache *c, re_entry *e)
{
    e->next = c->lru.next;
    e->prev = &c->lru;
    c->lru.next->prev = e;
    c->lru.next = e;
}

static re_entry *compile(lua_State *L, re_cache *c, const char *pat,
                         size_t plen, uint32_t opts)
{
    uint32_t h = hash_pattern(pat, plen, opts);
    re_entry **bucket = &c->buckets[h & (NBUCKETS - 1)];
    for (re_entry *e = *bucket; e; e = e->hnext) {
        if (e->hash == h && e->opts == opts && e->plen == plen &&
            memcmp(e->pattern, pat, plen) == 0) {
            c->hits++;
            e->prev->next = e->next;
            e->next->prev = e->prev;
            lru_push_front(c, e);
            return e;
        }
    }
    c->misses++;
    int err;
    PCRE2_SIZE off;
    pcre2_code *code =
        pcre2_compile((PCRE2_SPTR)pat, plen, opts, &err, &off, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        luaL_error(L, "invalid regex at offset %d: %s (pattern: %s)", (int)off,
                   (const char *)msg, pat);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* interpreter if it fails */
    re_entry *e = malloc(sizeof(re_entry) + plen + 1);
    if (!e) {
        pcre2_code_free(code);
        luaL_error(L, "out of memory compiling a regex");
    }
    e->code = code;
    e->hash = h;
    e->opts = opts;
    e->refs = 1;
    e->plen = plen;
    memcpy(e->pattern, pat, plen);
    e->pattern[plen] = '\0';
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &e->ncap);
    if (c->count >= CACHE_MAX)
        evict(c, c->lru.prev);
    e->hnext = *bucket;
    *bucket = e;
    lru_push_front(c, e);
    c->count++;
    return e;
}

static re_cache *cache_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Match-data big enough for `e`'s captures; raises only on OOM. */
static void ensure_md(lua_State *L, re_cache *c, const re_entry *e)
{
    if (c->md && c->md_pairs >= e->ncap + 1)
        return;
    pcre2_match_data *md = pcre2_match_data_create(e->ncap + 1, NULL);
    if (!md)
        luaL_error(L, "out of memory for regex match data");
    pcre2_match_data_free(c->md);
    c->md = md;
    c->md_pairs = e->ncap + 1;
}

/* > 0 matched, 0 no match, < 0 a PCRE2 error code (see raise_match). */
static int exec(re_cache *c, const re_entry *e, const char *s, size_t n,
                size_t off, uint32_t mopts)
{
    int rc = pcre2_match(e->code, (PCRE2_SPTR)s, n, off, mopts, c->md, c->mctx);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    return rc;
}

static int raise_match(lua_State *L, int rc)
{
    switch (rc) {
    case PCRE2_ERROR_MATCHLIMIT:
        return luaL_error(L, "regex match limit exceeded");
    case PCRE2_ERROR_DEPTHLIMIT:
    case PCRE2_ERROR_JIT_STACKLIMIT:
        return luaL_error(L, "regex depth limit exceeded");
    }
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    return luaL_error(L, "regex match failed: %s", (const char *)msg);
}

static void push_group(lua_State *L, const char *s, const PCRE2_SIZE *ov,
                       int rc, uint32_t i)
{
    if ((int)i >= rc || ov[2 * i] == PCRE2_UNSET)
        lua_pushboolean(L, 0);
    else
        lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
}

/* {[0] = whole, 1..n = groups (false when unset), name = group} */
static void push_captures(lua_State *L, re_cache *c, const re_entry *e,
                          const char *s, int rc)
{
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    uint32_t names = 0, esize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(e->code, PCRE2_INFO_NAMECOUNT, &names);
    lua_createtable(L, (int)e->ncap, (int)names + 1);
    for (uint32_t i = 0; i <= e->ncap; i++) {
        push_group(L, s, ov, rc, i);
        lua_rawseti(L, -2, (int)i);
    }
    if (names == 0)
        return;
    pcre2_pattern_info(e->code, PCRE2_INFO_NAMEENTRYSIZE, &esize);
    pcre2_pattern_info(e->code, PCRE2_INFO_NAMETABLE, &table);
    for (uint32_t i = 0; i < names; i++, table += esize) {
        uint32_t g = (uint32_t)table[0] << 8 | table[1];
        const char *name = (const char *)table + 2;
        /* with (?J) a name can repeat: the group that matched wins */
        if ((int)g < rc && ov[2 * g] != PCRE2_UNSET) {
            lua_rawgeti(L, -1, (int)g);
            lua_setfield(L, -2, name);
        } else {
            lua_getfield(L, -1, name);
            int seen = !lua_isnil(L, -1);
            lua_pop(L, 1);
            if (!seen) {
                lua_pushboolean(L, 0);
                lua_setfield(L, -2, name);
            }
        }
    }
}

/* string.find-style start position: 1-based, negative from the end. */
static size_t opt_init(lua_State *L, int idx, size_t n)
{
    lua_Integer i = luaL_optinteger(L, idx, 1);
    if (i < 0)
        i = (lua_Integer)n + i + 1;
    if (i < 1)
        i = 1;
    return (size_t)i - 1;
}

/* The shared start of match and find: (s, re, flags?, init?) on the stack.
 * Returns exec()'s rc after raising on errors; no match past the end. */
static int first_match(lua_State *L, re_entry **e, const char **s)
{
    size_t n, plen;
    *s = luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &plen);
    re_cache *c = cache_of(L);
    *e = compile(L, c, p, plen, opts_from_flags(L, 3));
    size_t off = opt_init(L, 4, n);
    if (off > n)
        return 0;
    ensure_md(L, c, *e);
    int rc = exec(c, *e, *s, n, off, 0);
    return rc < 0 ? raise_match(L, rc) : rc;
}

/* match(s, re, flags?, init?) -> captures | nil */
static int re_match(lua_State *L)
{
    re_entry *e;
    const char *s;
    int rc = first_match(L, &e, &s);
    if (rc == 0)
        lua_pushnil(L);
    else
        push_captures(L, cache_of(L), e, s, rc);
    return 1;
}

/* find(s, re, flags?, init?) -> from, to, captures... | nil */
static int re_find(lua_State *L)
{
    re_entry *e;
    const char *s;
    int rc = first_match(L, &e, &s);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(cache_of(L)->md);
    luaL_checkstack(L, (int)e->ncap + 2, "too many captures");
    lua_pushinteger(L, (lua_Integer)ov[0] + 1);
    lua_pushinteger(L, (lua_Integer)ov[1]);
    for (uint32_t i = 1; i <= e->ncap; i++)
        push_group(L, s, ov, rc, i);
    return 2 + (int)e->ncap;
}

/* Where a scan goes after a match ending at `end`: an empty match is
 * retried at the same place as non-empty, and only then skipped over
 * (pcre2demo's rule, so "x*|b" still finds "b"). */
typedef struct {
    size_t off;
    uint32_t mopts;
    int done;
} scan;

static size_t next_char(const re_entry *e, const char *s, size_t n, size_t i)
{
    i++;
    if (e->opts & PCRE2_UTF)
        while (i < n && ((unsigned char)s[i] & 0xc0) == 0x80)
            i++;
    return i;
}

/* Next match in `s` from the scan position; rc as exec(). The first call
 * checks UTF-8 validity, later ones skip that (it is O(n) per call). */
static int scan_next(re_cache *c, const re_entry *e, const char *s, size_t n,
                     scan *sc)
{
    for (;;) {
        if (sc->done || sc->off > n)
            return 0;
        int rc = exec(c, e, s, n, sc->off, sc->mopts);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            /* only a retry after an empty match moves on and tries again */
            if (!(sc->mopts & PCRE2_NOTEMPTY_ATSTART) || sc->off >= n) {
                sc->done = 1;
                return 0;
            }
            sc->off = next_char(e, s, n, sc->off);
            sc->mopts = PCRE2_NO_UTF_CHECK;
            continue;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        sc->off = ov[1];
        sc->mopts = PCRE2_NO_UTF_CHECK;
        if (ov[0] == ov[1])
            sc->mopts |= PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
        return rc;
    }
}

typedef struct {
    re_entry *e; /* pinned */
    scan sc;
} gmatch_state;

static int gmatch_gc(lua_State *L)
{
    gmatch_state *g = lua_touserdata(L, 1);
    if (g->e)
        release(g->e);
    g->e = NULL;
    return 0;
}

static int gmatch_iter(lua_State *L)
{
    re_cache *c = cache_of(L);
    size_t n;
    const char *s = lua_tolstring(L, lua_upvalueindex(2), &n);
    gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    ensure_md(L, c, g->e);
    int rc = scan_next(c, g->e, s, n, &g->sc);
    if (rc < 0) {
        g->sc.done = 1;
        return raise_match(L, rc);
    }
    if (rc == 0)
        return 0;
    push_captures(L, c, g->e, s, rc);
    return 1;
}

/* gmatch(s, re, flags?) -> iterator yielding captures tables */
static int re_gmatch(lua_State *L)
{
    size_t plen;
    luaL_checkstring(L, 1);
    const char *p = luaL_checklstring(L, 2, &plen);
    re_cache *c = cache_of(L);
    re_entry *e = compile(L, c, p, plen, opts_from_flags(L, 3));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    gmatch_state *g = lua_newuserdata(L, sizeof(*g));
    g->e = e;
    e->refs++;
    g->sc = (scan){0, 0, 0};
    lua_pushvalue(L, lua_upvalueindex(2)); /* metatable with __gc */
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, gmatch_iter, 3);
    return 1;
}

/* Append the replacement template: $0..$9, ${n}, ${name}, $$ for "$"; a
 * "$" before anything else is literal. Returns NULL or an error message. */
static const char *expand(luaL_Buffer *b, const re_entry *e, const char *s,
                          const PCRE2_SIZE *ov, int rc, const char *t,
                          size_t tn)
{
    for (size_t i = 0; i < tn; i++) {
        long g;
        if (t[i] != '$' || i + 1 == tn) {
            luaL_addchar(b, t[i]);
            continue;
        }
        char nx = t[i + 1];
        if (nx == '$') {
            luaL_addchar(b, '$');
            i++;
            continue;
        } else if (nx >= '0' && nx <= '9') {
            g = nx - '0';
            i++;
        } else if (nx == '{') {
            const char *name = t + i + 2;
            const char *close = memchr(name, '}', tn - i - 2);
            char buf[64];
            size_t len = close ? (size_t)(close - name) : 0;
            if (!close)
                return "unterminated ${ in replacement";
            if (len == 0 || len >= sizeof(buf))
                return "invalid ${} group name in replacement";
            memcpy(buf, name, len);
            buf[len] = '\0';
            if (strspn(buf, "0123456789") == len)
                g = strtol(buf, NULL, 10);
            else
                g = pcre2_substring_number_from_name(e->code, (PCRE2_SPTR)buf);
            if (g < 0)
                return "unknown group name in replacement";
            i = (size_t)(close - t);
        } else {
            luaL_addchar(b, '$');
            continue;
        }
        if (g > (long)e->ncap)
            return "replacement refers to a group the pattern lacks";
        if (g < rc && ov[2 * g] != PCRE2_UNSET)
            luaL_addlstring(b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
    }
    return NULL;
}

enum { GSUB_OK, GSUB_MSG, GSUB_LUAERR, GSUB_MATCHERR };

typedef struct {
    int rtype; /* of the replacement, argument 3 */
    lua_Integer max, count;
    const char *msg;
    int mrc;
} gsub_job;

/* The replacement loop. It never raises (short of OOM) so the caller can
 * drop its pin on `e` first; a callback runs under pcall for the same
 * reason, and its error is left on the stack. */
static int gsub_loop(lua_State *L, re_cache *c, re_entry *e, const char *s,
                     size_t n, gsub_job *j)
{
    luaL_Buffer b;
    size_t tn = 0, copied = 0;
    const char *t = j->rtype == LUA_TSTRING ? lua_tolstring(L, 3, &tn) : NULL;
    scan sc = {0, 0, 0};
    luaL_buffinit(L, &b);
    while (j->max < 0 || j->count < j->max) {
        ensure_md(L, c, e);
        int rc = scan_next(c, e, s, n, &sc);
        if (rc < 0) {
            j->mrc = rc;
            return GSUB_MATCHERR;
        }
        if (rc == 0)
            break;
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        luaL_addlstring(&b, s + copied, ms - copied);
        copied = me;
        j->count++;
        if (t) {
            if ((j->msg = expand(&b, e, s, ov, rc, t, tn)) != NULL)
                return GSUB_MSG;
            continue;
        }
        if (j->rtype == LUA_TTABLE) {
            lua_pushlstring(L, s + ms, me - ms);
            lua_rawget(L, 3);
        } else {
            lua_pushvalue(L, 3);
            push_captures(L, c, e, s, rc);
            if (lua_pcall(L, 1, 1, 0) != 0)
                return GSUB_LUAERR;
        }
        if (!lua_toboolean(L, -1)) {
            lua_pop(L, 1);
            luaL_addlstring(&b, s + ms, me - ms);
        } else if (lua_isstring(L, -1)) {
            luaL_addvalue(&b);
        } else {
            j->msg = "gsub replacement must give a string, number, nil or "
                     "false";
            return GSUB_MSG;
        }
    }
    luaL_addlstring(&b, s + copied, n - copied);
    luaL_pushresult(&b);
    return GSUB_OK;
}

/* gsub(s, re, repl, flags?, max?) -> string, count. A table replacement is
 * looked up raw by the whole match; a function gets the captures table.
 * nil or false from either keeps the match as it was. */
static int re_gsub(lua_State *L)
{
    size_t n, plen;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &plen);
    gsub_job j = {lua_type(L, 3), luaL_optinteger(L, 5, -1), 0, NULL, 0};
    if (j.rtype == LUA_TNUMBER) {
        lua_tostring(L, 3);
        j.rtype = LUA_TSTRING;
    }
    if (j.rtype != LUA_TSTRING && j.rtype != LUA_TTABLE &&
        j.rtype != LUA_TFUNCTION)
        luaL_argerror(L, 3, "string, table or function expected");
    re_cache *c = cache_of(L);
    re_entry *e = compile(L, c, p, plen, opts_from_flags(L, 4));
    lua_settop(L, 5);
    e->refs++;
    int st = gsub_loop(L, c, e, s, n, &j);
    release(e);
    switch (st) {
    case GSUB_MSG:
        return luaL_error(L, "%s", j.msg);
    case GSUB_LUAERR:
        return lua_error(L);
    case GSUB_MATCHERR:
        return raise_match(L, j.mrc);
    }
    lua_pushinteger(L, j.count);
    return 2;
}

/* cache_stats() -> entries, hits, misses (for tests and tuning) */
static int re_cache_stats(lua_State *L)
{
    re_cache *c = cache_of(L);
    lua_pushinteger(L, c->count);
    lua_pushnumber(L, c->hits);
    lua_pushnumber(L, c->misses);
    return 3;
}

int sl_luaopen_re(lua_State *L)
{
    lua_pushlightuserdata(L, &cache_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        re_cache *c = lua_newuserdata(L, sizeof(re_cache));
        memset(c, 0, sizeof(*c));
        c->lru.next = c->lru.prev = &c->lru;
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, cache_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        c->mctx = pcre2_match_context_create(NULL);
        c->jit_stack = pcre2_jit_stack_create(32 * 1024, JIT_STACK_MAX, NULL);
        if (!c->mctx)
            return luaL_error(L, "out of memory creating the regex cache");
        pcre2_set_match_limit(c->mctx, MATCH_LIMIT);
        pcre2_set_depth_limit(c->mctx, DEPTH_LIMIT);
        if (c->jit_stack)
            pcre2_jit_stack_assign(c->mctx, NULL, c->jit_stack);
        lua_pushlightuserdata(L, &cache_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    int cache = lua_gettop(L);
    lua_createtable(L, 0, 1); /* gmatch state metatable */
    lua_pushcfunction(L, gmatch_gc);
    lua_setfield(L, -2, "__gc");
    int gmt = lua_gettop(L);

    lua_createtable(L, 0, 6);
    static const luaL_Reg fns[] = {
        {"match", re_match}, {"find", re_find},
        {"gsub", re_gsub},   {"cache_stats", re_cache_stats},
        {NULL, NULL},
    };
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushvalue(L, cache);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    lua_pushvalue(L, cache);
    lua_pushvalue(L, gmt);
    lua_pushcclosure(L, re_gmatch, 2);
    lua_setfield(L, -2, "gmatch");
    lua_replace(L, cache);
    lua_settop(L, cache);
    return 1;
}
