/* metrics_gateway.c — sluice's own metric families and what feeds them
 * (see metrics.h and docs/.sections/metrics.md).
 *
 * A request feeds them twice, both times on its worker's thread, one right
 * after the other in the proxy's finish: the Lua runtime's log phase calls
 * core.metric("request", …) with the policy's facts (team, model, tokens,
 * cost, decisions, exceptions used), then the proxy calls
 * sl_metrics_request_end() with the transport's (route, backend, status,
 * latency, first byte, attempts). The team the first call names is kept
 * in a thread-local until the second counts the request with it.
 *
 * The live policy's version and its exceptions are published by the
 * workers as they serve under a version (a string compare per request; the
 * exception list is read from the chain only when the version changes), and
 * rendered at scrape with the days left computed then. Breaker states are
 * reported by the fallback plugin as they change; "open" carries how long,
 * so an open breaker reads half-open once its cool-down is over. */
#include "http_server.h"
#include "lua_bridge.h"
#include "metrics.h"

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define MAX_DECISIONS 32
#define MAX_USED 16
#define VERSION_MAX 64

static const char *const L_REQUESTS[] = {"route", "backend", "status", "team",
                                         NULL};
static const char *const L_BACKEND[] = {"backend", NULL};
static const char *const L_ERRORS[] = {"backend", "reason", NULL};
static const char *const L_TOKENS[] = {"team", "backend", "model", "type",
                                       NULL};
static const char *const L_COST[] = {"team", "backend", "model", NULL};
static const char *const L_DECISIONS[] = {"plugin", "outcome", NULL};
static const char *const L_EXCEPTION[] = {"exception", NULL};

static const double LATENCY[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                 1,     2.5,  5,     10,   30,  60,   120};
static const double TTFT[] = {0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1,
                              1.5,   2,    3,   5,    10,  30};

static const sl_metric_def DEFS[] = {
    {"sluice_requests_total",
     "Requests answered, by route class (chat, embeddings, messages, models, "
     "other), backend, status and team.",
     SL_METRIC_COUNTER, L_REQUESTS, NULL, 0},
    {"sluice_request_duration_seconds",
     "Time from the request's first byte to the end of its answer, by "
     "backend.",
     SL_METRIC_HISTOGRAM, L_BACKEND, LATENCY, SL_ARRAY_LEN(LATENCY)},
    {"sluice_time_to_first_token_seconds",
     "Time from the request's first byte to the first byte of the answer's "
     "body sent to the client, by backend.",
     SL_METRIC_HISTOGRAM, L_BACKEND, TTFT, SL_ARRAY_LEN(TTFT)},
    {"sluice_upstream_errors_total",
     "Failed attempts toward a backend, by reason (connect_error, timeout, "
     "reset, tls, dns, protocol, error, canceled, status_429, status_5xx).",
     SL_METRIC_COUNTER, L_ERRORS, NULL, 0},
    {"sluice_fallbacks_total",
     "Attempts given up on for the next target, by the backend left.",
     SL_METRIC_COUNTER, L_BACKEND, NULL, 0},
    {"sluice_tokens_total",
     "Tokens by team, backend, public model and type (prompt, completion).",
     SL_METRIC_COUNTER, L_TOKENS, NULL, 0},
    {"sluice_cost_usd_total",
     "Cost in US dollars as the policy prices it, by team, backend and "
     "public model.",
     SL_METRIC_COUNTER, L_COST, NULL, 0},
    {"sluice_policy_decisions_total",
     "Decisions plugins recorded, by plugin and outcome (allow, deny, "
     "modify, flag, warn).",
     SL_METRIC_COUNTER, L_DECISIONS, NULL, 0},
    {"sluice_exceptions_used_total",
     "Requests that relied on a policy exception, by exception id.",
     SL_METRIC_COUNTER, L_EXCEPTION, NULL, 0},
    {"sluice_circuit_breaker_opened_total",
     "Times a backend's circuit breaker opened.", SL_METRIC_COUNTER, L_BACKEND,
     NULL, 0},
};

enum {
    F_REQUESTS,
    F_DURATION,
    F_TTFT,
    F_ERRORS,
    F_FALLBACKS,
    F_TOKENS,
    F_COST,
    F_DECISIONS,
    F_EXC_USED,
    F_BREAKER_OPENED,
    F_COUNT
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sl_metrics *G;
static sl_metric_family *fam[F_COUNT];
static _Atomic int consumer_labels;
static _Atomic int max_series = 1000;

/* The team core.metric named for the request now finishing here. */
static __thread char pending_team[SL_METRICS_MAX_VALUE + 1];

/* What this thread last published, so a request compares and moves on. */
static __thread char seen_version[VERSION_MAX];
static __thread char seen_exc_version[VERSION_MAX];

typedef struct exc_fact {
    char *id;
    double expires; /* Unix seconds */
} exc_fact;

typedef struct breaker_fact {
    char *backend;
    int state;
    double open_until; /* Unix seconds */
} breaker_fact;

/* Upstream errors by backend, for the admin's health view: the last one
 * and per-minute counts over the window. Written only when an attempt
 * failed, under the facts lock. */
#define ERR_BUCKETS (SL_HEALTH_WINDOW_S / 60)
typedef struct error_fact {
    char *backend;
    double last_at;
    char last_reason[32];
    int64_t minute[ERR_BUCKETS];
    double count[ERR_BUCKETS];
} error_fact;

/* The policy facts: rarely written, read at scrape. */
static pthread_mutex_t facts = PTHREAD_MUTEX_INITIALIZER;
static char live_version[VERSION_MAX];
static char exc_version[VERSION_MAX]; /* the version excs belong to */
static exc_fact *excs;
static int nexcs;
static breaker_fact *breakers;
static int nbreakers;
static error_fact *errfacts;
static int nerrfacts;

static void make_global(void)
{
    G = sl_metrics_new(atomic_load(&max_series));
    for (int i = 0; G && i < F_COUNT; i++)
        fam[i] = sl_metrics_family(G, &DEFS[i]);
}

sl_metrics *sl_metrics_global(void)
{
    pthread_once(&once, make_global);
    return G;
}

void sl_metrics_configure(int consumer, int max)
{
    atomic_store(&consumer_labels, consumer ? 1 : 0);
    if (max > 0)
        atomic_store(&max_series, max);
    sl_metrics *m = sl_metrics_global();
    if (m)
        sl_metrics_set_max_series(m, atomic_load(&max_series));
}

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* ---- the request, from C ------------------------------------------------- */

static int path_is(const sl_str *p, const char *s)
{
    size_t n = strlen(s);
    return p->n == n && memcmp(p->p, s, n) == 0;
}

/* The route class: a handful of values whatever the clients send. */
static const char *route_of(const sl_str *p)
{
    if (path_is(p, "/v1/chat/completions"))
        return "chat";
    if (path_is(p, "/v1/embeddings"))
        return "embeddings";
    if (path_is(p, "/v1/messages"))
        return "messages";
    if (path_is(p, "/v1/models") ||
        (p->n > 11 && memcmp(p->p, "/v1/models/", 11) == 0))
        return "models";
    return "other";
}

/* Why an attempt counts as an upstream error, or NULL. */
static const char *error_reason(const sl_lua_attempt *a)
{
    if (a->outcome && strcmp(a->outcome, "aborted") == 0)
        return NULL; /* the client left; the backend did nothing wrong */
    if (a->error)
        return a->error;
    if (a->status == 429)
        return "status_429";
    if (a->status >= 500)
        return "status_5xx";
    return NULL;
}

static void note_error(const char *backend, const char *why);

void sl_metrics_request_end(const sl_http_req *r, const char *backend,
                            const sl_lua_attempt *attempts, int nattempts,
                            const char *version)
{
    sl_metrics *m = sl_metrics_global();
    if (!m)
        return;
    if (version && strncmp(seen_version, version, VERSION_MAX) != 0) {
        snprintf(seen_version, sizeof(seen_version), "%s", version);
        sl_metrics_policy_version(version);
    }
    uint64_t now = sl_now_ns();
    char digits[12], *status = digits + sizeof(digits) - 1; /* no printf */
    unsigned st = r->status > 0 ? (unsigned)r->status : 0;
    *status = '\0';
    do
        *--status = (char)('0' + st % 10);
    while (st /= 10);
    const char *be = backend ? backend : "";
    const char *req[] = {route_of(&r->path), be, status, pending_team};
    const char *by_be[] = {be};

    sl_metrics_shard *s = sl_metrics_begin(m);
    sl_metrics_add(s, fam[F_REQUESTS], req, 1);
    sl_metrics_observe(s, fam[F_DURATION], by_be,
                       (double)(now - r->start_ns) / 1e9);
    if (backend && r->first_byte_ns > r->start_ns)
        sl_metrics_observe(s, fam[F_TTFT], by_be,
                           (double)(r->first_byte_ns - r->start_ns) / 1e9);
    for (int i = 0; i < nattempts; i++) {
        const sl_lua_attempt *a = &attempts[i];
        const char *why = error_reason(a);
        if (why) {
            const char *v[] = {a->backend, why};
            sl_metrics_add(s, fam[F_ERRORS], v, 1);
        }
        if (a->outcome && strcmp(a->outcome, "next") == 0) {
            const char *v[] = {a->backend};
            sl_metrics_add(s, fam[F_FALLBACKS], v, 1);
        }
    }
    sl_metrics_end(s);
    pending_team[0] = '\0';
    for (int i = 0; i < nattempts; i++) {
        const char *why = error_reason(&attempts[i]);
        if (why && attempts[i].backend)
            note_error(attempts[i].backend, why);
    }
}

/* ---- the request, from Lua ---------------------------------------------- */

/* t[key] when it is a string (no metamethods run), else NULL. The string
 * lives as long as t does. */
static const char *str_field(lua_State *L, int t, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, t);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return s;
}

static double num_field(lua_State *L, int t, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, t);
    double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    return v;
}

static const char *opt_str(lua_State *L, int i)
{
    return lua_type(L, i) == LUA_TSTRING ? lua_tostring(L, i) : NULL;
}

static double opt_num(lua_State *L, int i)
{
    return lua_type(L, i) == LUA_TNUMBER ? lua_tonumber(L, i) : 0;
}

/* The chain's compiled exceptions (a list of {id, expires, …}) for version:
 * published once per version per thread. */
static void publish_exceptions(lua_State *L, int t, const char *version)
{
    snprintf(seen_exc_version, sizeof(seen_exc_version), "%s", version);
    int n = lua_type(L, t) == LUA_TTABLE ? (int)lua_objlen(L, t) : 0;
    int cap = atomic_load(&max_series);
    if (n > cap)
        n = cap;
    const char **ids = n > 0 ? calloc((size_t)n, sizeof(*ids)) : NULL;
    double *exp = n > 0 ? calloc((size_t)n, sizeof(*exp)) : NULL;
    int k = 0;
    for (int i = 1; ids && exp && i <= n; i++) {
        lua_rawgeti(L, t, i);
        if (lua_istable(L, -1)) {
            int e = lua_gettop(L);
            ids[k] = str_field(L, e, "id");
            exp[k] = num_field(L, e, "expires");
            if (ids[k] && exp[k] > 0)
                k++;
        }
        lua_pop(L, 1); /* the list still holds the entry and its id */
    }
    sl_metrics_policy_exceptions(version, ids, exp, k);
    free(ids);
    free(exp);
}

static int breaker_call(lua_State *L)
{
    static const char *const states[] = {"closed", "half_open", "open",
                                         "half-open", NULL};
    const char *backend = luaL_checkstring(L, 2);
    int st = luaL_checkoption(L, 3, NULL, states);
    sl_metrics_breaker(backend, st == 3 ? 1 : st, luaL_optnumber(L, 4, 0));
    return 0;
}

int sl_metrics_lua(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    if (strcmp(kind, "breaker") == 0)
        return breaker_call(L);
    if (strcmp(kind, "request") != 0)
        return luaL_error(L, "core.metric: unknown kind '%s'", kind);
    sl_metrics *m = sl_metrics_global();
    if (!m)
        return 0;
    const char *version = opt_str(L, 2);
    if (version && strncmp(seen_exc_version, version, VERSION_MAX) != 0)
        publish_exceptions(L, 3, version);
    const char *team = atomic_load(&consumer_labels) ? opt_str(L, 4) : NULL;
    const char *model = opt_str(L, 5);
    const char *backend = opt_str(L, 6);
    double prompt = opt_num(L, 7), completion = opt_num(L, 8);

    /* Everything is read off the Lua tables before the shard is locked: a
     * Lua error must never leave it locked. */
    const char *plugin[MAX_DECISIONS], *outcome[MAX_DECISIONS];
    int nd = 0;
    if (lua_type(L, 9) == LUA_TTABLE) {
        int n = (int)lua_objlen(L, 9);
        for (int i = 1; i <= n && nd < MAX_DECISIONS; i++) {
            lua_rawgeti(L, 9, i);
            if (lua_istable(L, -1)) {
                plugin[nd] = str_field(L, lua_gettop(L), "plugin");
                outcome[nd] = str_field(L, lua_gettop(L), "outcome");
                nd += plugin[nd] && outcome[nd];
            }
            lua_pop(L, 1);
        }
    }
    double cost = 0;
    int priced = 0;
    if (lua_type(L, 10) == LUA_TTABLE) {
        int n = (int)lua_objlen(L, 10);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 10, i);
            if (lua_istable(L, -1)) {
                int e = lua_gettop(L);
                const char *key = str_field(L, e, "key");
                if (key && strcmp(key, "cost_usd") == 0) {
                    cost += num_field(L, e, "value");
                    priced = 1;
                }
            }
            lua_pop(L, 1);
        }
    }
    const char *used[MAX_USED];
    int nu = 0;
    if (lua_type(L, 11) == LUA_TTABLE) {
        int n = (int)lua_objlen(L, 11);
        for (int i = 1; i <= n && nu < MAX_USED; i++) {
            lua_rawgeti(L, 11, i);
            if (lua_type(L, -1) == LUA_TSTRING)
                used[nu++] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
    }

    sl_metrics_shard *s = sl_metrics_begin(m);
    const char *tok[] = {team, backend, model, "prompt"};
    if (prompt > 0)
        sl_metrics_add(s, fam[F_TOKENS], tok, prompt);
    tok[3] = "completion";
    if (completion > 0)
        sl_metrics_add(s, fam[F_TOKENS], tok, completion);
    if (priced)
        sl_metrics_add(s, fam[F_COST], tok, cost);
    for (int i = 0; i < nd; i++) {
        const char *v[] = {plugin[i], outcome[i]};
        sl_metrics_add(s, fam[F_DECISIONS], v, 1);
    }
    for (int i = 0; i < nu; i++)
        sl_metrics_add(s, fam[F_EXC_USED], &used[i], 1);
    sl_metrics_end(s);
    size_t tn = team ? strnlen(team, sizeof(pending_team) - 1) : 0;
    memcpy(pending_team, team ? team : "", tn);
    pending_team[tn] = '\0';
    return 0;
}

/* ---- the policy facts ---------------------------------------------------- */

void sl_metrics_policy_version(const char *version)
{
    pthread_mutex_lock(&facts);
    snprintf(live_version, sizeof(live_version), "%s", version ? version : "");
    pthread_mutex_unlock(&facts);
}

void sl_metrics_policy_exceptions(const char *version, const char *const *ids,
                                  const double *expires, int n)
{
    exc_fact *list = n > 0 ? calloc((size_t)n, sizeof(*list)) : NULL;
    int k = 0;
    for (int i = 0; list && i < n; i++)
        if (ids[i] && (list[k].id = strdup(ids[i])))
            list[k++].expires = expires[i];
    pthread_mutex_lock(&facts);
    exc_fact *old = excs;
    int nold = nexcs;
    excs = list;
    nexcs = k;
    snprintf(exc_version, sizeof(exc_version), "%s", version ? version : "");
    pthread_mutex_unlock(&facts);
    for (int i = 0; i < nold; i++)
        free(old[i].id);
    free(old);
}

void sl_metrics_breaker(const char *backend, int state, double open_for_s)
{
    if (!backend || state < 0 || state > 2)
        return;
    if (state == 2 && fam[F_BREAKER_OPENED]) {
        const char *v[] = {backend};
        sl_metrics_inc(sl_metrics_global(), fam[F_BREAKER_OPENED], v, 1);
    }
    pthread_mutex_lock(&facts);
    breaker_fact *b = NULL;
    for (int i = 0; i < nbreakers && !b; i++)
        if (strcmp(breakers[i].backend, backend) == 0)
            b = &breakers[i];
    if (!b && nbreakers < atomic_load(&max_series)) {
        breaker_fact *grown =
            realloc(breakers, (size_t)(nbreakers + 1) * sizeof(*grown));
        if (grown) {
            breakers = grown;
            b = &breakers[nbreakers];
            if ((b->backend = strdup(backend)))
                nbreakers++;
            else
                b = NULL;
        }
    }
    if (b) {
        b->state = state;
        b->open_until = state == 2 ? wall_now() + open_for_s : 0;
    }
    pthread_mutex_unlock(&facts);
}

static int put_gauge_head(sl_buf *out, const char *name, const char *help)
{
    return sl_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help,
                         name);
}

static int put_labelled(sl_buf *out, const char *name, const char *label,
                        const char *value, const char *num)
{
    int rc = sl_buf_printf(out, "%s{%s=\"", name, label);
    rc |= sl_metrics_escape(out, value);
    return rc | sl_buf_printf(out, "\"} %s\n", num);
}

/* The facts as gauges, under the facts lock. */
static int write_facts(sl_buf *out)
{
    double now = wall_now();
    char num[40];
    int rc = put_gauge_head(out, "sluice_policy_info",
                            "The policy version the workers serve under "
                            "(value 1).");
    if (live_version[0])
        rc |= put_labelled(out, "sluice_policy_info", "version", live_version,
                           "1");
    int known = live_version[0] && strcmp(exc_version, live_version) == 0;
    int live = 0;
    for (int i = 0; known && i < nexcs; i++)
        live += excs[i].expires > now;
    rc |= put_gauge_head(out, "sluice_exceptions_active",
                         "Policy exceptions in force under the live version.");
    if (known)
        rc |= sl_buf_printf(out, "sluice_exceptions_active %d\n", live);
    rc |= put_gauge_head(out, "sluice_exception_expiry_days",
                         "Days until each policy exception in force "
                         "expires.");
    for (int i = 0; known && i < nexcs; i++) {
        if (excs[i].expires <= now)
            continue;
        snprintf(num, sizeof(num), "%.3f", (excs[i].expires - now) / 86400);
        rc |= put_labelled(out, "sluice_exception_expiry_days", "exception",
                           excs[i].id, num);
    }
    rc |= put_gauge_head(out, "sluice_circuit_breaker_state",
                         "A backend's circuit breaker as last reported: 0 "
                         "closed, 1 half-open, 2 open.");
    for (int i = 0; i < nbreakers; i++) {
        int st = breakers[i].state;
        if (st == 2 && now >= breakers[i].open_until)
            st = 1; /* the cool-down is over: the next request probes */
        snprintf(num, sizeof(num), "%d", st);
        rc |= put_labelled(out, "sluice_circuit_breaker_state", "backend",
                           breakers[i].backend, num);
    }
    return rc;
}

int sl_metrics_render(sl_buf *out)
{
    sl_metrics *m = sl_metrics_global();
    if (!m)
        return SL_ENOMEM;
    int rc = sl_metrics_write(m, out);
    pthread_mutex_lock(&facts);
    rc |= write_facts(out);
    pthread_mutex_unlock(&facts);
    return rc ? SL_ENOMEM : 0;
}

/* ---- backend health (the admin's status) --------------------------------- */

static void note_error(const char *backend, const char *why)
{
    double now = wall_now();
    int64_t minute = (int64_t)(now / 60);
    pthread_mutex_lock(&facts);
    error_fact *e = NULL;
    for (int i = 0; i < nerrfacts && !e; i++)
        if (strcmp(errfacts[i].backend, backend) == 0)
            e = &errfacts[i];
    if (!e && nerrfacts < atomic_load(&max_series)) {
        error_fact *grown =
            realloc(errfacts, (size_t)(nerrfacts + 1) * sizeof(*grown));
        if (grown) {
            errfacts = grown;
            e = &errfacts[nerrfacts];
            memset(e, 0, sizeof(*e));
            if ((e->backend = strdup(backend)))
                nerrfacts++;
            else
                e = NULL;
        }
    }
    if (e) {
        int k = (int)(minute % ERR_BUCKETS);
        if (e->minute[k] != minute) {
            e->minute[k] = minute;
            e->count[k] = 0;
        }
        e->count[k]++;
        e->last_at = now;
        snprintf(e->last_reason, sizeof(e->last_reason), "%s", why);
    }
    pthread_mutex_unlock(&facts);
}

/* One label's value in a series line of the text exposition, unescaped:
 * 0 and out, or -1 when the line has no such label. */
static int label_of(const char *line, const char *end, const char *label,
                    char *out, size_t cap)
{
    char pat[48];
    int n = snprintf(pat, sizeof(pat), "%s=\"", label);
    const char *hit = NULL;
    for (const char *q = line + 1; q + n <= end && !hit; q++)
        if (memcmp(q, pat, (size_t)n) == 0 && (q[-1] == '{' || q[-1] == ','))
            hit = q;
    if (!hit)
        return -1;
    const char *p = hit + n;
    size_t k = 0;
    while (p < end && *p != '"') {
        char c = *p++;
        if (c == '\\' && p < end) {
            c = *p++;
            if (c == 'n')
                c = '\n';
        }
        if (k + 1 < cap)
            out[k++] = c;
    }
    out[k] = '\0';
    return 0;
}

static double value_of(const char *line, const char *end)
{
    const char *sp = NULL;
    for (const char *q = end - 1; q > line && !sp; q--)
        if (*q == ' ')
            sp = q;
    return sp ? strtod(sp + 1, NULL) : 0;
}

static int starts(const char *line, const char *end, const char *name)
{
    size_t n = strlen(name);
    return (size_t)(end - line) > n && memcmp(line, name, n) == 0 &&
           line[n] == '{';
}

int sl_metrics_backend_health(const char *const *backends, int n,
                              sl_backend_health *out)
{
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].breaker = -1;
    }
    sl_metrics *m = sl_metrics_global();
    sl_buf text;
    sl_buf_init(&text, NULL);
    /* the registry sums every worker's shard as it writes */
    if (!m || sl_metrics_write(m, &text) < 0) {
        sl_buf_release(&text);
        return SL_ENOMEM;
    }
    char be[SL_METRICS_MAX_VALUE + 1], reason[32];
    const char *p = text.data ? text.data : "", *end = p + text.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        int req = starts(p, le, "sluice_requests_total");
        int err = !req && starts(p, le, "sluice_upstream_errors_total");
        if ((req || err) && label_of(p, le, "backend", be, sizeof(be)) == 0) {
            for (int i = 0; i < n; i++) {
                if (!backends[i] || strcmp(backends[i], be) != 0)
                    continue;
                sl_backend_health *h = &out[i];
                double v = value_of(p, le);
                if (req) {
                    h->requests += v;
                } else if (label_of(p, le, "reason", reason, sizeof(reason)) ==
                           0) {
                    h->errors += v;
                    int k = 0;
                    while (k < h->nreasons &&
                           strcmp(h->reasons[k].reason, reason) != 0)
                        k++;
                    if (k == h->nreasons && k < SL_HEALTH_REASONS) {
                        snprintf(h->reasons[k].reason,
                                 sizeof(h->reasons[k].reason), "%s", reason);
                        h->nreasons++;
                    }
                    if (k < h->nreasons)
                        h->reasons[k].n += v;
                }
            }
        }
        p = le + 1;
    }
    sl_buf_release(&text);

    double now = wall_now();
    int64_t minute = (int64_t)(now / 60);
    pthread_mutex_lock(&facts);
    for (int i = 0; i < n; i++) {
        sl_backend_health *h = &out[i];
        for (int j = 0; backends[i] && j < nerrfacts; j++) {
            const error_fact *e = &errfacts[j];
            if (strcmp(e->backend, backends[i]) != 0)
                continue;
            h->last_error_at = e->last_at;
            snprintf(h->last_error, sizeof(h->last_error), "%s",
                     e->last_reason);
            for (int k = 0; k < ERR_BUCKETS; k++)
                if (e->minute[k] > minute - ERR_BUCKETS)
                    h->recent_errors += e->count[k];
        }
        for (int j = 0; backends[i] && j < nbreakers; j++) {
            const breaker_fact *b = &breakers[j];
            if (strcmp(b->backend, backends[i]) != 0)
                continue;
            h->breaker = b->state;
            if (b->state == 2 && now >= b->open_until)
                h->breaker = 1; /* cooled down: the next request probes */
            if (h->breaker == 2)
                h->open_for_s = b->open_until - now;
        }
    }
    pthread_mutex_unlock(&facts);
    return 0;
}
