/* proxy_head.c — what crosses the proxy toward a backend: the request
 * head for each attempt. Headers cross by rule, not by accident: hop-by-hop
 * headers (RFC 9110 §7.6.1) and those the client names in Connection stay
 * behind, the client's credentials never travel upstream (the backend's
 * own come from policy), and framing is recomputed. */
#include "proxy_req.h"

#include <stdio.h>
#include <strings.h>

/* ---- header rules ------------------------------------------------------- */

int sl_proxy__is_hop_by_hop(const sl_str *n)
{
    switch (n->n) {
    case 2:
        return sl_ieq(n->p, 2, "te");
    case 7:
        return sl_ieq(n->p, 7, "trailer") || sl_ieq(n->p, 7, "upgrade");
    case 10:
        return sl_ieq(n->p, 10, "connection") || sl_ieq(n->p, 10, "keep-alive");
    case 14:
        return sl_ieq(n->p, 14, "content-length");
    case 16:
        return sl_ieq(n->p, 16, "proxy-connection");
    case 17:
        return sl_ieq(n->p, 17, "transfer-encoding");
    }
    return 0;
}

/* Request headers the gateway consumes or sets itself. */
static int is_gateway_request_header(const sl_str *n)
{
    switch (n->n) {
    case 4:
        return sl_ieq(n->p, 4, "host");
    case 6:
        return sl_ieq(n->p, 6, "expect");
    case 7:
        return sl_ieq(n->p, 7, "api-key");
    case 9:
        return sl_ieq(n->p, 9, "x-api-key");
    case 12:
        return sl_ieq(n->p, 12, "x-request-id");
    case 14:
        return sl_ieq(n->p, 14, "x-goog-api-key");
    case 13:
        return sl_ieq(n->p, 13, "authorization");
    case 19:
        return sl_ieq(n->p, 19, "proxy-authorization");
    }
    return 0;
}

/* Is `name` one of the comma-separated tokens of a Connection value? */
static int listed_in_connection(const sl_str *conn, const sl_str *name)
{
    const char *p = conn->p, *end = conn->p + conn->n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *t = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - t) == name->n && strncasecmp(t, name->p, name->n) == 0)
            return 1;
    }
    return 0;
}

/* Headers as a plugin left them: "name: value\r\n" lines into hdrs. */
int sl_proxy__parse_lines(const sl_buf *b, sl_http_hdr *hdrs, int max)
{
    int n = 0;
    const char *p = b->data, *end = b->data + b->len;
    while (p < end && n < max) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (!eol || !colon || colon > eol)
            break;
        hdrs[n].name = (sl_str){p, (size_t)(colon - p)};
        hdrs[n].value = (sl_str){colon + 2, (size_t)(eol - colon - 2)};
        n++;
        p = eol + 2;
    }
    return n;
}

int sl_proxy__build_head(preq *q)
{
    sl_http_req *r = q->r;
    const sl_backend *be = q->be;
    sl_buf *h = &q->head;
    const sl_buf *body = q->v.body_changed ? &q->v.body : &r->body;
    sl_http_hdr edited[256];
    const sl_http_hdr *hdrs = r->headers;
    int nhdrs = r->nheaders;
    if (q->v.headers_changed) {
        nhdrs = sl_proxy__parse_lines(&q->v.headers, edited, 256);
        hdrs = edited;
    }
    const sl_str *conn = NULL;
    for (int i = 0; i < nhdrs; i++)
        if (sl_ieq(hdrs[i].name.p, hdrs[i].name.n, "connection"))
            conn = &hdrs[i].value;
    h->len = 0;
    int rc = 0;
    rc |= sl_buf_append(h, r->method_name.p, r->method_name.n);
    rc |= sl_buf_append(h, " ", 1);
    rc |= sl_buf_puts(h, be->path_prefix);
    if (q->v.ai)
        rc |= sl_buf_append(h, q->path.data, q->path.len);
    else
        rc |= sl_buf_append(h, r->url.p, r->url.n);
    rc |= sl_buf_puts(h, " HTTP/1.1\r\nhost: ");
    rc |= sl_buf_puts(h, be->host_header);
    rc |= sl_buf_puts(h, "\r\n");
    for (int i = 0; i < nhdrs; i++) {
        const sl_http_hdr *hd = &hdrs[i];
        if (sl_proxy__is_hop_by_hop(&hd->name) ||
            is_gateway_request_header(&hd->name) ||
            (conn && listed_in_connection(conn, &hd->name)))
            continue;
        rc |= sl_buf_append(h, hd->name.p, hd->name.n);
        rc |= sl_buf_append(h, ": ", 2);
        rc |= sl_buf_append(h, hd->value.p, hd->value.n);
        rc |= sl_buf_append(h, "\r\n", 2);
    }
    if (body->len > 0 || r->method == HTTP_POST || r->method == HTTP_PUT ||
        r->method == HTTP_PATCH) {
        rc |= sl_buf_puts(h, "content-length: ");
        rc |= sl_buf_append_u64(h, body->len);
        rc |= sl_buf_puts(h, "\r\n");
    }
    if (be->credential) {
        /* The backend's own credential, from policy; the client's never
         * travels upstream. */
        const char *name = "authorization: Bearer ";
        if (strcmp(be->provider, "azure") == 0)
            name = "api-key: ";
        else if (strcmp(be->provider, "anthropic") == 0)
            name = "x-api-key: ";
        else if (strcmp(be->provider, "gemini") == 0)
            name = "x-goog-api-key: ";
        rc |= sl_buf_puts(h, name);
        rc |= sl_buf_puts(h, be->credential);
        rc |= sl_buf_puts(h, "\r\n");
    }
    rc |= sl_buf_puts(h, "x-request-id: ");
    rc |= sl_buf_puts(h, r->id);
    rc |= sl_buf_puts(h, "\r\n\r\n");
    return rc ? SL_ENOMEM : 0;
}
