/* lua_json_int.h — what sluice.json's decoder and json.locate share (not a
 * room's door: only lua_json*.c include it). */
#ifndef SL_LUA_JSON_INT_H
#define SL_LUA_JSON_INT_H

#define SL_JSON_MAX_DEPTH 200

/* The four hex digits at p as a code unit: 0, or -1 when not hex. */
int sl_json__hex4(const char *p, unsigned *out);

#endif
