/* shdict.c — the process-wide shared dictionary (see shdict.h).
 *
 * Workers hit the same few counters on every request, so one big lock would
 * serialise them: keys hash onto 64 shards, each a mutex plus a chained
 * hash table, padded so neighbouring shards do not share a cache line. The
 * entry limit is global (an atomic count), so a small dictionary holds
 * exactly `max_entries` whatever the key distribution. An entry is one
 * allocation: header, key bytes, then the string value if any. */
#include "shdict.h"
#include "util.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NSHARDS 64
#define SHARD_BITS 6
#define INITIAL_BUCKETS 16

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    double expires; /* monotonic seconds; 0 = never */
    double num;
    size_t vlen;
    uint32_t klen;
    uint8_t type;
    uint8_t boolean;
    char data[]; /* key, then string value */
} entry;

typedef struct {
    pthread_mutex_t lock;
    entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
} __attribute__((aligned(64))) shard;

struct sl_shdict {
    shard shards[NSHARDS];
    size_t max_entries;
    atomic_size_t count;
};

/* FNV-1a with a final mix, so the top bits (the shard) are well spread. */
static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static shard *shard_of(sl_shdict *d, uint64_t h)
{
    return &d->shards[h >> (64 - SHARD_BITS)];
}

static int expired(const entry *e, double now)
{
    return e->expires != 0 && e->expires <= now;
}

sl_shdict *sl_shdict_new(size_t max_entries)
{
    if (max_entries == 0)
        return NULL;
    sl_shdict *d = aligned_alloc(64, sizeof(*d));
    if (!d)
        return NULL;
    memset(d, 0, sizeof(*d));
    d->max_entries = max_entries;
    atomic_init(&d->count, 0);
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &d->shards[i];
        s->buckets = calloc(INITIAL_BUCKETS, sizeof(entry *));
        if (!s->buckets) {
            for (int j = 0; j < i; j++) {
                pthread_mutex_destroy(&d->shards[j].lock);
                free(d->shards[j].buckets);
            }
            free(d);
            return NULL;
        }
        s->nbuckets = INITIAL_BUCKETS;
        pthread_mutex_init(&s->lock, NULL);
    }
    return d;
}

void sl_shdict_free(sl_shdict *d)
{
    if (!d)
        return;
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &d->shards[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            entry *e = s->buckets[b];
            while (e) {
                entry *next = e->next;
                free(e);
                e = next;
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(d);
}

static void unlink_entry(sl_shdict *d, shard *s, entry **link)
{
    entry *e = *link;
    *link = e->next;
    free(e);
    s->count--;
    atomic_fetch_sub(&d->count, 1);
}

/* The link pointing at the live entry for `key`, or NULL. An expired entry
 * met on the way is dropped here: that is the lazy half of expiry. */
static entry **find(sl_shdict *d, shard *s, uint64_t h, const char *key,
                    size_t klen, double now)
{
    entry **link = &s->buckets[h & (s->nbuckets - 1)];
    while (*link) {
        entry *e = *link;
        if (e->hash == h && e->klen == klen &&
            memcmp(e->data, key, klen) == 0) {
            if (expired(e, now)) {
                unlink_entry(d, s, link);
                return NULL;
            }
            return link;
        }
        link = &e->next;
    }
    return NULL;
}

static size_t purge_shard(sl_shdict *d, shard *s, double now)
{
    size_t dropped = 0;
    for (size_t b = 0; b < s->nbuckets; b++) {
        entry **link = &s->buckets[b];
        while (*link) {
            if (expired(*link, now)) {
                unlink_entry(d, s, link);
                dropped++;
            } else {
                link = &(*link)->next;
            }
        }
    }
    return dropped;
}

static int try_reserve(sl_shdict *d)
{
    size_t c = atomic_load(&d->count);
    while (c < d->max_entries) {
        if (atomic_compare_exchange_weak(&d->count, &c, c + 1))
            return 1;
    }
    return 0;
}

/* Claim room for one more entry; when full, expired entries of this shard
 * go first. Other shards are purged by the caller, without this lock. */
static int reserve(sl_shdict *d, shard *s, double now)
{
    if (try_reserve(d))
        return 0;
    if (purge_shard(d, s, now) > 0 && try_reserve(d))
        return 0;
    return SL_ENOMEM;
}

/* Growing is best effort: a failed calloc leaves longer chains, not an
 * error. */
static void maybe_grow(shard *s)
{
    if (s->count <= s->nbuckets)
        return;
    size_t n = s->nbuckets * 2;
    entry **nb = calloc(n, sizeof(entry *));
    if (!nb)
        return;
    for (size_t b = 0; b < s->nbuckets; b++) {
        entry *e = s->buckets[b];
        while (e) {
            entry *next = e->next;
            entry **slot = &nb[e->hash & (n - 1)];
            e->next = *slot;
            *slot = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
}

static entry *alloc_entry(const char *key, size_t klen, size_t vlen)
{
    entry *e = malloc(sizeof(entry) + klen + vlen);
    if (!e)
        return NULL;
    e->klen = (uint32_t)klen;
    memcpy(e->data, key, klen);
    return e;
}

static void fill_value(entry *e, const sl_shd_value *v, double expires)
{
    e->type = (uint8_t)v->type;
    e->expires = expires;
    e->num = v->type == SL_SHD_NUMBER ? v->num : 0;
    e->boolean = v->type == SL_SHD_BOOLEAN ? !!v->boolean : 0;
    e->vlen = v->type == SL_SHD_STRING ? v->len : 0;
    if (e->vlen)
        memcpy(e->data + e->klen, v->str, e->vlen);
}

static int check_key(const char *key, size_t klen)
{
    return key && klen > 0 && klen <= SL_SHD_MAX_KEY ? 0 : SL_EINVAL;
}

static int check_ttl(double ttl)
{
    return isfinite(ttl) && ttl >= 0 ? 0 : SL_EINVAL;
}

static int check_value(const sl_shd_value *v)
{
    switch (v->type) {
    case SL_SHD_NIL:
    case SL_SHD_NUMBER:
    case SL_SHD_BOOLEAN:
        return 0;
    case SL_SHD_STRING:
        if (v->len > SL_SHD_MAX_VALUE)
            return SL_ETOOLARGE;
        return v->str || v->len == 0 ? 0 : SL_EINVAL;
    }
    return SL_EINVAL;
}

/* Insert a fresh entry at the head of its bucket; the shard is locked. */
static int insert_new(sl_shdict *d, shard *s, uint64_t h, const char *key,
                      size_t klen, const sl_shd_value *v, double expires,
                      double now)
{
    int rc = reserve(d, s, now);
    if (rc < 0)
        return rc;
    entry *e = alloc_entry(key, klen, v->type == SL_SHD_STRING ? v->len : 0);
    if (!e) {
        atomic_fetch_sub(&d->count, 1);
        return SL_ENOMEM;
    }
    e->hash = h;
    fill_value(e, v, expires);
    s->count++;
    maybe_grow(s);
    entry **slot = &s->buckets[h & (s->nbuckets - 1)];
    e->next = *slot;
    *slot = e;
    return 0;
}

/* Overwrite the entry at `link` in place, reallocating when the string
 * value changes size. */
static int replace(entry **link, const sl_shd_value *v, double expires)
{
    entry *e = *link;
    size_t vlen = v->type == SL_SHD_STRING ? v->len : 0;
    if (vlen != e->vlen) {
        entry *ne = realloc(e, sizeof(entry) + e->klen + vlen);
        if (!ne)
            return SL_ENOMEM;
        *link = e = ne;
    }
    fill_value(e, v, expires);
    return 0;
}

enum { OP_SET, OP_ADD };

static int store(sl_shdict *d, const char *key, size_t klen,
                 const sl_shd_value *v, double ttl, int op)
{
    int rc;
    if ((rc = check_key(key, klen)) < 0 || (rc = check_ttl(ttl)) < 0 ||
        (rc = check_value(v)) < 0)
        return rc;
    if (v->type == SL_SHD_NIL) {
        if (op == OP_ADD)
            return SL_EINVAL;
        sl_shdict_delete(d, key, klen);
        return 0;
    }
    uint64_t h = hash_key(key, klen);
    shard *s = shard_of(d, h);
    for (int attempt = 0; attempt < 2; attempt++) {
        double now = sl_now_mono();
        double expires = ttl > 0 ? now + ttl : 0;
        pthread_mutex_lock(&s->lock);
        entry **link = find(d, s, h, key, klen, now);
        if (link)
            rc = op == OP_ADD ? SL_SHD_EXISTS : replace(link, v, expires);
        else
            rc = insert_new(d, s, h, key, klen, v, expires, now);
        pthread_mutex_unlock(&s->lock);
        /* Full: expired entries elsewhere may free room. Retry once after
         * sweeping, with no lock held so shards never lock each other. */
        if (rc != SL_ENOMEM || link || sl_shdict_flush_expired(d) == 0)
            break;
    }
    return rc;
}

int sl_shdict_set(sl_shdict *d, const char *key, size_t klen,
                  const sl_shd_value *v, double ttl)
{
    return store(d, key, klen, v, ttl, OP_SET);
}

int sl_shdict_add(sl_shdict *d, const char *key, size_t klen,
                  const sl_shd_value *v, double ttl)
{
    return store(d, key, klen, v, ttl, OP_ADD);
}

int sl_shdict_incr(sl_shdict *d, const char *key, size_t klen, double delta,
                   double init, double ttl, double *out)
{
    int rc;
    if ((rc = check_key(key, klen)) < 0 || (rc = check_ttl(ttl)) < 0)
        return rc;
    uint64_t h = hash_key(key, klen);
    shard *s = shard_of(d, h);
    for (int attempt = 0; attempt < 2; attempt++) {
        double now = sl_now_mono();
        pthread_mutex_lock(&s->lock);
        entry **link = find(d, s, h, key, klen, now);
        if (link) {
            entry *e = *link;
            if (e->type != SL_SHD_NUMBER) {
                rc = SL_EINVAL;
            } else {
                e->num += delta;
                *out = e->num;
                rc = 0;
            }
        } else {
            sl_shd_value v = {.type = SL_SHD_NUMBER, .num = init + delta};
            rc = insert_new(d, s, h, key, klen, &v, ttl > 0 ? now + ttl : 0,
                            now);
            if (rc == 0)
                *out = v.num;
        }
        pthread_mutex_unlock(&s->lock);
        if (rc != SL_ENOMEM || link || sl_shdict_flush_expired(d) == 0)
            break;
    }
    return rc;
}

int sl_shdict_get(sl_shdict *d, const char *key, size_t klen, sl_shd_value *out,
                  double *ttl_left)
{
    out->type = SL_SHD_NIL;
    out->str = NULL;
    out->len = 0;
    out->heap = NULL;
    if (check_key(key, klen) < 0)
        return SL_EINVAL;
    uint64_t h = hash_key(key, klen);
    shard *s = shard_of(d, h);
    double now = sl_now_mono();
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    entry **link = find(d, s, h, key, klen, now);
    if (link) {
        entry *e = *link;
        rc = 1;
        out->type = (sl_shd_type)e->type;
        out->num = e->num;
        out->boolean = e->boolean;
        if (ttl_left)
            *ttl_left = e->expires ? e->expires - now : 0;
        if (e->type == SL_SHD_STRING) {
            char *dst = out->inline_buf;
            if (e->vlen > sizeof(out->inline_buf)) {
                dst = out->heap = malloc(e->vlen);
                if (!dst)
                    rc = SL_ENOMEM;
            }
            if (dst) {
                memcpy(dst, e->data + e->klen, e->vlen);
                out->str = dst;
                out->len = e->vlen;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rc < 0)
        out->type = SL_SHD_NIL;
    return rc;
}

void sl_shd_value_free(sl_shd_value *v)
{
    free(v->heap);
    v->heap = NULL;
    v->str = NULL;
}

int sl_shdict_delete(sl_shdict *d, const char *key, size_t klen)
{
    if (check_key(key, klen) < 0)
        return 0;
    uint64_t h = hash_key(key, klen);
    shard *s = shard_of(d, h);
    pthread_mutex_lock(&s->lock);
    entry **link = find(d, s, h, key, klen, sl_now_mono());
    if (link)
        unlink_entry(d, s, link);
    pthread_mutex_unlock(&s->lock);
    return link != NULL;
}

int sl_shdict_ttl(sl_shdict *d, const char *key, size_t klen, double *left)
{
    if (check_key(key, klen) < 0)
        return 0;
    uint64_t h = hash_key(key, klen);
    shard *s = shard_of(d, h);
    double now = sl_now_mono();
    pthread_mutex_lock(&s->lock);
    entry **link = find(d, s, h, key, klen, now);
    if (link)
        *left = (*link)->expires ? (*link)->expires - now : 0;
    pthread_mutex_unlock(&s->lock);
    return link != NULL;
}

size_t sl_shdict_flush_expired(sl_shdict *d)
{
    size_t dropped = 0;
    double now = sl_now_mono();
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &d->shards[i];
        pthread_mutex_lock(&s->lock);
        dropped += purge_shard(d, s, now);
        pthread_mutex_unlock(&s->lock);
    }
    return dropped;
}

size_t sl_shdict_count(sl_shdict *d)
{
    return atomic_load(&d->count);
}

/* ---- the process-wide instance ---------------------------------------- */

static _Atomic(sl_shdict *) g_dict;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void make_default(void)
{
    if (!atomic_load(&g_dict))
        atomic_store(&g_dict, sl_shdict_new(SL_SHD_DEFAULT_ENTRIES));
}

sl_shdict *sl_shdict_global(void)
{
    sl_shdict *d = atomic_load(&g_dict);
    if (d)
        return d;
    pthread_once(&g_once, make_default);
    return atomic_load(&g_dict);
}

void sl_shdict_set_global(sl_shdict *d)
{
    atomic_store(&g_dict, d);
}
