/* report.c — `sluice report`: the command line, and four of the five
 * reports (budgets has its own file). Each report folds the records into a
 * map keyed by what it groups on, then sorts the groups into a table.
 *
 *   deprecated  who still calls deprecated or sunset models
 *   failures    errors and fallbacks by provider and backend per time bucket
 *   budgets     tokens and cost by team against the policy's quota limits
 *   exceptions  which policy exceptions were used, by whom, how often
 *   denials     policy denials by plugin and code */
#include "report.h"
#include "report_int.h"

#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: sluice report REPORT [options] FILE...\n"
    "\n"
    "reports over audit logs (the access log's JSON lines; gzip is read\n"
    "too; FILE - is stdin):\n"
    "  deprecated   who still calls deprecated or sunset models\n"
    "  failures     errors and fallbacks by provider per time bucket\n"
    "  budgets      tokens and cost by team against their budgets\n"
    "  exceptions   which policy exceptions were used, by whom, how often\n"
    "  denials      policy denials by plugin and code\n"
    "\n"
    "options:\n"
    "  --json | --csv    one JSON object, or CSV (default: a text table)\n"
    "  --from T --to T   only records with from <= time < to (RFC 3339 or\n"
    "                    YYYY-MM-DD, UTC unless an offset is given)\n"
    "  --bucket D        failures: bucket length (30s, 5m, 1h, 1d; default "
    "1h)\n"
    "  --policy DIR      budgets: read the quota limits (and failures: the\n"
    "                    backends' providers) from a policy directory\n";

enum { R_DEPRECATED, R_FAILURES, R_BUDGETS, R_EXCEPTIONS, R_DENIALS };

static const char *const NAMES[] = {"deprecated", "failures", "budgets",
                                    "exceptions", "denials"};

typedef struct {
    int which, format;
    int64_t from, to, bucket_ms;
    int has_from, has_to;
    const char *from_text, *to_text, *bucket_text;
    rp_policy policy;
    int has_policy;
    rp_map *groups;    /* the report's groups */
    rp_map *providers; /* failures: backend → provider, from the records */
    rp_budgets *budgets;
    uint64_t matched;
    int oom;
} report;

static const rp_str NONE = {"(none)", 6};

static rp_str or_none(const rp_str *s)
{
    return s->p ? *s : NONE;
}

/* Cut fields so a key stays within its buffer whatever the record holds. */
static void bound(rp_str *f, int n)
{
    for (int i = 0; i < n; i++)
        if (f[i].n > 256)
            f[i].n = 256;
}

static void *group(report *rp, rp_str *f, int n)
{
    char key[2048];
    bound(f, n);
    void *v = rp_map_get(rp->groups, key, rp_key(key, sizeof(key), f, n));
    if (!v)
        rp->oom = 1;
    return v;
}

static int has_decision(const rp_record *r, const char *plugin,
                        const char *outcome, const char *code)
{
    for (int i = 0; i < r->ndec; i++) {
        const rp_decision *d = &r->dec[i];
        if ((!plugin || rp_streq(&d->plugin, plugin)) &&
            (!outcome || rp_streq(&d->outcome, outcome)) &&
            (!code || rp_streq(&d->code, code)))
            return 1;
    }
    return 0;
}

/* ---- deprecated -----------------------------------------------------------
 */

typedef struct {
    rp_span calls;
    uint64_t served, refused;
} dep_v;

static void add_deprecated(report *rp, const rp_record *r)
{
    const char *state = NULL;
    if (r->model_sunset || has_decision(r, NULL, "deny", "model_sunset"))
        state = "sunset";
    else if (r->model_deprecated || has_decision(r, "catalog", "warn", NULL))
        state = "deprecated";
    if (!state)
        return;
    rp_str f[6] = {r->model_public.p ? r->model_public
                                     : or_none(&r->model_requested),
                   or_none(&r->model_requested),
                   {state, strlen(state)},
                   or_none(&r->consumer),
                   or_none(&r->app),
                   or_none(&r->team)};
    dep_v *v = group(rp, f, 6);
    if (!v)
        return;
    rp_span_add(&v->calls, r->t_ms);
    if (r->status >= 400)
        v->refused++;
    else
        v->served++;
}

static const rp_col DEP_COLS[] = {
    {"model", 0, 0},   {"requested", 0, 0}, {"state", 0, 0}, {"consumer", 0, 0},
    {"app", 0, 0},     {"team", 0, 0},      {"calls", 1, 0}, {"served", 1, 0},
    {"refused", 1, 0}, {"first", 0, 0},     {"last", 0, 0},
};

/* ---- failures -------------------------------------------------------------
 */

typedef struct {
    uint64_t requests, attempts, errors, fallbacks;
} fail_v;

static void fail_add(report *rp, int64_t bucket, const rp_str *backend, int req,
                     int att, int err, int next)
{
    char b[24];
    snprintf(b, sizeof(b), "%lld", (long long)bucket);
    rp_str f[2] = {{b, strlen(b)}, *backend};
    fail_v *v = group(rp, f, 2);
    if (!v)
        return;
    v->requests += (uint64_t)req;
    v->attempts += (uint64_t)att;
    v->errors += (uint64_t)err;
    v->fallbacks += (uint64_t)next;
}

static void add_failures(report *rp, const rp_record *r)
{
    int64_t t = r->t_ms, len = rp->bucket_ms;
    int64_t bucket = (t >= 0 ? t / len : (t - len + 1) / len);
    int err = r->status >= 500 || r->upstream_error.p;
    if (!r->backend.p && !err && r->natt == 0)
        return; /* never left the gateway: a denial, not a failure */
    rp_str be = or_none(&r->backend);
    if (r->backend.p && r->provider.p) {
        rp_str f = r->backend;
        bound(&f, 1);
        rp_str *prov = rp_map_get(rp->providers, f.p, f.n);
        if (prov && !prov->p) {
            char *copy =
                strndup(r->provider.p, r->provider.n > 64 ? 64 : r->provider.n);
            if (copy)
                *prov = (rp_str){copy, strlen(copy)};
        }
    }
    fail_add(rp, bucket, &be, 1, r->natt == 0 && r->backend.p, err, 0);
    for (int i = 0; i < r->natt; i++) {
        const rp_attempt *a = &r->att[i];
        rp_str abe = or_none(&a->backend);
        fail_add(rp, bucket, &abe, 0, 1, 0, rp_streq(&a->outcome, "next"));
    }
}

static const rp_col FAIL_COLS[] = {
    {"bucket", 0, 0},    {"provider", 0, 0},   {"backend", 0, 0},
    {"requests", 1, 0},  {"attempts", 1, 0},   {"errors", 1, 0},
    {"fallbacks", 1, 0}, {"failed_pct", 1, 0}, {"spike", 0, 1},
};

/* ---- exceptions and denials ------------------------------------------------
 */

typedef struct {
    rp_span uses;
} exc_v;

static void add_exceptions(report *rp, const rp_record *r)
{
    for (int i = 0; i < r->nexc; i++) {
        rp_str f[4] = {r->exc[i], or_none(&r->consumer), or_none(&r->app),
                       or_none(&r->team)};
        exc_v *v = group(rp, f, 4);
        if (v)
            rp_span_add(&v->uses, r->t_ms);
    }
}

static const rp_col EXC_COLS[] = {
    {"exception", 0, 0}, {"consumer", 0, 0}, {"app", 0, 0},  {"team", 0, 0},
    {"uses", 1, 0},      {"first", 0, 0},    {"last", 0, 0},
};

typedef struct {
    rp_span denials;
    char *example; /* the reason the first denial gave */
} deny_v;

static void add_denials(report *rp, const rp_record *r)
{
    for (int i = 0; i < r->ndec; i++) {
        const rp_decision *d = &r->dec[i];
        if (!rp_streq(&d->outcome, "deny"))
            continue;
        char st[16];
        snprintf(st, sizeof(st), "%d", r->status);
        rp_str f[3] = {
            or_none(&d->plugin), or_none(&d->code), {st, strlen(st)}};
        deny_v *v = group(rp, f, 3);
        if (!v)
            return;
        rp_span_add(&v->denials, r->t_ms);
        if (!v->example && d->reason.p)
            v->example = strndup(d->reason.p, d->reason.n);
    }
}

static const rp_col DENY_COLS[] = {
    {"plugin", 0, 0}, {"code", 0, 0}, {"status", 1, 0},  {"denials", 1, 0},
    {"first", 0, 0},  {"last", 0, 0}, {"example", 0, 0},
};

/* ---- reading ----------------------------------------------------------------
 */

static int on_record(const rp_record *r, void *data)
{
    report *rp = data;
    if ((rp->has_from && r->t_ms < rp->from) ||
        (rp->has_to && r->t_ms >= rp->to))
        return 0;
    rp->matched++;
    switch (rp->which) {
    case R_DEPRECATED:
        add_deprecated(rp, r);
        break;
    case R_FAILURES:
        add_failures(rp, r);
        break;
    case R_BUDGETS:
        if (rp_budgets_add(rp->budgets, r) < 0)
            rp->oom = 1;
        break;
    case R_EXCEPTIONS:
        add_exceptions(rp, r);
        break;
    default:
        add_denials(rp, r);
    }
    return rp->oom;
}

/* ---- tables
 * -------------------------------------------------------------------
 */

typedef struct {
    rp_str f[6];
    int nf;
    const void *v;
} entry;

static int cmp_str(const rp_str *a, const rp_str *b)
{
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->p, b->p, n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

static int which_sort; /* qsort has no context argument */

static uint64_t entry_count(const entry *e)
{
    switch (which_sort) {
    case R_DEPRECATED:
        return ((const dep_v *)e->v)->calls.count;
    case R_EXCEPTIONS:
        return ((const exc_v *)e->v)->uses.count;
    case R_DENIALS:
        return ((const deny_v *)e->v)->denials.count;
    default:
        return 0;
    }
}

/* deprecated: by model, then busiest caller; failures: by time, then
 * backend; exceptions: by exception, then uses; denials: most first. */
static int by_report_order(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    if (which_sort == R_FAILURES) {
        long long x = atoll(a->f[0].p), y = atoll(b->f[0].p);
        if (x != y)
            return x < y ? -1 : 1;
        return cmp_str(&a->f[1], &b->f[1]);
    }
    int lead = which_sort == R_DEPRECATED ? 3 : which_sort == R_EXCEPTIONS;
    for (int i = 0; i < lead; i++) {
        int c = cmp_str(&a->f[i], &b->f[i]);
        if (c)
            return c;
    }
    uint64_t x = entry_count(a), y = entry_count(b);
    if (x != y)
        return x < y ? 1 : -1;
    for (int i = lead; i < a->nf; i++) {
        int c = cmp_str(&a->f[i], &b->f[i]);
        if (c)
            return c;
    }
    return 0;
}

/* The count in column `count`, first and last seen from column `first`. */
static void span_cells(rp_table *t, int row, int count, int first,
                       const rp_span *s)
{
    char a[32], z[32];
    rp_format_time(s->first, a);
    rp_format_time(s->last, z);
    rp_table_set(t, row, count, "%llu", (unsigned long long)s->count);
    rp_table_set(t, row, first, "%s", a);
    rp_table_set(t, row, first + 1, "%s", z);
}

static const char *provider_of(report *rp, const rp_str *backend)
{
    const char *p =
        rp->has_policy ? rp_policy_provider(&rp->policy, backend) : NULL;
    if (p && *p)
        return p;
    rp_str *known = rp_map_get(rp->providers, backend->p, backend->n);
    return known && known->p ? known->p : NULL;
}

static void failure_rows(report *rp, rp_table *t, entry *es, size_t n)
{
    uint64_t peak = 0;
    for (size_t i = 0; i < n; i++) {
        const fail_v *v = es[i].v;
        if (v->errors + v->fallbacks > peak)
            peak = v->errors + v->fallbacks;
    }
    for (size_t i = 0; i < n; i++) {
        const fail_v *v = es[i].v;
        char ts[32], bar[64];
        rp_format_time(atoll(es[i].f[0].p) * rp->bucket_ms, ts);
        int row = rp_table_row(t);
        rp_table_set(t, row, 0, "%s", ts);
        const char *prov = provider_of(rp, &es[i].f[1]);
        if (prov)
            rp_table_set(t, row, 1, "%s", prov);
        rp_table_setn(t, row, 2, &es[i].f[1]);
        rp_table_set(t, row, 3, "%llu", (unsigned long long)v->requests);
        rp_table_set(t, row, 4, "%llu", (unsigned long long)v->attempts);
        rp_table_set(t, row, 5, "%llu", (unsigned long long)v->errors);
        rp_table_set(t, row, 6, "%llu", (unsigned long long)v->fallbacks);
        uint64_t failed = v->errors + v->fallbacks;
        uint64_t base = v->attempts > v->requests ? v->attempts : v->requests;
        if (base)
            rp_table_set(t, row, 7, "%.1f",
                         (double)failed * 100 / (double)base);
        /* a bar scaled to the worst bucket, so the spike stands out */
        size_t w = peak ? (size_t)((failed * 30 + peak - 1) / peak) : 0;
        memset(bar, '#', w);
        bar[w] = '\0';
        if (failed && failed == peak)
            strcat(bar, " peak");
        rp_table_set(t, row, 8, "%s", bar);
    }
}

static void group_rows(report *rp, rp_table *t, entry *es, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int row = rp_table_row(t);
        const entry *e = &es[i];
        for (int c = 0; c < e->nf && !(rp->which == R_DENIALS && c == 2); c++)
            rp_table_setn(t, row, c, &e->f[c]);
        if (rp->which == R_DEPRECATED) {
            const dep_v *v = e->v;
            span_cells(t, row, 6, 9, &v->calls);
            rp_table_set(t, row, 7, "%llu", (unsigned long long)v->served);
            rp_table_set(t, row, 8, "%llu", (unsigned long long)v->refused);
        } else if (rp->which == R_EXCEPTIONS) {
            span_cells(t, row, 4, 5, &((const exc_v *)e->v)->uses);
        } else {
            const deny_v *v = e->v;
            rp_table_set(t, row, 2, "%.*s", (int)e->f[2].n, e->f[2].p);
            span_cells(t, row, 3, 4, &v->denials);
            if (v->example)
                rp_table_set(t, row, 6, "%s", v->example);
        }
    }
}

static int build_table(report *rp, rp_table *t, const char **note)
{
    if (rp->which == R_BUDGETS)
        return rp_budgets_emit(rp->budgets, t, note);
    static const struct {
        const rp_col *cols;
        int ncols, nf;
    } shape[] = {
        [R_DEPRECATED] = {DEP_COLS, (int)SL_ARRAY_LEN(DEP_COLS), 6},
        [R_FAILURES] = {FAIL_COLS, (int)SL_ARRAY_LEN(FAIL_COLS), 2},
        [R_EXCEPTIONS] = {EXC_COLS, (int)SL_ARRAY_LEN(EXC_COLS), 4},
        [R_DENIALS] = {DENY_COLS, (int)SL_ARRAY_LEN(DENY_COLS), 3},
    };
    rp_table_init(t, shape[rp->which].cols, shape[rp->which].ncols);
    size_t n = rp_map_count(rp->groups), k = 0, it = 0, kn;
    entry *es = calloc(n + 1, sizeof(*es));
    if (!es)
        return -1;
    const char *key;
    void *val;
    while (rp_map_next(rp->groups, &it, &key, &kn, &val)) {
        es[k].nf = rp_key_split(key, kn, es[k].f, shape[rp->which].nf);
        es[k++].v = val;
    }
    which_sort = rp->which;
    qsort(es, n, sizeof(*es), by_report_order);
    if (rp->which == R_FAILURES)
        failure_rows(rp, t, es, n);
    else
        group_rows(rp, t, es, n);
    free(es);
    return 0;
}

/* ---- the command line
 * ---------------------------------------------------------
 */

static int parse_bucket(const char *s, int64_t *ms)
{
    char *unit;
    long long v = strtoll(s, &unit, 10);
    static const struct {
        const char *u;
        int64_t ms;
    } units[] = {{"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; v > 0 && unit != s && i < SL_ARRAY_LEN(units); i++)
        if (strcmp(unit, units[i].u) == 0) {
            *ms = v * units[i].ms;
            return 0;
        }
    return -1;
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "sluice report: %s%s%s\n\n%s", msg, arg ? " " : "",
            arg ? arg : "", usage_text);
    return 2;
}

static void free_groups(report *rp)
{
    size_t it = 0, n;
    const char *key;
    void *val;
    while (rp->groups && rp->which == R_DENIALS &&
           rp_map_next(rp->groups, &it, &key, &n, &val))
        free(((deny_v *)val)->example);
    it = 0;
    while (rp->providers && rp_map_next(rp->providers, &it, &key, &n, &val))
        free((char *)((rp_str *)val)->p);
    rp_map_free(rp->groups);
    rp_map_free(rp->providers);
    rp_budgets_free(rp->budgets);
    if (rp->has_policy)
        rp_policy_free(&rp->policy);
}

static int parse_args(report *rp, int argc, char **argv, const char ***files,
                      int *nfiles, const char **policy)
{
    rp->bucket_ms = 3600000;
    rp->bucket_text = "1h";
    rp->which = -1;
    for (size_t i = 0; argc > 0 && i < SL_ARRAY_LEN(NAMES); i++)
        if (strcmp(argv[0], NAMES[i]) == 0)
            rp->which = (int)i;
    if (rp->which < 0)
        return argc > 0 ? usage_error("unknown report", argv[0])
                        : usage_error("which report?", NULL);
    *files = calloc((size_t)argc, sizeof(char *));
    if (!*files)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "--from") == 0 || strcmp(a, "--to") == 0 ||
                    strcmp(a, "--bucket") == 0 || strcmp(a, "--policy") == 0;
        if (takes && !v)
            return usage_error("missing value after", a);
        if (strcmp(a, "--json") == 0) {
            rp->format = RP_JSON;
        } else if (strcmp(a, "--csv") == 0) {
            rp->format = RP_CSV;
        } else if (strcmp(a, "--from") == 0 || strcmp(a, "--to") == 0) {
            int to = a[2] == 't';
            if (rp_parse_time(v, strlen(v), to ? &rp->to : &rp->from) < 0)
                return usage_error("not a time:", v);
            *(to ? &rp->has_to : &rp->has_from) = 1;
            *(to ? &rp->to_text : &rp->from_text) = v;
        } else if (strcmp(a, "--bucket") == 0) {
            if (parse_bucket(v, &rp->bucket_ms) < 0)
                return usage_error("--bucket wants a length like 30s, 5m, "
                                   "1h or 1d, not",
                                   v);
            rp->bucket_text = v;
        } else if (strcmp(a, "--policy") == 0) {
            *policy = v;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option", a);
        } else {
            (*files)[(*nfiles)++] = a;
            continue;
        }
        i += takes;
    }
    if (*nfiles == 0)
        return usage_error("name at least one audit log (- for stdin)", NULL);
    return 0;
}

int sl_report_main(int argc, char **argv)
{
    if (argc > 0 &&
        (strcmp(argv[0], "help") == 0 || strcmp(argv[0], "--help") == 0 ||
         strcmp(argv[0], "-h") == 0)) {
        fputs(usage_text, stdout);
        return 0;
    }
    report rp = {0};
    const char **files = NULL, *policy = NULL;
    int nfiles = 0;
    int rc = parse_args(&rp, argc, argv, &files, &nfiles, &policy);
    char err[1024];
    if (rc == 0 && policy) {
        if (rp_policy_load(policy, &rp.policy, err, sizeof(err)) < 0) {
            fprintf(stderr, "sluice report: %s\n", err);
            rp_policy_free(&rp.policy);
            rc = 2;
        } else {
            rp.has_policy = 1;
        }
    }
    if (rc == 0) {
        rp.groups = rp_map_new(rp.which == R_DEPRECATED   ? sizeof(dep_v)
                               : rp.which == R_FAILURES   ? sizeof(fail_v)
                               : rp.which == R_EXCEPTIONS ? sizeof(exc_v)
                                                          : sizeof(deny_v));
        rp.providers = rp_map_new(sizeof(rp_str));
        if (rp.which == R_BUDGETS)
            rp.budgets = rp_budgets_new(rp.has_policy ? &rp.policy : NULL);
        if (!rp.groups || !rp.providers ||
            (rp.which == R_BUDGETS && !rp.budgets))
            rc = 1;
    }
    rp_counts counts = {0};
    for (int i = 0; rc == 0 && i < nfiles; i++) {
        if (rp_read_file(files[i], on_record, &rp, &counts, err, sizeof(err)) <
            0) {
            fprintf(stderr, "sluice report: %s\n", err);
            rc = 1; /* the others are still read and reported */
        }
        if (rp.oom) {
            fprintf(stderr, "sluice report: out of memory\n");
            rc = 1;
            break;
        }
    }
    if (rc <= 1 && !rp.oom && rp.groups) {
        rp_table t;
        const char *note = NULL;
        if (build_table(&rp, &t, &note) == 0) {
            rp_meta m = {.report = NAMES[rp.which],
                         .bucket =
                             rp.which == R_FAILURES ? rp.bucket_text : NULL,
                         .from = rp.from_text,
                         .to = rp.to_text,
                         .counts = &counts,
                         .matched = rp.matched,
                         .note = note};
            rp_table_print(stdout, &t, rp.format, &m);
            rp_table_free(&t);
        } else {
            fprintf(stderr, "sluice report: out of memory\n");
            rc = 1;
        }
    }
    free(files);
    free_groups(&rp);
    return rc;
}
