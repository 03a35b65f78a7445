/* stream.h — one TCP connection, plain or TLS, with the same face.
 *
 * The HTTP server and the upstream client talk plaintext to a stream; when
 * the stream carries TLS it runs the handshake, decrypts what it reads and
 * encrypts what it writes (tls.c works on memory buffers, this file moves
 * them to and from the socket). Writes never block: what the kernel does
 * not take at once is copied and queued, and `write_pending` says how much,
 * so callers can stop producing until `on_drain`. */
#ifndef SL_STREAM_H
#define SL_STREAM_H

#include "buf.h"
#include "tls.h"
#include <uv.h>

typedef struct sl_stream sl_stream;

typedef void (*sl_stream_timer_cb)(sl_stream *s);

typedef struct sl_stream_cbs {
    /* Plaintext arrived. The bytes are valid only during the call. */
    void (*on_read)(sl_stream *s, const char *data, size_t len);
    /* The peer closed (SL_EEOF) or the connection failed (SL_E*). Not
     * called after sl_stream_close(). */
    void (*on_error)(sl_stream *s, int err);
    /* Connect (and TLS handshake, if any) finished: status 0 or SL_E*. */
    void (*on_connect)(sl_stream *s, int status);
    /* Every queued write reached the kernel. Optional. */
    void (*on_drain)(sl_stream *s);
    /* The socket and the timer are closed; the owner may free the memory
     * holding `s`. */
    void (*on_close)(sl_stream *s);
} sl_stream_cbs;

struct sl_stream {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    sl_tls *tls;
    const sl_stream_cbs *cbs;
    sl_pool *rpool;       /* read buffers come from here */
    char *rbuf;           /* pooled block lent to libuv during a read */
    void *data;           /* the owner */
    size_t write_pending; /* bytes queued behind the kernel */
    unsigned reading : 1;
    unsigned closing : 1;
    unsigned handshaking : 1;
    unsigned connected : 1;
    unsigned shutting_down : 1;
    unsigned lingering : 1;
    uv_shutdown_t shutdown_req;
    uv_timer_t timer; /* the owner's deadlines; a lingering close's own */
    sl_stream_timer_cb timer_cb;
    int handles_open;
    const char *tls_error; /* the TLS reason when on_error had SL_ETLS */
};

/* Prepare s on loop. rpool supplies read buffers. */
int sl_stream_init(uv_loop_t *loop, sl_stream *s, sl_pool *rpool,
                   const sl_stream_cbs *cbs, void *data);

/* For accepted connections: wrap in TLS as a server when cfg is not NULL
 * (the handshake runs before the first on_read). */
int sl_stream_accepted(sl_stream *s, sl_tls_config *cfg);

/* Connect to addr; with cfg not NULL, run a TLS handshake with SNI
 * `hostname` before reporting on_connect(0). */
int sl_stream_connect(sl_stream *s, const struct sockaddr *addr,
                      sl_tls_config *cfg, const char *hostname);

int sl_stream_read_start(sl_stream *s);
void sl_stream_read_stop(sl_stream *s);

/* Send bufs in order. Returns 0 or a negative SL_E* code. */
int sl_stream_write(sl_stream *s, const uv_buf_t *bufs, unsigned nbufs);

/* Run cb once after ms (replacing any pending deadline) / cancel it. One
 * timer per connection serves every phase of its owner. */
void sl_stream_timer(sl_stream *s, uint64_t ms, sl_stream_timer_cb cb);
void sl_stream_timer_stop(sl_stream *s);

/* Close now: queued writes are abandoned, on_close follows. */
void sl_stream_close(sl_stream *s);

/* Send what is queued, then close (for "Connection: close" answers). */
void sl_stream_close_after_write(sl_stream *s);

#endif
