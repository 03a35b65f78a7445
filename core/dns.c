/* dns.c — cached asynchronous resolution (see dns.h). */
#include "dns.h"
#include "log.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>

struct sl_dns_waiter {
    sl_dns_waiter *next;
    sl_dns_cb cb; /* NULL once canceled */
    void *data;
    uint16_t port;
};

typedef struct entry {
    struct entry *next;
    char *host;
    struct sockaddr_storage addr;
    uint64_t expires; /* uv_now() ms */
    int ok;
    uv_getaddrinfo_t *query; /* running lookup, or NULL */
    sl_dns_waiter *waiters;
} entry;

struct sl_dns {
    uv_loop_t *loop;
    uint64_t ttl;
    entry *entries;
};

typedef struct {
    uv_getaddrinfo_t req;
    sl_dns *dns; /* NULL once the cache is gone */
    entry *e;
} query;

sl_dns *sl_dns_new(uv_loop_t *loop, uint64_t ttl_ms)
{
    sl_dns *d = calloc(1, sizeof(*d));
    if (d) {
        d->loop = loop;
        d->ttl = ttl_ms;
    }
    return d;
}

static void free_waiters(sl_dns_waiter *w)
{
    while (w) {
        sl_dns_waiter *n = w->next;
        free(w);
        w = n;
    }
}

void sl_dns_free(sl_dns *d)
{
    if (!d)
        return;
    entry *e = d->entries;
    while (e) {
        entry *n = e->next;
        if (e->query) /* the query callback frees it */
            ((query *)e->query)->dns = NULL;
        else {
            free_waiters(e->waiters);
            free(e->host);
            free(e);
        }
        e = n;
    }
    free(d);
}

static void set_port(struct sockaddr_storage *a, uint16_t port)
{
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)a)->sin6_port = htons(port);
}

static int numeric(const char *host, uint16_t port,
                   struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        return 0;
    }
    return SL_EAGAIN;
}

static entry *find(sl_dns *d, const char *host)
{
    for (entry *e = d->entries; e; e = e->next)
        if (strcmp(e->host, host) == 0)
            return e;
    return NULL;
}

int sl_dns_cached(sl_dns *d, const char *host, uint16_t port,
                  struct sockaddr_storage *out)
{
    if (numeric(host, port, out) == 0)
        return 0;
    entry *e = find(d, host);
    if (e && e->ok && !e->query && uv_now(d->loop) < e->expires) {
        *out = e->addr;
        set_port(out, port);
        return 0;
    }
    return SL_EAGAIN;
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    query *q = (query *)req;
    entry *e = q->e;
    sl_dns *d = q->dns;
    e->query = NULL;
    e->ok = status == 0 && res != NULL;
    if (e->ok) {
        memset(&e->addr, 0, sizeof(e->addr));
        memcpy(&e->addr, res->ai_addr, res->ai_addrlen);
    } else if (d) {
        sl_log_warn("dns: cannot resolve %s: %s", e->host, uv_strerror(status));
    }
    uv_freeaddrinfo(res);
    free(q);
    sl_dns_waiter *w = e->waiters;
    e->waiters = NULL;
    if (!d) { /* the cache was freed while we ran */
        free_waiters(w);
        free(e->host);
        free(e);
        return;
    }
    /* Failures are not cached: the next request asks again. */
    e->expires = e->ok ? uv_now(d->loop) + d->ttl : 0;
    while (w) {
        sl_dns_waiter *n = w->next;
        if (w->cb) {
            struct sockaddr_storage a = e->addr;
            set_port(&a, w->port);
            w->cb(w->data, e->ok ? 0 : SL_EDNS,
                  e->ok ? (struct sockaddr *)&a : NULL);
        }
        free(w);
        w = n;
    }
}

int sl_dns_resolve(sl_dns *d, const char *host, uint16_t port, sl_dns_cb cb,
                   void *data, sl_dns_waiter **out)
{
    entry *e = find(d, host);
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e || !(e->host = strdup(host))) {
            free(e);
            return SL_ENOMEM;
        }
        e->next = d->entries;
        d->entries = e;
    }
    sl_dns_waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return SL_ENOMEM;
    w->cb = cb;
    w->data = data;
    w->port = port;
    if (!e->query) {
        query *q = calloc(1, sizeof(*q));
        if (!q) {
            free(w);
            return SL_ENOMEM;
        }
        q->dns = d;
        q->e = e;
        struct addrinfo hints = {0};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int rc = uv_getaddrinfo(d->loop, &q->req, resolved, host, NULL, &hints);
        if (rc < 0) {
            free(q);
            free(w);
            return SL_EDNS;
        }
        e->query = &q->req;
    }
    w->next = e->waiters;
    e->waiters = w;
    *out = w;
    return 0;
}

void sl_dns_cancel(sl_dns_waiter *w)
{
    if (w)
        w->cb = NULL;
}
