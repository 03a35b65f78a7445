/* lua_crypto.h — sluice.crypto: JWS signature checks (RS256, ES256) and
 * JWKS key sets, from a file or fetched over HTTPS into a process-wide
 * cache by background threads (see lua_crypto.c).
 *
 * jwk(t) -> key | nil, err: one JWK table (kty RSA: n, e; kty EC: crv
 *   P-256, x, y) parsed once into a key userdata (locked metatable, freed
 *   by the garbage collector); RSA keys under 2048 bits are refused.
 * verify(alg, key | jwk table, signing_input, signature_bytes) -> true |
 *   false, reason. alg "RS256" or "ES256" (raw r||s, 64 bytes); any other
 *   alg is false.
 * jwks_file(path) -> text | nil, err: the file's text when it is a JWKS
 *   document (JSON object with a "keys" array, at most 1 MiB).
 * jwks(url, ttl_s, opts?) -> text, gen | false, gen (unchanged since
 *   opts.since) | nil, "pending" | nil, "error: <reason>". Never blocks on
 *   the network: a fetch (TLS verified against opts.ca_file or the system
 *   bundle; opts.timeout_ms) starts in the background when nothing is
 *   cached, when the copy is older than ttl_s, or with opts.refresh when
 *   the last fetch started opts.min_refresh_s (30) ago or more. */
#ifndef SL_LUA_CRYPTO_H
#define SL_LUA_CRYPTO_H

#include <lua.h>

/* Push the sluice.crypto module table; returns 1 like a luaopen_*. */
int sl_luaopen_crypto(lua_State *L);

/* Wait (at most max_ms) for JWKS fetches in flight to end, so that a
 * process stopping never leaves a fetch thread halfway (its TLS and
 * resolver state unfreed). */
void sl_crypto_quiesce(int max_ms);

#endif
