/* tls.h — TLS sessions over memory buffers (mbedTLS), for listeners and
 * upstreams.
 *
 * A session never touches a socket: the connection layer (stream.c) feeds it
 * the ciphertext it read and sends the ciphertext the session produced. That
 * keeps TLS non-blocking on any event loop and lets one code path serve both
 * plain TCP and TLS.
 *
 * A config is per worker thread (mbedTLS RNG state is not shared across
 * threads); sessions made from it live on that worker. */
#ifndef SL_TLS_H
#define SL_TLS_H

#include <stddef.h>

typedef struct sl_tls_config sl_tls_config;
typedef struct sl_tls sl_tls;

/* A server config presenting cert_file (PEM chain) and key_file (PEM).
 * On failure returns a negative SL_E* code and writes a one-line reason
 * naming the file to err. The caller frees with sl_tls_config_free(). */
int sl_tls_server_config_new(sl_tls_config **out, const char *cert_file,
                             const char *key_file, char *err, size_t errlen);

/* A client config. ca_file NULL means the system CA bundle
 * (/etc/ssl/certs/ca-certificates.crt). verify=0 disables certificate
 * verification (only ever set explicitly by the operator). */
int sl_tls_client_config_new(sl_tls_config **out, const char *ca_file,
                             int verify, char *err, size_t errlen);

void sl_tls_config_free(sl_tls_config *cfg);

/* A new session. For clients, `hostname` is sent as SNI and checked against
 * the peer certificate; NULL for servers. Returns NULL when out of memory.
 * The session borrows cfg, which must outlive it. */
sl_tls *sl_tls_new(sl_tls_config *cfg, const char *hostname);
void sl_tls_free(sl_tls *s);

/* Hand the session ciphertext read from the socket (copied). */
int sl_tls_feed(sl_tls *s, const char *data, size_t len);

/* Advance the handshake: 0 when complete, SL_EAGAIN when it needs more
 * input (send pending output first), or SL_ETLS with a reason available
 * from sl_tls_error(). */
int sl_tls_handshake(sl_tls *s);

/* Decrypt into buf: bytes read (> 0), SL_EAGAIN when no whole record is
 * buffered, SL_EEOF on close_notify, SL_ETLS on error. */
int sl_tls_read(sl_tls *s, char *buf, size_t len);

/* Encrypt len bytes of plaintext into the pending output: 0 or SL_ETLS. */
int sl_tls_write(sl_tls *s, const char *data, size_t len);

/* Queue a close_notify alert into the pending output. */
void sl_tls_close_notify(sl_tls *s);

/* Ciphertext waiting to be sent: returns its length and points *data at it.
 * The bytes stay valid until sl_tls_out_consumed() or the next call that
 * produces output. */
size_t sl_tls_pending(sl_tls *s, const char **data);

/* Drop the first n bytes of pending output (they were handed to the socket). */
void sl_tls_out_consumed(sl_tls *s, size_t n);

/* The last error as text (static storage inside the session). */
const char *sl_tls_error(sl_tls *s);

#endif
