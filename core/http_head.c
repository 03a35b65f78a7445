/* http_head.c — message heads from llhttp's fragments (see http_head.h). */
#include "http_head.h"

void sl_http_head_init(sl_http_head *h, sl_pool *pool, uint32_t *offs, int max,
                       size_t max_bytes)
{
    sl_buf_init(&h->buf, pool);
    h->offs = offs;
    h->max = max;
    h->max_bytes = max_bytes;
    h->n = 0;
    h->in_value = 0;
}

void sl_http_head_reset(sl_http_head *h)
{
    h->buf.len = 0;
    h->n = 0;
    h->in_value = 0;
}

void sl_http_head_release(sl_http_head *h)
{
    sl_buf_release(&h->buf);
    h->n = 0;
    h->in_value = 0;
}

int sl_http_head_append(sl_http_head *h, const char *p, size_t n)
{
    if (h->buf.len + n > h->max_bytes)
        return SL_ETOOLARGE;
    return sl_buf_append(&h->buf, p, n);
}

int sl_http_head_field(sl_http_head *h, const char *p, size_t n)
{
    if (h->in_value || h->n == 0) { /* a new header starts */
        if (h->n >= h->max)
            return SL_ETOOMANY;
        uint32_t *o = &h->offs[h->n * 4];
        o[0] = (uint32_t)h->buf.len;
        o[1] = o[2] = o[3] = 0;
        h->n++;
        h->in_value = 0;
    }
    h->offs[(h->n - 1) * 4 + 1] += (uint32_t)n;
    return sl_http_head_append(h, p, n);
}

int sl_http_head_value(sl_http_head *h, const char *p, size_t n)
{
    if (h->n == 0)
        return SL_EINVAL;
    uint32_t *o = &h->offs[(h->n - 1) * 4];
    if (!h->in_value) {
        o[2] = (uint32_t)h->buf.len;
        h->in_value = 1;
    }
    o[3] += (uint32_t)n;
    return sl_http_head_append(h, p, n);
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int sl_http_head_slices(const sl_http_head *h, sl_http_hdr *hdrs)
{
    const char *base = h->buf.data;
    for (int i = 0; i < h->n; i++) {
        const uint32_t *o = &h->offs[i * 4];
        sl_str v = {base + o[2], o[3]};
        while (v.n && is_ows(v.p[0])) { /* RFC 9112 §5.1: OWS around values */
            v.p++;
            v.n--;
        }
        while (v.n && is_ows(v.p[v.n - 1]))
            v.n--;
        hdrs[i].name = (sl_str){base + o[0], o[1]};
        hdrs[i].value = v;
    }
    return h->n;
}
