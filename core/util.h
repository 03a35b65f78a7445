/* util.h — small helpers with no better room: request ids, durations and
 * sizes as written in YAML, and a per-thread fast random source. */
#ifndef SL_UTIL_H
#define SL_UTIL_H

#include "common.h"

/* Per-thread xorshift state; seed once per thread from getrandom(). */
typedef struct {
    uint64_t s[2];
} sl_rand;

void sl_rand_seed(sl_rand *r);
uint64_t sl_rand_next(sl_rand *r);

/* Write a 32-hex-digit random request id plus NUL into out[33]. */
void sl_request_id(sl_rand *r, char out[33]);

/* Parse "250ms", "10s", "2m", "1h" or a bare number of milliseconds.
 * Returns 0 and sets *ms, or SL_EINVAL. */
int sl_parse_duration(const char *s, uint64_t *ms);

/* Parse "512", "64KiB", "8MiB", "1GiB" (also KB/MB/GB as powers of 1024).
 * Returns 0 and sets *bytes, or SL_EINVAL. */
int sl_parse_size(const char *s, uint64_t *bytes);

/* Split "host:port" or "[v6]:port" into host (copied into host[hostlen])
 * and port. Returns 0 or SL_EINVAL. */
int sl_parse_hostport(const char *s, char *host, size_t hostlen,
                      uint16_t *port);

/* Monotonic time in nanoseconds. */
uint64_t sl_now_ns(void);

/* Monotonic time in seconds. */
double sl_now_mono(void);

/* Format the current wall-clock time as RFC 3339 UTC with milliseconds
 * ("2026-11-25T20:17:31.123Z") into out[32]; returns the length. */
size_t sl_time_rfc3339(char out[32]);

/* Append `s` JSON-escaped (without quotes) to out, which has room for
 * cap bytes; returns bytes written (truncates safely at cap). */
size_t sl_json_escape(char *out, size_t cap, const char *s, size_t n);

/* Read a whole file into memory, NUL-terminated; *len excludes the NUL.
 * Returns 0 (caller frees *out), SL_EIO or SL_ENOMEM. */
int sl_read_file(const char *path, char **out, size_t *len);

#endif
