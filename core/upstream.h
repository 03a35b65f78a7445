/* upstream.h — requests to named backends over per-worker keep-alive pools.
 *
 * One exchange is one attempt: borrow an idle connection to the backend
 * (or resolve, connect and handshake a new one), send the request, parse
 * the response (llhttp) and hand its head and body to the caller as they
 * arrive. A connection that finished a clean keep-alive response goes back
 * to its pool; any other ends closed. A pooled connection that turns out to
 * be dead before any response byte is retried once on a fresh connection. */
#ifndef SL_UPSTREAM_H
#define SL_UPSTREAM_H

#include "config.h"
#include "http_server.h"
#include <uv.h>

typedef struct sl_up sl_up;
typedef struct sl_up_exchange sl_up_exchange;

/* How an attempt ended, for errors to clients and for the logs. */
typedef struct sl_up_result {
    int err;             /* 0, or SL_E* */
    const char *phase;   /* "dns", "connect", "tls", "send", "first_byte",
                            "read" or NULL */
    const char *detail;  /* static or exchange-owned text, may be NULL */
    int status;          /* upstream status, 0 before the head arrived */
    int reused;          /* served on a pooled connection */
    uint64_t connect_ns; /* time to a ready connection (0 when reused) */
    uint64_t head_ns;    /* time from start to the response head */
} sl_up_result;

typedef struct sl_up_cbs {
    /* The response head. hdrs are valid only during the call;
     * content_length is -1 when the body length is not known ahead. */
    void (*on_head)(void *data, int status, const sl_http_hdr *hdrs, int n,
                    int64_t content_length);
    /* Body bytes, de-chunked, valid only during the call. */
    void (*on_body)(void *data, const char *p, size_t n);
    /* One read was fully handed over (a good moment to flush). */
    void (*on_read_done)(void *data);
    /* The exchange is over; it is freed right after this returns. */
    void (*on_done)(void *data, const sl_up_result *res);
} sl_up_cbs;

/* The upstream side of one worker. */
sl_up *sl_up_new(uv_loop_t *loop, const sl_config *cfg);
/* Close every idle connection (shutdown); running exchanges are canceled. */
void sl_up_close(sl_up *u);
void sl_up_free(sl_up *u);

/* Send the request in req[0..nreq) to be. The buffers must stay valid until
 * on_done (a dead pooled connection means sending them again). head_request
 * says the request was HEAD (the response has no body). head_ms, when not
 * 0, caps the time from now to the response head (connect, send and first
 * byte together) below the backend's own timeouts: one attempt's limit. */
int sl_up_start(sl_up *u, const sl_backend *be, const uv_buf_t *req,
                unsigned nreq, int head_request, uint64_t head_ms,
                const sl_up_cbs *cbs, void *data, sl_up_exchange **out);

/* Stop and resume reading the response (client backpressure). */
void sl_up_pause(sl_up_exchange *x);
void sl_up_resume(sl_up_exchange *x);

/* Abandon the exchange: no callback runs after this; the connection is
 * closed (its state is unknown). */
void sl_up_cancel(sl_up_exchange *x);

/* Idle connections currently pooled toward be (for tests and status). */
int sl_up_idle_count(sl_up *u, const sl_backend *be);

#endif
