/* lua_alloc.c — the memory of a worker's Lua state: the budget that
 * refuses growth past it, and small-block pools.
 *
 * A request on the default chain makes and frees about 150 Lua objects
 * (tables, their parts, strings), nearly all of them under 256 bytes.
 * Blocks up to POOL_MAX bytes come from per-size free lists carved out of
 * slabs: a pop and a push instead of a general allocator's bins and
 * coalescing (measured: ~10% of the chain's instructions went to
 * allocation). Larger blocks come from malloc. The pools only grow; what
 * they hold is the state's peak of small objects, and it is all released
 * with the state.
 *
 * Vector code (PCRE2's JIT, LuaJIT's string functions) reads a subject 16
 * bytes at a time and may read up to 15 bytes past a string's end, which
 * LuaJIT's own allocator tolerates by serving from large zeroed arenas.
 * So here too: slabs are zeroed and end TAIL_PAD bytes early, and large
 * blocks carry TAIL_PAD zeroed bytes after them, so that such reads stay
 * inside memory we own and initialised (valgrind checks the rest).
 *
 * This needs a state created with our allocator from its first object,
 * which LuaJIT allows in its 64-bit GC mode (GC64, the default on x86-64
 * and arm64). Where lua_newstate refuses, the state is LuaJIT's own and
 * only the budget applies. */
#include "lua_state.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define POOL_STEP 16 /* LuaJIT objects are 8- or 16-byte aligned */
#define POOL_MAX 256
#define POOL_SLAB (64 * 1024)
#define TAIL_PAD 16 /* see below */

static unsigned pool_class(size_t n)
{
    return (unsigned)((n + POOL_STEP - 1) / POOL_STEP);
}

static void *pool_get(sl_lua *lua, size_t n)
{
    unsigned c = pool_class(n);
    void *p = lua->pool_free[c];
    if (p) {
        memcpy(&lua->pool_free[c], p, sizeof(void *));
        return p;
    }
    size_t size = (size_t)c * POOL_STEP;
    if ((size_t)(lua->slab_end - lua->slab_next) < size) {
        /* a new slab; its first bytes link it to the previous one */
        char *slab = calloc(1, POOL_SLAB);
        if (!slab)
            return NULL;
        memcpy(slab, &lua->slabs, sizeof(void *));
        lua->slabs = slab;
        lua->slab_next = slab + POOL_STEP;
        lua->slab_end = slab + POOL_SLAB - TAIL_PAD;
    }
    p = lua->slab_next;
    lua->slab_next += size;
    return p;
}

static void pool_put(sl_lua *lua, void *p, size_t n)
{
    unsigned c = pool_class(n);
    memcpy(p, &lua->pool_free[c], sizeof(void *));
    lua->pool_free[c] = p;
}

/* A large block of n bytes and its zeroed tail: a new one, or ptr grown or
 * shrunk. */
static void *large(void *ptr, size_t n)
{
    char *p = ptr ? realloc(ptr, n + TAIL_PAD) : malloc(n + TAIL_PAD);
    if (p)
        memset(p + n, 0, TAIL_PAD);
    return p;
}

/* A block of nsize bytes for one of osize (0: none): pooled when small.
 * Lua passes the size it asked for, so the size says where a block came
 * from. */
static void *pooled_realloc(sl_lua *lua, void *ptr, size_t osize, size_t nsize)
{
    if (nsize == 0) {
        if (!ptr)
            return NULL;
        if (osize <= POOL_MAX)
            pool_put(lua, ptr, osize);
        else
            free(ptr);
        return NULL;
    }
    if (!ptr)
        return nsize <= POOL_MAX ? pool_get(lua, nsize) : large(NULL, nsize);
    if (osize > POOL_MAX && nsize > POOL_MAX)
        return large(ptr, nsize);
    if (osize <= POOL_MAX && nsize <= POOL_MAX &&
        pool_class(nsize) == pool_class(osize))
        return ptr;
    void *p = nsize <= POOL_MAX ? pool_get(lua, nsize) : large(NULL, nsize);
    /* Lua counts on a shrink never failing: then the block stays (and is
     * later freed to the smaller class, which it more than fills) */
    if (!p)
        return nsize < osize ? ptr : NULL;
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    if (osize <= POOL_MAX)
        pool_put(lua, ptr, osize);
    else
        free(ptr);
    return p;
}

/* Counts what the state holds and refuses growth past the budget. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sl_lua *lua = ud;
    if (ptr == NULL)
        osize = 0; /* Lua passes a type tag here for new objects */
    if (nsize == 0) {
        lua->mem_total -= osize;
        if (lua->pooled)
            return pooled_realloc(lua, ptr, osize, 0);
        return lua->base_alloc(lua->base_ud, ptr, osize, 0);
    }
    if (lua->mem_limit && nsize > osize &&
        lua->mem_total + (nsize - osize) > lua->mem_limit)
        return NULL; /* LuaJIT raises "not enough memory" in the plugin */
    void *p = lua->pooled ? pooled_realloc(lua, ptr, osize, nsize)
                          : lua->base_alloc(lua->base_ud, ptr, osize, nsize);
    if (p)
        lua->mem_total += nsize - osize;
    return p;
}

lua_State *sl_lua__newstate(sl_lua *lua)
{
    lua->pooled = 1;
    lua_State *L = lua_newstate(lua_alloc, lua);
    if (L)
        return L;
    lua->pooled = 0; /* not a GC64 build: LuaJIT's allocator, wrapped */
    L = luaL_newstate();
    if (L) {
        lua->base_alloc = lua_getallocf(L, &lua->base_ud);
        lua_setallocf(L, lua_alloc, lua);
    }
    return L;
}

void sl_lua__close(sl_lua *lua)
{
    if (!lua->pooled) {
        /* give LuaJIT its allocator back: it releases its arena whole */
        lua_setallocf(lua->L, lua->base_alloc, lua->base_ud);
        lua_close(lua->L);
        return;
    }
    lua_close(lua->L);
    while (lua->slabs) {
        char *slab = lua->slabs;
        memcpy(&lua->slabs, slab, sizeof(void *));
        free(slab);
    }
}
