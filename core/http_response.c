/* http_response.c — writing answers on a server connection: status line,
 * headers, framing (content-length, chunked, or close-delimited for
 * HTTP/1.0), error answers in the OpenAI shape (see http_server.h). */
#include "http_conn.h"
#include "util.h"

#include <stdio.h>

const char *sl_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    }
    return "Unknown";
}

void sl_http__write_error(sl_http_conn *c, int status, const char *type,
                          const char *code, const char *message, int close)
{
    char body[768];
    char esc[512];
    size_t el = sl_json_escape(esc, sizeof(esc), message, strlen(message));
    int bl = snprintf(body, sizeof(body),
                      "{\"error\":{\"message\":\"%.*s\",\"type\":\"%s\","
                      "\"code\":\"%s\"}}\n",
                      (int)el, esc, type, code);
    sl_buf_printf(&c->out,
                  "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                  "content-length: %d\r\n%s",
                  status, sl_http_reason(status), bl,
                  close ? "connection: close\r\n" : "");
    if (c->req.id[0])
        sl_buf_printf(&c->out, "x-request-id: %s\r\n", c->req.id);
    sl_buf_append(&c->out, "\r\n", 2);
    if (c->req.method != HTTP_HEAD || !c->headers_done)
        sl_buf_append(&c->out, body, (size_t)bl);
}

void sl_http__flush(sl_http_conn *c)
{
    if (c->out.len == 0 || c->stream.closing)
        return;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int rc = sl_stream_write(&c->stream, &b, 1);
    c->out.len = 0;
    if (rc < 0 && rc != SL_ECANCELED)
        sl_http__conn_close(c);
}

const sl_str *sl_http_header(const sl_http_req *r, const char *lower)
{
    for (int i = 0; i < r->nheaders; i++)
        if (sl_ieq(r->headers[i].name.p, r->headers[i].name.n, lower))
            return &r->headers[i].value;
    return NULL;
}

/* ---- responses ---------------------------------------------------------- */

int sl_http_response_begin(sl_http_req *r, int status)
{
    sl_http_conn *c = r->conn;
    r->status = status;
    r->no_body = r->method == HTTP_HEAD || status == 204 || status == 304 ||
                 (status >= 100 && status < 200);
    /* on every response: appends, not printf */
    char line[16] = "HTTP/1.1 ";
    unsigned st = status >= 100 && status <= 999 ? (unsigned)status : 500;
    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    line[12] = ' ';
    const char *reason = sl_http_reason(status);
    return sl_buf_append(&c->out, line, 13) | sl_buf_puts(&c->out, reason) |
           sl_buf_append(&c->out, "\r\n", 2);
}

int sl_http_response_header(sl_http_req *r, const char *name, size_t nlen,
                            const char *value, size_t vlen)
{
    sl_buf *o = &r->conn->out;
    if (sl_buf_reserve(o, nlen + vlen + 4) < 0)
        return SL_ENOMEM;
    memcpy(o->data + o->len, name, nlen);
    o->len += nlen;
    o->data[o->len++] = ':';
    o->data[o->len++] = ' ';
    memcpy(o->data + o->len, value, vlen);
    o->len += vlen;
    o->data[o->len++] = '\r';
    o->data[o->len++] = '\n';
    return 0;
}

int sl_http_response_head_end(sl_http_req *r, int64_t content_length)
{
    sl_http_conn *c = r->conn;
    sl_buf *o = &c->out;
    int rc = 0;
    if (r->no_body) {
        if (r->method == HTTP_HEAD && content_length >= 0) {
            rc |= sl_buf_puts(o, "content-length: ");
            rc |= sl_buf_append_u64(o, (uint64_t)content_length);
            rc |= sl_buf_puts(o, "\r\n");
        }
    } else if (content_length >= 0) {
        rc |= sl_buf_puts(o, "content-length: ");
        rc |= sl_buf_append_u64(o, (uint64_t)content_length);
        rc |= sl_buf_puts(o, "\r\n");
    } else if (r->http_minor >= 1) {
        r->chunked = 1;
        rc |= sl_buf_puts(o, "transfer-encoding: chunked\r\n");
    } else {
        r->close_delimited = 1; /* HTTP/1.0 has no chunked coding */
    }
    if (!r->keep_alive || r->close_delimited || c->srv->draining)
        rc |= sl_buf_puts(o, "connection: close\r\n");
    else if (r->http_minor == 0)
        rc |= sl_buf_puts(o, "connection: keep-alive\r\n");
    rc |= sl_buf_puts(o, "x-request-id: ");
    rc |= sl_buf_puts(o, r->id);
    rc |= sl_buf_puts(o, "\r\n\r\n");
    r->head_sent = 1;
    return rc ? SL_ENOMEM : 0;
}

int sl_http_response_body(sl_http_req *r, const char *p, size_t n)
{
    if (n == 0 || r->no_body)
        return 0;
    sl_buf *o = &r->conn->out;
    if (r->bytes_sent == 0)
        r->first_byte_ns = sl_now_ns(); /* time to first token */
    r->bytes_sent += n;
    if (!r->chunked)
        return sl_buf_append(o, p, n);
    char hdr[20];
    int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
    if (sl_buf_reserve(o, (size_t)hl + n + 2) < 0)
        return SL_ENOMEM;
    memcpy(o->data + o->len, hdr, (size_t)hl);
    memcpy(o->data + o->len + hl, p, n);
    memcpy(o->data + o->len + hl + n, "\r\n", 2);
    o->len += (size_t)hl + n + 2;
    return 0;
}

int sl_http_response_raw(sl_http_req *r, const char *p, size_t n)
{
    return sl_buf_append(&r->conn->out, p, n);
}

int sl_http_response_flush(sl_http_req *r)
{
    sl_http__flush(r->conn);
    return r->conn->stream.closing ? SL_ECANCELED : 0;
}

size_t sl_http_write_pending(const sl_http_req *r)
{
    return r->conn->stream.write_pending;
}

void sl_http_response_end(sl_http_req *r)
{
    sl_http_conn *c = r->conn;
    if (c->state != ST_HANDLING)
        return;
    if (r->chunked)
        sl_buf_puts(&c->out, "0\r\n\r\n");
    int keep = r->keep_alive && !r->close_delimited && !c->srv->draining;
    sl_http__flush(c);
    sl_http__request_done(c, keep);
}

void sl_http_response_abort(sl_http_req *r)
{
    sl_http_conn *c = r->conn;
    if (c->state != ST_HANDLING)
        return;
    sl_http__flush(c);
    sl_http__request_aborted(c);
}

void sl_http_send_error(sl_http_req *r, int status, const char *type,
                        const char *code, const char *message)
{
    sl_http_conn *c = r->conn;
    r->status = status;
    int close = !r->keep_alive || c->srv->draining;
    sl_http__write_error(c, status, type, code, message, close);
    sl_http_response_end(r);
}
