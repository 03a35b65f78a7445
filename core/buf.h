/* buf.h — per-worker block pools and growable byte buffers.
 *
 * The hot path allocates nothing it can reuse: a worker keeps free lists of
 * fixed-size blocks, and a buffer starts on a pooled block, moving to the
 * heap only when it outgrows one. Neither is thread-safe: each belongs to
 * one worker. */
#ifndef SL_BUF_H
#define SL_BUF_H

#include "common.h"
#include <stdarg.h>

typedef struct sl_pool {
    size_t block;    /* bytes per block */
    size_t max_free; /* blocks kept on the free list at most */
    size_t nfree;
    void *free; /* singly linked through the first word of each block */
} sl_pool;

void sl_pool_init(sl_pool *p, size_t block, size_t max_free);
/* A block of p->block bytes, or NULL. Give it back with sl_pool_put(). */
void *sl_pool_get(sl_pool *p);
void sl_pool_put(sl_pool *p, void *blk);
void sl_pool_destroy(sl_pool *p);

/* A growable buffer. `pool` (may be NULL) supplies the first block. */
typedef struct sl_buf {
    char *data;
    size_t len;
    size_t cap;
    sl_pool *pool;
} sl_buf;

static inline void sl_buf_init(sl_buf *b, sl_pool *pool)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->pool = pool;
}

/* Make room for `extra` more bytes: 0 or SL_ENOMEM. */
int sl_buf_reserve(sl_buf *b, size_t extra);
int sl_buf_append(sl_buf *b, const void *p, size_t n);
static inline int sl_buf_puts(sl_buf *b, const char *s)
{
    return sl_buf_append(b, s, strlen(s));
}
int sl_buf_printf(sl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Append a decimal number. */
int sl_buf_append_u64(sl_buf *b, uint64_t v);
/* Append nanoseconds as milliseconds with three decimals ("12.345"). */
int sl_buf_append_ms(sl_buf *b, uint64_t ns);
/* Append n bytes escaped for the inside of a JSON string. */
int sl_buf_append_json(sl_buf *b, const char *s, size_t n);
/* Drop the first n bytes. */
void sl_buf_consume(sl_buf *b, size_t n);
/* Give the memory back (to the pool when it came from it). */
void sl_buf_release(sl_buf *b);

#endif
