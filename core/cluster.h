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

/* ---- the main thread's client: policy distribution -------------------- *
 * (cluster_policy.c) One command and one subscriber connection on the
 * main loop, for the admin room: published versions (bundle + SHA-256 in
 * Redis, announced on <prefix>policy), this instance's heartbeat with its
 * live version, the list of instances, and proposed changes with their
 * approvals, so four-eyes holds across instances. Every call is
 * asynchronous except sl_cluster_latest_sync (start-up, before the loop
 * runs). Callbacks run on the main loop; `r` is borrowed for the call. */

typedef struct sl_cluster_admin sl_cluster_admin;

/* A Redis answer flattened to strings: s[i] is NULL for a nil. */
typedef struct sl_cluster_strs {
    int n;
    const char **s;
    const size_t *len;
} sl_cluster_strs;

/* rc 0 and the answer, or a negative SL_E* (Redis down, refused: r is
 * NULL). Runs exactly once, also when the client closes. */
typedef void (*sl_cluster_reply_cb)(void *arg, int rc,
                                    const sl_cluster_strs *r);

typedef struct sl_cluster_admin_hooks {
    /* another instance published `version` (`instance` is who, `actor`
     * the admin token name there) */
    void (*on_policy)(void *arg, const char *version, const char *instance,
                      const char *actor);
    /* the subscription is (again) in place, and the command connection
     * ready: catch up on what was published meanwhile */
    void (*on_ready)(void *arg);
    /* another instance added or revoked an admin token */
    void (*on_tokens)(void *arg);
    void *arg;
} sl_cluster_admin_hooks;

/* Start the main thread's client on loop (the first tick connects).
 * NULL *out when cfg has no cluster section. */
int sl_cluster_admin_new(uv_loop_t *loop, const sl_config *cfg,
                         const sl_cluster_admin_hooks *h,
                         sl_cluster_admin **out, char *err, size_t errlen);
/* Close the connections and timers (pending callbacks get SL_ECANCELED);
 * free after the loop ran the closes. NULL is a no-op for both. */
void sl_cluster_admin_close(sl_cluster_admin *c);
void sl_cluster_admin_free(sl_cluster_admin *c);

/* Whether commands can be sent now. */
int sl_cluster_admin_ready(const sl_cluster_admin *c);

/* This instance's name (after setup). */
const char *sl_cluster_instance(void);

/* The heartbeat value (JSON; copied), written now and every 2 s to
 * <prefix>inst:<instance>, expiring after 10 s. */
void sl_cluster_admin_beat(sl_cluster_admin *c, const char *json);

/* How a version is put in Redis. */
enum {
    SL_CLUSTER_PUT_STORE = 0,    /* store the bundle only (a change's) */
    SL_CLUSTER_PUT_ANNOUNCE = 1, /* store, make it latest, announce it */
    SL_CLUSTER_PUT_SEED = 2      /* store and make it latest if none is */
};

/* Store `bundle` (sha256 its hex digest) as version; `actor` and
 * `action` are recorded with it. The answer: ["1"] when latest was set. */
int sl_cluster_policy_put(sl_cluster_admin *c, const char *version,
                          const char *bundle, size_t len, const char *sha256,
                          const char *actor, const char *action, int mode,
                          sl_cluster_reply_cb cb, void *arg);
/* [bundle, sha256] of a stored version (nils when unknown). */
int sl_cluster_policy_get(sl_cluster_admin *c, const char *version,
                          sl_cluster_reply_cb cb, void *arg);
/* [latest version] (nil when none). */
int sl_cluster_policy_latest(sl_cluster_admin *c, sl_cluster_reply_cb cb,
                             void *arg);
/* Every live heartbeat value, by instance name. */
int sl_cluster_instances(sl_cluster_admin *c, sl_cluster_reply_cb cb,
                         void *arg);

/* Changes: `record` is the change's JSON without status and approvers. */
int sl_cluster_change_put(sl_cluster_admin *c, const char *id,
                          const char *record, sl_cluster_reply_cb cb,
                          void *arg);
/* Every change: triples [record, status, approvers ("\n"-separated)]. */
int sl_cluster_changes(sl_cluster_admin *c, sl_cluster_reply_cb cb, void *arg);
/* Add `who` to a pending change's approvers, atomically: [status,
 * approvers], or [status] alone when the change is not pending (nil when
 * unknown). */
int sl_cluster_change_approve(sl_cluster_admin *c, const char *id,
                              const char *who, sl_cluster_reply_cb cb,
                              void *arg);
int sl_cluster_change_status(sl_cluster_admin *c, const char *id,
                             const char *status, sl_cluster_reply_cb cb,
                             void *arg);

/* Admin tokens added through the API: put `record` (JSON; "" for a
 * revoked token) under `name` and tell the other instances. ["1"]. */
int sl_cluster_token_put(sl_cluster_admin *c, const char *name,
                         const char *record, const char *actor,
                         sl_cluster_reply_cb cb, void *arg);
/* Every token: pairs [name, record]. */
int sl_cluster_tokens(sl_cluster_admin *c, sl_cluster_reply_cb cb, void *arg);

/* Start-up, before any loop runs (blocking, at most cluster.timeout per
 * step): the latest published version and its bundle (malloc'd, caller
 * frees), or *version "" when none. SL_ECONNECT with the reason when Redis
 * cannot be asked. */
int sl_cluster_latest_sync(const sl_config *cfg, char version[17],
                           char **bundle, size_t *len, char sha256[65],
                           char *err, size_t errlen);

#endif
