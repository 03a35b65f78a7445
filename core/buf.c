/* buf.c — block pools and growable buffers (see buf.h). */
#include "buf.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

void sl_pool_init(sl_pool *p, size_t block, size_t max_free)
{
    p->block = block < sizeof(void *) ? sizeof(void *) : block;
    p->max_free = max_free;
    p->nfree = 0;
    p->free = NULL;
}

void *sl_pool_get(sl_pool *p)
{
    void *b = p->free;
    if (b) {
        p->free = *(void **)b;
        p->nfree--;
        return b;
    }
    return malloc(p->block);
}

void sl_pool_put(sl_pool *p, void *blk)
{
    if (!blk)
        return;
    if (p->nfree >= p->max_free) {
        free(blk);
        return;
    }
    *(void **)blk = p->free;
    p->free = blk;
    p->nfree++;
}

void sl_pool_destroy(sl_pool *p)
{
    while (p->free) {
        void *next = *(void **)p->free;
        free(p->free);
        p->free = next;
    }
    p->nfree = 0;
}

static int from_pool(const sl_buf *b)
{
    return b->pool && b->cap == b->pool->block;
}

int sl_buf_reserve(sl_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t need = b->len + extra;
    if (!b->data && b->pool && need <= b->pool->block) {
        b->data = sl_pool_get(b->pool);
        if (!b->data)
            return SL_ENOMEM;
        b->cap = b->pool->block;
        return 0;
    }
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < need)
        cap *= 2;
    char *d;
    if (from_pool(b)) {
        d = malloc(cap);
        if (!d)
            return SL_ENOMEM;
        memcpy(d, b->data, b->len);
        sl_pool_put(b->pool, b->data);
    } else {
        d = realloc(b->data, cap);
        if (!d)
            return SL_ENOMEM;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

int sl_buf_append(sl_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (sl_buf_reserve(b, n) < 0)
        return SL_ENOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int sl_buf_printf(sl_buf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = room ? vsnprintf(b->data + b->len, room, fmt, ap) : -1;
    va_end(ap);
    if (n >= 0 && (size_t)n < room) {
        b->len += (size_t)n;
        return 0;
    }
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sl_buf_reserve(b, (size_t)n + 1) < 0)
        return SL_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int sl_buf_append_u64(sl_buf *b, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return sl_buf_append(b, tmp + i, sizeof(tmp) - (size_t)i);
}

int sl_buf_append_ms(sl_buf *b, uint64_t ns)
{
    uint64_t us = (ns + 500) / 1000;
    char frac[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10),
                    (char)('0' + us % 10), 0};
    int rc = sl_buf_append_u64(b, us / 1000);
    rc |= sl_buf_append(b, ".", 1);
    return rc | sl_buf_append(b, frac, 3);
}

int sl_buf_append_json(sl_buf *b, const char *s, size_t n)
{
    int rc = 0;
    while (n > 0) { /* escaped a piece at a time: at most 6 bytes per byte */
        char out[384];
        size_t take = n < 64 ? n : 64;
        rc |= sl_buf_append(b, out, sl_json_escape(out, sizeof(out), s, take));
        s += take;
        n -= take;
    }
    return rc;
}

void sl_buf_consume(sl_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void sl_buf_release(sl_buf *b)
{
    if (b->data) {
        if (from_pool(b))
            sl_pool_put(b->pool, b->data);
        else
            free(b->data);
    }
    b->data = NULL;
    b->len = b->cap = 0;
}
