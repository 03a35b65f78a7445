/* lua_services.h — the C half of the runtime services plugins reach as
 * sluice.json, sluice.re, sluice.hash and sluice.shared.
 *
 * Each opener pushes one module table onto the stack and returns 1, like a
 * luaopen_* function; the Lua runtime hands plugins read-only views of them.
 * All of them are safe to expose to sandboxed code: no file, process or
 * memory access beyond their own arguments. */
#ifndef SL_LUA_SERVICES_H
#define SL_LUA_SERVICES_H

#include <lua.h>

/* sluice.json: decode(s) -> value | nil, err, err like "invalid JSON at
 * byte 17 (line 2, column 5): syntax error" (also "unexpected end of
 * input", "trailing characters after the value", "nested deeper than 200
 * levels"); encode(v) -> string | nil, err (mixed keys, sparse arrays,
 * cycles, NaN/inf, functions, depth > 200); null: lightuserdata NULL, the
 * same value as cjson.null / ngx.null; array_mt / object_mt: metatables on
 * decoded arrays and objects, one pair per lua_State, so an empty one
 * encodes back as [] or {}; empty_array() -> {} with array_mt.
 * Strings holding NUL ("\u0000") are refused by decode (cJSON strings are
 * NUL-terminated); numbers are doubles, exact integers up to 2^53. */
int sl_luaopen_json(lua_State *L);
/* Push json.locate (a closure owning its scanner state). */
void sl_json_push_locate(lua_State *L);

/* sluice.re: PCRE2 with JIT, patterns compiled once per state and cached
 * (LRU, 512 entries, keyed by pattern and flags):
 * match(s, re, flags?, init?) -> captures | nil, captures = {[0] = whole,
 *   1..n, name = ...}, an unset group is false;
 * find(s, re, flags?, init?) -> from, to, group1, ... | nil (string.find
 *   positions; init may be negative);
 * gmatch(s, re, flags?) -> iterator yielding captures tables;
 * gsub(s, re, repl, flags?, max?) -> string, count of matches; repl is a
 *   string with $0..$9, ${n}, ${name}, $$; a table looked up raw by the
 *   whole match; or a function given the captures table. nil/false from a
 *   table or function keeps the match;
 * cache_stats() -> entries, hits, misses.
 * flags: "i" caseless, "m" multiline, "s" dotall, "x" extended, "u" utf
 * ("o", "j" accepted for OpenResty compatibility). Bad patterns raise
 * "invalid regex at offset N: <PCRE2 message> (pattern: ...)"; a match
 * over the match limit (100000) raises "regex match limit exceeded". */
int sl_luaopen_re(lua_State *L);

/* sluice.hash: sha256(s) -> 64 hex chars; sha256_raw(s) -> 32 bytes;
 * hmac_sha256(key, s) -> hex; hmac_sha256_raw(key, s); equal(a, b) ->
 * boolean, time depending on #b only (pass the secret second); hex(s);
 * base64_encode / base64_decode, base64url_encode (no padding) /
 * base64url_decode (padding optional); decoders return nil, err. */
int sl_luaopen_hash(lua_State *L);

/* sluice.shared: the process-wide dictionary (shdict.h, sl_shdict_global):
 * get(key) -> value | nil; set(key, value, ttl_s?) -> true (value nil
 * deletes); add(key, value, ttl_s?) -> true | false, "exists";
 * incr(key, delta, init = 0, ttl_s?) -> new value (ttl only on creation);
 * delete(key) -> removed?; ttl(key) -> seconds left (0 = none) | nil,
 * "not found"; flush_expired() -> count dropped. Values are numbers,
 * strings or booleans. Data-dependent failures return nil, err: "no memory
 * in shared dict", "key too long", "empty key", "not a number"; argument
 * type errors raise. */
int sl_luaopen_shared(lua_State *L);

#endif
