/* common.h — error codes, slices and small helpers every room uses.
 *
 * Functions across the runtime return 0 or a negative SL_E* code; the caller
 * decides what a client sees. sl_strerror() names a code for logs. */
#ifndef SL_COMMON_H
#define SL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    SL_OK = 0,
    SL_ENOMEM = -1,       /* allocation failed */
    SL_EINVAL = -2,       /* bad argument or input */
    SL_EIO = -3,          /* I/O error */
    SL_ETIMEDOUT = -4,    /* a deadline passed */
    SL_ECONNREFUSED = -5, /* peer refused the connection */
    SL_ECONNRESET = -6,   /* peer reset or closed too early */
    SL_EDNS = -7,         /* name resolution failed */
    SL_ETLS = -8,         /* TLS handshake or record error */
    SL_EPROTO = -9,       /* peer spoke malformed HTTP */
    SL_ETOOLARGE = -10,   /* a configured limit was exceeded */
    SL_EAGAIN = -11,      /* not ready yet: call again with more input */
    SL_EEOF = -12,        /* orderly end of stream */
    SL_ECONFIG = -13,     /* configuration rejected */
    SL_ECANCELED = -14,   /* the operation was canceled by its owner */
    SL_ECONNECT = -15,    /* connect failed (unreachable, other reasons) */
    SL_ETOOMANY = -16,    /* too many items (headers, entries) */
};

/* A static, human-readable name for an SL_E* code. */
const char *sl_strerror(int err);

/* A borrowed byte range; never owns its memory. */
typedef struct {
    const char *p;
    size_t n;
} sl_str;

#define SL_STR(lit) ((sl_str){(lit), sizeof(lit) - 1})
#define SL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Case-insensitive comparison of `s` (length n) with a NUL-terminated
 * lowercase literal; used for HTTP header names. */
int sl_ieq(const char *s, size_t n, const char *lower);

#endif
