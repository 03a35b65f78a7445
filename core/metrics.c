/* metrics.c — the metrics registry and its Prometheus text exposition (see
 * metrics.h).
 *
 * A family knows its label sets: each distinct set of label values is
 * interned once, under the family's lock, into a dense series id (the
 * "other" series past the cap). Values live in per-thread shards, arrays
 * indexed by series id, so a worker's update is a lookup in its own cache
 * and an add under its own, uncontended, lock. A scrape sums the shards.
 * Gauges are set, not added, so they live once, in the family. */
#include "metrics.h"
#include "common.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_SERIES 1000
#define KEY_MAX (SL_METRICS_MAX_LABELS * (SL_METRICS_MAX_VALUE + 1))

/* A shard's cache entry: a label set (values, each ended by '\0') and the
 * series it is. */
typedef struct centry {
    uint64_t hash;
    char *key; /* NULL: empty slot */
    uint32_t klen;
    uint32_t id;
    int folded; /* over the cap: counted each time it is used */
} centry;

typedef struct shard_fam {
    double *vals; /* nalloc series × the family's stride */
    uint32_t nalloc;
    centry *tab; /* open addressing, a power of two */
    uint32_t tabcap, tabn;
    uint64_t folded;
} shard_fam;

struct sl_metrics_shard {
    pthread_mutex_t lock;
    pthread_t owner;
    sl_metrics *reg;
    shard_fam fam[SL_METRICS_MAX_FAMILIES];
    sl_metrics_shard *next;
};

struct sl_metric_family {
    sl_metrics *reg;
    int index;
    sl_metric_def def;
    int nlabels;
    int stride; /* values per series: 1, or buckets + sum + count */
    pthread_mutex_t lock;
    char **keys; /* by series id */
    uint32_t *klens;
    uint32_t nseries, nreal, keycap;
    uint32_t *idx; /* series id + 1; 0 is empty */
    uint32_t idxcap;
    int64_t other; /* the "other" series id, or -1 */
    double *gvals; /* gauges: by series id */
    uint32_t gcap;
    _Atomic uint64_t folded; /* gauge updates folded into "other" */
};

struct sl_metrics {
    uint64_t gen; /* tells a thread's cached shard from a freed registry's */
    pthread_mutex_t lock; /* the family list and the shard list */
    sl_metric_family *fams[SL_METRICS_MAX_FAMILIES];
    _Atomic int nfams;
    sl_metrics_shard *_Atomic shards;
    _Atomic int max_series;
};

static _Atomic uint64_t next_gen = 1;
static __thread struct {
    uint64_t gen;
    sl_metrics_shard *shard;
} mine;

/* ---- label sets --------------------------------------------------------- */

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The values as one key: each value (cut to SL_METRICS_MAX_VALUE bytes, on
 * a UTF-8 character boundary) followed by '\0'. Returns its length. */
static size_t make_key(char *key, int n, const char *const *values)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        const char *v = values && values[i] ? values[i] : "";
        size_t vl = strlen(v);
        if (vl > SL_METRICS_MAX_VALUE) {
            vl = SL_METRICS_MAX_VALUE;
            while (vl > 0 && ((unsigned char)v[vl] & 0xC0) == 0x80)
                vl--;
        }
        memcpy(key + len, v, vl);
        len += vl;
        key[len++] = '\0';
    }
    return len;
}

static int idx_grow(sl_metric_family *f)
{
    uint32_t cap = f->idxcap ? f->idxcap * 2 : 64;
    uint32_t *idx = calloc(cap, sizeof(*idx));
    if (!idx)
        return SL_ENOMEM;
    for (uint32_t id = 0; id < f->nseries; id++) {
        uint32_t i = (uint32_t)fnv1a(f->keys[id], f->klens[id]) & (cap - 1);
        while (idx[i])
            i = (i + 1) & (cap - 1);
        idx[i] = id + 1;
    }
    free(f->idx);
    f->idx = idx;
    f->idxcap = cap;
    return 0;
}

/* A new series for key (the family's lock held): its id, or -1. */
static int64_t add_series(sl_metric_family *f, const char *key, size_t klen)
{
    if ((f->nseries + 1) * 2 > f->idxcap && idx_grow(f) < 0)
        return -1;
    if (f->nseries == f->keycap) {
        uint32_t cap = f->keycap ? f->keycap * 2 : 16;
        char **keys = realloc(f->keys, cap * sizeof(*keys));
        if (!keys)
            return -1;
        f->keys = keys;
        uint32_t *kl = realloc(f->klens, cap * sizeof(*kl));
        if (!kl)
            return -1;
        f->klens = kl;
        f->keycap = cap;
    }
    char *copy = malloc(klen ? klen : 1);
    if (!copy)
        return -1;
    memcpy(copy, key, klen);
    uint32_t id = f->nseries;
    f->keys[id] = copy;
    f->klens[id] = (uint32_t)klen;
    uint32_t i = (uint32_t)fnv1a(key, klen) & (f->idxcap - 1);
    while (f->idx[i])
        i = (i + 1) & (f->idxcap - 1);
    f->idx[i] = id + 1;
    f->nseries++;
    return id;
}

/* The series id of key, made when new (the family's lock held); past the
 * cap, the "other" series with *folded set. -1 when out of memory. */
static int64_t intern_locked(sl_metric_family *f, const char *key, size_t klen,
                             uint64_t hash, int *folded)
{
    *folded = 0;
    if (f->idxcap) {
        uint32_t i = (uint32_t)hash & (f->idxcap - 1);
        for (; f->idx[i]; i = (i + 1) & (f->idxcap - 1)) {
            uint32_t id = f->idx[i] - 1;
            if (f->klens[id] == klen && memcmp(f->keys[id], key, klen) == 0)
                return id;
        }
    }
    int max = atomic_load(&f->reg->max_series);
    if ((int)f->nreal < max) {
        int64_t id = add_series(f, key, klen);
        if (id >= 0)
            f->nreal++;
        return id;
    }
    *folded = 1;
    if (f->other < 0) {
        char okey[KEY_MAX];
        const char *others[SL_METRICS_MAX_LABELS];
        for (int i = 0; i < f->nlabels; i++)
            others[i] = "other";
        size_t ol = make_key(okey, f->nlabels, others);
        f->other = add_series(f, okey, ol); /* not counted against the cap */
    }
    return f->other;
}

/* ---- the registry -------------------------------------------------------- */

sl_metrics *sl_metrics_new(int max_series)
{
    sl_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->gen = atomic_fetch_add(&next_gen, 1);
    pthread_mutex_init(&m->lock, NULL);
    atomic_store(&m->max_series,
                 max_series > 0 ? max_series : DEFAULT_MAX_SERIES);
    return m;
}

void sl_metrics_set_max_series(sl_metrics *m, int max_series)
{
    atomic_store(&m->max_series,
                 max_series > 0 ? max_series : DEFAULT_MAX_SERIES);
}

static void free_family(sl_metric_family *f)
{
    for (uint32_t i = 0; i < f->nseries; i++)
        free(f->keys[i]);
    free(f->keys);
    free(f->klens);
    free(f->idx);
    free(f->gvals);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void sl_metrics_free(sl_metrics *m)
{
    if (!m)
        return;
    sl_metrics_shard *s = atomic_load(&m->shards);
    while (s) {
        sl_metrics_shard *next = s->next;
        for (int i = 0; i < SL_METRICS_MAX_FAMILIES; i++) {
            shard_fam *sf = &s->fam[i];
            for (uint32_t j = 0; j < sf->tabcap; j++)
                free(sf->tab[j].key);
            free(sf->tab);
            free(sf->vals);
        }
        pthread_mutex_destroy(&s->lock);
        free(s);
        s = next;
    }
    for (int i = 0; i < atomic_load(&m->nfams); i++)
        free_family(m->fams[i]);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

sl_metric_family *sl_metrics_family(sl_metrics *m, const sl_metric_def *def)
{
    pthread_mutex_lock(&m->lock);
    sl_metric_family *f = NULL;
    int n = atomic_load(&m->nfams);
    for (int i = 0; i < n && !f; i++)
        if (strcmp(m->fams[i]->def.name, def->name) == 0)
            f = m->fams[i];
    if (!f && n < SL_METRICS_MAX_FAMILIES && (f = calloc(1, sizeof(*f)))) {
        f->reg = m;
        f->index = n;
        f->def = *def;
        while (def->labels && def->labels[f->nlabels] &&
               f->nlabels < SL_METRICS_MAX_LABELS)
            f->nlabels++;
        f->stride = def->type == SL_METRIC_HISTOGRAM ? def->nbounds + 3 : 1;
        f->other = -1;
        pthread_mutex_init(&f->lock, NULL);
        m->fams[n] = f;
        atomic_store(&m->nfams, n + 1);
    }
    pthread_mutex_unlock(&m->lock);
    return f;
}

/* ---- updates ------------------------------------------------------------- */

sl_metrics_shard *sl_metrics_begin(sl_metrics *m)
{
    sl_metrics_shard *s = mine.gen == m->gen ? mine.shard : NULL;
    if (!s) {
        pthread_t self = pthread_self();
        pthread_mutex_lock(&m->lock);
        for (s = atomic_load(&m->shards); s; s = s->next)
            if (pthread_equal(s->owner, self))
                break;
        if (!s && (s = calloc(1, sizeof(*s)))) {
            pthread_mutex_init(&s->lock, NULL);
            s->owner = self;
            s->reg = m;
            s->next = atomic_load(&m->shards);
            atomic_store(&m->shards, s);
        }
        pthread_mutex_unlock(&m->lock);
        if (!s)
            return NULL;
        mine.gen = m->gen;
        mine.shard = s;
    }
    pthread_mutex_lock(&s->lock);
    return s;
}

void sl_metrics_end(sl_metrics_shard *s)
{
    if (s)
        pthread_mutex_unlock(&s->lock);
}

static int cache_grow(shard_fam *sf)
{
    uint32_t cap = sf->tabcap ? sf->tabcap * 2 : 32;
    centry *tab = calloc(cap, sizeof(*tab));
    if (!tab)
        return SL_ENOMEM;
    for (uint32_t j = 0; j < sf->tabcap; j++) {
        if (!sf->tab[j].key)
            continue;
        uint32_t i = (uint32_t)sf->tab[j].hash & (cap - 1);
        while (tab[i].key)
            i = (i + 1) & (cap - 1);
        tab[i] = sf->tab[j];
    }
    free(sf->tab);
    sf->tab = tab;
    sf->tabcap = cap;
    return 0;
}

/* The values of the series `values` names in shard s (its lock held), or
 * NULL (out of memory). */
static double *slot(sl_metrics_shard *s, sl_metric_family *f,
                    const char *const *values)
{
    char key[KEY_MAX];
    size_t klen = make_key(key, f->nlabels, values);
    uint64_t hash = fnv1a(key, klen);
    shard_fam *sf = &s->fam[f->index];
    int64_t id = -1;
    int folded = 0;
    uint32_t i = 0;
    if (sf->tabcap) {
        for (i = (uint32_t)hash & (sf->tabcap - 1); sf->tab[i].key;
             i = (i + 1) & (sf->tabcap - 1)) {
            centry *e = &sf->tab[i];
            if (e->hash == hash && e->klen == klen &&
                memcmp(e->key, key, klen) == 0) {
                id = e->id;
                folded = e->folded;
                break;
            }
        }
    }
    if (id < 0) {
        pthread_mutex_lock(&f->lock);
        id = intern_locked(f, key, klen, hash, &folded);
        pthread_mutex_unlock(&f->lock);
        if (id < 0)
            return NULL;
        /* The cache is bounded too: label sets folded past the cap are
         * looked up in the family each time rather than remembered. */
        uint32_t limit = 2 * (uint32_t)atomic_load(&f->reg->max_series) + 64;
        if (sf->tabn < limit &&
            ((sf->tabn + 1) * 2 <= sf->tabcap || cache_grow(sf) == 0)) {
            char *copy = malloc(klen ? klen : 1);
            if (copy) {
                memcpy(copy, key, klen);
                i = (uint32_t)hash & (sf->tabcap - 1);
                while (sf->tab[i].key)
                    i = (i + 1) & (sf->tabcap - 1);
                sf->tab[i] =
                    (centry){hash, copy, (uint32_t)klen, (uint32_t)id, folded};
                sf->tabn++;
            }
        }
    }
    if (folded)
        sf->folded++;
    if ((uint32_t)id >= sf->nalloc) {
        uint32_t n = sf->nalloc ? sf->nalloc * 2 : 8;
        while (n <= (uint32_t)id)
            n *= 2;
        double *v = realloc(sf->vals, (size_t)n * f->stride * sizeof(*v));
        if (!v)
            return NULL;
        memset(v + (size_t)sf->nalloc * f->stride, 0,
               (size_t)(n - sf->nalloc) * f->stride * sizeof(*v));
        sf->vals = v;
        sf->nalloc = n;
    }
    return sf->vals + (size_t)id * f->stride;
}

void sl_metrics_add(sl_metrics_shard *s, sl_metric_family *f,
                    const char *const *values, double v)
{
    if (!s || !f || f->def.type != SL_METRIC_COUNTER || !(v >= 0))
        return;
    double *x = slot(s, f, values);
    if (x)
        x[0] += v;
}

void sl_metrics_observe(sl_metrics_shard *s, sl_metric_family *f,
                        const char *const *values, double v)
{
    if (!s || !f || f->def.type != SL_METRIC_HISTOGRAM || isnan(v))
        return;
    double *x = slot(s, f, values);
    if (!x)
        return;
    int b = 0;
    while (b < f->def.nbounds && v > f->def.bounds[b])
        b++;
    x[b] += 1;                  /* this bucket alone; cumulated on output */
    x[f->def.nbounds + 1] += v; /* sum */
    x[f->def.nbounds + 2] += 1; /* count */
}

void sl_metrics_inc(sl_metrics *m, sl_metric_family *f,
                    const char *const *values, double v)
{
    sl_metrics_shard *s = sl_metrics_begin(m);
    sl_metrics_add(s, f, values, v);
    sl_metrics_end(s);
}

void sl_metrics_set(sl_metric_family *f, const char *const *values, double v)
{
    if (!f || f->def.type != SL_METRIC_GAUGE)
        return;
    char key[KEY_MAX];
    size_t klen = make_key(key, f->nlabels, values);
    int folded;
    pthread_mutex_lock(&f->lock);
    int64_t id = intern_locked(f, key, klen, fnv1a(key, klen), &folded);
    if (id >= 0 && (uint32_t)id >= f->gcap) {
        uint32_t n = f->gcap ? f->gcap * 2 : 8;
        while (n <= (uint32_t)id)
            n *= 2;
        double *g = realloc(f->gvals, n * sizeof(*g));
        if (g) {
            memset(g + f->gcap, 0, (n - f->gcap) * sizeof(*g));
            f->gvals = g;
            f->gcap = n;
        }
    }
    if (id >= 0 && (uint32_t)id < f->gcap)
        f->gvals[id] = v;
    pthread_mutex_unlock(&f->lock);
    if (folded)
        atomic_fetch_add(&f->folded, 1);
}

/* ---- exposition -----------------------------------------------------------
 */

/* A sample value into s: integers exactly, others in the shortest form
 * that reads back the same. */
static void fmt_num(char s[40], double v)
{
    if (isnan(v))
        snprintf(s, 40, "NaN");
    else if (isinf(v))
        snprintf(s, 40, v > 0 ? "+Inf" : "-Inf");
    else if (v == 0)
        snprintf(s, 40, "0");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(s, 40, "%.0f", v);
    else if (snprintf(s, 40, "%.15g", v) > 0 && strtod(s, NULL) != v)
        snprintf(s, 40, "%.17g", v);
}

static int put_num(sl_buf *b, double v)
{
    char s[40];
    fmt_num(s, v);
    return sl_buf_puts(b, s);
}

/* Length of the valid UTF-8 character at p (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80             ? 1
                 : (p[0] & 0xE0) == 0xC0 ? 2
                 : (p[0] & 0xF0) == 0xE0 ? 3
                 : (p[0] & 0xF8) == 0xF0 ? 4
                                         : 0;
    if (len == 0 || len > n || (len == 2 && p[0] < 0xC2))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* A label value: backslash, double quote and line feed escaped (the text
 * format's rules); bytes that are not UTF-8 become '?'. */
static int put_label_value(sl_buf *b, const char *v, size_t n)
{
    int rc = 0;
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < n && rc == 0;) {
        if (p[i] == '\\')
            rc = sl_buf_append(b, "\\\\", 2);
        else if (p[i] == '"')
            rc = sl_buf_append(b, "\\\"", 2);
        else if (p[i] == '\n')
            rc = sl_buf_append(b, "\\n", 2);
        else {
            size_t l = utf8_len(p + i, n - i);
            if (l == 0) {
                rc = sl_buf_append(b, "?", 1);
                l = 1;
            } else {
                rc = sl_buf_append(b, p + i, l);
            }
            i += l;
            continue;
        }
        i++;
    }
    return rc;
}

int sl_metrics_escape(sl_buf *b, const char *v)
{
    return put_label_value(b, v, strlen(v));
}

/* HELP text: backslash and line feed escaped. */
static int put_help(sl_buf *b, const char *s)
{
    int rc = 0;
    for (; *s && rc == 0; s++) {
        if (*s == '\\')
            rc = sl_buf_append(b, "\\\\", 2);
        else if (*s == '\n')
            rc = sl_buf_append(b, "\\n", 2);
        else
            rc = sl_buf_append(b, s, 1);
    }
    return rc;
}

/* {a="x",b="y"[,le="…"]}; labels with an empty value are left out (the
 * same series to Prometheus), and so are the braces when none is left. */
static int put_labels(sl_buf *b, const sl_metric_family *f, const char *key,
                      const char *le)
{
    int any = 0, rc = 0;
    const char *v = key;
    for (int i = 0; i < f->nlabels; i++) {
        size_t vl = strlen(v);
        if (vl) {
            rc |= sl_buf_puts(b, any ? "," : "{");
            rc |= sl_buf_puts(b, f->def.labels[i]);
            rc |= sl_buf_puts(b, "=\"");
            rc |= put_label_value(b, v, vl);
            rc |= sl_buf_puts(b, "\"");
            any = 1;
        }
        v += vl + 1;
    }
    if (le) {
        rc |= sl_buf_puts(b, any ? ",le=\"" : "{le=\"");
        rc |= sl_buf_puts(b, le);
        rc |= sl_buf_puts(b, "\"");
        any = 1;
    }
    if (any)
        rc |= sl_buf_puts(b, "}");
    return rc;
}

static const char *type_name(sl_metric_type t)
{
    return t == SL_METRIC_COUNTER ? "counter"
           : t == SL_METRIC_GAUGE ? "gauge"
                                  : "histogram";
}

static int put_series(sl_buf *b, const sl_metric_family *f, const char *key,
                      const double *x)
{
    const char *name = f->def.name;
    int rc = 0;
    if (f->def.type != SL_METRIC_HISTOGRAM) {
        rc |= sl_buf_puts(b, name);
        rc |= put_labels(b, f, key, NULL);
        rc |= sl_buf_puts(b, " ");
        rc |= put_num(b, x[0]);
        return rc | sl_buf_puts(b, "\n");
    }
    double cum = 0;
    for (int i = 0; i <= f->def.nbounds; i++) {
        char le[40];
        cum += x[i];
        if (i < f->def.nbounds)
            fmt_num(le, f->def.bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        rc |= sl_buf_printf(b, "%s_bucket", name);
        rc |= put_labels(b, f, key, le);
        rc |= sl_buf_puts(b, " ");
        rc |= put_num(b, cum);
        rc |= sl_buf_puts(b, "\n");
    }
    rc |= sl_buf_printf(b, "%s_sum", name);
    rc |= put_labels(b, f, key, NULL);
    rc |= sl_buf_puts(b, " ");
    rc |= put_num(b, x[f->def.nbounds + 1]);
    rc |= sl_buf_printf(b, "\n%s_count", name);
    rc |= put_labels(b, f, key, NULL);
    rc |= sl_buf_puts(b, " ");
    rc |= put_num(b, x[f->def.nbounds + 2]);
    return rc | sl_buf_puts(b, "\n");
}

/* One family: its label sets and values summed over the shards (or its
 * gauges), written out. Adds what was folded into *folded. */
static int write_family(sl_metrics *m, sl_metric_family *f, sl_buf *b,
                        uint64_t *folded)
{
    pthread_mutex_lock(&f->lock);
    uint32_t n = f->nseries;
    char **keys = n ? malloc(n * sizeof(*keys)) : NULL;
    double *vals = n ? calloc((size_t)n * f->stride, sizeof(*vals)) : NULL;
    if (n && (!keys || !vals)) {
        pthread_mutex_unlock(&f->lock);
        free(keys);
        free(vals);
        return SL_ENOMEM;
    }
    if (n)
        memcpy(keys, f->keys, n * sizeof(*keys)); /* the strings stay put */
    if (f->def.type == SL_METRIC_GAUGE && n)
        memcpy(vals, f->gvals, (n < f->gcap ? n : f->gcap) * sizeof(*vals));
    pthread_mutex_unlock(&f->lock);
    *folded = atomic_load(&f->folded);
    if (f->def.type != SL_METRIC_GAUGE) {
        for (sl_metrics_shard *s = atomic_load(&m->shards); s; s = s->next) {
            pthread_mutex_lock(&s->lock);
            shard_fam *sf = &s->fam[f->index];
            size_t have = (size_t)(sf->nalloc < n ? sf->nalloc : n) * f->stride;
            for (size_t i = 0; i < have; i++)
                vals[i] += sf->vals[i];
            *folded += sf->folded;
            pthread_mutex_unlock(&s->lock);
        }
    }
    int rc = sl_buf_printf(b, "# HELP %s ", f->def.name);
    rc |= put_help(b, f->def.help ? f->def.help : "");
    rc |= sl_buf_printf(b, "\n# TYPE %s %s\n", f->def.name,
                        type_name(f->def.type));
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc |= put_series(b, f, keys[i], vals + (size_t)i * f->stride);
    free(keys);
    free(vals);
    return rc ? SL_ENOMEM : 0;
}

int sl_metrics_write(sl_metrics *m, sl_buf *out)
{
    int nf = atomic_load(&m->nfams);
    uint64_t folded[SL_METRICS_MAX_FAMILIES] = {0};
    int rc = 0;
    for (int i = 0; i < nf && rc == 0; i++)
        rc = write_family(m, m->fams[i], out, &folded[i]);
    if (rc == 0) {
        rc |= sl_buf_puts(out,
                          "# HELP sluice_metrics_series_folded_total Updates "
                          "to a label set past its family's series cap, "
                          "counted into the series labelled \"other\".\n"
                          "# TYPE sluice_metrics_series_folded_total "
                          "counter\n");
        for (int i = 0; i < nf; i++)
            if (folded[i])
                rc |= sl_buf_printf(out,
                                    "sluice_metrics_series_folded_total{"
                                    "family=\"%s\"} %llu\n",
                                    m->fams[i]->def.name,
                                    (unsigned long long)folded[i]);
    }
    return rc ? SL_ENOMEM : 0;
}
