/* cluster_int.h — what the two halves of the cluster room share
 * (cluster_counters.c: the process-wide counters; cluster.c: the Redis
 * clients). Not for other rooms. */
#ifndef SL_CLUSTER_INT_H
#define SL_CLUSTER_INT_H

#include <stdatomic.h>

#include "cluster.h"

typedef struct cl_counter cl_counter;

/* Pending increments taken from the counters, sent as one script. The
 * batch owns `args`; it is freed by sl_cluster__batch_free. */
typedef struct cl_batch {
    struct cl_batch *next; /* on a client's retry list */
    char id[200];          /* flush id: Redis applies a batch once */
    int n;
    cl_counter **counters;
    double *deltas;
    double *ttls;   /* seconds */
    double sent_at; /* monotonic seconds, 0 = not in flight */
} cl_batch;

/* Process-wide settings and statistics. */
typedef struct cl_global {
    int enabled;
    double flush_units;
    int fail_closed;
    atomic_int ready; /* clients with a ready connection */
    atomic_uint_fast64_t local_counted, refused, share_busy, flushes,
        reconnects, reseeds, flags_received;
} cl_global;

extern cl_global sl_cluster__g;

/* Set up the counters (once; thread-safe). */
void sl_cluster__counters_init(double flush_units, int fail_closed);

/* Up to `max` counters with pending units, moved in flight as a batch
 * (NULL when none is pending). */
cl_batch *sl_cluster__take_batch(int max);

/* Redis applied `b` and answered the totals `values` (one per counter):
 * they become the last known global values. */
void sl_cluster__batch_done(cl_batch *b, const double *values);

/* Whether any counter has units pending. */
int sl_cluster__pending(void);

void sl_cluster__batch_free(cl_batch *b);

/* A batch that will never reach Redis (its client is closing): its units
 * are pending again, for another worker to send. */
void sl_cluster__batch_abort(cl_batch *b);

/* A counter's key (immutable; valid while a batch holds the counter). */
const char *sl_cluster__counter_key(const cl_counter *e, size_t *len);

/* The Redis epoch this process counts in ("" before the first). Called by a
 * client that just connected with the epoch Redis holds: returns 1 when it
 * is new to this process after another one (Redis lost its data: every
 * contribution this instance made is pending again, to be written back),
 * else 0. */
int sl_cluster__epoch_seen(const char *epoch);

/* Drop counters whose TTL ran out and that hold nothing pending. */
void sl_cluster__sweep(void);

/* Ask this thread's client to flush soon (no-op elsewhere). */
void sl_cluster__kick(void);

/* Set up the process-wide half once (resolve the address, read the
 * password): 0, or SL_ECONFIG with the reason. Any thread. */
int sl_cluster__setup(const sl_config *cfg, char *err, size_t errlen);

/* Where Redis is and who this instance is (valid after setup). */
typedef struct cl_server {
    const char *ip;
    int port, db;
    const char *password; /* or NULL */
    const char *prefix, *instance, *nonce;
    double timeout_s;
} cl_server;

void sl_cluster__server(cl_server *out);

#endif
