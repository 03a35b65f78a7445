/* http_server.c — HTTP/1.1 server connections (see http_server.h).
 *
 * Bytes flow: stream (plain or TLS) → on_read → parse() → llhttp callbacks
 * copy the head into c->head and the body into r->body → on_message_complete
 * pauses the parser so pipelined bytes wait in c->pending → the handler
 * answers → sl_http_response_end() resumes parsing. Everything llhttp lets
 * through that RFC 9112 forbids (bare LF, whitespace before a colon,
 * obs-fold, control characters) is refused here before any handler sees it. */
#include "http_conn.h"
#include "listen_port.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static const sl_stream_cbs stream_cbs;
static void conn_close_gracefully(sl_http_conn *c);
static void process(sl_http_conn *c);

/* ---- small helpers ------------------------------------------------------ */

static sl_http_conn *conn_of(llhttp_t *p)
{
    return p->data;
}

static void start_timer(sl_http_conn *c, uint64_t ms, sl_stream_timer_cb cb)
{
    sl_stream_timer(&c->stream, ms, cb);
}

static int is_tchar(unsigned char ch)
{
    /* RFC 9110 §5.6.2 token characters. */
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
           (ch >= 'A' && ch <= 'Z') || (ch && strchr(extra, ch));
}

/* ---- rejection ---------------------------------------------------------- */

/* Answer a request the server refuses, log it, and close. */
static void reject(sl_http_conn *c, int status, const char *code,
                   const char *message)
{
    if (c->state == ST_CLOSING)
        return;
    if (!c->req.id[0])
        sl_request_id(&c->srv->rand, c->req.id);
    c->req.status = status;
    sl_http__write_error(c, status, "invalid_request_error", code, message, 1);
    if (c->srv->h.on_rejected)
        c->srv->h.on_rejected(&c->req, code, c->srv->h.data);
    sl_http__flush(c);
    conn_close_gracefully(c);
}

/* ---- llhttp callbacks --------------------------------------------------- */

static int reject_in_cb(sl_http_conn *c, int status, const char *code,
                        const char *msg)
{
    c->reject_status = status;
    c->reject_code = code;
    c->reject_msg = msg;
    return -1;
}

static void header_timeout(sl_stream *s);
static void body_timeout(sl_stream *s);

static int on_message_begin(llhttp_t *p)
{
    sl_http_conn *c = conn_of(p);
    sl_http_req *r = &c->req;
    c->state = ST_HEAD;
    sl_http_head_reset(&c->head);
    c->url_len = 0;
    r->start_ns = sl_now_ns();
    r->url = r->path = r->query = r->method_name = (sl_str){"", 0};
    c->trailer_bytes = 0;
    /* The head timer of a fresh connection runs from accept: a slow first
     * byte does not buy a slow client more time. */
    if (!c->fresh)
        start_timer(c, c->srv->st.header_timeout, header_timeout);
    c->fresh = 0;
    return 0;
}

/* Map a head-collection error to the answer the client gets. */
static int head_error(sl_http_conn *c, int rc)
{
    if (rc == SL_ETOOLARGE)
        return reject_in_cb(c, 431, "request_header_fields_too_large",
                            "request head exceeds the configured limit");
    if (rc == SL_ETOOMANY)
        return reject_in_cb(c, 431, "request_header_fields_too_large",
                            "too many request headers");
    return reject_in_cb(c, 500, "internal_error", "out of memory");
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    sl_http_conn *c = conn_of(p);
    int rc = sl_http_head_append(&c->head, at, n);
    if (rc == SL_ETOOLARGE)
        return reject_in_cb(c, 414, "uri_too_long",
                            "request target exceeds the configured limit");
    if (rc < 0)
        return head_error(c, rc);
    c->url_len += (uint32_t)n;
    return 0;
}

/* Trailers are read, bounded and dropped. */
static int on_trailer(sl_http_conn *c, size_t n)
{
    c->trailer_bytes += (uint32_t)n;
    if (c->trailer_bytes > c->srv->st.limits.max_header_bytes)
        return reject_in_cb(c, 431, "request_header_fields_too_large",
                            "request trailers exceed the configured limit");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    sl_http_conn *c = conn_of(p);
    if (c->headers_done)
        return on_trailer(c, n);
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)at[i]))
            return reject_in_cb(c, 400, "invalid_header",
                                "invalid character in a header name");
    int rc = sl_http_head_field(&c->head, at, n);
    return rc < 0 ? head_error(c, rc) : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    sl_http_conn *c = conn_of(p);
    if (c->headers_done)
        return on_trailer(c, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)at[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return reject_in_cb(c, 400, "invalid_header",
                                "invalid character in a header value");
    }
    int rc = sl_http_head_value(&c->head, at, n);
    return rc < 0 ? head_error(c, rc) : 0;
}

static void set_request_id(sl_http_conn *c)
{
    const sl_str *id = sl_http_header(&c->req, "x-request-id");
    if (id && id->n > 0 && id->n < sizeof(c->req.id)) {
        size_t i;
        for (i = 0; i < id->n; i++) {
            char ch = id->p[i];
            if (!(is_tchar((unsigned char)ch) && ch != '"' && ch != '\\'))
                break;
        }
        if (i == id->n) {
            memcpy(c->req.id, id->p, id->n);
            c->req.id[id->n] = '\0';
            return;
        }
    }
    sl_request_id(&c->srv->rand, c->req.id);
}

static int on_headers_complete(llhttp_t *p)
{
    sl_http_conn *c = conn_of(p);
    sl_http_req *r = &c->req;
    c->headers_done = 1;
    r->url = (sl_str){c->head.buf.data, c->url_len};
    r->nheaders = sl_http_head_slices(&c->head, c->hdrs);
    r->headers = c->hdrs;
    int hosts = 0;
    for (int i = 0; i < r->nheaders; i++)
        hosts += sl_ieq(c->hdrs[i].name.p, c->hdrs[i].name.n, "host");
    r->method = llhttp_get_method(p);
    r->method_name.p = llhttp_method_name((llhttp_method_t)r->method);
    r->method_name.n = strlen(r->method_name.p);
    r->http_minor = llhttp_get_http_minor(p);
    set_request_id(c);
    const char *q = memchr(r->url.p, '?', r->url.n);
    r->path = (sl_str){r->url.p, q ? (size_t)(q - r->url.p) : r->url.n};
    r->query = q ? (sl_str){q + 1, r->url.n - r->path.n - 1} : (sl_str){"", 0};
    /* RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request. */
    if ((r->http_minor >= 1 && hosts != 1) || hosts > 1)
        return reject_in_cb(
            c, 400, "invalid_host",
            "an HTTP/1.1 request needs exactly one Host header");
    if (r->url.n == 0 || r->url.p[0] != '/')
        return reject_in_cb(c, 400, "invalid_request_target",
                            "the request target must be an absolute path");
    if (llhttp_get_upgrade(p) || r->method == HTTP_CONNECT)
        return reject_in_cb(c, 501, "not_implemented",
                            "protocol upgrades and CONNECT are not supported");
    uint64_t limit = c->srv->st.limits.max_body_bytes;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > limit)
        return reject_in_cb(c, 413, "request_too_large",
                            "request body exceeds the configured limit");
    int has_body = (p->flags & F_CHUNKED) ||
                   ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    if (has_body) {
        const sl_str *expect = sl_http_header(r, "expect");
        if (expect) {
            if (!sl_ieq(expect->p, expect->n, "100-continue"))
                return reject_in_cb(c, 417, "expectation_failed",
                                    "only Expect: 100-continue is supported");
            sl_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            sl_http__flush(c);
            if (c->state == ST_CLOSING) /* the write failed: gone */
                return -1;
        }
        c->state = ST_BODY;
        start_timer(c, c->srv->st.body_timeout, body_timeout);
    } else {
        sl_stream_timer_stop(&c->stream);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    sl_http_conn *c = conn_of(p);
    sl_http_req *r = &c->req;
    if (r->body.len + n > c->srv->st.limits.max_body_bytes)
        return reject_in_cb(c, 413, "request_too_large",
                            "request body exceeds the configured limit");
    if (sl_buf_append(&r->body, at, n) < 0)
        return reject_in_cb(c, 500, "internal_error", "out of memory");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    sl_http_conn *c = conn_of(p);
    if (c->state == ST_CLOSING)
        return -1;
    c->req.keep_alive = (uint8_t)llhttp_should_keep_alive(p);
    c->state = ST_HANDLING;
    sl_stream_timer_stop(&c->stream);
    return HPE_PAUSED; /* pipelined bytes wait until this response ends */
}

/* ---- parsing ------------------------------------------------------------ */

/* In the request head: the index of the first byte that breaks RFC 9112's
 * line rules, or -1. That is an LF not preceded by CR (§2.2), or a space
 * or tab that starts a line: obs-fold (§5.2) or whitespace before the first
 * header (§2.2). llhttp accepts all three quietly. */
static long find_head_violation(const sl_http_conn *c, const char *p, size_t n)
{
    if (n > 0 && c->last_byte == '\n' && (p[0] == ' ' || p[0] == '\t'))
        return 0;
    const char *q = p;
    while ((q = memchr(q, '\n', n - (size_t)(q - p)))) {
        char prev = q == p ? c->last_byte : q[-1];
        if (prev != '\r')
            return q - p;
        if (q + 1 < p + n && (q[1] == ' ' || q[1] == '\t'))
            return q + 1 - p;
        q++;
    }
    return -1;
}

static void dispatch(sl_http_conn *c)
{
    sl_http_req *r = &c->req;
    r->status = 0;
    r->bytes_sent = 0;
    r->first_byte_ns = 0;
    r->head_sent = r->chunked = r->close_delimited = r->no_body = 0;
    c->srv->h.on_request(r, c->srv->h.data);
}

/* Parse n bytes; returns how many were consumed (less than n when a request
 * completed or the connection is being refused). */
static size_t parse(sl_http_conn *c, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n && c->state != ST_HANDLING && c->state != ST_CLOSING) {
        const char *at = p + done;
        size_t chunk = n - done;
        int bare = 0;
        if (!c->headers_done) {
            long i = find_head_violation(c, at, chunk);
            if (i >= 0) {
                chunk = (size_t)i;
                bare = 1;
            }
        }
        if (chunk > 0) {
            llhttp_errno_t e = llhttp_execute(&c->parser, at, chunk);
            if (e == HPE_PAUSED) {
                const char *stop = llhttp_get_error_pos(&c->parser);
                done += (size_t)(stop - at);
                c->last_byte = stop > at ? stop[-1] : c->last_byte;
                if (c->state == ST_HANDLING)
                    dispatch(c);
                return done;
            }
            if (e != HPE_OK) {
                if (c->reject_status)
                    reject(c, c->reject_status, c->reject_code, c->reject_msg);
                else
                    reject(c, 400, "invalid_request",
                           llhttp_get_error_reason(&c->parser));
                return n;
            }
            c->last_byte = at[chunk - 1];
            done += chunk;
        }
        if (bare) {
            if (!c->headers_done) {
                /* Lax line rules are how request smuggling starts. */
                if (at[chunk] == '\n')
                    reject(c, 400, "invalid_request",
                           "bare LF in the request head");
                else
                    reject(c, 400, "invalid_header",
                           "folded or indented header line");
                return n;
            }
            /* The LF belongs to the body: parse on without scanning. */
        }
    }
    return done;
}

static void process(sl_http_conn *c)
{
    if (c->in_process) {
        c->again = 1;
        return;
    }
    c->in_process = 1;
    do {
        c->again = 0;
        if (c->pending.len == 0 || c->state == ST_HANDLING ||
            c->state == ST_CLOSING)
            break;
        size_t used = parse(c, c->pending.data, c->pending.len);
        sl_buf_consume(&c->pending, used);
    } while (c->again);
    c->in_process = 0;
    if (c->pending.len == 0)
        sl_buf_release(&c->pending);
}

/* ---- connection events --------------------------------------------------- */

static void on_read(sl_stream *s, const char *data, size_t len)
{
    sl_http_conn *c = s->data;
    if (c->state == ST_CLOSING)
        return;
    if (c->state == ST_HANDLING || c->pending.len > 0 || c->in_process) {
        if (sl_buf_append(&c->pending, data, len) < 0) {
            sl_http__conn_close(c);
            return;
        }
        if (c->pending.len > PENDING_MAX)
            sl_stream_read_stop(s); /* resumes when this response ends */
        process(c);
        return;
    }
    c->in_process = 1;
    size_t used = parse(c, data, len);
    c->in_process = 0;
    if (used < len && c->state != ST_CLOSING &&
        sl_buf_append(&c->pending, data + used, len - used) < 0) {
        sl_http__conn_close(c);
        return;
    }
    if (c->again)
        process(c);
}

static void on_error(sl_stream *s, int err)
{
    sl_http_conn *c = s->data;
    if (err != SL_EEOF && err != SL_ECONNRESET)
        sl_log_debug("client %s: %s%s%s", c->req.client_addr, sl_strerror(err),
                     s->tls_error ? ": " : "",
                     s->tls_error ? s->tls_error : "");
    sl_http__conn_close(c);
}

static void on_connect(sl_stream *s, int status)
{
    sl_http_conn *c = s->data;
    if (status < 0) { /* TLS handshake with the client failed */
        sl_log_debug("client %s: TLS handshake failed: %s", c->req.client_addr,
                     s->tls_error ? s->tls_error : sl_strerror(status));
        sl_http__conn_close(c);
    }
}

static void on_drain(sl_stream *s)
{
    sl_http_conn *c = s->data;
    if (c->state == ST_HANDLING && c->srv->h.on_drain)
        c->srv->h.on_drain(&c->req, c->srv->h.data);
}

static void maybe_drain_done(sl_http_server *srv)
{
    if (srv->draining && srv->nconns == 0 && srv->drain_done) {
        void (*done)(void *) = srv->drain_done;
        srv->drain_done = NULL;
        done(srv->drain_arg);
    }
}

static void on_stream_close(sl_stream *s)
{
    sl_http_conn *c = s->data;
    sl_http_head_release(&c->head);
    sl_buf_release(&c->out);
    sl_buf_release(&c->pending);
    sl_buf_release(&c->req.body);
    free(c->hdrs);
    free(c->offs);
    free(c);
}

static const sl_stream_cbs stream_cbs = {
    .on_read = on_read,
    .on_error = on_error,
    .on_connect = on_connect,
    .on_drain = on_drain,
    .on_close = on_stream_close,
};

/* Take c off the server's books: it no longer counts for draining and its
 * deadlines stop. The socket may still be finishing a lingering close. */
static void conn_detach(sl_http_conn *c)
{
    if (c->detached)
        return;
    c->detached = 1;
    sl_http_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    sl_stream_timer_stop(&c->stream);
    maybe_drain_done(srv);
}

void sl_http__conn_close(sl_http_conn *c)
{
    sl_http_server *srv = c->srv;
    int owned = c->state == ST_HANDLING;
    c->state = ST_CLOSING;
    if (owned && srv->h.on_abort)
        srv->h.on_abort(&c->req, srv->h.data);
    conn_detach(c);
    sl_stream_close(&c->stream);
}

/* The answer is queued: send it, then close without losing it. */
static void conn_close_gracefully(sl_http_conn *c)
{
    c->state = ST_CLOSING;
    conn_detach(c);
    sl_stream_close_after_write(&c->stream);
}

static void idle_timeout(sl_stream *s)
{
    sl_http__conn_close(
        s->data); /* nothing was asked: close without an answer */
}

static void header_timeout(sl_stream *s)
{
    sl_http_conn *c = s->data;
    if (c->state == ST_HEAD)
        reject(c, 408, "request_timeout", "the request head took too long");
    else
        sl_http__conn_close(c);
}

static void body_timeout(sl_stream *s)
{
    sl_http_conn *c = s->data;
    reject(c, 408, "request_timeout", "the request body took too long");
}

static void on_accept(uv_stream_t *ls, int status)
{
    sl_http_listener *l = ls->data;
    sl_http_server *srv = l->srv;
    if (status < 0 || srv->draining)
        return;
    sl_http_conn *c = calloc(1, sizeof(*c));
    if (c) {
        c->hdrs = malloc(srv->st.limits.max_headers * sizeof(*c->hdrs));
        c->offs = malloc(srv->st.limits.max_headers * 4 * sizeof(uint32_t));
    }
    if (!c || !c->hdrs || !c->offs ||
        sl_stream_init(srv->loop, &c->stream, &srv->pool, &stream_cbs, c) < 0) {
        if (c) {
            free(c->hdrs);
            free(c->offs);
        }
        free(c);
        /* Accept and drop, or the listener would spin on readiness. */
        uv_tcp_t tmp;
        uv_tcp_init(srv->loop, &tmp);
        if (uv_accept(ls, (uv_stream_t *)&tmp) == 0)
            sl_log_error("accept: out of memory, connection dropped");
        uv_close((uv_handle_t *)&tmp, NULL);
        return;
    }
    c->srv = srv;
    c->fresh = 1;
    sl_http_head_init(&c->head, &srv->pool, c->offs,
                      (int)srv->st.limits.max_headers,
                      srv->st.limits.max_header_bytes);
    sl_buf_init(&c->out, &srv->pool);
    sl_buf_init(&c->pending, &srv->pool);
    sl_buf_init(&c->req.body, &srv->pool);
    c->req.conn = c;
    c->req.server = srv;
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->ps);
    c->parser.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (uv_accept(ls, (uv_stream_t *)&c->stream.tcp) < 0 ||
        sl_stream_accepted(&c->stream, l->tls) < 0) {
        sl_http__conn_close(c);
        return;
    }
    struct sockaddr_storage sa;
    int salen = sizeof(sa);
    if (uv_tcp_getpeername(&c->stream.tcp, (struct sockaddr *)&sa, &salen) ==
        0) {
        char ip[INET6_ADDRSTRLEN] = "";
        uint16_t port = 0;
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&sa;
            uv_ip4_name(a, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
            uv_ip6_name(a, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        }
        snprintf(c->req.client_addr, sizeof(c->req.client_addr), "%s:%u", ip,
                 port);
    }
    start_timer(c, srv->st.header_timeout, header_timeout);
    if (sl_stream_read_start(&c->stream) < 0)
        sl_http__conn_close(c);
}

/* ---- server ------------------------------------------------------------- */

sl_http_server *sl_http_server_new(uv_loop_t *loop,
                                   const sl_http_settings *settings,
                                   const sl_http_handler *handler)
{
    sl_http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->st = *settings;
    s->h = *handler;
    sl_pool_init(&s->pool, READ_BLOCK, 1024);
    sl_rand_seed(&s->rand);
    llhttp_settings_init(&s->ps);
    s->ps.on_message_begin = on_message_begin;
    s->ps.on_url = on_url;
    s->ps.on_header_field = on_header_field;
    s->ps.on_header_value = on_header_value;
    s->ps.on_headers_complete = on_headers_complete;
    s->ps.on_body = on_body;
    s->ps.on_message_complete = on_message_complete;
    return s;
}

int sl_http_server_listen(sl_http_server *s, const sl_listen_cfg *lc,
                          sl_tls_config *tls, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof(sa));
    if (uv_ip4_addr(lc->host, lc->port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(lc->host, lc->port, (struct sockaddr_in6 *)&sa) != 0) {
        snprintf(err, errlen, "listen %s:%u: not a numeric address", lc->host,
                 lc->port);
        return SL_EINVAL;
    }
    /* libuv 1.44 cannot set SO_REUSEPORT itself: bind the socket here. */
    int fd =
        socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa,
             sa.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                     : sizeof(struct sockaddr_in6)) < 0) {
        snprintf(err, errlen, "listen %s:%u: %s", lc->host, lc->port,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return SL_EIO;
    }
    sl_http_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return SL_ENOMEM;
    }
    l->srv = s;
    l->tls = tls;
    uv_tcp_init(s->loop, &l->tcp);
    l->tcp.data = l;
    l->next = s->listeners;
    s->listeners = l;
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 1024, on_accept);
    if (rc < 0) {
        snprintf(err, errlen, "listen %s:%u: %s", lc->host, lc->port,
                 uv_strerror(rc));
        return SL_EIO;
    }
    /* SO_REUSEPORT would let another process share the port unseen */
    char why[160];
    if (sl_listen_port_owned(fd, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "listen %s:%u: %s", lc->host, lc->port, why);
        return SL_EIO;
    }
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    free(h->data);
}

static void close_listeners(sl_http_server *s)
{
    sl_http_listener *l = s->listeners;
    s->listeners = NULL;
    while (l) {
        sl_http_listener *n = l->next;
        uv_close((uv_handle_t *)&l->tcp, listener_closed);
        l = n;
    }
}

void sl_http_server_drain(sl_http_server *s, void (*done)(void *), void *arg)
{
    s->draining = 1;
    s->drain_done = done;
    s->drain_arg = arg;
    close_listeners(s);
    sl_http_conn *c = s->conns;
    while (c) {
        sl_http_conn *n = c->next;
        /* Idle connections go now; busy ones close after their answer. */
        if (c->state == ST_IDLE)
            sl_http__conn_close(c);
        c = n;
    }
    maybe_drain_done(s);
}

void sl_http_server_close_all(sl_http_server *s)
{
    close_listeners(s);
    while (s->conns)
        sl_http__conn_close(s->conns);
}

void sl_http_server_free(sl_http_server *s)
{
    if (!s)
        return;
    sl_pool_destroy(&s->pool);
    free(s);
}

static void reset_for_next(sl_http_conn *c)
{
    sl_http_req *r = &c->req;
    sl_buf_release(&r->body);
    sl_http_head_release(&c->head);
    r->headers = NULL;
    r->nheaders = 0;
    r->id[0] = '\0';
    r->handler_data = NULL;
    c->headers_done = 0;
    c->url_len = 0;
}

void sl_http__request_done(sl_http_conn *c, int keep)
{
    sl_http_req *r = &c->req;
    reset_for_next(c);
    if (c->stream.closing) {
        sl_http__conn_close(c);
        return;
    }
    if (!keep) {
        conn_close_gracefully(c);
        return;
    }
    c->state = ST_IDLE;
    r->conn_requests++;
    llhttp_resume(&c->parser);
    if (c->out.len == 0)
        sl_buf_release(&c->out);
    start_timer(c, c->srv->st.keepalive_timeout, idle_timeout);
    if (sl_stream_read_start(&c->stream) < 0) {
        sl_http__conn_close(c);
        return;
    }
    if (c->pending.len > 0)
        process(c);
}

void sl_http__request_aborted(sl_http_conn *c)
{
    c->state = ST_CLOSING; /* so conn_close does not call on_abort */
    reset_for_next(c);
    sl_http__conn_close(c);
}
