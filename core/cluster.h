/* cluster.h — scale-out: several sluice instances share one Redis, so
 * quotas, rate limits and budgets count cluster-wide and a circuit breaker
 * opened on one instance is open on all (docs/scale-out.md).
 *
 * Two halves. The process-wide half holds the cluster counters: every
 * worker adds to them locally (sl_cluster_incr, no Redis on the request
 * path) and the per-worker clients flush what is pending in batches, one
 * atomic script per batch, keeping the value Redis answered as the
 * counter's last known global value. The per-worker half is a client: a
 * hiredis connection on the worker's own libuv loop, which flushes, writes
 * shared flags, and (on one worker per process) holds the pub/sub
 * subscription through which flags written elsewhere arrive. Nothing here
 * blocks a request: every Redis call is asynchronous, and a lost
 * connection is retried with backoff while counters fall back to local
 * counting (fail open) or refuse (fail closed).
 *
 * Without a `cluster:` section sl_cluster_enabled() is 0 and nothing here
 * runs: sluice.shared stays in-process. */
#ifndef SL_CLUSTER_H
#define SL_CLUSTER_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "shdict.h"

typedef struct sl_cluster sl_cluster;

/* ---- the per-worker client --------------------------------------------- */

/* Start this worker's client on `loop` (call on the worker's thread): the
 * first call of the process also sets up the process-wide half (resolves
 * the address, reads the password). *out is NULL when cfg has no cluster
 * section. 0, or an error with the reason in err. */
int sl_cluster_client_new(uv_loop_t *loop, const sl_config *cfg, int worker,
                          sl_cluster **out, char *err, size_t errlen);

/* Begin closing: flush what is pending, then close the connections and
 * timers (the loop ends once they are closed). NULL is a no-op. */
void sl_cluster_client_close(sl_cluster *c);

/* Free a client whose loop has ended. NULL is a no-op. */
void sl_cluster_client_free(sl_cluster *c);

/* ---- the process-wide half (any thread) -------------------------------- */

/* Whether a cluster is configured (a client was created). */
int sl_cluster_enabled(void);

/* Counter fail modes: what sl_cluster_incr does while Redis is down. */
enum {
    SL_CLUSTER_FAIL_DEFAULT = -1,
    SL_CLUSTER_FAIL_OPEN = 0,
    SL_CLUSTER_FAIL_CLOSED = 1
};

/* Add `delta` to cluster counter `key` (TTL `ttl` seconds, 0 = none, set
 * when Redis creates it) and put in *out what this instance now believes
 * the total is: the last value Redis answered plus what this instance
 * added since. `share` bounds the increments this instance may hold
 * unacknowledged while Redis answers (0: twice flush_units). Returns 0;
 * SL_EAGAIN when the share is full while a flush is in flight (nothing
 * counted: the caller refuses or retries);
 * SL_ECONNECT when Redis is down and the counter fails closed (nothing
 * counted); SL_EINVAL for a bad key; SL_ENOMEM. */
int sl_cluster_incr(const char *key, size_t klen, double delta, double ttl,
                    int fail, double share, double *out);

/* The total sl_cluster_incr would report, without adding: 1 and *out when
 * this instance knows the counter, 0 when it does not. */
int sl_cluster_get(const char *key, size_t klen, double *out);

/* A flag shared by every instance (a breaker's state): stored in the
 * process-wide dictionary `d` at once, and written to Redis and announced
 * to the other instances as soon as a client can (they store it in their
 * own dictionary within milliseconds). SL_SHD_NIL deletes. Returns what
 * sl_shdict_set returns for the local store. */
int sl_cluster_set(sl_shdict *d, const char *key, size_t klen,
                   const sl_shd_value *v, double ttl);

/* What the cluster has done so far, for metrics and status. */
typedef struct sl_cluster_stats {
    int enabled;
    int redis_up;            /* some worker holds a ready connection */
    uint64_t counters;       /* cluster counters this instance holds */
    uint64_t local_counted;  /* increments counted locally, Redis down */
    uint64_t refused;        /* increments refused, Redis down, fail closed */
    uint64_t share_busy;     /* increments refused, local share in flight */
    uint64_t flushes;        /* batches Redis applied */
    uint64_t reconnects;     /* connections re-established */
    uint64_t reseeds;        /* times Redis had lost its data and this
                                instance's counts were written back */
    uint64_t flags_received; /* flags other instances announced */
} sl_cluster_stats;

void sl_cluster_get_stats(sl_cluster_stats *out);

#endif
