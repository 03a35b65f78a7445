/* lua_json_int.h — what sluice.json's decoder, encoder and json.locate share
 * (not a room's door: only lua_json*.c include it). */
#ifndef SL_LUA_JSON_INT_H
#define SL_LUA_JSON_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SL_JSON_MAX_DEPTH 200

/* How many bytes at p (at most n) a JSON string holds as they are: the run
 * before the first quote, backslash or control character. Prompts are
 * long runs of such bytes, so this looks at eight at a time: a byte is
 * flagged where v ^ '"', v ^ '\\' or v itself minus 0x20 borrows into
 * its top bit; a borrow can only flag bytes above a true hit, so the
 * lowest flag is exact. */
static inline size_t sl_json__plain_run(const char *p, size_t n)
{
    size_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    for (; i + 8 <= n; i += 8) {
        uint64_t v, q, b;
        memcpy(&v, p + i, 8);
        q = v ^ (ones * '"');
        b = v ^ (ones * '\\');
        uint64_t hit =
            ((q - ones) & ~q) | ((b - ones) & ~b) | ((v - ones * 0x20) & ~v);
        hit &= high;
        if (hit)
            return i + (size_t)(__builtin_ctzll(hit) >> 3);
    }
#endif
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\' || c < 0x20)
            break;
    }
    return i;
}

#define KEEP_BUF 65536 /* a module buffer above this is shrunk after use */

/* Per-module state in a userdata upvalue, so memory survives a Lua error:
 * the encode buffer, which decode also uses to unescape strings. */
typedef struct {
    char *p;
    size_t len, cap;
} outbuf;

/* sluice.json.encode: upvalue 1 the array metatable, 3 the outbuf. */
struct lua_State;
int sl_json__encode(struct lua_State *L);

/* The four hex digits at p as a code unit: 0, or -1 when not hex. */
int sl_json__hex4(const char *p, unsigned *out);

#endif
