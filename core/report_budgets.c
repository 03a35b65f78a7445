/* report_budgets.c — the budgets report: tokens and cost by team, each
 * team's limits from the policy's quota plugin next to its spend (the
 * busiest window of each limit, how many windows went over), and the
 * quota refusals the records show: who exceeded which limit, and when.
 *
 * The policy is read here too (only its quota limits and backends): a
 * report runs where the gateway's policy repository is, not its runtime. */
#include "config.h"
#include "report_int.h"
#include "yaml_tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the policy -------------------------------------------------------------
 */

static const char *scalar(const sl_node *map, const char *key)
{
    const sl_node *n = map ? sl_node_get(map, key) : NULL;
    return n && n->type == SL_NODE_SCALAR && !sl_node_is_null(n) ? n->value
                                                                 : NULL;
}

/* The window length of a quota period; 0 for month, -1 when unknown. */
static int64_t period_ms(const char *period)
{
    if (strcmp(period, "minute") == 0)
        return 60000;
    if (strcmp(period, "hour") == 0)
        return 3600000;
    if (strcmp(period, "day") == 0)
        return 86400000;
    if (strcmp(period, "month") == 0)
        return 0;
    char *unit;
    double v = strtod(period, &unit);
    while (*unit == ' ')
        unit++;
    static const struct {
        const char *u;
        int64_t ms;
    } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; i < SL_ARRAY_LEN(units); i++)
        if (unit != period && v > 0 && strcmp(unit, units[i].u) == 0)
            return (int64_t)(v * (double)units[i].ms);
    return -1;
}

static char **scalars(const sl_node *seq, int *n)
{
    *n = 0;
    if (!seq || seq->type != SL_NODE_SEQ || seq->n == 0)
        return NULL;
    char **out = calloc((size_t)seq->n, sizeof(char *));
    for (const sl_node *c = seq->child; out && c; c = c->next)
        if (c->type == SL_NODE_SCALAR)
            out[(*n)++] = strdup(c->value);
    return out;
}

static int add_limit(rp_policy *p, const sl_node *l, int index, int first,
                     const char *path, char *err, size_t errlen)
{
    static const char *metrics[] = {"requests", "tokens", "cost"};
    rp_limit lim = {0};
    const char *by = scalar(l, "by");
    for (int i = 0; i < 3; i++) {
        const char *v = scalar(l, metrics[i]);
        if (v) {
            lim.metric = (char *)metrics[i];
            lim.max = strtod(v, NULL);
        }
    }
    if (!by || !lim.metric) {
        snprintf(err, errlen,
                 "%s:%d: a quota limit needs `by` and one of requests, "
                 "tokens or cost",
                 path, l->line);
        return -1;
    }
    const char *period = scalar(l, "period");
    if (!period)
        period = strcmp(lim.metric, "cost") == 0 ? "month" : "minute";
    if ((lim.len_ms = period_ms(period)) < 0) {
        snprintf(err, errlen, "%s:%d: unknown quota period '%s'", path, l->line,
                 period);
        return -1;
    }
    const char *soft = scalar(l, "soft");
    lim.soft = soft && strcmp(soft, "true") == 0;
    lim.by = strdup(by);
    lim.metric = strdup(lim.metric);
    lim.period = strdup(period);
    lim.models = scalars(sl_node_get(l, "models"), &lim.nmodels);
    const sl_node *ov = sl_node_get(l, "overrides");
    if (ov && ov->type == SL_NODE_MAP && ov->n > 0) {
        lim.override_names = calloc((size_t)ov->n, sizeof(char *));
        lim.override_max = calloc((size_t)ov->n, sizeof(double));
        for (const sl_node *c = ov->child;
             lim.override_names && lim.override_max && c; c = c->next)
            if (c->type == SL_NODE_SCALAR) {
                lim.override_names[lim.noverrides] = strdup(c->key);
                lim.override_max[lim.noverrides++] = strtod(c->value, NULL);
            }
    }
    /* the quota plugin's counter name, made unique within its limits */
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "%s:%s:%s%s", lim.metric, lim.period, by,
             lim.soft ? ":soft" : "");
    for (int i = first; i < p->nlimits; i++)
        if (strcmp(p->limits[i].prefix, prefix) == 0) {
            size_t len = strlen(prefix);
            snprintf(prefix + len, sizeof(prefix) - len, ":%d", index);
            break;
        }
    lim.prefix = strdup(prefix);
    rp_limit *nl =
        realloc(p->limits, (size_t)(p->nlimits + 1) * sizeof(rp_limit));
    if (!nl || !lim.by || !lim.metric || !lim.period || !lim.prefix) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->limits = nl;
    p->limits[p->nlimits++] = lim;
    return 0;
}

static int load_file(const char *path, rp_policy *p, char *err, size_t errlen)
{
    sl_node *root;
    if (sl_yaml_load(path, &root, err, errlen) < 0)
        return -1;
    int rc = 0;
    const sl_node *bes = sl_node_get(root, "backends");
    if (bes && bes->type == SL_NODE_MAP)
        for (const sl_node *b = bes->child; b; b = b->next) {
            rp_backend *nb = realloc(p->backends, (size_t)(p->nbackends + 1) *
                                                      sizeof(rp_backend));
            if (!nb)
                break;
            p->backends = nb;
            const char *prov = scalar(b, "provider");
            nb[p->nbackends].name = strdup(b->key);
            nb[p->nbackends++].provider = strdup(prov ? prov : "");
        }
    const sl_node *plugins = sl_node_get(root, "plugins");
    for (const sl_node *pl =
             plugins && plugins->type == SL_NODE_SEQ ? plugins->child : NULL;
         pl && rc == 0; pl = pl->next) {
        const char *name = scalar(pl, "name");
        const sl_node *conf = sl_node_get(pl, "config");
        const sl_node *limits = conf ? sl_node_get(conf, "limits") : NULL;
        if (!name || strcmp(name, "quota") != 0 || !limits ||
            limits->type != SL_NODE_SEQ)
            continue;
        int first = p->nlimits, i = 1;
        for (const sl_node *l = limits->child; l && rc == 0; l = l->next)
            rc = add_limit(p, l, i++, first, path, err, errlen);
    }
    sl_node_free(root);
    return rc;
}

int rp_policy_load(const char *path, rp_policy *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    struct stat st;
    if (stat(path, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return load_file(path, p, err, errlen);
    char **names = NULL;
    int n = 0, rc = sl_policy_list_files(path, &names, &n, err, errlen);
    if (rc == SL_ENOMEM)
        snprintf(err, errlen, "%s: out of memory", path);
    if (rc < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        if (rc == 0)
            rc = load_file(names[i], p, err, errlen);
        free(names[i]);
    }
    free(names);
    return rc;
}

void rp_policy_free(rp_policy *p)
{
    for (int i = 0; i < p->nlimits; i++) {
        rp_limit *l = &p->limits[i];
        free(l->by);
        free(l->metric);
        free(l->period);
        free(l->prefix);
        for (int j = 0; j < l->nmodels; j++)
            free(l->models[j]);
        free(l->models);
        for (int j = 0; j < l->noverrides; j++)
            free(l->override_names[j]);
        free(l->override_names);
        free(l->override_max);
    }
    free(p->limits);
    for (int i = 0; i < p->nbackends; i++) {
        free(p->backends[i].name);
        free(p->backends[i].provider);
    }
    free(p->backends);
    memset(p, 0, sizeof(*p));
}

const char *rp_policy_provider(const rp_policy *p, const rp_str *backend)
{
    for (int i = 0; p && i < p->nbackends; i++)
        if (rp_streq(backend, p->backends[i].name))
            return p->backends[i].provider;
    return NULL;
}

/* ---- the report -------------------------------------------------------------
 */

typedef struct {
    uint64_t requests, warned;
    double prompt, completion, tokens, cost;
} team_v;

typedef struct {
    double sum;
} window_v;

struct rp_budgets {
    const rp_policy *p;
    rp_map *teams;    /* team → team_v */
    rp_map *refusals; /* team, limit → rp_span */
    rp_map *windows;  /* team, limit index, window id → window_v */
    int64_t month_start, month_end, month_id; /* the last month seen */
};

static const rp_str NO_TEAM = {"(none)", 6};

static int counts_team(const rp_limit *l)
{
    return strcmp(l->by, "team") == 0 || strcmp(l->by, "consumer.team") == 0;
}

static int counts_model(const rp_limit *l, const rp_record *r)
{
    if (!l->models)
        return 1;
    const rp_str *m =
        r->model_public.p ? &r->model_public : &r->model_requested;
    for (int i = 0; i < l->nmodels; i++)
        if (rp_streq(m, l->models[i]))
            return 1;
    return 0;
}

rp_budgets *rp_budgets_new(const rp_policy *p)
{
    rp_budgets *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->p = p;
    b->teams = rp_map_new(sizeof(team_v));
    b->refusals = rp_map_new(sizeof(rp_span));
    b->windows = rp_map_new(sizeof(window_v));
    b->month_end = INT64_MIN;
    if (!b->teams || !b->refusals || !b->windows) {
        rp_budgets_free(b);
        return NULL;
    }
    return b;
}

void rp_budgets_free(rp_budgets *b)
{
    if (!b)
        return;
    rp_map_free(b->teams);
    rp_map_free(b->refusals);
    rp_map_free(b->windows);
    free(b);
}

/* The window of limit l that t falls in: its id. */
static int64_t window_id(rp_budgets *b, const rp_limit *l, int64_t t)
{
    if (l->len_ms > 0)
        return t >= 0 ? t / l->len_ms : (t - l->len_ms + 1) / l->len_ms;
    if (t < b->month_start || t >= b->month_end) {
        char ts[32];
        rp_format_time(t, ts);
        int y = atoi(ts), m = atoi(ts + 5);
        b->month_id = (int64_t)y * 12 + (m - 1);
        b->month_start = rp_days_from_civil(y, (unsigned)m, 1) * 86400000;
        b->month_end = rp_days_from_civil(m == 12 ? y + 1 : y,
                                          m == 12 ? 1u : (unsigned)m + 1, 1) *
                       86400000;
    }
    return b->month_id;
}

static int64_t window_start(const rp_limit *l, int64_t id)
{
    if (l->len_ms > 0)
        return id * l->len_ms;
    int64_t y = id >= 0 ? id / 12 : (id - 11) / 12;
    return rp_days_from_civil(y, (unsigned)(id - y * 12 + 1), 1) * 86400000;
}

int rp_budgets_add(rp_budgets *b, const rp_record *r)
{
    rp_str team = r->team.p ? r->team : NO_TEAM;
    if (team.n > 256)
        team.n = 256;
    team_v *v = rp_map_get(b->teams, team.p, team.n);
    if (!v)
        return -1;
    double tokens = r->prompt_tokens + r->completion_tokens;
    if (tokens == 0)
        tokens = r->total_tokens;
    v->requests++;
    v->prompt += r->prompt_tokens;
    v->completion += r->completion_tokens;
    v->tokens += tokens;
    v->cost += r->cost_usd;
    int denied = 0;
    char key[700];
    for (int i = 0; i < r->ndec; i++) {
        const rp_decision *d = &r->dec[i];
        int deny = rp_streq(&d->outcome, "deny");
        denied |= deny;
        if (!rp_streq(&d->plugin, "quota"))
            continue;
        if (rp_streq(&d->outcome, "warn"))
            v->warned++;
        if (!deny)
            continue;
        rp_str f[2] = {team, r->quota_exceeded.p ? r->quota_exceeded : d->code};
        if (f[1].n > 300)
            f[1].n = 300;
        rp_span *s =
            rp_map_get(b->refusals, key, rp_key(key, sizeof(key), f, 2));
        if (!s)
            return -1;
        rp_span_add(s, r->t_ms);
    }
    for (int i = 0; b->p && i < b->p->nlimits; i++) {
        const rp_limit *l = &b->p->limits[i];
        if (!counts_team(l) || !counts_model(l, r))
            continue;
        double amount = l->metric[0] == 'r'   ? !denied
                        : l->metric[0] == 't' ? tokens
                                              : r->cost_usd;
        if (amount == 0)
            continue;
        char idx[24], wid[24];
        snprintf(idx, sizeof(idx), "%d", i);
        snprintf(wid, sizeof(wid), "%lld", (long long)window_id(b, l, r->t_ms));
        rp_str f[3] = {team, {idx, strlen(idx)}, {wid, strlen(wid)}};
        window_v *w =
            rp_map_get(b->windows, key, rp_key(key, sizeof(key), f, 3));
        if (!w)
            return -1;
        w->sum += amount;
    }
    return 0;
}

static double limit_for(const rp_limit *l, const rp_str *team)
{
    for (int i = 0; i < l->noverrides; i++)
        if (rp_streq(team, l->override_names[i]))
            return l->override_max[i];
    return l->max;
}

typedef struct {
    double peak;
    int64_t peak_id;
    uint64_t over;
} peak_v;

typedef struct {
    rp_str team;
    const team_v *v;
} team_row;

static int by_spend(const void *a, const void *b)
{
    const team_row *x = a, *y = b;
    if (x->v->cost != y->v->cost)
        return x->v->cost < y->v->cost ? 1 : -1;
    if (x->v->tokens != y->v->tokens)
        return x->v->tokens < y->v->tokens ? 1 : -1;
    size_t n = x->team.n < y->team.n ? x->team.n : y->team.n;
    int c = memcmp(x->team.p, y->team.p, n);
    return c ? c : (x->team.n > y->team.n) - (x->team.n < y->team.n);
}

static const rp_col COLS[] = {
    {"team", 0, 0},          {"requests", 1, 0},
    {"prompt_tokens", 1, 0}, {"completion_tokens", 1, 0},
    {"tokens", 1, 0},        {"cost_usd", 1, 0},
    {"limit", 0, 0},         {"budget", 0, 0},
    {"peak", 1, 0},          {"peak_window", 0, 0},
    {"used_pct", 1, 0},      {"windows_over", 1, 0},
    {"warned", 1, 0},        {"refused", 1, 0},
    {"first_refused", 0, 0}, {"last_refused", 0, 0},
};

static void budget_text(rp_table *t, int row, const rp_limit *l, double max)
{
    if (l->metric[0] == 'c')
        rp_table_set(t, row, 7, "$%.2f/%s%s", max, l->period,
                     l->soft ? " soft" : "");
    else
        rp_table_set(t, row, 7, "%.0f %s/%s%s", max, l->metric, l->period,
                     l->soft ? " soft" : "");
}

static int team_spend_row(rp_table *t, const team_row *tr)
{
    int row = rp_table_row(t);
    rp_table_setn(t, row, 0, &tr->team);
    rp_table_set(t, row, 1, "%llu", (unsigned long long)tr->v->requests);
    rp_table_set(t, row, 2, "%.0f", tr->v->prompt);
    rp_table_set(t, row, 3, "%.0f", tr->v->completion);
    rp_table_set(t, row, 4, "%.0f", tr->v->tokens);
    rp_table_set(t, row, 5, "%.6f", tr->v->cost);
    rp_table_set(t, row, 12, "%llu", (unsigned long long)tr->v->warned);
    rp_table_set(t, row, 13, "0");
    return row;
}

static void refusal_cells(rp_table *t, int row, const rp_span *s)
{
    char a[32], z[32];
    rp_format_time(s->first, a);
    rp_format_time(s->last, z);
    rp_table_set(t, row, 13, "%llu", (unsigned long long)s->count);
    rp_table_set(t, row, 14, "%s", a);
    rp_table_set(t, row, 15, "%s", z);
}

int rp_budgets_emit(rp_budgets *b, rp_table *t, const char **note)
{
    rp_table_init(t, COLS, (int)SL_ARRAY_LEN(COLS));
    *note = b->p ? NULL
                 : "pass --policy DIR to compare spend with the quota limits";
    /* each team's busiest window per limit */
    rp_map *peaks = rp_map_new(sizeof(peak_v));
    size_t it = 0, n;
    const char *key;
    void *val;
    char k2[700];
    while (peaks && rp_map_next(b->windows, &it, &key, &n, &val)) {
        rp_str f[3];
        if (rp_key_split(key, n, f, 3) != 3)
            continue;
        int i = atoi(f[1].p);
        double sum = ((window_v *)val)->sum;
        peak_v *pk = rp_map_get(peaks, k2, rp_key(k2, sizeof(k2), f, 2));
        if (!pk)
            break;
        if (sum > pk->peak) {
            pk->peak = sum;
            pk->peak_id = strtoll(f[2].p, NULL, 10);
        }
        if (sum > limit_for(&b->p->limits[i], &f[0]))
            pk->over++;
    }
    size_t nteams = rp_map_count(b->teams), k = 0;
    team_row *rows = calloc(nteams + 1, sizeof(*rows));
    if (!rows || !peaks) {
        free(rows);
        rp_map_free(peaks);
        return -1;
    }
    for (it = 0; rp_map_next(b->teams, &it, &key, &n, &val); k++)
        rows[k] = (team_row){{key, n}, val};
    qsort(rows, nteams, sizeof(*rows), by_spend);
    for (k = 0; k < nteams; k++) {
        const team_row *tr = &rows[k];
        int nrows = 0;
        for (int i = 0; b->p && i < b->p->nlimits; i++) {
            const rp_limit *l = &b->p->limits[i];
            if (!counts_team(l))
                continue;
            int row = team_spend_row(t, tr);
            nrows++;
            double max = limit_for(l, &tr->team);
            rp_table_set(t, row, 6, "%s", l->prefix);
            budget_text(t, row, l, max);
            char idx[24];
            snprintf(idx, sizeof(idx), "%d", i);
            rp_str f[2] = {tr->team, {idx, strlen(idx)}};
            size_t kn = rp_key(k2, sizeof(k2), f, 2);
            peak_v *pk = rp_map_get(peaks, k2, kn);
            if (pk && pk->peak > 0) {
                char ws[32];
                rp_format_time(window_start(l, pk->peak_id), ws);
                rp_table_set(t, row, 8, l->metric[0] == 'c' ? "%.6f" : "%.0f",
                             pk->peak);
                rp_table_set(t, row, 9, "%s", ws);
                if (max > 0)
                    rp_table_set(t, row, 10, "%.1f", pk->peak * 100 / max);
            }
            rp_table_set(t, row, 11, "%llu",
                         (unsigned long long)(pk ? pk->over : 0));
            rp_str rf[2] = {tr->team, {l->prefix, strlen(l->prefix)}};
            rp_span *s =
                rp_map_get(b->refusals, k2, rp_key(k2, sizeof(k2), rf, 2));
            if (s && s->count) {
                refusal_cells(t, row, s);
                s->count = 0; /* shown: not again below */
            }
        }
        /* refusals by a limit the policy given does not hold (or none) */
        size_t rit = 0;
        while (rp_map_next(b->refusals, &rit, &key, &n, &val)) {
            rp_str f[2];
            rp_span *s = val;
            if (!s->count || rp_key_split(key, n, f, 2) != 2 ||
                f[0].n != tr->team.n || memcmp(f[0].p, tr->team.p, f[0].n))
                continue;
            int row = team_spend_row(t, tr);
            nrows++;
            rp_table_setn(t, row, 6, &f[1]);
            refusal_cells(t, row, s);
        }
        if (nrows == 0)
            team_spend_row(t, tr);
    }
    free(rows);
    rp_map_free(peaks);
    return 0;
}
