/* http_conn.h — the server's connection internals, shared by the two
 * files of the room: http_server.c (accept, parse, lifecycle) and
 * http_response.c (writing answers). Nothing outside them includes this. */
#ifndef SL_HTTP_CONN_H
#define SL_HTTP_CONN_H

#include "http_server.h"

#define READ_BLOCK (16 * 1024)
#define PENDING_MAX (64 * 1024) /* pipelined bytes buffered while busy */

enum sl_http_conn_state {
    ST_IDLE,     /* waiting for the first byte of a request */
    ST_HEAD,     /* reading the request head */
    ST_BODY,     /* reading the request body */
    ST_HANDLING, /* the handler owns the request */
    ST_CLOSING,
};

typedef struct sl_http_listener {
    uv_tcp_t tcp;
    sl_http_server *srv;
    sl_tls_config *tls;
    struct sl_http_listener *next;
} sl_http_listener;

struct sl_http_server {
    uv_loop_t *loop;
    sl_http_settings st;
    sl_http_handler h;
    llhttp_settings_t ps;
    sl_pool pool; /* READ_BLOCK blocks: reads, heads, bodies, output */
    sl_http_listener *listeners;
    sl_http_conn *conns;
    int nconns;
    int draining;
    void (*drain_done)(void *);
    void *drain_arg;
    sl_rand rand;
};

struct sl_http_conn {
    sl_stream stream;
    sl_http_server *srv;
    sl_http_conn *prev, *next;
    llhttp_t parser;
    enum sl_http_conn_state state;
    sl_http_head head; /* the target, then header names and values */
    sl_buf out;        /* response bytes not yet handed to the stream */
    sl_buf pending;    /* received, not yet parsed */
    sl_http_hdr *hdrs;
    uint32_t *offs; /* the head's offsets: 4 per header */
    uint32_t url_len;
    int reject_status; /* set by a callback that stops the parser */
    const char *reject_code;
    const char *reject_msg;
    char last_byte;
    uint8_t headers_done;
    uint8_t in_process;
    uint8_t again;
    uint8_t fresh;    /* no request started yet: the accept timer runs */
    uint8_t detached; /* off the server's list; the socket may linger */
    uint32_t trailer_bytes;
    sl_http_req req;
};

/* Internal calls between the room's two files (sl_http__ prefix). */

/* Hand buffered output to the stream. */
void sl_http__flush(sl_http_conn *c);
/* Queue a whole error answer in the OpenAI shape. */
void sl_http__write_error(sl_http_conn *c, int status, const char *type,
                          const char *code, const char *message, int close);
/* The handler finished its answer: keep the connection for the next
 * request (keep = 1) or close it once the answer is out. */
void sl_http__request_done(sl_http_conn *c, int keep);
/* Close now; a handler that owns the request gets on_abort. */
void sl_http__conn_close(sl_http_conn *c);
/* The answer cannot be finished: close the connection now. */
void sl_http__request_aborted(sl_http_conn *c);

#endif
