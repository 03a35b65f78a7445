/* dns.h — asynchronous name resolution with a per-worker cache.
 *
 * Lookups run on libuv's thread pool (getaddrinfo); answers are reused for
 * the configured TTL, concurrent lookups of one name share one query, and
 * numeric addresses never leave the caller's stack. */
#ifndef SL_DNS_H
#define SL_DNS_H

#include "common.h"
#include <netinet/in.h>
#include <uv.h>

typedef struct sl_dns sl_dns;
typedef struct sl_dns_waiter sl_dns_waiter;

/* status 0 with the address (port set), or SL_EDNS with addr NULL. */
typedef void (*sl_dns_cb)(void *data, int status, const struct sockaddr *addr);

sl_dns *sl_dns_new(uv_loop_t *loop, uint64_t ttl_ms);
/* Free the cache; lookups still running are detached and clean up after
 * themselves (their callbacks are not called). */
void sl_dns_free(sl_dns *d);

/* Fill *out from a numeric host or a fresh cache entry: 0, or SL_EAGAIN
 * when an asynchronous lookup is needed. */
int sl_dns_cached(sl_dns *d, const char *host, uint16_t port,
                  struct sockaddr_storage *out);

/* Start (or join) an asynchronous lookup. `cb` runs once on the loop unless
 * sl_dns_cancel(*w) is called first. */
int sl_dns_resolve(sl_dns *d, const char *host, uint16_t port, sl_dns_cb cb,
                   void *data, sl_dns_waiter **w);
void sl_dns_cancel(sl_dns_waiter *w);

#endif
