/* lua_crypto.c — sluice.crypto: public-key signature checks for plugins
 * that verify tokens (jwt-auth), and the key sets (JWKS) they verify with.
 *
 * Three parts:
 *   - keys: a JWK (RSA n/e or EC P-256 x/y) parsed once into an mbedTLS
 *     context held by a userdata; its metatable is locked so sandboxed code
 *     can neither reach __gc nor swap methods;
 *   - verify: RS256 (RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518 §3.3) and
 *     ES256 (ECDSA P-256 with SHA-256, signature as raw r||s, RFC 7518
 *     §3.4). Nothing else: "none" and HMAC algorithms are refused here too;
 *   - JWKS documents: read from a file, or fetched over HTTPS into a
 *     process-wide cache. A fetch runs on its own thread with the
 *     blocking client of http_fetch.c (timeouts, certificate checks), so
 *     a worker's request path only ever takes a mutex and reads what the
 *     last fetch left ("pending" until the first one lands).
 *
 * Nothing here returns key material a plugin did not hand in, and no file
 * content is returned unless it parses as a JWKS document. */
#include "http_fetch.h"
#include "log.h"
#include "lua_crypto.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY_MT "sluice.crypto.key"
#define JWKS_MAX_BYTES (1024 * 1024) /* a JWKS is a few KiB */
#define JWKS_MAX_URLS 64             /* cache entries, never freed */
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192

/* ---- base64url (RFC 4648 §5), padding optional -------------------------- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decode s into out (room for n * 3 / 4 bytes); the length, or -1. */
static long b64url_decode(const char *s, size_t n, unsigned char *out)
{
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    unsigned acc = 0;
    int bits = 0;
    long len = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    return len;
}

/* ---- keys -----------------------------------------------------------------
 */

enum { KEY_RSA = 1, KEY_EC = 2 };

typedef struct crypto_key {
    int kind; /* KEY_*, 0 once freed */
    mbedtls_rsa_context rsa;
    mbedtls_ecp_group grp;
    mbedtls_ecp_point q;
} crypto_key;

static void key_free(crypto_key *k)
{
    if (k->kind == KEY_RSA)
        mbedtls_rsa_free(&k->rsa);
    else if (k->kind == KEY_EC) {
        mbedtls_ecp_group_free(&k->grp);
        mbedtls_ecp_point_free(&k->q);
    }
    k->kind = 0;
}

static int key_gc(lua_State *L)
{
    key_free(luaL_checkudata(L, 1, KEY_MT));
    return 0;
}

static int key_tostring(lua_State *L)
{
    crypto_key *k = luaL_checkudata(L, 1, KEY_MT);
    if (k->kind == KEY_RSA)
        lua_pushfstring(L, "sluice.crypto key (RSA %d bits)",
                        (int)mbedtls_rsa_get_len(&k->rsa) * 8);
    else
        lua_pushliteral(L, "sluice.crypto key (EC P-256)");
    return 1;
}

/* A base64url member of the JWK at index t, decoded into buf (size cap).
 * Returns the length, or -1 with the reason pushed... as a C string. */
static long jwk_member(lua_State *L, int t, const char *name,
                       unsigned char *buf, size_t cap, const char **why)
{
    lua_getfield(L, t, name);
    size_t n;
    const char *s =
        lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    long len = -1;
    if (!s)
        *why = "is missing";
    else if (n / 4 * 3 + 3 > cap)
        *why = "is too long";
    else if ((len = b64url_decode(s, n, buf)) <= 0) {
        *why = "is not base64url";
        len = -1;
    }
    lua_pop(L, 1);
    return len;
}

static int push_fail(lua_State *L, const char *fmt, const char *a,
                     const char *b)
{
    lua_pushnil(L);
    lua_pushfstring(L, fmt, a, b);
    return 2;
}

static int load_rsa(lua_State *L, int t, crypto_key *k)
{
    unsigned char n[RSA_MAX_BITS / 8 + 8], e[16];
    const char *why = NULL;
    long nl = jwk_member(L, t, "n", n, sizeof(n), &why);
    if (nl < 0)
        return push_fail(L, "RSA key: n %s%s", why, "");
    long el = jwk_member(L, t, "e", e, sizeof(e), &why);
    if (el < 0)
        return push_fail(L, "RSA key: e %s%s", why, "");
    mbedtls_rsa_init(&k->rsa, MBEDTLS_RSA_PKCS_V15, 0);
    k->kind = KEY_RSA;
    if (mbedtls_rsa_import_raw(&k->rsa, n, (size_t)nl, NULL, 0, NULL, 0, NULL,
                               0, e, (size_t)el) != 0 ||
        mbedtls_rsa_complete(&k->rsa) != 0 ||
        mbedtls_rsa_check_pubkey(&k->rsa) != 0)
        return push_fail(L, "RSA key: not a valid public key%s%s", "", "");
    size_t bits = mbedtls_rsa_get_len(&k->rsa) * 8;
    if (bits < RSA_MIN_BITS)
        return push_fail(L, "RSA key: shorter than 2048 bits%s%s", "", "");
    return 0;
}

static int load_ec(lua_State *L, int t, crypto_key *k)
{
    lua_getfield(L, t, "crv");
    const char *crv = lua_tostring(L, -1);
    int p256 = crv && strcmp(crv, "P-256") == 0;
    lua_pop(L, 1);
    if (!p256)
        return push_fail(L, "EC key: only curve P-256 is supported%s%s", "",
                         "");
    unsigned char pt[1 + 64 + 8];
    const char *why = NULL;
    long xl = jwk_member(L, t, "x", pt + 1, 40, &why);
    if (xl != 32)
        return push_fail(L, "EC key: x %s%s", why ? why : "must be 32 bytes",
                         "");
    long yl = jwk_member(L, t, "y", pt + 33, 40, &why);
    if (yl != 32)
        return push_fail(L, "EC key: y %s%s", why ? why : "must be 32 bytes",
                         "");
    pt[0] = 0x04; /* SEC 1 §2.3.3: uncompressed point */
    mbedtls_ecp_group_init(&k->grp);
    mbedtls_ecp_point_init(&k->q);
    k->kind = KEY_EC;
    if (mbedtls_ecp_group_load(&k->grp, MBEDTLS_ECP_DP_SECP256R1) != 0 ||
        mbedtls_ecp_point_read_binary(&k->grp, &k->q, pt, 65) != 0 ||
        mbedtls_ecp_check_pubkey(&k->grp, &k->q) != 0)
        return push_fail(L, "EC key: not a point on P-256%s%s", "", "");
    return 0;
}

/* crypto.jwk(t) -> key | nil, err. t is one JWK as a table. */
static int crypto_jwk(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kty");
    const char *kty = lua_tostring(L, -1);
    int kind = !kty                      ? 0
               : strcmp(kty, "RSA") == 0 ? KEY_RSA
               : strcmp(kty, "EC") == 0  ? KEY_EC
                                         : 0;
    lua_pop(L, 1);
    if (!kind)
        return push_fail(L, "key type (kty) must be RSA or EC%s%s", "", "");
    crypto_key *k = lua_newuserdata(L, sizeof(*k));
    memset(k, 0, sizeof(*k));
    luaL_getmetatable(L, KEY_MT);
    lua_setmetatable(L, -2);
    int ud = lua_gettop(L);
    int r = kind == KEY_RSA ? load_rsa(L, 1, k) : load_ec(L, 1, k);
    if (r) {
        key_free(k); /* now, not at the next collection */
        return r;
    }
    lua_pushvalue(L, ud);
    return 1;
}

static int verify_with(crypto_key *k, const char *alg, const unsigned char *in,
                       size_t inlen, const unsigned char *sig, size_t siglen,
                       const char **why)
{
    unsigned char hash[32];
    if (mbedtls_sha256_ret(in, inlen, hash, 0) != 0) {
        *why = "sha256 failed";
        return 0;
    }
    if (strcmp(alg, "RS256") == 0) {
        if (k->kind != KEY_RSA) {
            *why = "RS256 needs an RSA key";
            return 0;
        }
        if (siglen != mbedtls_rsa_get_len(&k->rsa)) {
            *why = "signature length does not match the key";
            return 0;
        }
        if (mbedtls_rsa_rsassa_pkcs1_v15_verify(
                &k->rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC, MBEDTLS_MD_SHA256, 32,
                hash, sig) != 0) {
            *why = "signature does not match";
            return 0;
        }
        return 1;
    }
    if (strcmp(alg, "ES256") == 0) {
        if (k->kind != KEY_EC) {
            *why = "ES256 needs an EC P-256 key";
            return 0;
        }
        if (siglen != 64) { /* RFC 7518 §3.4: R and S, 32 bytes each */
            *why = "ES256 signature must be 64 bytes";
            return 0;
        }
        mbedtls_mpi r, s;
        mbedtls_mpi_init(&r);
        mbedtls_mpi_init(&s);
        int ok = mbedtls_mpi_read_binary(&r, sig, 32) == 0 &&
                 mbedtls_mpi_read_binary(&s, sig + 32, 32) == 0 &&
                 mbedtls_ecdsa_verify(&k->grp, hash, 32, &k->q, &r, &s) == 0;
        mbedtls_mpi_free(&r);
        mbedtls_mpi_free(&s);
        if (!ok)
            *why = "signature does not match";
        return ok;
    }
    *why = "algorithm not accepted (only RS256 and ES256)";
    return 0;
}

/* crypto.verify(alg, key | jwk table, signing_input, signature) -> true |
 * false, reason. The signature is the raw bytes (already base64url-decoded). */
static int crypto_verify(lua_State *L)
{
    const char *alg = luaL_checkstring(L, 1);
    size_t inlen, siglen;
    const unsigned char *in =
        (const unsigned char *)luaL_checklstring(L, 3, &inlen);
    const unsigned char *sig =
        (const unsigned char *)luaL_checklstring(L, 4, &siglen);
    crypto_key *k;
    if (lua_istable(L, 2)) {
        lua_pushcfunction(L, crypto_jwk);
        lua_pushvalue(L, 2);
        lua_call(L, 1, 2);
        if (lua_isnil(L, -2)) {
            lua_pushboolean(L, 0);
            lua_insert(L, -2);
            return 2;
        }
        lua_pop(L, 1);
        k = lua_touserdata(L, -1);
    } else {
        k = luaL_checkudata(L, 2, KEY_MT);
    }
    if (!k->kind)
        return luaL_error(L, "crypto.verify: the key was freed");
    const char *why = NULL;
    int ok = verify_with(k, alg, in, inlen, sig, siglen, &why);
    lua_pushboolean(L, ok);
    if (ok)
        return 1;
    lua_pushstring(L, why);
    return 2;
}

/* ---- JWKS documents -------------------------------------------------------
 */

/* Is text a JWKS document: a JSON object with a "keys" array? */
static int is_jwks(const char *text, size_t len)
{
    cJSON *doc = cJSON_ParseWithLength(text, len);
    int ok = doc && cJSON_IsObject(doc) &&
             cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "keys"));
    cJSON_Delete(doc);
    return ok;
}

/* crypto.jwks_file(path) -> text | nil, err. Only a JWKS document (at most
 * 1 MiB) comes back, so this reads key sets and nothing else. */
static int crypto_jwks_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f)
        return push_fail(L, "cannot open JWKS file %s: %s", path,
                         strerror(errno));
    char *buf = malloc(JWKS_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return luaL_error(L, "out of memory");
    }
    size_t n = fread(buf, 1, JWKS_MAX_BYTES + 1, f);
    int rerr = ferror(f);
    fclose(f);
    int r;
    if (rerr)
        r = push_fail(L, "cannot read JWKS file %s%s", path, "");
    else if (n > JWKS_MAX_BYTES)
        r = push_fail(L, "JWKS file %s is larger than 1 MiB%s", path, "");
    else if (!is_jwks(buf, n))
        r = push_fail(L,
                      "%s is not a JWKS document (a JSON object with a "
                      "\"keys\" array)%s",
                      path, "");
    else {
        lua_pushlstring(L, buf, n);
        r = 1;
    }
    free(buf);
    return r;
}

/* ---- fetching over HTTPS ---------------------------------------------------
 */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* GET url over TLS with certificate verification against ca_file (or the
 * system bundle). 0 and a malloc'ed JWKS text in *out, or -1 with a
 * reason in err. Blocking: only ever called on a fetch thread. */
static int fetch_jwks(const char *url, const char *ca_file, int timeout_ms,
                      char **out, size_t *outlen, char *err, size_t errlen)
{
    static const sl_fetch_header accept = {"Accept", "application/json"};
    sl_fetch_req rq = {.method = "GET",
                       .url = url,
                       .https_only = 1,
                       .headers = &accept,
                       .nheaders = 1,
                       .ca_file = ca_file,
                       .timeout_ms = timeout_ms,
                       .max_body = JWKS_MAX_BYTES};
    sl_fetch_res res;
    if (sl_fetch(&rq, &res, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (res.status != 200)
        snprintf(err, errlen, "HTTP status %d", res.status);
    else if (!is_jwks(res.body, res.body_len))
        snprintf(err, errlen, "the answer is not a JWKS document");
    else
        rc = 0;
    if (rc == 0) {
        *out = res.body;
        *outlen = res.body_len;
    } else {
        free(res.body);
    }
    return rc;
}

/* ---- the process-wide JWKS cache ------------------------------------------
 */

typedef struct jwks_entry {
    struct jwks_entry *next;
    char *url, *ca_file; /* the key: a URL trusted through a CA file */
    char *text;          /* last good document, or NULL */
    size_t len;
    unsigned gen;      /* bumped whenever text changes */
    double fetched_at; /* mono_s() of the last good fetch */
    double started_at; /* mono_s() when the last fetch started */
    int fetching;
    int timeout_ms;
    char err[256]; /* the last fetch's failure, "" after success */
} jwks_entry;

static pthread_mutex_t jwks_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jwks_idle = PTHREAD_COND_INITIALIZER;
static int jwks_inflight; /* fetch threads running, under jwks_lock */
static jwks_entry *jwks_head;
static int jwks_count;

/* The URL as logged: without its query (it might carry a credential). */
static void log_url(const char *url, char *out, size_t n)
{
    snprintf(out, n, "%.*s", (int)strcspn(url, "?#"), url);
}

static void *fetch_thread(void *arg)
{
    jwks_entry *e = arg;
    /* url, ca_file and timeout never change once the entry exists */
    char *text = NULL, err[256] = "";
    size_t len = 0;
    int rc = fetch_jwks(e->url, e->ca_file, e->timeout_ms, &text, &len, err,
                        sizeof(err));
    char shown[300];
    log_url(e->url, shown, sizeof(shown));
    pthread_mutex_lock(&jwks_lock);
    if (rc == 0) {
        int changed = !e->text || e->len != len || memcmp(e->text, text, len);
        if (changed) {
            free(e->text);
            e->text = text;
            e->len = len;
            e->gen++;
            text = NULL;
        }
        e->fetched_at = mono_s();
        e->err[0] = 0;
    } else {
        snprintf(e->err, sizeof(e->err), "%s", err);
    }
    e->fetching = 0;
    unsigned gen = e->gen;
    if (--jwks_inflight == 0)
        pthread_cond_broadcast(&jwks_idle);
    pthread_mutex_unlock(&jwks_lock);
    free(text);
    if (rc == 0)
        sl_log_info("jwks: fetched %s (generation %u)", shown, gen);
    else
        sl_log_warn("jwks: fetching %s failed: %s", shown, err);
    return NULL;
}

static jwks_entry *jwks_find(const char *url, const char *ca_file)
{
    for (jwks_entry *e = jwks_head; e; e = e->next)
        if (strcmp(e->url, url) == 0 &&
            strcmp(e->ca_file ? e->ca_file : "", ca_file ? ca_file : "") == 0)
            return e;
    return NULL;
}

static double opt_number(lua_State *L, int t, const char *k, double dflt)
{
    if (!lua_istable(L, t))
        return dflt;
    lua_getfield(L, t, k);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* crypto.jwks(url, ttl_s, opts?) -> text, gen | false, gen | nil, err.
 * opts: ca_file, timeout_ms (5000), since (a gen the caller holds: false
 * comes back while the cache still holds it), refresh (true: the caller
 * met an unknown kid; refetch if the last fetch started min_refresh_s
 * (30) ago or more). Starts a background fetch when nothing is cached yet
 * or the document is older than ttl_s; never waits for one. err is
 * "pending" or "error: <reason>". */
static int crypto_jwks(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    double ttl = luaL_optnumber(L, 2, 300);
    const char *ca_file = NULL;
    int refresh = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "ca_file");
        ca_file = lua_tostring(L, -1); /* kept alive by opts */
        lua_pop(L, 1);
        lua_getfield(L, 3, "refresh");
        refresh = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    double min_refresh = opt_number(L, 3, "min_refresh_s", 30);
    int timeout_ms = (int)opt_number(L, 3, "timeout_ms", 5000);
    if (timeout_ms < 100 || timeout_ms > 60000)
        timeout_ms = 5000;
    double since = opt_number(L, 3, "since", -1);
    sl_fetch_url u;
    if (sl_fetch_parse_url(url, 1, &u) != 0)
        return luaL_error(L, "crypto.jwks wants an https:// URL");

    pthread_mutex_lock(&jwks_lock);
    jwks_entry *e = jwks_find(url, ca_file);
    if (!e && jwks_count < JWKS_MAX_URLS) {
        e = calloc(1, sizeof(*e));
        if (e) {
            e->url = strdup(url);
            e->ca_file = ca_file ? strdup(ca_file) : NULL;
            e->timeout_ms = timeout_ms;
            if (!e->url || (ca_file && !e->ca_file)) {
                free(e->url);
                free(e->ca_file);
                free(e);
                e = NULL;
            } else {
                e->next = jwks_head;
                jwks_head = e;
                jwks_count++;
            }
        }
    }
    if (!e) {
        pthread_mutex_unlock(&jwks_lock);
        lua_pushnil(L);
        lua_pushliteral(L, "error: too many JWKS URLs (or out of memory)");
        return 2;
    }
    double now = mono_s();
    double since_start = now - e->started_at;
    int start;
    if (e->fetching)
        start = 0;
    else if (!e->text) /* nothing yet: retry a failure every few seconds */
        start = e->started_at == 0 ||
                since_start >= (min_refresh < 5 ? min_refresh : 5);
    else
        start = now - e->fetched_at >= ttl ||
                (refresh && since_start >= min_refresh);
    if (start) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        e->fetching = 1;
        e->started_at = now;
        jwks_inflight++;
        if (pthread_create(&th, &attr, fetch_thread, e) != 0) {
            jwks_inflight--;
            e->fetching = 0;
            snprintf(e->err, sizeof(e->err), "cannot start a fetch thread");
        }
        pthread_attr_destroy(&attr);
    }
    int nret;
    if (e->text && since == (double)e->gen) {
        lua_pushboolean(L, 0);
        lua_pushnumber(L, e->gen);
        nret = 2;
    } else if (e->text) {
        lua_pushlstring(L, e->text, e->len);
        lua_pushnumber(L, e->gen);
        nret = 2;
    } else {
        lua_pushnil(L);
        if (e->err[0])
            lua_pushfstring(L, "error: %s", e->err);
        else
            lua_pushliteral(L, "pending");
        nret = 2;
    }
    pthread_mutex_unlock(&jwks_lock);
    return nret;
}

void sl_crypto_quiesce(int max_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += max_ms / 1000;
    until.tv_nsec += (long)(max_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&jwks_lock);
    while (jwks_inflight > 0 &&
           pthread_cond_timedwait(&jwks_idle, &jwks_lock, &until) == 0)
        ;
    pthread_mutex_unlock(&jwks_lock);
}

int sl_luaopen_crypto(lua_State *L)
{
    if (luaL_newmetatable(L, KEY_MT)) {
        lua_pushcfunction(L, key_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, key_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushboolean(L, 0); /* getmetatable(key) == false in plugins */
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"jwk", crypto_jwk},   {"verify", crypto_verify},
        {"jwks", crypto_jwks}, {"jwks_file", crypto_jwks_file},
        {NULL, NULL},
    };
    lua_createtable(L, 0, (int)(sizeof(fns) / sizeof(fns[0]) - 1));
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
