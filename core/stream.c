/* stream.c — plain or TLS connections over libuv (see stream.h).
 *
 * Writes try the kernel first (uv_try_write) and copy only the remainder
 * into a queued uv_write; libuv refuses uv_try_write while anything is
 * queued, so order is kept. */
#include "stream.h"
#include "log.h"

#include <stdlib.h>

#define LINGER_MS 2000

typedef struct {
    uv_write_t req;
    sl_stream *s;
    size_t len;
    char data[];
} write_req;

static sl_stream *from_handle(void *h)
{
    return ((uv_handle_t *)h)->data;
}

static int map_uv_error(int uverr)
{
    switch (uverr) {
    case UV_EOF:
        return SL_EEOF;
    case UV_ECONNREFUSED:
        return SL_ECONNREFUSED;
    case UV_ECONNRESET:
    case UV_EPIPE:
        return SL_ECONNRESET;
    case UV_ETIMEDOUT:
        return SL_ETIMEDOUT;
    case UV_ECANCELED:
        return SL_ECANCELED;
    case UV_ENOMEM:
    case UV_ENOBUFS:
        return SL_ENOMEM;
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH:
    case UV_EADDRNOTAVAIL:
        return SL_ECONNECT;
    }
    return SL_EIO;
}

int sl_stream_init(uv_loop_t *loop, sl_stream *s, sl_pool *rpool,
                   const sl_stream_cbs *cbs, void *data)
{
    memset(s, 0, sizeof(*s));
    s->rpool = rpool;
    s->cbs = cbs;
    s->data = data;
    int rc = uv_tcp_init(loop, &s->tcp);
    if (rc < 0)
        return map_uv_error(rc);
    s->tcp.data = s;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->handles_open = 2;
    return 0;
}

static void timer_fired(uv_timer_t *t)
{
    sl_stream *s = t->data;
    if (s->timer_cb && !s->closing)
        s->timer_cb(s);
}

void sl_stream_timer(sl_stream *s, uint64_t ms, sl_stream_timer_cb cb)
{
    if (s->closing || s->lingering)
        return;
    s->timer_cb = cb;
    uv_timer_start(&s->timer, timer_fired, ms, 0);
}

void sl_stream_timer_stop(sl_stream *s)
{
    if (!s->lingering)
        uv_timer_stop(&s->timer);
}

static void fail(sl_stream *s, int err)
{
    if (s->closing)
        return;
    if (err == SL_ETLS && s->tls)
        s->tls_error = sl_tls_error(s->tls);
    if (s->handshaking || !s->connected) {
        s->handshaking = 0;
        if (s->cbs->on_connect && !s->connected) {
            s->cbs->on_connect(s, err);
            return;
        }
    }
    s->cbs->on_error(s, err);
}

static void write_done(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    sl_stream *s = w->s;
    s->write_pending -= w->len;
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            fail(s, map_uv_error(status));
        return;
    }
    if (s->write_pending == 0 && !s->closing && !s->shutting_down &&
        s->cbs->on_drain)
        s->cbs->on_drain(s);
}

/* Hand raw bytes to the socket: what the kernel takes now, then a copy. */
static int raw_write(sl_stream *s, const uv_buf_t *bufs, unsigned nbufs)
{
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    size_t done = 0;
    if (s->write_pending == 0) {
        int n = uv_try_write((uv_stream_t *)&s->tcp, bufs, nbufs);
        if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS)
            return map_uv_error(n);
        if (n > 0)
            done = (size_t)n;
        if (done == total)
            return 0;
    }
    size_t rest = total - done;
    write_req *w = malloc(sizeof(*w) + rest);
    if (!w)
        return SL_ENOMEM;
    w->s = s;
    w->len = rest;
    size_t off = 0, skip = done;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(w->data + off, bufs[i].base + skip, l - skip);
        off += l - skip;
        skip = 0;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)rest);
    int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, write_done);
    if (rc < 0) {
        free(w);
        return map_uv_error(rc);
    }
    s->write_pending += rest;
    return 0;
}

static int flush_tls(sl_stream *s)
{
    const char *p;
    size_t n = sl_tls_pending(s->tls, &p);
    if (n == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = raw_write(s, &b, 1);
    sl_tls_out_consumed(s->tls, n);
    return rc;
}

int sl_stream_write(sl_stream *s, const uv_buf_t *bufs, unsigned nbufs)
{
    if (s->closing)
        return SL_ECANCELED;
    if (!s->tls)
        return raw_write(s, bufs, nbufs);
    for (unsigned i = 0; i < nbufs; i++)
        if (sl_tls_write(s->tls, bufs[i].base, bufs[i].len) < 0)
            return SL_ETLS;
    return flush_tls(s);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    sl_stream *s = from_handle(h);
    if (!s->rbuf)
        s->rbuf = sl_pool_get(s->rpool);
    *buf = uv_buf_init(s->rbuf, s->rbuf ? (unsigned)s->rpool->block : 0);
}

static void give_back_rbuf(sl_stream *s)
{
    sl_pool_put(s->rpool, s->rbuf);
    s->rbuf = NULL;
}

/* Deliver whatever plaintext the TLS session holds. */
static void pump_tls(sl_stream *s)
{
    if (s->handshaking) {
        int rc = sl_tls_handshake(s->tls);
        if (flush_tls(s) < 0) {
            fail(s, SL_EIO);
            return;
        }
        if (rc == SL_EAGAIN)
            return;
        if (rc < 0) {
            fail(s, SL_ETLS);
            return;
        }
        s->handshaking = 0;
        if (!s->connected) {
            s->connected = 1;
            if (s->cbs->on_connect)
                s->cbs->on_connect(s, 0);
            if (s->closing)
                return;
        }
    }
    char *plain = sl_pool_get(s->rpool);
    if (!plain) {
        fail(s, SL_ENOMEM);
        return;
    }
    while (s->reading && !s->closing) {
        int n = sl_tls_read(s->tls, plain, s->rpool->block);
        if (n == SL_EAGAIN)
            break;
        if (n < 0) {
            fail(s, n);
            break;
        }
        s->cbs->on_read(s, plain, (size_t)n);
    }
    sl_pool_put(s->rpool, plain);
    if (!s->closing && flush_tls(s) < 0) /* e.g. a TLS 1.3 ticket ack */
        fail(s, SL_EIO);
}

static void finish_linger(sl_stream *s);

static void read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    sl_stream *s = from_handle(h);
    if (s->lingering) { /* discard until EOF or the linger timer */
        give_back_rbuf(s);
        if (nread < 0)
            finish_linger(s);
        return;
    }
    if (nread < 0) {
        give_back_rbuf(s);
        fail(s, map_uv_error((int)nread));
        return;
    }
    if (nread == 0) {
        give_back_rbuf(s);
        return;
    }
    if (s->tls) {
        int rc = sl_tls_feed(s->tls, buf->base, (size_t)nread);
        give_back_rbuf(s);
        if (rc < 0)
            fail(s, rc);
        else
            pump_tls(s);
        return;
    }
    /* The owner copies what it keeps, so the block goes back right after. */
    s->cbs->on_read(s, buf->base, (size_t)nread);
    if (s->rbuf == buf->base)
        give_back_rbuf(s);
}

int sl_stream_read_start(sl_stream *s)
{
    if (s->reading || s->closing)
        return 0;
    s->reading = 1;
    int rc = uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
    if (rc < 0) {
        s->reading = 0;
        return map_uv_error(rc);
    }
    if (s->tls && !s->handshaking && s->connected)
        pump_tls(s); /* records decrypted before a pause */
    return 0;
}

void sl_stream_read_stop(sl_stream *s)
{
    if (!s->reading)
        return;
    s->reading = 0;
    uv_read_stop((uv_stream_t *)&s->tcp);
}

int sl_stream_accepted(sl_stream *s, sl_tls_config *cfg)
{
    uv_tcp_nodelay(&s->tcp, 1);
    if (cfg) {
        s->tls = sl_tls_new(cfg, NULL);
        if (!s->tls)
            return SL_ENOMEM;
        s->handshaking = 1;
        /* on_read starts only after the handshake; connected stays 0 until
         * then so a failed handshake is reported through on_connect. */
        return 0;
    }
    s->connected = 1;
    return 0;
}

static void connect_cb(uv_connect_t *req, int status)
{
    sl_stream *s = req->data;
    if (s->closing)
        return;
    if (status < 0) {
        fail(s, map_uv_error(status));
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    if (!s->tls) {
        s->connected = 1;
        s->cbs->on_connect(s, 0);
        return;
    }
    s->handshaking = 1;
    int rc = sl_stream_read_start(s);
    if (rc < 0) {
        fail(s, rc);
        return;
    }
    pump_tls(s); /* sends the ClientHello */
}

int sl_stream_connect(sl_stream *s, const struct sockaddr *addr,
                      sl_tls_config *cfg, const char *hostname)
{
    if (cfg) {
        s->tls = sl_tls_new(cfg, hostname);
        if (!s->tls)
            return SL_ENOMEM;
    }
    s->connect_req.data = s;
    int rc = uv_tcp_connect(&s->connect_req, &s->tcp, addr, connect_cb);
    return rc < 0 ? map_uv_error(rc) : 0;
}

static void close_cb(uv_handle_t *h)
{
    sl_stream *s = from_handle(h);
    if (--s->handles_open > 0)
        return;
    if (s->rbuf)
        give_back_rbuf(s);
    if (s->tls) {
        sl_tls_free(s->tls);
        s->tls = NULL;
    }
    if (s->cbs->on_close)
        s->cbs->on_close(s);
}

void sl_stream_close(sl_stream *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->reading = 0;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, close_cb);
    uv_close((uv_handle_t *)&s->tcp, close_cb);
}

static void finish_linger(sl_stream *s)
{
    s->lingering = 0;
    sl_stream_close(s);
}

static void linger_timeout(uv_timer_t *t)
{
    finish_linger(t->data);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    sl_stream *s = req->data;
    if (s->closing)
        return;
    if (status < 0) {
        sl_stream_close(s);
        return;
    }
    /* Keep reading (and dropping) for a while: closing a socket with
     * unread input makes the kernel send RST, which can destroy the answer
     * we just sent before the client reads it. */
    s->lingering = 1;
    uv_timer_start(&s->timer, linger_timeout, LINGER_MS, 0);
    if (!s->reading) {
        s->reading = 1;
        if (uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb) < 0)
            sl_stream_close(s);
    }
}

void sl_stream_close_after_write(sl_stream *s)
{
    if (s->closing || s->lingering || s->shutting_down)
        return;
    s->shutting_down = 1;
    uv_timer_stop(&s->timer); /* the owner's deadlines are over */
    s->timer_cb = NULL;
    if (s->tls && s->connected) {
        sl_tls_close_notify(s->tls);
        flush_tls(s);
    }
    /* uv_shutdown waits for queued writes, then sends FIN. */
    s->shutdown_req.data = s;
    if (uv_shutdown(&s->shutdown_req, (uv_stream_t *)&s->tcp, shutdown_cb) < 0)
        sl_stream_close(s);
}
