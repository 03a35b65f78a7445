/* http_server.h — the HTTP/1.1 server side: accept, parse (llhttp), enforce
 * limits and timeouts, and write responses, for any handler.
 *
 * A connection serves one request at a time, in arrival order; pipelined
 * requests wait, unparsed, until the current response ends. The handler
 * owns a request from on_request until it calls sl_http_response_end() or
 * sl_http_response_abort(), or until the server calls on_abort (client
 * gone), after which it must not touch the request. Malformed or oversized
 * requests never reach the handler: the server answers them (400, 408, 413,
 * 414, 431) in the OpenAI error shape and closes the connection. */
#ifndef SL_HTTP_SERVER_H
#define SL_HTTP_SERVER_H

#include "buf.h"
#include "config.h"
#include "http_head.h"
#include "stream.h"
#include "util.h"
#include <llhttp.h>

typedef struct sl_http_server sl_http_server;
typedef struct sl_http_conn sl_http_conn;
typedef struct sl_http_req sl_http_req;

struct sl_http_req {
    sl_http_conn *conn;
    sl_http_server *server;
    int method; /* llhttp_method_t */
    sl_str method_name;
    sl_str url; /* path and query as received */
    sl_str path;
    sl_str query; /* without '?'; empty when none */
    sl_http_hdr *headers;
    int nheaders;
    sl_buf body;        /* whole body, de-chunked */
    uint8_t http_minor; /* HTTP/1.x */
    uint8_t keep_alive; /* the client allows reuse */
    char id[65];        /* x-request-id: the client's or generated */
    uint64_t start_ns;
    char client_addr[64];
    uint32_t conn_requests; /* requests this connection served before */
    /* response state */
    int status;
    uint64_t bytes_sent;    /* response body bytes */
    uint64_t first_byte_ns; /* when the first body byte was queued, or 0 */
    uint8_t head_sent;
    uint8_t chunked;
    uint8_t close_delimited;
    uint8_t no_body;    /* HEAD request or 1xx/204/304 status */
    void *handler_data; /* the handler's, per request */
};

typedef struct sl_http_handler {
    /* A complete request. The handler answers through the response API. */
    void (*on_request)(sl_http_req *r, void *data);
    /* The client went away or the server is closing the connection while
     * the handler owns r: stop all work for r before returning. */
    void (*on_abort)(sl_http_req *r, void *data);
    /* Queued response bytes reached the kernel (resume producing). */
    void (*on_drain)(sl_http_req *r, void *data);
    /* The server answered r itself (a limit, a malformed request, a
     * timeout); for the access log. Optional. */
    void (*on_rejected)(sl_http_req *r, const char *code, void *data);
    void *data;
} sl_http_handler;

typedef struct sl_http_settings {
    sl_limits limits;
    uint64_t header_timeout;    /* ms to receive the whole head */
    uint64_t body_timeout;      /* ms allowed between two body reads */
    uint64_t keepalive_timeout; /* ms an idle keep-alive connection lives */
} sl_http_settings;

/* A server for one worker: its listeners share settings and handler. */
sl_http_server *sl_http_server_new(uv_loop_t *loop,
                                   const sl_http_settings *settings,
                                   const sl_http_handler *handler);

/* Listen on l (SO_REUSEPORT, so every worker binds the same address);
 * tls not NULL makes it an HTTPS listener. Borrows tls. */
int sl_http_server_listen(sl_http_server *s, const sl_listen_cfg *l,
                          sl_tls_config *tls, char *err, size_t errlen);

/* Stop accepting, close idle connections, and let in-flight requests
 * finish with "Connection: close". `done` runs once no connection is left
 * (possibly immediately). */
void sl_http_server_drain(sl_http_server *s, void (*done)(void *), void *arg);

/* Close every connection now (drain timeout); in-flight handlers get
 * on_abort. */
void sl_http_server_close_all(sl_http_server *s);

/* Free the server once its listeners and connections are closed. */
void sl_http_server_free(sl_http_server *s);

/* A request header by lowercase name, or NULL. */
const sl_str *sl_http_header(const sl_http_req *r, const char *lower);

/* ---- responses ---- */

/* Start the response: status line. */
int sl_http_response_begin(sl_http_req *r, int status);
/* Add a header (the server adds connection, framing and x-request-id). */
int sl_http_response_header(sl_http_req *r, const char *name, size_t nlen,
                            const char *value, size_t vlen);
/* End the head. content_length < 0 streams the body (chunked for HTTP/1.1,
 * close-delimited for HTTP/1.0). */
int sl_http_response_head_end(sl_http_req *r, int64_t content_length);
/* Append body bytes (copied into the output buffer). */
int sl_http_response_body(sl_http_req *r, const char *p, size_t n);
/* Hand buffered output to the socket. */
int sl_http_response_flush(sl_http_req *r);
/* Finish the response; r is invalid afterwards. */
void sl_http_response_end(sl_http_req *r);
/* The response cannot be finished: close the connection so the client
 * sees a truncated answer instead of a wrong one. r is invalid afterwards. */
void sl_http_response_abort(sl_http_req *r);
/* A complete error response in the OpenAI shape
 * {"error":{"message","type","code"}}, then end. r is invalid afterwards. */
void sl_http_send_error(sl_http_req *r, int status, const char *type,
                        const char *code, const char *message);
/* Append bytes to the output exactly as given, outside any framing (the
 * mock uses it to misbehave on purpose). */
int sl_http_response_raw(sl_http_req *r, const char *p, size_t n);
/* Response bytes queued behind the kernel. */
size_t sl_http_write_pending(const sl_http_req *r);

/* Reason phrase for a status code. */
const char *sl_http_reason(int status);

#endif
