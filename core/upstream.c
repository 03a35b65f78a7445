/* upstream.c — keep-alive pools and exchanges toward backends (see
 * upstream.h).
 *
 * A pool holds the idle connections toward one (scheme, host, port, TLS
 * settings) key, most recently used first. Idle connections keep reading so
 * a close by the backend is noticed at once, not when the next request is
 * lost on it. One timer per connection serves every phase: connect (DNS,
 * TCP and TLS together), first byte, idle between reads, and idle in pool. */
#include "upstream.h"
#include "dns.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>

#define UP_READ_BLOCK (16 * 1024)
#define UP_MAX_HEADERS 256
#define UP_MAX_HEAD_BYTES (64 * 1024)

typedef struct upconn upconn;

typedef struct pool {
    struct pool *next;
    sl_up *u;
    char *key;
    sl_tls_config *tls;
    upconn *idle; /* most recently used first */
    int nidle;
} pool;

struct upconn {
    sl_stream stream;
    sl_up *u;
    pool *pool;
    upconn *prev, *next; /* idle list, or the busy list */
    int idle;
    llhttp_t parser;
    sl_up_exchange *x;
    sl_http_head head;
    uint32_t offs[UP_MAX_HEADERS * 4];
    sl_http_hdr hdrs[UP_MAX_HEADERS];
    int complete;
    int no_reuse; /* bytes followed the response: framing is in doubt */
};

struct sl_up_exchange {
    sl_up *u;
    pool *pool;
    const sl_backend *be;
    upconn *conn;
    const uv_buf_t *req;
    unsigned nreq;
    int head_request;
    const sl_up_cbs *cbs;
    void *data;
    sl_dns_waiter *dnsw;
    uint64_t start_ns;
    uint64_t conn_start_ns;
    uint64_t head_deadline_ns; /* 0, or when the head must have arrived */
    sl_up_result res;
    int retried;
    int got_bytes;
    int busy; /* inside a parser run: defer freeing */
    int canceled;
    char detail[256];
};

struct sl_up {
    uv_loop_t *loop;
    uint32_t max_idle;
    uint64_t pool_idle_ms;
    sl_dns *dns;
    pool *pools;
    upconn *busy; /* connections serving an exchange or connecting */
    sl_pool rpool;
    int closing;
};

static const sl_stream_cbs conn_cbs;
static void conn_close(upconn *c);
static void finish(sl_up_exchange *x, int err, const char *phase);
static int start_new_conn(sl_up_exchange *x);
static void timeout_cb(sl_stream *s);

/* ---- lists -------------------------------------------------------------- */

static void list_remove(upconn **head, upconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (*head == c)
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(upconn **head, upconn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static pool *pool_for(sl_up *u, const sl_backend *be)
{
    for (pool *p = u->pools; p; p = p->next)
        if (strcmp(p->key, be->pool_key) == 0)
            return p;
    pool *p = calloc(1, sizeof(*p));
    if (!p || !(p->key = strdup(be->pool_key))) {
        free(p);
        return NULL;
    }
    p->u = u;
    p->next = u->pools;
    u->pools = p;
    return p;
}

/* ---- exchange lifetime -------------------------------------------------- */

static void xfree(sl_up_exchange *x)
{
    free(x);
}

static void set_detail(sl_up_exchange *x, const char *fmt, const char *arg)
{
    snprintf(x->detail, sizeof(x->detail), fmt, arg ? arg : "");
    x->res.detail = x->detail;
}

static void finish(sl_up_exchange *x, int err, const char *phase)
{
    upconn *c = x->conn;
    x->conn = NULL;
    if (x->dnsw) {
        sl_dns_cancel(x->dnsw);
        x->dnsw = NULL;
    }
    if (c) {
        c->x = NULL;
        sl_stream_timer_stop(&c->stream);
        int keep = err == 0 && !c->no_reuse &&
                   llhttp_should_keep_alive(&c->parser) && !x->u->closing &&
                   c->pool->nidle < (int)x->u->max_idle;
        if (keep) {
            /* Back to the pool before on_done: the caller's next request
             * may want this very connection. */
            list_remove(&x->u->busy, c);
            llhttp_init(&c->parser, HTTP_RESPONSE, c->parser.settings);
            c->parser.data = c;
            c->complete = 0;
            c->no_reuse = 0;
            c->idle = 1;
            sl_http_head_release(&c->head);
            list_push(&c->pool->idle, c);
            c->pool->nidle++;
            sl_stream_timer(&c->stream, x->u->pool_idle_ms, timeout_cb);
            sl_stream_read_start(&c->stream);
        } else {
            conn_close(c);
        }
    }
    x->res.err = err;
    x->res.phase = err ? phase : NULL;
    if (!x->canceled)
        x->cbs->on_done(x->data, &x->res);
    if (x->busy)
        x->canceled = 1; /* freed when the parser run unwinds */
    else
        xfree(x);
}

/* A failure that a pooled connection may excuse: try once more on a new
 * connection if nothing of the response has arrived. */
static void fail_or_retry(sl_up_exchange *x, int err, const char *phase)
{
    upconn *c = x->conn;
    if (x->res.reused && !x->retried && !x->got_bytes && c &&
        (err == SL_EEOF || err == SL_ECONNRESET)) {
        x->retried = 1;
        x->res.reused = 0;
        c->x = NULL;
        x->conn = NULL;
        conn_close(c);
        if (start_new_conn(x) == 0)
            return;
        err = SL_ENOMEM;
    }
    if (err == SL_EEOF)
        err = SL_ECONNRESET;
    finish(x, err, phase);
}

/* ---- timers ---------------------------------------------------------------
 */

/* A phase's timeout (ms), cut to what the attempt's head deadline leaves
 * while the head has not arrived. */
static uint64_t phase_timeout(const sl_up_exchange *x, uint64_t ms)
{
    if (!x->head_deadline_ns || x->res.status)
        return ms;
    uint64_t now = sl_now_ns();
    uint64_t left = x->head_deadline_ns > now
                        ? (x->head_deadline_ns - now + 999999) / 1000000
                        : 1;
    return left < ms || ms == 0 ? left : ms;
}

static void timeout_cb(sl_stream *s)
{
    upconn *c = s->data;
    sl_up_exchange *x = c->x;
    if (!x) {
        conn_close(c);
        return;
    }
    const char *phase = !c->stream.connected ? "connect"
                        : !x->got_bytes      ? "first_byte"
                                             : "read";
    if (x->head_deadline_ns && !x->res.status &&
        sl_now_ns() + 1000000 >= x->head_deadline_ns)
        set_detail(x, "no response head within the attempt's time limit%s",
                   NULL);
    else
        set_detail(x, "no answer from the backend within the %s timeout",
                   phase);
    finish(x, SL_ETIMEDOUT, phase);
}

/* ---- response parsing -----------------------------------------------------
 */

static upconn *up_of(llhttp_t *p)
{
    return p->data;
}

static int up_on_message_begin(llhttp_t *p)
{
    sl_http_head_reset(&up_of(p)->head);
    return 0;
}

/* Response trailers (after the head was handed over) are dropped. */
static int up_on_header_field(llhttp_t *p, const char *at, size_t n)
{
    upconn *c = up_of(p);
    if (c->x && c->x->res.status)
        return 0;
    return sl_http_head_field(&c->head, at, n) < 0 ? -1 : 0;
}

static int up_on_header_value(llhttp_t *p, const char *at, size_t n)
{
    upconn *c = up_of(p);
    if (c->x && c->x->res.status)
        return 0;
    return sl_http_head_value(&c->head, at, n) < 0 ? -1 : 0;
}

static int up_on_headers_complete(llhttp_t *p)
{
    upconn *c = up_of(p);
    sl_up_exchange *x = c->x;
    if (!x || x->canceled)
        return -1;
    int status = llhttp_get_status_code(p);
    if (status >= 100 && status < 200)
        return 0; /* interim answer: the real head follows */
    int nhdrs = sl_http_head_slices(&c->head, c->hdrs);
    x->res.status = status;
    x->res.head_ns = sl_now_ns() - x->start_ns;
    if (x->head_deadline_ns) /* the body runs under the idle timeout */
        sl_stream_timer(&c->stream, x->be->idle_timeout, timeout_cb);
    int64_t cl = -1; /* for HEAD: the length a GET would have, if told */
    if (status == 204 || status == 304)
        cl = 0;
    else if (p->flags & F_CONTENT_LENGTH)
        cl = (int64_t)p->content_length;
    x->cbs->on_head(x->data, status, c->hdrs, nhdrs, cl);
    if (x->canceled)
        return -1;
    return x->head_request ? 1 : 0; /* 1: no body follows */
}

static int up_on_body(llhttp_t *p, const char *at, size_t n)
{
    upconn *c = up_of(p);
    sl_up_exchange *x = c->x;
    if (!x || x->canceled)
        return -1;
    x->cbs->on_body(x->data, at, n);
    return x->canceled ? -1 : 0;
}

static int up_on_message_complete(llhttp_t *p)
{
    upconn *c = up_of(p);
    if (llhttp_get_status_code(p) < 200)
        return 0;
    c->complete = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t *parser_settings(void)
{
    static llhttp_settings_t s;
    static int ready;
    if (!ready) { /* same values from any thread: a benign race */
        llhttp_settings_t t;
        llhttp_settings_init(&t);
        t.on_message_begin = up_on_message_begin;
        t.on_header_field = up_on_header_field;
        t.on_header_value = up_on_header_value;
        t.on_headers_complete = up_on_headers_complete;
        t.on_body = up_on_body;
        t.on_message_complete = up_on_message_complete;
        s = t;
        ready = 1;
    }
    return &s;
}

/* ---- connection events ----------------------------------------------------
 */

static void conn_on_read(sl_stream *s, const char *data, size_t len)
{
    upconn *c = s->data;
    sl_up_exchange *x = c->x;
    if (!x) { /* an idle connection must stay silent */
        conn_close(c);
        return;
    }
    x->got_bytes = 1;
    sl_stream_timer(&c->stream, phase_timeout(x, x->be->idle_timeout),
                    timeout_cb);
    x->busy++;
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (!x->canceled) {
        if (e == HPE_PAUSED && c->complete) {
            if (llhttp_get_error_pos(&c->parser) != data + len)
                c->no_reuse = 1;
            x->cbs->on_read_done(x->data);
            if (!x->canceled)
                finish(x, 0, NULL);
        } else if (e != HPE_OK) {
            set_detail(x, "malformed response from the backend: %s",
                       llhttp_get_error_reason(&c->parser));
            finish(x, SL_EPROTO, x->res.status ? "read" : "first_byte");
        } else {
            x->cbs->on_read_done(x->data);
        }
    }
    if (--x->busy == 0 && x->canceled)
        xfree(x);
}

static void conn_on_error(sl_stream *s, int err)
{
    upconn *c = s->data;
    sl_up_exchange *x = c->x;
    if (!x) {
        conn_close(c);
        return;
    }
    if (err == SL_EEOF && llhttp_message_needs_eof(&c->parser)) {
        /* A close-delimited body ends here. */
        x->busy++;
        llhttp_errno_t e = llhttp_finish(&c->parser);
        if (!x->canceled && (e == HPE_OK || e == HPE_PAUSED) && c->complete) {
            c->no_reuse = 1;
            x->cbs->on_read_done(x->data);
            if (!x->canceled)
                finish(x, 0, NULL);
        }
        if (--x->busy == 0 && x->canceled) {
            xfree(x);
            return;
        }
        if (x->conn != c) /* finished above */
            return;
    }
    if (err == SL_ETLS)
        set_detail(x, "TLS error: %s", s->tls_error);
    else if (x->got_bytes)
        set_detail(x, "the backend closed the connection mid-response%s", NULL);
    else
        set_detail(x, "the backend closed the connection before answering%s",
                   NULL);
    fail_or_retry(x, err, x->got_bytes ? "read" : "first_byte");
}

static void send_request(sl_up_exchange *x)
{
    upconn *c = x->conn;
    sl_stream_timer(&c->stream, phase_timeout(x, x->be->first_byte_timeout),
                    timeout_cb);
    int rc = sl_stream_write(&c->stream, x->req, x->nreq);
    if (rc == 0)
        rc = sl_stream_read_start(&c->stream);
    if (rc < 0) {
        set_detail(x, "cannot send the request%s", NULL);
        fail_or_retry(x, rc, "send");
    }
}

static void conn_on_connect(sl_stream *s, int status)
{
    upconn *c = s->data;
    sl_up_exchange *x = c->x;
    if (!x)
        return;
    if (status < 0) {
        if (status == SL_ETLS) {
            set_detail(x, "TLS handshake failed: %s", s->tls_error);
            finish(x, SL_ETLS, "tls");
        } else {
            set_detail(x, "cannot connect: %s", sl_strerror(status));
            finish(x, status, "connect");
        }
        return;
    }
    x->res.connect_ns = sl_now_ns() - x->conn_start_ns;
    send_request(x);
}

static void conn_on_close(sl_stream *s)
{
    upconn *c = s->data;
    sl_http_head_release(&c->head);
    free(c);
}

static const sl_stream_cbs conn_cbs = {
    .on_read = conn_on_read,
    .on_error = conn_on_error,
    .on_connect = conn_on_connect,
    .on_close = conn_on_close,
};

static void conn_close(upconn *c)
{
    if (c->stream.closing)
        return;
    if (c->idle) {
        list_remove(&c->pool->idle, c);
        c->pool->nidle--;
        c->idle = 0;
    } else {
        list_remove(&c->u->busy, c);
    }
    sl_stream_close(&c->stream);
}

static upconn *conn_new(sl_up *u, pool *p)
{
    upconn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (sl_stream_init(u->loop, &c->stream, &u->rpool, &conn_cbs, c) < 0) {
        free(c);
        return NULL;
    }
    c->u = u;
    c->pool = p;
    sl_http_head_init(&c->head, NULL, c->offs, UP_MAX_HEADERS,
                      UP_MAX_HEAD_BYTES);
    llhttp_init(&c->parser, HTTP_RESPONSE, parser_settings());
    c->parser.data = c;
    list_push(&u->busy, c);
    return c;
}

/* ---- connecting ------------------------------------------------------------
 */

static void do_connect(sl_up_exchange *x, const struct sockaddr *addr)
{
    upconn *c = x->conn;
    sl_tls_config *tls = NULL;
    if (x->be->tls) {
        if (!x->pool->tls) {
            char err[256];
            if (sl_tls_client_config_new(&x->pool->tls, x->be->ca_file,
                                         x->be->tls_verify, err,
                                         sizeof(err)) < 0) {
                set_detail(x, "%s", err);
                finish(x, SL_ETLS, "tls");
                return;
            }
        }
        tls = x->pool->tls;
    }
    int rc = sl_stream_connect(&c->stream, addr, tls, x->be->host);
    if (rc < 0) {
        set_detail(x, "cannot connect: %s", sl_strerror(rc));
        finish(x, rc, "connect");
    }
}

static void dns_done(void *data, int status, const struct sockaddr *addr)
{
    sl_up_exchange *x = data;
    x->dnsw = NULL;
    if (status < 0) {
        set_detail(x, "cannot resolve %s", x->be->host);
        finish(x, SL_EDNS, "dns");
        return;
    }
    do_connect(x, addr);
}

static int start_new_conn(sl_up_exchange *x)
{
    upconn *c = conn_new(x->u, x->pool);
    if (!c)
        return SL_ENOMEM;
    c->x = x;
    x->conn = c;
    x->conn_start_ns = sl_now_ns();
    sl_stream_timer(&c->stream, phase_timeout(x, x->be->connect_timeout),
                    timeout_cb);
    struct sockaddr_storage ss;
    if (sl_dns_cached(x->u->dns, x->be->host, x->be->port, &ss) == 0) {
        do_connect(x, (struct sockaddr *)&ss);
        return 0;
    }
    int rc = sl_dns_resolve(x->u->dns, x->be->host, x->be->port, dns_done, x,
                            &x->dnsw);
    if (rc < 0) {
        set_detail(x, "cannot resolve %s", x->be->host);
        finish(x, SL_EDNS, "dns");
    }
    return 0;
}

/* ---- public API -------------------------------------------------------------
 */

sl_up *sl_up_new(uv_loop_t *loop, const sl_config *cfg)
{
    sl_up *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->loop = loop;
    u->max_idle = cfg->upstream_max_idle;
    u->pool_idle_ms = cfg->upstream_idle_timeout;
    u->dns = sl_dns_new(loop, cfg->dns_ttl);
    if (!u->dns) {
        free(u);
        return NULL;
    }
    sl_pool_init(&u->rpool, UP_READ_BLOCK, 256);
    return u;
}

int sl_up_start(sl_up *u, const sl_backend *be, const uv_buf_t *req,
                unsigned nreq, int head_request, uint64_t head_ms,
                const sl_up_cbs *cbs, void *data, sl_up_exchange **out)
{
    pool *p = pool_for(u, be);
    sl_up_exchange *x = calloc(1, sizeof(*x));
    if (!p || !x) {
        free(x);
        return SL_ENOMEM;
    }
    x->u = u;
    x->pool = p;
    x->be = be;
    x->req = req;
    x->nreq = nreq;
    x->head_request = head_request;
    x->cbs = cbs;
    x->data = data;
    x->start_ns = sl_now_ns();
    if (head_ms)
        x->head_deadline_ns = x->start_ns + head_ms * 1000000;
    *out = x;
    upconn *c = p->idle;
    if (c) {
        list_remove(&p->idle, c);
        p->nidle--;
        c->idle = 0;
        list_push(&u->busy, c);
        c->x = x;
        x->conn = c;
        x->res.reused = 1;
        send_request(x);
        return 0;
    }
    return start_new_conn(x);
}

/* While the client is the slow side, the backend's idle deadline does not
 * run: it would blame the backend for the client's pace. */
void sl_up_pause(sl_up_exchange *x)
{
    if (x->conn) {
        sl_stream_read_stop(&x->conn->stream);
        sl_stream_timer_stop(&x->conn->stream);
    }
}

void sl_up_resume(sl_up_exchange *x)
{
    if (x->conn) {
        sl_stream_timer(&x->conn->stream, x->be->idle_timeout, timeout_cb);
        sl_stream_read_start(&x->conn->stream);
    }
}

void sl_up_cancel(sl_up_exchange *x)
{
    if (x->canceled)
        return;
    x->canceled = 1;
    if (x->dnsw) {
        sl_dns_cancel(x->dnsw);
        x->dnsw = NULL;
    }
    if (x->conn) {
        x->conn->x = NULL;
        conn_close(x->conn);
        x->conn = NULL;
    }
    if (!x->busy)
        xfree(x);
}

int sl_up_idle_count(sl_up *u, const sl_backend *be)
{
    for (pool *p = u->pools; p; p = p->next)
        if (strcmp(p->key, be->pool_key) == 0)
            return p->nidle;
    return 0;
}

void sl_up_close(sl_up *u)
{
    u->closing = 1;
    for (pool *p = u->pools; p; p = p->next)
        while (p->idle)
            conn_close(p->idle);
    while (u->busy) {
        upconn *c = u->busy;
        if (c->x) {
            sl_up_exchange *x = c->x;
            set_detail(x, "the worker is shutting down%s", NULL);
            finish(x, SL_ECANCELED, "read");
        }
        if (u->busy == c)
            conn_close(c);
    }
}

void sl_up_free(sl_up *u)
{
    if (!u)
        return;
    pool *p = u->pools;
    while (p) {
        pool *n = p->next;
        sl_tls_config_free(p->tls);
        free(p->key);
        free(p);
        p = n;
    }
    sl_dns_free(u->dns);
    sl_pool_destroy(&u->rpool);
    free(u);
}
