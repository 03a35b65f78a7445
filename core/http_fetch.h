/* http_fetch.h — a small blocking HTTP/1.1 client for background threads:
 * one request per connection (Connection: close), over TLS (https://,
 * certificate and host name verified against a CA file or the system
 * bundle, TLS 1.2 or newer) or plain TCP (http://), everything within one
 * deadline. Answers framed by content-length, chunked encoding or the
 * close of the connection are all read.
 *
 * Used by the JWKS fetch (lua_crypto.c) and the audit log's HTTP sink
 * (audit_sink.c). Never call it from a worker's loop: it blocks for up to
 * the timeout. Errors are short reasons meant for the error log; they name
 * the host but never a header value, a query string or a body. */
#ifndef SL_HTTP_FETCH_H
#define SL_HTTP_FETCH_H

#include "common.h"

/* A URL taken apart; host without brackets for an IPv6 literal. */
typedef struct sl_fetch_url {
    int tls; /* https:// */
    char host[256];
    char port[8];
    char path[1024]; /* path and query, "/" when none; no fragment */
} sl_fetch_url;

/* Parse an http:// or https:// URL (no userinfo; https only when
 * https_only): 0 or SL_EINVAL. */
int sl_fetch_parse_url(const char *url, int https_only, sl_fetch_url *u);

typedef struct sl_fetch_header {
    const char *name;
    const char *value;
} sl_fetch_header;

typedef struct sl_fetch_req {
    const char *method; /* "GET", "POST", ... */
    const char *url;
    int https_only;                 /* refuse http:// */
    const sl_fetch_header *headers; /* extra headers, borrowed */
    int nheaders;
    const char *body; /* borrowed; sent with a content-length */
    size_t body_len;
    const char *ca_file; /* NULL: the system bundle */
    int timeout_ms;      /* connect, handshake, send and answer together */
    size_t max_body;     /* a longer answer is an error (0: 1 MiB) */
} sl_fetch_req;

typedef struct sl_fetch_res {
    int status;
    char *body; /* NUL-terminated; the caller frees with free() */
    size_t body_len;
} sl_fetch_res;

/* Send rq and read the answer: 0 with res filled (any status), or a
 * negative SL_E* code with a reason in err and nothing to free. */
int sl_fetch(const sl_fetch_req *rq, sl_fetch_res *res, char *err,
             size_t errlen);

#endif
