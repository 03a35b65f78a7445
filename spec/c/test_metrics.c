/* test_metrics.c — the metrics registry and its exposition: the Prometheus
 * text format (HELP, TYPE, labels, escaping), cumulative histograms, the
 * per-family series cap folding into "other", exact sums while two threads
 * update and a third scrapes, and the gateway's feeds (a request's end,
 * the runtime's core.metric, policy facts, breakers). */
#include "http_server.h"
#include "lua_bridge.h"
#include "metrics.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static int passed, failed;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            passed++;                                                          \
        } else {                                                               \
            failed++;                                                          \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                      \
    } while (0)

/* The exposition as a NUL-terminated string (caller frees). */
static char *render(sl_metrics *m)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    if (sl_metrics_write(m, &b) != 0) {
        failed++;
        fprintf(stderr, "sl_metrics_write failed\n");
    }
    char *s = strndup(b.data ? b.data : "", b.len);
    sl_buf_release(&b);
    return s;
}

static char *render_global(void)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    CHECK(sl_metrics_render(&b) == 0);
    char *s = strndup(b.data ? b.data : "", b.len);
    sl_buf_release(&b);
    return s;
}

/* The value on the line that starts with `series ` exactly, or NAN. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;
         p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

static int count_lines(const char *text, const char *prefix)
{
    int c = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        c += strncmp(p, prefix, n) == 0;
    return c;
}

static const char *const L2[] = {"backend", "status", NULL};
static const char *const L1[] = {"backend", NULL};

static void test_exposition(void)
{
    sl_metrics *m = sl_metrics_new(100);
    sl_metric_def d = {"t_requests_total",
                       "Requests by backend\\status.\nTwo",
                       SL_METRIC_COUNTER,
                       L2,
                       NULL,
                       0};
    sl_metric_family *f = sl_metrics_family(m, &d);
    CHECK(f && sl_metrics_family(m, &d) == f); /* found again by name */
    const char *a[] = {"a", "200"}, *b[] = {"b", "502"},
               *none[] = {NULL, "403"};
    sl_metrics_inc(m, f, a, 1);
    sl_metrics_inc(m, f, a, 2);
    sl_metrics_inc(m, f, b, 1);
    sl_metrics_inc(m, f, none, 1);
    sl_metrics_inc(m, f, b, -5); /* counters never go down */
    char *s = render(m);
    CHECK(has_line(s, "# HELP t_requests_total Requests by backend\\\\status."
                      "\\nTwo"));
    CHECK(has_line(s, "# TYPE t_requests_total counter"));
    CHECK(has_line(s, "t_requests_total{backend=\"a\",status=\"200\"} 3"));
    CHECK(has_line(s, "t_requests_total{backend=\"b\",status=\"502\"} 1"));
    /* an empty value is the same series as no label: left out */
    CHECK(has_line(s, "t_requests_total{status=\"403\"} 1"));
    CHECK(has_line(s, "# TYPE sluice_metrics_series_folded_total counter"));
    CHECK(count_lines(s, "sluice_metrics_series_folded_total{") == 0);
    free(s);

    sl_metric_def g = {"t_cost", "Fractional", SL_METRIC_COUNTER, L1, NULL, 0};
    sl_metric_family *fc = sl_metrics_family(m, &g);
    const char *x[] = {"a"};
    sl_metrics_inc(m, fc, x, 0.1);
    sl_metrics_inc(m, fc, x, 0.2);
    s = render(m);
    /* the shortest text that reads back as the same double */
    CHECK(has_line(s, "t_cost{backend=\"a\"} 0.30000000000000004"));
    free(s);
    sl_metrics_free(m);
}

static void test_escaping(void)
{
    sl_metrics *m = sl_metrics_new(100);
    sl_metric_def d = {"t_esc_total", "x", SL_METRIC_COUNTER, L1, NULL, 0};
    sl_metric_family *f = sl_metrics_family(m, &d);
    const char *v[] = {"q\"b\\s\nl"};
    const char *bad[] = {"ok\xff\xc3(\xe2\x82\xac"}; /* invalid, then € */
    sl_metrics_inc(m, f, v, 1);
    sl_metrics_inc(m, f, bad, 1);
    char long_v[400];
    memset(long_v, 'x', sizeof(long_v) - 1);
    long_v[sizeof(long_v) - 1] = '\0';
    const char *lv[] = {long_v};
    sl_metrics_inc(m, f, lv, 1);
    char *s = render(m);
    CHECK(has_line(s, "t_esc_total{backend=\"q\\\"b\\\\s\\nl\"} 1"));
    CHECK(has_line(s, "t_esc_total{backend=\"ok?"
                      "?(\xe2\x82\xac\"} 1"));
    char want[300];
    snprintf(want, sizeof(want), "t_esc_total{backend=\"%.*s\"} 1",
             SL_METRICS_MAX_VALUE, long_v);
    CHECK(has_line(s, want)); /* values are cut, not refused */
    free(s);
    sl_metrics_free(m);
}

static void test_histogram(void)
{
    sl_metrics *m = sl_metrics_new(100);
    static const double bounds[] = {0.01, 0.1, 1};
    sl_metric_def d = {
        "t_latency_seconds", "Latency", SL_METRIC_HISTOGRAM, L1, bounds, 3};
    sl_metric_family *f = sl_metrics_family(m, &d);
    const char *a[] = {"a"};
    sl_metrics_shard *sh = sl_metrics_begin(m);
    double obs[] = {0.003, 0.05, 0.1, 0.7, 100};
    for (int i = 0; i < 5; i++)
        sl_metrics_observe(sh, f, a, obs[i]);
    sl_metrics_add(sh, f, a, 1); /* not a counter: ignored */
    sl_metrics_end(sh);
    char *s = render(m);
    CHECK(has_line(s, "# TYPE t_latency_seconds histogram"));
    CHECK(value_of(s, "t_latency_seconds_bucket{backend=\"a\",le=\"0.01\"}") ==
          1);
    /* le is "less than or equal": 0.1 falls in the 0.1 bucket */
    CHECK(value_of(s, "t_latency_seconds_bucket{backend=\"a\",le=\"0.1\"}") ==
          3);
    CHECK(value_of(s, "t_latency_seconds_bucket{backend=\"a\",le=\"1\"}") == 4);
    CHECK(value_of(s, "t_latency_seconds_bucket{backend=\"a\",le=\"+Inf\"}") ==
          5);
    CHECK(fabs(value_of(s, "t_latency_seconds_sum{backend=\"a\"}") - 100.853) <
          1e-9);
    CHECK(value_of(s, "t_latency_seconds_count{backend=\"a\"}") == 5);
    CHECK(count_lines(s, "t_latency_seconds_bucket{") == 4);
    free(s);
    sl_metrics_free(m);
}

static void test_cap(void)
{
    sl_metrics *m = sl_metrics_new(3);
    sl_metric_def d = {"t_cap_total", "x", SL_METRIC_COUNTER, L2, NULL, 0};
    sl_metric_family *f = sl_metrics_family(m, &d);
    char be[16];
    for (int i = 0; i < 6; i++) {
        snprintf(be, sizeof(be), "b%d", i);
        const char *v[] = {be, "200"};
        sl_metrics_inc(m, f, v, 1);
        sl_metrics_inc(m, f, v, 1); /* again: cached, still folded */
    }
    const char *first[] = {"b0", "200"};
    sl_metrics_inc(m, f, first, 1); /* a known set keeps its own series */
    char *s = render(m);
    CHECK(count_lines(s, "t_cap_total{") == 4); /* 3 sets + other */
    CHECK(value_of(s, "t_cap_total{backend=\"b0\",status=\"200\"}") == 3);
    CHECK(value_of(s, "t_cap_total{backend=\"b2\",status=\"200\"}") == 2);
    CHECK(isnan(value_of(s, "t_cap_total{backend=\"b3\",status=\"200\"}")));
    CHECK(value_of(s, "t_cap_total{backend=\"other\",status=\"other\"}") == 6);
    CHECK(value_of(s, "sluice_metrics_series_folded_total{family=\"t_cap_"
                      "total\"}") == 6);
    free(s);

    /* gauges are capped the same way */
    sl_metric_def g = {"t_gauge", "x", SL_METRIC_GAUGE, L1, NULL, 0};
    sl_metric_family *fg = sl_metrics_family(m, &g);
    for (int i = 0; i < 5; i++) {
        snprintf(be, sizeof(be), "g%d", i);
        const char *v[] = {be};
        sl_metrics_set(fg, v, i);
    }
    const char *g0[] = {"g0"};
    sl_metrics_set(fg, g0, 42); /* last write wins */
    s = render(m);
    CHECK(value_of(s, "t_gauge{backend=\"g0\"}") == 42);
    CHECK(value_of(s, "t_gauge{backend=\"other\"}") == 4);
    CHECK(
        value_of(s, "sluice_metrics_series_folded_total{family=\"t_gauge\"}") ==
        2);
    free(s);
    sl_metrics_free(m);
}

#define ITERS 200000

typedef struct {
    sl_metrics *m;
    sl_metric_family *f, *h;
    int id;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    char own[16];
    snprintf(own, sizeof(own), "w%d", a->id);
    for (int i = 0; i < ITERS; i++) {
        sl_metrics_shard *s = sl_metrics_begin(a->m);
        const char *shared[] = {"shared", "200"};
        const char *mine[] = {own, i % 2 ? "200" : "500"};
        const char *hb[] = {"shared"};
        sl_metrics_add(s, a->f, shared, 1);
        sl_metrics_add(s, a->f, mine, 1);
        sl_metrics_observe(s, a->h, hb, (i % 4) * 0.5);
        sl_metrics_end(s);
    }
    return NULL;
}

static _Atomic int scraping;

static void *scraper(void *p)
{
    sl_metrics *m = p;
    int n = 0, sane = 1;
    double last = 0;
    while (scraping || n == 0) {
        char *s = render(m);
        double v =
            value_of(s, "t_conc_total{backend=\"shared\",status=\"200\"}");
        if (!isnan(v)) { /* a counter only grows, up to what was added */
            sane &= v >= last && v <= 2 * ITERS;
            last = v;
        }
        free(s);
        n++;
    }
    CHECK(sane);
    return NULL;
}

static void test_concurrency(void)
{
    sl_metrics *m = sl_metrics_new(100);
    sl_metric_def d = {"t_conc_total", "x", SL_METRIC_COUNTER, L2, NULL, 0};
    static const double bounds[] = {0.5, 1};
    sl_metric_def h = {"t_conc_seconds", "x", SL_METRIC_HISTOGRAM, L1,
                       bounds,           2};
    worker_arg args[2];
    pthread_t t[2], sc;
    for (int i = 0; i < 2; i++)
        args[i] = (worker_arg){m, sl_metrics_family(m, &d),
                               sl_metrics_family(m, &h), i};
    scraping = 1;
    pthread_create(&sc, NULL, scraper, m);
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, &args[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    scraping = 0;
    pthread_join(sc, NULL);
    char *s = render(m);
    CHECK(value_of(s, "t_conc_total{backend=\"shared\",status=\"200\"}") ==
          2 * ITERS);
    CHECK(value_of(s, "t_conc_total{backend=\"w0\",status=\"500\"}") ==
          ITERS / 2);
    CHECK(value_of(s, "t_conc_total{backend=\"w1\",status=\"200\"}") ==
          ITERS / 2);
    CHECK(value_of(s, "t_conc_seconds_count{backend=\"shared\"}") == 2 * ITERS);
    /* 0 and 0.5 (half the observations) are <= 0.5; 1 too is <= 1 */
    CHECK(value_of(s, "t_conc_seconds_bucket{backend=\"shared\",le=\"0.5\"}") ==
          ITERS);
    CHECK(value_of(s, "t_conc_seconds_bucket{backend=\"shared\",le=\"1\"}") ==
          1.5 * ITERS);
    CHECK(value_of(s, "t_conc_seconds_sum{backend=\"shared\"}") ==
          2 * (ITERS / 4) * (0 + 0.5 + 1 + 1.5));
    free(s);
    sl_metrics_free(m);
}

/* ---- the gateway's feeds ------------------------------------------------ */

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void fake_request(sl_http_req *r, const char *path, int status,
                         double took_s, double first_s)
{
    memset(r, 0, sizeof(*r));
    r->path = (sl_str){path, strlen(path)};
    r->status = status;
    uint64_t now = sl_now_ns();
    r->start_ns = now - (uint64_t)(took_s * 1e9);
    r->first_byte_ns =
        first_s > 0 ? r->start_ns + (uint64_t)(first_s * 1e9) : 0;
}

static void test_gateway(void)
{
    sl_metrics_configure(1, 1000); /* team labels on */
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, sl_metrics_lua);
    lua_setglobal(L, "metric");
    char code[1024];
    snprintf(code, sizeof(code),
             "metric('request', 'v1', {"
             "  { id = 'EXC-1', expires = %.0f },"
             "  { id = 'EXC-gone', expires = %.0f } },"
             " 'claims', 'gpt-4o', 'a', 120, 30,"
             " { { plugin = 'key-auth', outcome = 'allow' },"
             "   { plugin = 'fallback', outcome = 'flag', reason = 'x' } },"
             " { { plugin = 'quota', key = 'cost_usd', value = 0.25 } },"
             " { 'EXC-1' })",
             wall_now() + 10 * 86400, wall_now() - 60);
    CHECK(luaL_dostring(L, code) == 0);

    sl_http_req r;
    fake_request(&r, "/v1/chat/completions", 200, 0.3, 0.12);
    sl_lua_attempt at[2] = {
        {"b", 0, "connect_error", 1.0, "next"},
        {"a", 200, NULL, 280.0, "served"},
    };
    sl_metrics_request_end(&r, "a", at, 2, "v1");
    /* a second request, no Lua facts: no team */
    fake_request(&r, "/v1/files", 404, 0.001, 0);
    sl_metrics_request_end(&r, NULL, NULL, 0, "v1");
    fake_request(&r, "/v1/models/x", 503, 0.2, 0.15);
    sl_lua_attempt busy = {"b", 503, NULL, 200.0, "failed"};
    sl_metrics_request_end(&r, "b", &busy, 1, "v1");

    CHECK(luaL_dostring(L, "metric('breaker', 'b', 'open', 0)") == 0);
    CHECK(luaL_dostring(L, "metric('breaker', 'a', 'open', 60)") == 0);
    CHECK(luaL_dostring(L, "metric('breaker', 'c', 'closed')") == 0);
    CHECK(luaL_dostring(L, "metric('breaker', 'c', 'shut')") != 0);
    lua_settop(L, 0);
    CHECK(luaL_dostring(L, "metric('nonsense')") != 0);

    char *s = render_global();
    CHECK(has_line(s, "sluice_requests_total{route=\"chat\",backend=\"a\","
                      "status=\"200\",team=\"claims\"} 1"));
    CHECK(has_line(s, "sluice_requests_total{route=\"other\",status=\"404\"} "
                      "1"));
    CHECK(has_line(s, "sluice_requests_total{route=\"models\",backend=\"b\","
                      "status=\"503\"} 1"));
    CHECK(value_of(s, "sluice_request_duration_seconds_count{backend=\"a\"}") ==
          1);
    CHECK(value_of(s, "sluice_request_duration_seconds_bucket{backend=\"a\","
                      "le=\"0.25\"}") == 0);
    CHECK(value_of(s, "sluice_request_duration_seconds_bucket{backend=\"a\","
                      "le=\"0.5\"}") == 1);
    CHECK(fabs(value_of(s, "sluice_time_to_first_token_seconds_sum{backend="
                           "\"a\"}") -
               0.12) < 1e-6);
    CHECK(value_of(s, "sluice_upstream_errors_total{backend=\"b\",reason="
                      "\"connect_error\"}") == 1);
    CHECK(value_of(s, "sluice_upstream_errors_total{backend=\"b\",reason="
                      "\"status_5xx\"}") == 1);
    CHECK(value_of(s, "sluice_fallbacks_total{backend=\"b\"}") == 1);
    CHECK(isnan(value_of(s, "sluice_fallbacks_total{backend=\"a\"}")));
    CHECK(value_of(s, "sluice_tokens_total{team=\"claims\",backend=\"a\","
                      "model=\"gpt-4o\",type=\"prompt\"}") == 120);
    CHECK(value_of(s, "sluice_tokens_total{team=\"claims\",backend=\"a\","
                      "model=\"gpt-4o\",type=\"completion\"}") == 30);
    CHECK(value_of(s, "sluice_cost_usd_total{team=\"claims\",backend=\"a\","
                      "model=\"gpt-4o\"}") == 0.25);
    CHECK(value_of(s, "sluice_policy_decisions_total{plugin=\"fallback\","
                      "outcome=\"flag\"}") == 1);
    CHECK(value_of(s, "sluice_exceptions_used_total{exception=\"EXC-1\"}") ==
          1);
    CHECK(has_line(s, "sluice_policy_info{version=\"v1\"} 1"));
    CHECK(has_line(s, "sluice_exceptions_active 1")); /* EXC-gone expired */
    double days = value_of(s, "sluice_exception_expiry_days{exception="
                              "\"EXC-1\"}");
    CHECK(days > 9.99 && days <= 10.0);
    CHECK(isnan(value_of(s, "sluice_exception_expiry_days{exception="
                            "\"EXC-gone\"}")));
    CHECK(value_of(s, "sluice_circuit_breaker_state{backend=\"a\"}") == 2);
    CHECK(value_of(s, "sluice_circuit_breaker_state{backend=\"b\"}") == 1);
    CHECK(value_of(s, "sluice_circuit_breaker_state{backend=\"c\"}") == 0);
    CHECK(value_of(s, "sluice_circuit_breaker_opened_total{backend=\"a\"}") ==
          1);
    free(s);

    /* team labels off: the same facts count without a team */
    sl_metrics_configure(0, 1000);
    CHECK(luaL_dostring(L, "metric('request', 'v2', nil, 'claims', 'gpt-4o',"
                           " 'a', 5, 0, nil, nil, nil)") == 0);
    fake_request(&r, "/v1/embeddings", 200, 0.01, 0.01);
    sl_metrics_request_end(&r, "a", NULL, 0, "v2");
    s = render_global();
    CHECK(value_of(s, "sluice_tokens_total{backend=\"a\",model=\"gpt-4o\","
                      "type=\"prompt\"}") == 5);
    CHECK(has_line(s, "sluice_requests_total{route=\"embeddings\",backend="
                      "\"a\",status=\"200\"} 1"));
    CHECK(has_line(s, "sluice_policy_info{version=\"v2\"} 1"));
    CHECK(count_lines(s, "sluice_policy_info{") == 1);
    CHECK(has_line(s, "sluice_exceptions_active 0"));
    free(s);
    lua_close(L);
}

int main(void)
{
    test_exposition();
    test_escaping();
    test_histogram();
    test_cap();
    test_concurrency();
    test_gateway();
    printf("test_metrics: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
