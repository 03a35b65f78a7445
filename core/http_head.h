/* http_head.h — a message head collected from llhttp's pieces.
 *
 * llhttp hands over header names and values in fragments that may span
 * reads. Both the server (requests) and the upstream client (responses)
 * copy them into one buffer with offsets, then slice it into sl_http_hdr
 * pairs once the head is complete. */
#ifndef SL_HTTP_HEAD_H
#define SL_HTTP_HEAD_H

#include "buf.h"

typedef struct sl_http_hdr {
    sl_str name;
    sl_str value;
} sl_http_hdr;

typedef struct sl_http_head {
    sl_buf buf;       /* raw bytes (a request's target), names, values */
    uint32_t *offs;   /* 4 per header: name off, len, value off, len */
    int n;            /* headers so far */
    int max;          /* most headers accepted (offs has 4 * max slots) */
    size_t max_bytes; /* most bytes buf may hold */
    uint8_t in_value;
} sl_http_head;

/* Set up h; offs (4 * max entries) is borrowed, buf blocks come from pool. */
void sl_http_head_init(sl_http_head *h, sl_pool *pool, uint32_t *offs, int max,
                       size_t max_bytes);
/* Forget the head (keep the memory) / give the memory back. */
void sl_http_head_reset(sl_http_head *h);
void sl_http_head_release(sl_http_head *h);

/* Append raw bytes that are not a header (the request target). 0,
 * SL_ETOOLARGE past max_bytes, or SL_ENOMEM. */
int sl_http_head_append(sl_http_head *h, const char *p, size_t n);
/* A piece of a header name / value: 0, SL_ETOOLARGE (bytes), SL_ETOOMANY
 * (headers) or SL_ENOMEM. */
int sl_http_head_field(sl_http_head *h, const char *p, size_t n);
int sl_http_head_value(sl_http_head *h, const char *p, size_t n);

/* Fill hdrs[0..h->n) with slices of the buffer, values without surrounding
 * whitespace; valid until the head changes. Returns h->n. */
int sl_http_head_slices(const sl_http_head *h, sl_http_hdr *hdrs);

#endif
