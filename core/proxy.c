/* proxy.c — forward one client request to one backend and stream the
 * answer back (see proxy.h).
 *
 * Headers cross the proxy by rule, not by accident: hop-by-hop headers
 * (RFC 9110 §7.6.1) and those the client names in Connection stay behind,
 * the client's credentials never travel upstream (backends get theirs from
 * policy), and framing is recomputed on each side. */
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>

#define CLIENT_HIGH_WATER (256 * 1024) /* pause the backend above this */

struct sl_proxy {
    sl_up *up;
    sl_accesslog *alog;
    sl_policy *policy;
    sl_pool preqs; /* per-request state blocks */
};

typedef struct preq {
    sl_proxy *px;
    sl_http_req *r;
    sl_policy *policy;
    const sl_backend *be;
    sl_up_exchange *x;
    sl_buf head; /* the request head as sent upstream */
    uv_buf_t bufs[2];
    int paused;
    sl_up_result res;
} preq;

/* ---- header rules ------------------------------------------------------- */

static int is_hop_by_hop(const sl_str *n)
{
    switch (n->n) {
    case 2: return sl_ieq(n->p, 2, "te");
    case 7: return sl_ieq(n->p, 7, "trailer") || sl_ieq(n->p, 7, "upgrade");
    case 10: return sl_ieq(n->p, 10, "connection") ||
                    sl_ieq(n->p, 10, "keep-alive");
    case 14: return sl_ieq(n->p, 14, "content-length");
    case 16: return sl_ieq(n->p, 16, "proxy-connection");
    case 17: return sl_ieq(n->p, 17, "transfer-encoding");
    }
    return 0;
}

/* Request headers the gateway consumes or sets itself. */
static int is_gateway_request_header(const sl_str *n)
{
    switch (n->n) {
    case 4: return sl_ieq(n->p, 4, "host");
    case 6: return sl_ieq(n->p, 6, "expect");
    case 7: return sl_ieq(n->p, 7, "api-key");
    case 9: return sl_ieq(n->p, 9, "x-api-key");
    case 12: return sl_ieq(n->p, 12, "x-request-id");
    case 13: return sl_ieq(n->p, 13, "authorization");
    case 19: return sl_ieq(n->p, 19, "proxy-authorization");
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

static int build_upstream_head(preq *q)
{
    sl_http_req *r = q->r;
    const sl_backend *be = q->be;
    sl_buf *h = &q->head;
    const sl_str *conn = sl_http_header(r, "connection");
    int rc = 0;
    rc |= sl_buf_append(h, r->method_name.p, r->method_name.n);
    rc |= sl_buf_append(h, " ", 1);
    rc |= sl_buf_puts(h, be->path_prefix);
    rc |= sl_buf_append(h, r->url.p, r->url.n);
    rc |= sl_buf_puts(h, " HTTP/1.1\r\nhost: ");
    rc |= sl_buf_puts(h, be->host_header);
    rc |= sl_buf_puts(h, "\r\n");
    for (int i = 0; i < r->nheaders; i++) {
        const sl_http_hdr *hd = &r->headers[i];
        if (is_hop_by_hop(&hd->name) || is_gateway_request_header(&hd->name) ||
            (conn && listed_in_connection(conn, &hd->name)))
            continue;
        rc |= sl_buf_append(h, hd->name.p, hd->name.n);
        rc |= sl_buf_append(h, ": ", 2);
        rc |= sl_buf_append(h, hd->value.p, hd->value.n);
        rc |= sl_buf_append(h, "\r\n", 2);
    }
    if (r->body.len > 0 || r->method == HTTP_POST || r->method == HTTP_PUT ||
        r->method == HTTP_PATCH) {
        rc |= sl_buf_puts(h, "content-length: ");
        rc |= sl_buf_append_u64(h, r->body.len);
        rc |= sl_buf_puts(h, "\r\n");
    }
    rc |= sl_buf_puts(h, "x-request-id: ");
    rc |= sl_buf_puts(h, r->id);
    rc |= sl_buf_puts(h, "\r\n\r\n");
    return rc ? SL_ENOMEM : 0;
}

/* ---- access log ----------------------------------------------------------- */

static void access_log(sl_accesslog *alog, sl_http_req *r, const preq *q,
                       const char *error)
{
    sl_buf *b = sl_access_line(alog);
    if (!b)
        return;
    char ts[32], path[512];
    sl_time_rfc3339(ts);
    size_t pl = sl_json_escape(path, sizeof(path), r->path.p, r->path.n);
    double ms = (double)(sl_now_ns() - r->start_ns) / 1e6;
    /* The query string is not logged: some providers take keys there. */
    sl_buf_printf(b,
                  "{\"time\":\"%s\",\"request_id\":\"%s\",\"client\":\"%s\","
                  "\"method\":\"%.*s\",\"path\":\"%.*s\",\"status\":%d,"
                  "\"bytes\":%llu,\"duration_ms\":%.3f",
                  ts, r->id, r->client_addr, (int)r->method_name.n,
                  r->method_name.p, (int)pl, path, r->status,
                  (unsigned long long)r->bytes_sent, ms);
    if (q && q->be) {
        sl_buf_printf(b,
                      ",\"backend\":\"%s\",\"upstream_status\":%d,"
                      "\"upstream_reused\":%s,\"upstream_head_ms\":%.3f",
                      q->be->name, q->res.status,
                      q->res.reused ? "true" : "false",
                      (double)q->res.head_ns / 1e6);
        if (q->res.err) {
            char d[300];
            const char *det = q->res.detail ? q->res.detail : "";
            size_t dl = sl_json_escape(d, sizeof(d), det, strlen(det));
            sl_buf_printf(b, ",\"upstream_error\":\"%s\",\"upstream_phase\":\"%s\","
                             "\"upstream_detail\":\"%.*s\"",
                          sl_strerror(q->res.err),
                          q->res.phase ? q->res.phase : "", (int)dl, d);
        }
    }
    if (error)
        sl_buf_printf(b, ",\"error\":\"%s\"", error);
    sl_buf_puts(b, "}\n");
    sl_access_commit(alog);
}

/* ---- request lifetime ------------------------------------------------------- */

static void preq_free(preq *q)
{
    sl_buf_release(&q->head);
    if (q->policy)
        sl_policy_unref(q->policy);
    q->r->handler_data = NULL;
    sl_pool_put(&q->px->preqs, q);
}

static void up_head(void *data, int status, const sl_http_hdr *hdrs, int n,
                    int64_t content_length)
{
    preq *q = data;
    sl_http_req *r = q->r;
    sl_http_response_begin(r, status);
    for (int i = 0; i < n; i++) {
        const sl_http_hdr *h = &hdrs[i];
        if (is_hop_by_hop(&h->name) ||
            (h->name.n == 12 && sl_ieq(h->name.p, 12, "x-request-id")))
            continue;
        sl_http_response_header(r, h->name.p, h->name.n, h->value.p,
                                h->value.n);
    }
    sl_http_response_header(r, "x-sluice-backend", 16, q->be->name,
                            strlen(q->be->name));
    sl_http_response_head_end(r, content_length);
}

static void up_body(void *data, const char *p, size_t n)
{
    preq *q = data;
    sl_http_response_body(q->r, p, n);
}

static void up_read_done(void *data)
{
    preq *q = data;
    sl_http_response_flush(q->r);
    if (!q->paused && sl_http_write_pending(q->r) > CLIENT_HIGH_WATER) {
        q->paused = 1; /* a slow client must not make us buffer the stream */
        sl_up_pause(q->x);
    }
}

/* Answer the client for a failed attempt. Frees q first: the error answer
 * may start the connection's next pipelined request, which reuses r. */
static void answer_upstream_error(preq *q)
{
    const sl_up_result *res = &q->res;
    sl_http_req *r = q->r;
    char msg[300];
    const char *code = "upstream_error";
    const char *why = "the backend failed";
    int status = 502;
    switch (res->err) {
    case SL_ETIMEDOUT:
        status = 504;
        code = "upstream_timeout";
        why = "the backend did not answer in time";
        break;
    case SL_ECONNREFUSED:
    case SL_ECONNECT:
        code = "upstream_connect_error";
        why = "cannot connect to the backend";
        break;
    case SL_EDNS:
        code = "upstream_dns_error";
        why = "cannot resolve the backend's host";
        break;
    case SL_ETLS:
        code = "upstream_tls_error";
        why = "the TLS connection to the backend failed";
        break;
    case SL_EPROTO:
        code = "upstream_protocol_error";
        why = "the backend sent a malformed response";
        break;
    case SL_ECONNRESET:
        code = "upstream_reset";
        why = "the backend closed the connection";
        break;
    case SL_ECANCELED:
        status = 503;
        code = "shutting_down";
        why = "the gateway is shutting down";
        break;
    }
    snprintf(msg, sizeof(msg), "%s (backend '%s')", why, q->be->name);
    preq_free(q);
    sl_http_send_error(r, status, "upstream_error", code, msg);
}

static void up_done(void *data, const sl_up_result *res)
{
    preq *q = data;
    sl_http_req *r = q->r;
    q->res = *res;
    q->x = NULL;
    if (res->err && res->detail)
        sl_log_warn("request %s: backend %s: %s: %s", r->id, q->be->name,
                    sl_strerror(res->err), res->detail);
    if (res->err == 0) {
        access_log(q->px->alog, r, q, NULL);
        preq_free(q);
        sl_http_response_end(r);
    } else if (!r->head_sent) {
        r->status = res->err == SL_ETIMEDOUT ? 504 : 502;
        access_log(q->px->alog, r, q, NULL);
        answer_upstream_error(q);
    } else {
        /* Part of the answer is out: a clean end would be a lie. */
        access_log(q->px->alog, r, q, "upstream failed mid-response");
        preq_free(q);
        sl_http_response_abort(r);
    }
}

static const sl_up_cbs up_cbs = {
    .on_head = up_head,
    .on_body = up_body,
    .on_read_done = up_read_done,
    .on_done = up_done,
};

static void on_request(sl_http_req *r, void *data)
{
    sl_proxy *px = data;
    sl_policy *pol = px->policy;
    if (!pol || pol->default_backend < 0) {
        r->status = 503;
        access_log(px->alog, r, NULL, "no backend");
        sl_http_send_error(r, 503, "server_error", "no_backend",
                           "no backend is configured for this request");
        return;
    }
    preq *q = sl_pool_get(&px->preqs);
    if (!q) {
        sl_http_send_error(r, 500, "server_error", "internal_error",
                           "out of memory");
        return;
    }
    memset(q, 0, sizeof(*q));
    q->px = px;
    q->r = r;
    q->policy = pol;
    sl_policy_ref(pol);
    q->be = &pol->backends[pol->default_backend];
    sl_buf_init(&q->head, NULL);
    r->handler_data = q;
    if (build_upstream_head(q) < 0) {
        preq_free(q);
        sl_http_send_error(r, 500, "server_error", "internal_error",
                           "out of memory");
        return;
    }
    q->bufs[0] = uv_buf_init(q->head.data, (unsigned)q->head.len);
    q->bufs[1] = uv_buf_init(r->body.data, (unsigned)r->body.len);
    int rc = sl_up_start(px->up, q->be, q->bufs, r->body.len ? 2 : 1,
                         r->method == HTTP_HEAD, &up_cbs, q, &q->x);
    if (rc < 0) {
        q->res.err = rc;
        r->status = 502;
        access_log(px->alog, r, q, NULL);
        answer_upstream_error(q);
    }
}

static void on_abort(sl_http_req *r, void *data)
{
    sl_proxy *px = data;
    preq *q = r->handler_data;
    if (!q)
        return;
    if (q->x)
        sl_up_cancel(q->x); /* the backend stops working for nobody */
    r->status = 499;
    access_log(px->alog, r, q, "client closed the connection");
    preq_free(q);
}

static void on_drain(sl_http_req *r, void *data)
{
    preq *q = r->handler_data;
    if (q && q->paused && q->x) {
        q->paused = 0;
        sl_up_resume(q->x);
    }
}

static void on_rejected(sl_http_req *r, const char *code, void *data)
{
    sl_proxy *px = data;
    access_log(px->alog, r, NULL, code);
}

sl_proxy *sl_proxy_new(sl_up *up, sl_accesslog *alog)
{
    sl_proxy *px = calloc(1, sizeof(*px));
    if (!px)
        return NULL;
    px->up = up;
    px->alog = alog;
    sl_pool_init(&px->preqs, sizeof(preq), 4096);
    return px;
}

sl_http_handler sl_proxy_handler(sl_proxy *px)
{
    sl_http_handler h = {
        .on_request = on_request,
        .on_abort = on_abort,
        .on_drain = on_drain,
        .on_rejected = on_rejected,
        .data = px,
    };
    return h;
}

void sl_proxy_set_policy(sl_proxy *px, sl_policy *p)
{
    if (p)
        sl_policy_ref(p);
    if (px->policy)
        sl_policy_unref(px->policy);
    px->policy = p;
}

void sl_proxy_free(sl_proxy *px)
{
    if (!px)
        return;
    if (px->policy)
        sl_policy_unref(px->policy);
    sl_pool_destroy(&px->preqs);
    free(px);
}
