/* metrics.h — process-wide metrics in the Prometheus text format.
 *
 * Two halves. The registry (metrics.c) is generic: families of counters,
 * gauges and histograms with fixed label names, a cap on the label sets a
 * family may hold, and the text exposition. The gateway's own families and
 * the calls that feed them (metrics_gateway.c) sit on top: one call when a
 * request ends (C), one from the Lua runtime's log phase (policy facts),
 * breaker transitions, and the live policy's version and exceptions.
 *
 * Workers are threads. Each thread that updates a registry gets its own
 * shard of values, locked only by that thread while it updates and by the
 * scraper while it sums the shards, so an update never waits on another
 * worker. Which label set is which series is decided once per label set
 * under the family's lock; after that a worker finds it in its own shard.
 * A family holds at most `max_series` label sets: a new one beyond that is
 * folded into the series whose labels all read "other", and each folded
 * update is counted in sluice_metrics_series_folded_total{family}. */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include "buf.h"

#define SL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define SL_METRICS_MAX_FAMILIES 64
#define SL_METRICS_MAX_LABELS 8
#define SL_METRICS_MAX_VALUE 128 /* bytes of a label value kept */

typedef enum {
    SL_METRIC_COUNTER,
    SL_METRIC_GAUGE, /* process-wide, set (last write wins) */
    SL_METRIC_HISTOGRAM,
} sl_metric_type;

/* What a family is. Strings are borrowed: they must outlive the registry
 * (string literals in practice). `labels` ends with NULL; `bounds` are the
 * histogram's upper bounds in increasing order (+Inf is implied). */
typedef struct sl_metric_def {
    const char *name;
    const char *help;
    sl_metric_type type;
    const char *const *labels;
    const double *bounds;
    int nbounds;
} sl_metric_def;

typedef struct sl_metrics sl_metrics;
typedef struct sl_metric_family sl_metric_family;
typedef struct sl_metrics_shard sl_metrics_shard;

/* ---- the registry ------------------------------------------------------ */

/* A registry whose families hold at most max_series label sets each (0:
 * 1000). Freed with sl_metrics_free() once no thread updates it. */
sl_metrics *sl_metrics_new(int max_series);
void sl_metrics_free(sl_metrics *m);
/* Change the cap; label sets already held stay. */
void sl_metrics_set_max_series(sl_metrics *m, int max_series);

/* Add a family (or find the one of that name). NULL when the registry is
 * full or out of memory. The registry owns it. */
sl_metric_family *sl_metrics_family(sl_metrics *m, const sl_metric_def *def);

/* Updates are made between begin and end, which lock the calling thread's
 * shard (created on first use; never shared with another updater). Hold it
 * for one burst of updates only, never across a wait. `values` holds one
 * string per label of the family, in order; NULL reads as "". */
sl_metrics_shard *sl_metrics_begin(sl_metrics *m);
void sl_metrics_end(sl_metrics_shard *s);
/* Counter += v (v >= 0; negative values are ignored). */
void sl_metrics_add(sl_metrics_shard *s, sl_metric_family *f,
                    const char *const *values, double v);
/* Histogram: count v into its bucket, its sum and its count. */
void sl_metrics_observe(sl_metrics_shard *s, sl_metric_family *f,
                        const char *const *values, double v);

/* One update, begin and end included. */
void sl_metrics_inc(sl_metrics *m, sl_metric_family *f,
                    const char *const *values, double v);
/* Gauge := v, process-wide (takes the family's lock). */
void sl_metrics_set(sl_metric_family *f, const char *const *values, double v);

/* Append every family in the Prometheus text format (0.0.4): # HELP,
 * # TYPE, one line per series, histograms as cumulative _bucket{le} lines
 * then _sum and _count; then the folded-update counter. 0 or SL_ENOMEM. */
int sl_metrics_write(sl_metrics *m, sl_buf *out);

/* Append v as a label value's text: \\, \" and \n escaped, bytes that are
 * not UTF-8 replaced by '?'. For writers of computed families. */
int sl_metrics_escape(sl_buf *b, const char *v);

/* ---- the gateway's metrics --------------------------------------------- */

/* The process's registry with sluice's families (made on first use). */
sl_metrics *sl_metrics_global(void);

/* sluice.yaml `metrics:`: whether the consumer's team becomes a label, and
 * the per-family cap. Process-wide; every Lua state's boot applies it. */
void sl_metrics_configure(int consumer_labels, int max_series);

struct sl_http_req;
struct sl_lua_attempt;
struct lua_State;

/* A request is over (the proxy, once per request, after the log phase):
 * requests by route/backend/status/team, latency and time to first byte
 * by backend, and from the attempts, upstream errors by reason and
 * fall-backs by backend. `backend`: the last backend tried, or NULL.
 * `version`: the policy version the request ran under, or NULL. */
void sl_metrics_request_end(const struct sl_http_req *r, const char *backend,
                            const struct sl_lua_attempt *attempts,
                            int nattempts, const char *version);

/* The runtime's `core.metric(kind, ...)` (see docs/.sections/metrics.md):
 *   "request", version, exceptions, team, model, backend, prompt_tokens,
 *              completion_tokens, decisions, notes, exceptions_used
 *   "breaker", backend, state ("closed"|"half_open"|"open"), open_for_s */
int sl_metrics_lua(struct lua_State *L);

/* The policy facts, for callers that know them (tests, the admin). The
 * exceptions: ids and their expiry (Unix seconds). */
void sl_metrics_policy_version(const char *version);
void sl_metrics_policy_exceptions(const char *version, const char *const *ids,
                                  const double *expires, int n);
/* A backend's circuit breaker changed: state 0 closed, 1 half-open, 2 open
 * (for open_for_s seconds, then half-open until closed). */
void sl_metrics_breaker(const char *backend, int state, double open_for_s);

/* A backend's health as this process saw it (GET /admin/status): what
 * the registry counted since start, the upstream errors of the last
 * SL_HEALTH_WINDOW_S seconds, the last one, and its circuit breaker. */
#define SL_HEALTH_WINDOW_S 300
#define SL_HEALTH_REASONS 12
typedef struct sl_backend_health {
    double requests; /* answered with this backend the last one tried */
    double errors;   /* upstream errors (failed attempts) since start */
    int nreasons;
    struct {
        char reason[32];
        double n;
    } reasons[SL_HEALTH_REASONS]; /* errors since start by reason */
    double recent_errors;         /* in the last SL_HEALTH_WINDOW_S */
    double last_error_at;         /* Unix seconds; 0: none since start */
    char last_error[32];          /* its reason */
    int breaker;                  /* -1 never reported, 0 closed,
                                     1 half-open, 2 open */
    double open_for_s;            /* open: seconds until it half-opens */
} sl_backend_health;
/* Fill out[i] for backends[i]. 0 or SL_ENOMEM. */
int sl_metrics_backend_health(const char *const *backends, int n,
                              sl_backend_health *out);

/* GET /metrics: the global registry, then the policy facts (version,
 * exceptions in force and days to their expiry, breaker states). Serve it
 * with SL_METRICS_CONTENT_TYPE. 0 or SL_ENOMEM. */
int sl_metrics_render(sl_buf *out);

#endif
