/* http_fetch.c — the blocking HTTP/1.1 client of background threads (see
 * http_fetch.h): resolve and connect within the deadline, TLS with
 * mbedTLS when the URL says https, one request, one answer, close. */
#include "http_fetch.h"
#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define DEFAULT_MAX_BODY (1024 * 1024)

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sl_fetch_parse_url(const char *url, int https_only, sl_fetch_url *u)
{
    const char *h;
    if (strncmp(url, "https://", 8) == 0) {
        u->tls = 1;
        h = url + 8;
    } else if (!https_only && strncmp(url, "http://", 7) == 0) {
        u->tls = 0;
        h = url + 7;
    } else {
        return SL_EINVAL;
    }
    const char *end = h + strcspn(h, "/?#");
    if (memchr(h, '@', (size_t)(end - h)))
        return SL_EINVAL; /* no userinfo */
    const char *colon = NULL;
    if (*h == '[') { /* RFC 3986 §3.2.2: IPv6 literal */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return SL_EINVAL;
        if ((size_t)(rb - h - 1) >= sizeof(u->host))
            return SL_EINVAL;
        memcpy(u->host, h + 1, (size_t)(rb - h - 1));
        u->host[rb - h - 1] = 0;
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        const char *he = colon ? colon : end;
        if (he == h || (size_t)(he - h) >= sizeof(u->host))
            return SL_EINVAL;
        memcpy(u->host, h, (size_t)(he - h));
        u->host[he - h] = 0;
    }
    if (colon) {
        size_t pl = (size_t)(end - colon - 1);
        if (pl == 0 || pl >= sizeof(u->port) ||
            strspn(colon + 1, "0123456789") < pl)
            return SL_EINVAL;
        memcpy(u->port, colon + 1, pl);
        u->port[pl] = 0;
    } else {
        strcpy(u->port, u->tls ? "443" : "80");
    }
    const char *p = *end == '/' || *end == '?' ? end : "/";
    size_t plen = strcspn(p, "#");
    if (plen + 1 >= sizeof(u->path) || strpbrk(p, " \r\n"))
        return SL_EINVAL;
    size_t off = 0;
    if (*p == '?')
        u->path[off++] = '/';
    memcpy(u->path + off, p, plen);
    u->path[off + plen] = 0;
    return 0;
}

/* A TCP connection to host:port within timeout_ms; the fd or a negative
 * SL_E* code. */
static int connect_timeout(const char *host, const char *port, int timeout_ms,
                           char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        snprintf(err, errlen, "cannot resolve %.100s: %s", host,
                 gai_strerror(g));
        return SL_EDNS;
    }
    int fd = -1, rc = SL_ECONNECT;
    snprintf(err, errlen, "cannot connect to %.100s:%.8s", host, port);
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd =
            socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (poll(&p, 1, timeout_ms) == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
                soerr == 0)
                r = 0;
            else
                snprintf(err, errlen, "cannot connect to %.100s:%.8s: %.60s",
                         host, port, soerr ? strerror(soerr) : "timed out");
            rc = soerr == ECONNREFUSED ? SL_ECONNREFUSED
                 : soerr               ? SL_ECONNECT
                                       : SL_ETIMEDOUT;
        } else if (r != 0) {
            snprintf(err, errlen, "cannot connect to %.100s:%.8s: %.60s", host,
                     port, strerror(errno));
            rc = errno == ECONNREFUSED ? SL_ECONNREFUSED : SL_ECONNECT;
        }
        if (r != 0) {
            close(fd);
            fd = -1;
            continue;
        }
        fcntl(fd, F_SETFL, fl);
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    freeaddrinfo(res);
    return fd >= 0 ? fd : rc;
}

static void tls_reason(int ret, const char *what, const char *host, char *err,
                       size_t errlen)
{
    char m[128];
    mbedtls_strerror(ret, m, sizeof(m));
    snprintf(err, errlen, "%.40s %.100s: %.100s", what, host, m);
}

/* The status of the response head in raw[0..n), or -1. */
static int head_status(const char *raw, size_t n)
{
    int status = 0;
    if (n < 12 || strncmp(raw, "HTTP/1.", 7) != 0 ||
        sscanf(raw + 8, " %3d", &status) != 1 || status < 100)
        return -1;
    return status;
}

/* RFC 9112 §6.3: these answers end with their head. */
static int bodiless(int status, int head_request)
{
    return head_request || status == 204 || status == 304 ||
           (status >= 100 && status < 200);
}

/* The body of a complete HTTP/1.x response in raw[0..n) (its status in
 * *status), or -1 with a reason. Handles content-length, chunked and
 * close-delimited framing. */
static long http_body(char *raw, size_t n, int eof, int head_request,
                      int *status, char **body, char *err, size_t errlen)
{
    char *end = memmem(raw, n, "\r\n\r\n", 4);
    if (!end) {
        snprintf(err, errlen, "no complete HTTP response head");
        return -1;
    }
    if ((*status = head_status(raw, n)) < 0) {
        snprintf(err, errlen, "not an HTTP response");
        return -1;
    }
    long clen = -1;
    int chunked = 0;
    char *line = memmem(raw, (size_t)(end - raw) + 2, "\r\n", 2) + 2;
    while (line < end) {
        char *le = memmem(line, (size_t)(end - line) + 2, "\r\n", 2);
        if (strncasecmp(line, "content-length:", 15) == 0)
            clen = strtol(line + 15, NULL, 10);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0 &&
                 memmem(line, (size_t)(le - line), "chunked", 7))
            chunked = 1;
        line = le + 2;
    }
    char *b = end + 4;
    size_t avail = n - (size_t)(b - raw);
    *body = b;
    if (bodiless(*status, head_request))
        return 0;
    if (chunked) { /* RFC 9112 §7.1: decode in place */
        size_t in = 0, out = 0;
        for (;;) {
            char *nl = memmem(b + in, avail - in, "\r\n", 2);
            if (!nl)
                break;
            unsigned long sz = strtoul(b + in, NULL, 16);
            size_t start = (size_t)(nl - b) + 2;
            if (sz == 0)
                return (long)out;
            if (sz > avail || start + sz + 2 > avail)
                break;
            memmove(b + out, b + start, sz);
            out += sz;
            in = start + sz + 2;
        }
        snprintf(err, errlen, "truncated chunked body");
        return -1;
    }
    if (clen >= 0) {
        if ((size_t)clen > avail) {
            snprintf(err, errlen, "truncated body");
            return -1;
        }
        return clen;
    }
    if (!eof) {
        snprintf(err, errlen, "truncated body");
        return -1;
    }
    return (long)avail;
}

/* Is the response in raw[0..n) complete without waiting for EOF? */
static int http_complete(const char *raw, size_t n, int head_request)
{
    const char *end = memmem(raw, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    if (bodiless(head_status(raw, n), head_request))
        return 1;
    size_t hl = (size_t)(end - raw) + 4;
    for (const char *l = raw; l < end;
         l = (const char *)memmem(l, (size_t)(end + 2 - l), "\r\n", 2) + 2) {
        if (strncasecmp(l, "content-length:", 15) == 0)
            return n - hl >= (size_t)strtol(l + 15, NULL, 10);
        if (strncasecmp(l, "transfer-encoding:", 18) == 0)
            return memmem(raw + hl, n - hl, "\r\n0\r\n", 5) != NULL ||
                   (n - hl >= 3 && memcmp(raw + hl, "0\r\n", 3) == 0);
    }
    return 0;
}

/* mbedtls_net_send without SIGPIPE: a peer that hangs up must not take
 * the process down, whatever the process does with the signal. */
static int net_send(void *ctx, const unsigned char *buf, size_t len)
{
    int fd = ((mbedtls_net_context *)ctx)->fd;
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    if (errno == EPIPE || errno == ECONNRESET)
        return MBEDTLS_ERR_NET_CONN_RESET;
    return MBEDTLS_ERR_NET_SEND_FAILED;
}

/* One connection, plain or TLS, and the deadline of the whole exchange. */
typedef struct conn {
    sl_fetch_url u;
    double deadline;
    mbedtls_net_context net;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} conn;

static int remaining_ms(const conn *c)
{
    double left = c->deadline - mono_s();
    return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

static int tls_start(conn *c, const char *ca_file, int timeout_ms, char *err,
                     size_t errlen)
{
    int ret;
    const char *cafile = ca_file ? ca_file : SYSTEM_CA_BUNDLE;
    if ((ret = mbedtls_ctr_drbg_seed(
             &c->drbg, mbedtls_entropy_func, &c->entropy,
             (const unsigned char *)"sluice-fetch", 12)) != 0) {
        tls_reason(ret, "cannot seed the RNG for", c->u.host, err, errlen);
        return SL_ETLS;
    }
    if (mbedtls_x509_crt_parse_file(&c->ca, cafile) < 0 || c->ca.version == 0) {
        snprintf(err, errlen, "cannot load CA certificates from %s", cafile);
        return SL_ETLS;
    }
    mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT,
                                MBEDTLS_SSL_TRANSPORT_STREAM,
                                MBEDTLS_SSL_PRESET_DEFAULT);
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    mbedtls_ssl_conf_read_timeout(&c->conf, (uint32_t)timeout_ms);
    if ((ret = mbedtls_ssl_setup(&c->ssl, &c->conf)) != 0 ||
        (ret = mbedtls_ssl_set_hostname(&c->ssl, c->u.host)) != 0) {
        tls_reason(ret, "cannot set up TLS for", c->u.host, err, errlen);
        return SL_ETLS;
    }
    return 0;
}

static int tls_handshake(conn *c, char *err, size_t errlen)
{
    int ret;
    mbedtls_ssl_set_bio(&c->ssl, &c->net, net_send, NULL,
                        mbedtls_net_recv_timeout);
    while ((ret = mbedtls_ssl_handshake(&c->ssl)) != 0) {
        if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
            char info[160];
            mbedtls_x509_crt_verify_info(
                info, sizeof(info), "", mbedtls_ssl_get_verify_result(&c->ssl));
            info[strcspn(info, "\n")] = 0;
            snprintf(err, errlen, "certificate of %.100s not trusted: %.100s",
                     c->u.host, info);
            return SL_ETLS;
        }
        if ((ret != MBEDTLS_ERR_SSL_WANT_READ &&
             ret != MBEDTLS_ERR_SSL_WANT_WRITE) ||
            mono_s() > c->deadline) {
            tls_reason(ret, "TLS handshake failed with", c->u.host, err,
                       errlen);
            return SL_ETLS;
        }
    }
    return 0;
}

static int conn_write(conn *c, const char *p, size_t n, char *err,
                      size_t errlen)
{
    for (size_t off = 0; off < n;) {
        if (c->u.tls) {
            int ret = mbedtls_ssl_write(&c->ssl, (const unsigned char *)p + off,
                                        n - off);
            if (ret > 0)
                off += (size_t)ret;
            else if ((ret != MBEDTLS_ERR_SSL_WANT_WRITE &&
                      ret != MBEDTLS_ERR_SSL_WANT_READ) ||
                     mono_s() > c->deadline) {
                tls_reason(ret, "cannot send the request to", c->u.host, err,
                           errlen);
                return SL_EIO;
            }
            continue;
        }
        ssize_t w = send(c->net.fd, p + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            int timed_out = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
            snprintf(err, errlen, "cannot send the request to %.100s: %s",
                     c->u.host, timed_out ? "timed out" : strerror(errno));
            return timed_out ? SL_ETIMEDOUT : SL_EIO;
        }
        if (mono_s() > c->deadline) {
            snprintf(err, errlen,
                     "cannot send the request to %.100s: timed "
                     "out",
                     c->u.host);
            return SL_ETIMEDOUT;
        }
    }
    return 0;
}

/* Read some of the answer: bytes read, 0 at the end of the stream, or a
 * negative SL_E* code with a reason. */
static long conn_read(conn *c, char *p, size_t n, char *err, size_t errlen)
{
    for (;;) {
        if (c->u.tls) {
            int ret = mbedtls_ssl_read(&c->ssl, (unsigned char *)p, n);
            if (ret > 0)
                return ret;
            if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ||
                ret == MBEDTLS_ERR_NET_CONN_RESET)
                return 0; /* a close without close_notify still ends it */
            if ((ret != MBEDTLS_ERR_SSL_WANT_READ &&
                 ret != MBEDTLS_ERR_SSL_WANT_WRITE) ||
                mono_s() > c->deadline) {
                tls_reason(ret, "cannot read the answer from", c->u.host, err,
                           errlen);
                return ret == MBEDTLS_ERR_SSL_TIMEOUT ? SL_ETIMEDOUT : SL_EIO;
            }
            continue;
        }
        struct pollfd pf = {.fd = c->net.fd, .events = POLLIN};
        int pr = poll(&pf, 1, remaining_ms(c));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0) {
            snprintf(err, errlen,
                     "cannot read the answer from %.100s: timed "
                     "out",
                     c->u.host);
            return SL_ETIMEDOUT;
        }
        ssize_t r = pr > 0 ? recv(c->net.fd, p, n, 0) : -1;
        if (r >= 0)
            return (long)r;
        if (errno == EINTR || errno == EAGAIN)
            continue;
        if (errno == ECONNRESET)
            return 0;
        snprintf(err, errlen, "cannot read the answer from %.100s: %s",
                 c->u.host, strerror(errno));
        return SL_EIO;
    }
}

/* The request head in b: caller headers checked for CR, LF and NUL so no
 * value can smuggle in a header or a second request. */
static int build_head(const sl_fetch_req *rq, const conn *c, sl_buf *b,
                      char *err, size_t errlen)
{
    const sl_fetch_url *u = &c->u;
    int v6 = strchr(u->host, ':') != NULL;
    int dflt = strcmp(u->port, u->tls ? "443" : "80") == 0;
    sl_buf_printf(b, "%s %s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n", rq->method,
                  u->path, v6 ? "[" : "", u->host, v6 ? "]" : "",
                  dflt ? "" : ":", dflt ? "" : u->port);
    sl_buf_puts(b, "User-Agent: sluice/" SLUICE_VERSION
                   "\r\nConnection: close\r\n");
    for (int i = 0; i < rq->nheaders; i++) {
        const char *name = rq->headers[i].name, *val = rq->headers[i].value;
        if (!*name || name[strcspn(name, "\r\n: \t")] ||
            val[strcspn(val, "\r\n")]) {
            snprintf(err, errlen, "header %.60s: not a valid header", name);
            return SL_EINVAL;
        }
        sl_buf_printf(b, "%s: %s\r\n", name, val);
    }
    if (rq->body || strcmp(rq->method, "POST") == 0 ||
        strcmp(rq->method, "PUT") == 0)
        sl_buf_printf(b, "Content-Length: %zu\r\n", rq->body_len);
    if (sl_buf_puts(b, "\r\n") < 0) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    return 0;
}

static int exchange(const sl_fetch_req *rq, conn *c, sl_fetch_res *res,
                    char *err, size_t errlen)
{
    sl_buf head;
    sl_buf_init(&head, NULL);
    int rc = build_head(rq, c, &head, err, errlen);
    if (rc == 0)
        rc = conn_write(c, head.data, head.len, err, errlen);
    sl_buf_release(&head);
    if (rc == 0 && rq->body_len)
        rc = conn_write(c, rq->body, rq->body_len, err, errlen);
    if (rc < 0)
        return rc;

    size_t max_body = rq->max_body ? rq->max_body : DEFAULT_MAX_BODY;
    int head_req = strcmp(rq->method, "HEAD") == 0;
    size_t cap = 16384, n = 0;
    char *raw = malloc(cap + 1);
    if (!raw) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    int eof = 0;
    for (;;) {
        if (n == cap) {
            if (cap > max_body + 16384) {
                snprintf(err, errlen, "response larger than %zu %s",
                         max_body % (1024 * 1024) ? max_body
                                                  : max_body / (1024 * 1024),
                         max_body % (1024 * 1024) ? "bytes" : "MiB");
                free(raw);
                return SL_ETOOLARGE;
            }
            char *bigger = realloc(raw, cap * 2 + 1);
            if (!bigger) {
                snprintf(err, errlen, "out of memory");
                free(raw);
                return SL_ENOMEM;
            }
            raw = bigger;
            cap *= 2;
        }
        long r = conn_read(c, raw + n, cap - n, err, errlen);
        if (r < 0) {
            free(raw);
            return (int)r;
        }
        if (r == 0) {
            eof = 1;
            break;
        }
        n += (size_t)r;
        raw[n] = 0;
        if (http_complete(raw, n, head_req))
            break;
    }
    raw[n] = 0;
    char *body;
    long blen =
        http_body(raw, n, eof, head_req, &res->status, &body, err, errlen);
    if (blen < 0) {
        free(raw);
        return SL_EPROTO;
    }
    if ((size_t)blen > max_body) {
        snprintf(err, errlen, "response larger than %zu %s",
                 max_body % (1024 * 1024) ? max_body : max_body / (1024 * 1024),
                 max_body % (1024 * 1024) ? "bytes" : "MiB");
        free(raw);
        return SL_ETOOLARGE;
    }
    memmove(raw, body, (size_t)blen); /* the body, at the buffer's start */
    raw[blen] = 0;
    res->body = raw;
    res->body_len = (size_t)blen;
    if (c->u.tls)
        mbedtls_ssl_close_notify(&c->ssl);
    return 0;
}

int sl_fetch(const sl_fetch_req *rq, sl_fetch_res *res, char *err,
             size_t errlen)
{
    memset(res, 0, sizeof(*res));
    conn *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    if (sl_fetch_parse_url(rq->url, rq->https_only, &c->u) != 0) {
        snprintf(err, errlen,
                 rq->https_only ? "not an https:// URL"
                                : "not an http(s):// URL");
        free(c);
        return SL_EINVAL;
    }
    int timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms : 5000;
    c->deadline = mono_s() + timeout_ms / 1000.0;
    mbedtls_net_init(&c->net);
    mbedtls_ssl_init(&c->ssl);
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->ca);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    int rc = 0;
    if (c->u.tls)
        rc = tls_start(c, rq->ca_file, timeout_ms, err, errlen);
    if (rc == 0) {
        c->net.fd =
            connect_timeout(c->u.host, c->u.port, timeout_ms, err, errlen);
        if (c->net.fd < 0) {
            rc = c->net.fd;
            c->net.fd = -1;
        }
    }
    if (rc == 0 && c->u.tls)
        rc = tls_handshake(c, err, errlen);
    if (rc == 0)
        rc = exchange(rq, c, res, err, errlen);
    mbedtls_net_free(&c->net);
    mbedtls_ssl_free(&c->ssl);
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->ca);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    free(c);
    return rc;
}
