/* cluster_counters.c — the process-wide half of the cluster room: the
 * cluster counters every worker adds to (see cluster.h).
 *
 * A counter holds four numbers. `global` is the total Redis answered to
 * this instance's last flush of it; `pending` is what workers added since
 * and is not sent yet; `inflight` is what a batch carries to Redis now
 * (one batch per counter at a time, so answers arrive in order); `mine` is
 * everything this instance has had acknowledged in the current Redis epoch
 * — what it writes back if Redis comes back empty. Admission reads
 * global + inflight + pending. An instance holds at most a share of
 * increments unacknowledged (pending + in flight), which is what bounds
 * the over-spend across instances (docs/scale-out.md).
 *
 * One mutex guards the table: a critical section is a hash probe and a few
 * additions, far shorter than anything else a request does. */
#include "cluster_int.h"
#include "util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_COUNTERS (1u << 20)

struct cl_counter {
    cl_counter *next;  /* hash chain */
    cl_counter *dnext; /* dirty list */
    uint64_t hash;
    double global, pending, inflight, mine;
    /* increments admitted while Redis answered and not acknowledged yet:
     * what the share bounds (units counted while Redis was down, or
     * written back after it lost its data, are not admissions on stale
     * news and stay outside it) */
    uint32_t pending_n, inflight_n;
    double ttl;     /* seconds, for Redis (0 = none) */
    double expires; /* monotonic seconds; 0 = never */
    int dirty;      /* on the dirty list */
    int flushing;   /* a batch carries it */
    uint32_t klen;
    char key[];
};

cl_global sl_cluster__g;

static struct {
    pthread_mutex_t lock;
    cl_counter **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
    cl_counter *dirty_head, *dirty_tail;
    char epoch[64];
} t = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static double init_units;
static int init_closed;

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static void do_init(void)
{
    t.buckets = calloc(1024, sizeof(*t.buckets));
    t.nbuckets = t.buckets ? 1024 : 0;
    sl_cluster__g.flush_units = init_units;
    sl_cluster__g.fail_closed = init_closed;
    sl_cluster__g.enabled = t.buckets != NULL;
}

void sl_cluster__counters_init(double flush_units, int fail_closed)
{
    init_units = flush_units;
    init_closed = fail_closed;
    pthread_once(&once, do_init);
}

int sl_cluster_enabled(void)
{
    return sl_cluster__g.enabled;
}

/* Growing is best effort: a failed calloc leaves longer chains. */
static void maybe_grow(void)
{
    if (t.count <= t.nbuckets * 2)
        return;
    size_t n = t.nbuckets * 2;
    cl_counter **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return;
    for (size_t b = 0; b < t.nbuckets; b++) {
        cl_counter *e = t.buckets[b];
        while (e) {
            cl_counter *next = e->next;
            e->next = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t.buckets);
    t.buckets = nb;
    t.nbuckets = n;
}

static cl_counter *find(const char *key, size_t klen, uint64_t h)
{
    for (cl_counter *e = t.buckets[h & (t.nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

static cl_counter *find_or_add(const char *key, size_t klen)
{
    uint64_t h = hash_key(key, klen);
    cl_counter *e = find(key, klen, h);
    if (e || t.count >= MAX_COUNTERS)
        return e;
    if (!(e = calloc(1, sizeof(*e) + klen)))
        return NULL;
    e->hash = h;
    e->klen = (uint32_t)klen;
    memcpy(e->key, key, klen);
    e->next = t.buckets[h & (t.nbuckets - 1)];
    t.buckets[h & (t.nbuckets - 1)] = e;
    t.count++;
    maybe_grow();
    return e;
}

static void mark_dirty(cl_counter *e)
{
    if (e->dirty || e->flushing)
        return;
    e->dirty = 1;
    e->dnext = NULL;
    if (t.dirty_tail)
        t.dirty_tail->dnext = e;
    else
        t.dirty_head = e;
    t.dirty_tail = e;
}

int sl_cluster_incr(const char *key, size_t klen, double delta, double ttl,
                    int fail, double share, double *out)
{
    cl_global *g = &sl_cluster__g;
    if (!key || klen == 0 || klen > SL_SHD_MAX_KEY || !isfinite(delta) ||
        !(ttl >= 0) || !isfinite(ttl))
        return SL_EINVAL;
    int up = atomic_load(&g->ready) > 0;
    if (fail == SL_CLUSTER_FAIL_DEFAULT)
        fail = g->fail_closed;
    /* giving units back is never refused */
    if (!up && fail == SL_CLUSTER_FAIL_CLOSED && delta > 0) {
        atomic_fetch_add(&g->refused, 1);
        return SL_ECONNECT;
    }
    double cap = share > 0 ? share : 2 * g->flush_units;
    double trigger = fmin(g->flush_units, fmax(1, cap / 2));
    int rc = 0, kick = 0;
    pthread_mutex_lock(&t.lock);
    cl_counter *e = find_or_add(key, klen);
    if (!e) {
        rc = SL_ENOMEM;
    } else {
        double held = (double)e->pending_n + e->inflight_n;
        /* The share: while Redis answers, an instance never holds more
         * than `cap` increments it has not heard back about. While Redis
         * is down, counting is local and the share does not apply. */
        if (up && delta > 0 && held + 1 > cap) {
            rc = SL_EAGAIN;
        } else {
            e->pending += delta;
            if (up && delta > 0)
                e->pending_n++;
            if (ttl > 0) {
                e->ttl = ttl;
                double exp = sl_now_mono() + ttl;
                if (exp > e->expires)
                    e->expires = exp;
            }
            mark_dirty(e);
            kick = up && !e->flushing && e->pending_n >= trigger;
        }
        *out = e->global + e->inflight + e->pending;
    }
    pthread_mutex_unlock(&t.lock);
    if (rc == SL_EAGAIN)
        atomic_fetch_add(&g->share_busy, 1);
    else if (rc == 0 && !up)
        atomic_fetch_add(&g->local_counted, 1);
    if (kick)
        sl_cluster__kick();
    return rc;
}

int sl_cluster_get(const char *key, size_t klen, double *out)
{
    if (!key || klen == 0 || klen > SL_SHD_MAX_KEY)
        return 0;
    pthread_mutex_lock(&t.lock);
    cl_counter *e = t.nbuckets ? find(key, klen, hash_key(key, klen)) : NULL;
    if (e)
        *out = e->global + e->inflight + e->pending;
    pthread_mutex_unlock(&t.lock);
    return e != NULL;
}

void sl_cluster__batch_free(cl_batch *b)
{
    if (!b)
        return;
    free(b->counters);
    free(b->deltas);
    free(b->ttls);
    free(b);
}

cl_batch *sl_cluster__take_batch(int max)
{
    pthread_mutex_lock(&t.lock);
    int n = 0;
    for (cl_counter *e = t.dirty_head; e && n < max; e = e->dnext)
        n++;
    cl_batch *b = NULL;
    if (n > 0 && (b = calloc(1, sizeof(*b)))) {
        b->counters = malloc((size_t)n * sizeof(*b->counters));
        b->deltas = malloc((size_t)n * sizeof(*b->deltas));
        b->ttls = malloc((size_t)n * sizeof(*b->ttls));
        if (!b->counters || !b->deltas || !b->ttls) {
            sl_cluster__batch_free(b);
            b = NULL;
        }
    }
    while (b && b->n < n) {
        cl_counter *e = t.dirty_head;
        t.dirty_head = e->dnext;
        if (!t.dirty_head)
            t.dirty_tail = NULL;
        e->dirty = 0;
        if (e->pending == 0) {
            n--;
            continue;
        }
        e->flushing = 1;
        e->inflight = e->pending;
        e->pending = 0;
        e->inflight_n = e->pending_n;
        e->pending_n = 0;
        b->counters[b->n] = e;
        b->deltas[b->n] = e->inflight;
        b->ttls[b->n] = e->ttl;
        b->n++;
    }
    pthread_mutex_unlock(&t.lock);
    if (b && b->n == 0) {
        sl_cluster__batch_free(b);
        b = NULL;
    }
    return b;
}

void sl_cluster__batch_done(cl_batch *b, const double *values)
{
    int kick = 0;
    pthread_mutex_lock(&t.lock);
    for (int i = 0; i < b->n; i++) {
        cl_counter *e = b->counters[i];
        e->global = values[i];
        e->mine += e->inflight;
        e->inflight = 0;
        e->inflight_n = 0;
        e->flushing = 0;
        if (e->pending != 0) {
            mark_dirty(e);
            kick |= e->pending_n >= sl_cluster__g.flush_units;
        }
    }
    pthread_mutex_unlock(&t.lock);
    atomic_fetch_add(&sl_cluster__g.flushes, 1);
    if (kick)
        sl_cluster__kick();
}

void sl_cluster__batch_abort(cl_batch *b)
{
    pthread_mutex_lock(&t.lock);
    for (int i = 0; i < b->n; i++) {
        cl_counter *e = b->counters[i];
        e->pending += e->inflight;
        e->inflight = 0;
        e->pending_n += e->inflight_n;
        e->inflight_n = 0;
        e->flushing = 0;
        mark_dirty(e);
    }
    pthread_mutex_unlock(&t.lock);
    sl_cluster__batch_free(b);
}

const char *sl_cluster__counter_key(const cl_counter *e, size_t *len)
{
    *len = e->klen;
    return e->key;
}

int sl_cluster__pending(void)
{
    pthread_mutex_lock(&t.lock);
    int any = t.dirty_head != NULL;
    pthread_mutex_unlock(&t.lock);
    return any;
}

int sl_cluster__epoch_seen(const char *epoch)
{
    int reseed = 0;
    pthread_mutex_lock(&t.lock);
    if (t.epoch[0] && strcmp(t.epoch, epoch) != 0) {
        /* Redis came back without the counters: what this instance had
         * written is pending again, and the global value forgets it so
         * admission does not see it twice meanwhile. */
        for (size_t b = 0; b < t.nbuckets; b++)
            for (cl_counter *e = t.buckets[b]; e; e = e->next) {
                if (e->mine == 0)
                    continue;
                e->pending += e->mine;
                e->global -= e->mine;
                e->mine = 0;
                mark_dirty(e);
            }
        reseed = 1;
    }
    snprintf(t.epoch, sizeof(t.epoch), "%s", epoch);
    pthread_mutex_unlock(&t.lock);
    if (reseed)
        atomic_fetch_add(&sl_cluster__g.reseeds, 1);
    return reseed;
}

void sl_cluster__sweep(void)
{
    double now = sl_now_mono();
    pthread_mutex_lock(&t.lock);
    for (size_t b = 0; b < t.nbuckets; b++) {
        cl_counter **link = &t.buckets[b];
        while (*link) {
            cl_counter *e = *link;
            if (e->expires && e->expires <= now && !e->dirty && !e->flushing &&
                e->pending == 0) {
                *link = e->next;
                t.count--;
                free(e);
            } else {
                link = &e->next;
            }
        }
    }
    pthread_mutex_unlock(&t.lock);
}

void sl_cluster_get_stats(sl_cluster_stats *s)
{
    cl_global *g = &sl_cluster__g;
    memset(s, 0, sizeof(*s));
    s->enabled = g->enabled;
    if (!s->enabled)
        return;
    s->redis_up = atomic_load(&g->ready) > 0;
    pthread_mutex_lock(&t.lock);
    s->counters = t.count;
    pthread_mutex_unlock(&t.lock);
    s->local_counted = atomic_load(&g->local_counted);
    s->refused = atomic_load(&g->refused);
    s->share_busy = atomic_load(&g->share_busy);
    s->flushes = atomic_load(&g->flushes);
    s->reconnects = atomic_load(&g->reconnects);
    s->reseeds = atomic_load(&g->reseeds);
    s->flags_received = atomic_load(&g->flags_received);
}
