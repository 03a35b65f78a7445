/* lua_hash.c — sluice.hash: digests, HMAC, constant-time comparison and
 * hex/base64 codecs for plugins that check signatures or API keys.
 *
 * SHA-256 and HMAC come from mbedTLS. base64 is written here because one
 * decoder serves both alphabets with optional padding (JWTs and webhook
 * signatures arrive either way), which mbedtls_base64_decode does not do.
 * Decoders return nil, err on bad input; nothing here raises on data. */
#include "lua_services.h"

#include <lauxlib.h>
#include <mbedtls/md.h>
#include <mbedtls/sha256.h>
#include <string.h>

static void push_hex(lua_State *L, const unsigned char *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        luaL_addchar(&b, digits[p[i] >> 4]);
        luaL_addchar(&b, digits[p[i] & 15]);
    }
    luaL_pushresult(&b);
}

static void sha256_of(lua_State *L, unsigned char out[32])
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (mbedtls_sha256_ret((const unsigned char *)s, n, out, 0) != 0)
        luaL_error(L, "sha256 failed");
}

static int hash_sha256(lua_State *L)
{
    unsigned char d[32];
    sha256_of(L, d);
    push_hex(L, d, 32);
    return 1;
}

static int hash_sha256_raw(lua_State *L)
{
    unsigned char d[32];
    sha256_of(L, d);
    lua_pushlstring(L, (const char *)d, 32);
    return 1;
}

static void hmac_of(lua_State *L, unsigned char out[32])
{
    size_t kn, n;
    const char *k = luaL_checklstring(L, 1, &kn);
    const char *s = luaL_checklstring(L, 2, &n);
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (!md || mbedtls_md_hmac(md, (const unsigned char *)k, kn,
                               (const unsigned char *)s, n, out) != 0)
        luaL_error(L, "hmac_sha256 failed");
}

static int hash_hmac_sha256(lua_State *L)
{
    unsigned char d[32];
    hmac_of(L, d);
    push_hex(L, d, 32);
    return 1;
}

static int hash_hmac_sha256_raw(lua_State *L)
{
    unsigned char d[32];
    hmac_of(L, d);
    lua_pushlstring(L, (const char *)d, 32);
    return 1;
}

/* Time depends on #b only (pass the secret or expected value second), never
 * on where the contents differ or on #a. */
static int hash_equal(lua_State *L)
{
    size_t na, nb;
    const unsigned char *a =
        (const unsigned char *)luaL_checklstring(L, 1, &na);
    const unsigned char *b =
        (const unsigned char *)luaL_checklstring(L, 2, &nb);
    volatile unsigned char acc = 0;
    size_t diff = na ^ nb;
    for (size_t i = 0; i < nb; i++) {
        /* past the end of a, stay in bounds and keep looping; the length
         * mismatch is already in `diff` */
        unsigned char ca = i < na ? a[i] : (unsigned char)~b[i];
        acc |= (unsigned char)(ca ^ b[i]);
    }
    lua_pushboolean(L, (acc | (diff != 0)) == 0);
    return 1;
}

static int hash_hex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    push_hex(L, (const unsigned char *)s, n);
    return 1;
}

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int encode_b64(lua_State *L, const char *alphabet, int pad)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        luaL_addchar(&b, alphabet[v >> 18]);
        luaL_addchar(&b, alphabet[(v >> 12) & 63]);
        luaL_addchar(&b, alphabet[(v >> 6) & 63]);
        luaL_addchar(&b, alphabet[v & 63]);
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        luaL_addchar(&b, alphabet[v >> 18]);
        luaL_addchar(&b, alphabet[(v >> 12) & 63]);
        if (i + 1 < n)
            luaL_addchar(&b, alphabet[(v >> 6) & 63]);
        else if (pad)
            luaL_addchar(&b, '=');
        if (pad)
            luaL_addchar(&b, '=');
    }
    luaL_pushresult(&b);
    return 1;
}

static int b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Padding is optional, but when present it must complete the last quad. */
static int decode_b64(lua_State *L, int url)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    size_t data = n;
    while (data > 0 && s[data - 1] == '=' && n - data < 2)
        data--;
    if ((data != n && n % 4 != 0) || data % 4 == 1)
        goto bad;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < data; i++) {
        int v = b64_value(s[i], url);
        if (v < 0)
            goto bad;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            luaL_addchar(&b, (char)((acc >> bits) & 0xff));
        }
    }
    if (acc & ((1u << bits) - 1)) /* non-canonical trailing bits */
        goto bad;
    luaL_pushresult(&b);
    return 1;
bad:
    lua_settop(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, url ? "invalid base64url" : "invalid base64");
    return 2;
}

static int hash_base64_encode(lua_State *L)
{
    return encode_b64(L, b64_std, 1);
}

static int hash_base64url_encode(lua_State *L)
{
    return encode_b64(L, b64_url, 0);
}

static int hash_base64_decode(lua_State *L)
{
    return decode_b64(L, 0);
}

static int hash_base64url_decode(lua_State *L)
{
    return decode_b64(L, 1);
}

int sl_luaopen_hash(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"sha256", hash_sha256},
        {"sha256_raw", hash_sha256_raw},
        {"hmac_sha256", hash_hmac_sha256},
        {"hmac_sha256_raw", hash_hmac_sha256_raw},
        {"equal", hash_equal},
        {"hex", hash_hex},
        {"base64_encode", hash_base64_encode},
        {"base64_decode", hash_base64_decode},
        {"base64url_encode", hash_base64url_encode},
        {"base64url_decode", hash_base64url_decode},
        {NULL, NULL},
    };
    lua_createtable(L, 0, (int)(sizeof(fns) / sizeof(fns[0]) - 1));
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
