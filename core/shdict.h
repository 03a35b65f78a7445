/* shdict.h — the process-wide shared dictionary: the one piece of mutable
 * state that worker threads share (rate-limit counters, quotas, caches).
 *
 * Keys are byte strings of 1..SL_SHD_MAX_KEY bytes; values are numbers
 * (double), strings (up to SL_SHD_MAX_VALUE bytes) or booleans, each with an
 * optional TTL measured on the monotonic clock. Every operation is atomic
 * with respect to the others on the same key. The dictionary holds at most
 * `max_entries` live entries; when it is full of live entries writes fail
 * with SL_ENOMEM rather than evicting anything, so a counter never silently
 * resets. Expired entries are dropped lazily (on access, and when a write
 * finds the dictionary full) or by sl_shdict_flush_expired(). */
#ifndef SL_SHDICT_H
#define SL_SHDICT_H

#include <stddef.h>

#include "common.h"

#define SL_SHD_MAX_KEY 1024            /* bytes */
#define SL_SHD_MAX_VALUE (1024 * 1024) /* bytes of a string value */
#define SL_SHD_DEFAULT_ENTRIES 65536   /* for the lazily made global */

/* Positive (non-error) outcome of sl_shdict_add: the key already exists. */
#define SL_SHD_EXISTS 1

typedef struct sl_shdict sl_shdict;

typedef enum {
    SL_SHD_NIL = 0, /* no such key (only ever seen in a get result) */
    SL_SHD_NUMBER,
    SL_SHD_STRING,
    SL_SHD_BOOLEAN,
} sl_shd_type;

/* A value going in (the dictionary copies `str`) or coming out of
 * sl_shdict_get. On the way out a string lives in `inline_buf` when it fits,
 * else in a malloc'd block: release it with sl_shd_value_free(), and do not
 * copy the struct while `str` is in use (it may point into itself). */
typedef struct {
    sl_shd_type type;
    int boolean;
    double num;
    const char *str;
    size_t len;
    char *heap; /* owned copy when the string did not fit */
    char inline_buf[256];
} sl_shd_value;

/* A new, empty dictionary for at most `max_entries` live entries (>= 1);
 * NULL when out of memory. Free it with sl_shdict_free(). */
sl_shdict *sl_shdict_new(size_t max_entries);

/* Free a dictionary; no other thread may be using it. */
void sl_shdict_free(sl_shdict *d);

/* Look `key` up. Returns 1 and fills `out` when found, 0 (and sets
 * out->type to SL_SHD_NIL) when missing or expired, or SL_EINVAL for a bad
 * key. `ttl_left`, when not NULL, gets the seconds left (0 = no expiry). */
int sl_shdict_get(sl_shdict *d, const char *key, size_t klen, sl_shd_value *out,
                  double *ttl_left);

/* Release whatever sl_shdict_get allocated in `v`. */
void sl_shd_value_free(sl_shd_value *v);

/* Store `v` under `key` with a TTL in seconds (0 = never expires);
 * SL_SHD_NIL deletes. Returns 0, SL_EINVAL (bad key or value),
 * SL_ETOOLARGE (value over SL_SHD_MAX_VALUE) or SL_ENOMEM (full). */
int sl_shdict_set(sl_shdict *d, const char *key, size_t klen,
                  const sl_shd_value *v, double ttl);

/* Like set, but only when `key` is absent or expired: returns 0 when
 * stored, SL_SHD_EXISTS when a live entry is already there, or an error. */
int sl_shdict_add(sl_shdict *d, const char *key, size_t klen,
                  const sl_shd_value *v, double ttl);

/* Add `delta` to the number under `key` and store the result in `*out`.
 * A missing key is created as init + delta with `ttl` (0 = none); an
 * existing key keeps its TTL. Returns 0, SL_EINVAL when the existing value
 * is not a number, or SL_ENOMEM when the key is new and the dict is full. */
int sl_shdict_incr(sl_shdict *d, const char *key, size_t klen, double delta,
                   double init, double ttl, double *out);

/* Remove `key`; returns 1 if a live entry was removed, else 0. */
int sl_shdict_delete(sl_shdict *d, const char *key, size_t klen);

/* Seconds left before `key` expires into `*left` (0 = no expiry). Returns
 * 1 when the key is live, 0 when missing. */
int sl_shdict_ttl(sl_shdict *d, const char *key, size_t klen, double *left);

/* Drop every expired entry now; returns how many were dropped. */
size_t sl_shdict_flush_expired(sl_shdict *d);

/* Entries currently stored, expired ones not yet dropped included. */
size_t sl_shdict_count(sl_shdict *d);

/* The process-wide dictionary. main.c installs one with
 * sl_shdict_set_global() before starting workers; if none was installed,
 * the first call makes one with SL_SHD_DEFAULT_ENTRIES (thread-safe). It is
 * never freed by this room. */
sl_shdict *sl_shdict_global(void);

/* Install `d` as the process-wide dictionary; call before any worker runs.
 * The caller keeps ownership of `d`. */
void sl_shdict_set_global(sl_shdict *d);

#endif
