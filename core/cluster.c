/* cluster.c — the per-worker Redis client of the cluster room (see
 * cluster.h; the counters themselves are in cluster_counters.c).
 *
 * Each gateway worker holds one command connection on its own loop; the
 * first worker of the process also holds the subscriber connection (Redis
 * pub/sub needs one of its own) and writes the instance's heartbeat. A
 * connection is made on the loop's first tick, never during setup, and
 * every failure (refused, reset, no answer within `timeout`) frees it and
 * schedules a new one with backoff (100 ms doubling to 5 s).
 *
 * Redis layout (`prefix` is "sluice:" by default):
 *   <prefix>epoch          which Redis this is: set once by the first
 *                          instance; a new one means Redis lost its data
 *   <prefix>c:<key>        a cluster counter (INCRBYFLOAT, PEXPIRE)
 *   <prefix>f:<id>         a flush already applied (an hour), so a batch
 *                          resent after a lost answer counts once
 *   <prefix>s:<key>        a shared flag (breakers), with its TTL
 *   channel <prefix>flags  flag changes, "origin|op|ttl_ms|klen|key value"
 * Policy distribution, instance heartbeats (<prefix>inst:<name>) and
 * cluster-wide changes live on the main thread's own client
 * (cluster_policy.c). */
#include "cluster_int.h"
#include "log.h"
#include "secret.h"
#include "util.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <hiredis/adapters/libuv.h>
#pragma GCC diagnostic pop

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 256
#define BACKOFF_MIN 100
#define BACKOFF_MAX 5000
#define OUTBOX_MAX 4096

/* KEYS[1] the flush id, KEYS[2..] counters; ARGV: delta, ttl_ms pairs. */
static const char FLUSH_SCRIPT[] =
    "local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', 3600)\n"
    "local out = {}\n"
    "for i = 2, #KEYS do\n"
    "  if fresh then\n"
    "    out[i - 1] = redis.call('INCRBYFLOAT', KEYS[i], ARGV[2 * i - 3])\n"
    "    local ttl = tonumber(ARGV[2 * i - 2])\n"
    "    if ttl > 0 and redis.call('PTTL', KEYS[i]) < 0 then\n"
    "      redis.call('PEXPIRE', KEYS[i], ttl)\n"
    "    end\n"
    "  else\n"
    "    out[i - 1] = redis.call('GET', KEYS[i]) or '0'\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS[1] the epoch key; ARGV[1] a new epoch, kept if none is there. */
static const char EPOCH_SCRIPT[] = "local e = redis.call('GET', KEYS[1])\n"
                                   "if e then return e end\n"
                                   "redis.call('SET', KEYS[1], ARGV[1])\n"
                                   "return ARGV[1]\n";

/* KEYS[1] the flag; ARGV: value ("" deletes), ttl_ms, channel, message. */
static const char FLAG_SCRIPT[] =
    "if ARGV[1] == '' then redis.call('DEL', KEYS[1])\n"
    "elseif tonumber(ARGV[2]) > 0 then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "else redis.call('SET', KEYS[1], ARGV[1]) end\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "return 1\n";

/* ARGV[1] the flag pattern: every live flag as key, value, pttl. */
static const char SYNC_SCRIPT[] =
    "local out, cursor = {}, '0'\n"
    "repeat\n"
    "  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)\n"
    "  cursor = r[1]\n"
    "  for _, k in ipairs(r[2]) do\n"
    "    local v = redis.call('GET', k)\n"
    "    if v then\n"
    "      out[#out + 1] = k; out[#out + 1] = v\n"
    "      out[#out + 1] = tostring(redis.call('PTTL', k))\n"
    "    end\n"
    "  end\n"
    "until cursor == '0'\n"
    "return out\n";

/* ---- process-wide settings ------------------------------------------- */

static struct {
    pthread_mutex_t lock;
    int ready, failed;
    char err[512];
    char ip[INET6_ADDRSTRLEN];
    int port, db;
    char *password;
    char prefix[128];
    char instance[128];
    char nonce[40]; /* this process, in flush ids and flag messages */
    char channel[160];
    double interval_ms, timeout_s;
    atomic_int subscriber_taken;
    atomic_int down_logged;
    atomic_uint_fast64_t seq;
    /* flags written while no connection was ready */
    struct outbox {
        struct outbox *next;
        size_t klen, vlen;
        long long ttl_ms;
        char data[]; /* key, then encoded value ("" deletes) */
    } * out_head, *out_tail;
    int out_count;
} P = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int setup_process(const sl_config *cfg, char *err, size_t errlen)
{
    const sl_cluster_cfg *cc = &cfg->cluster;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(cc->host, NULL, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, errlen, "cluster.address: cannot resolve %s: %s",
                 cc->host, gai_strerror(gai));
        return SL_EDNS;
    }
    const void *a =
        res->ai_family == AF_INET6
            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, a, P.ip, sizeof(P.ip));
    freeaddrinfo(res);
    if (cc->password_ref) {
        sl_secret_rules rules = {cfg->secret_dirs, cfg->nsecret_dirs, NULL, -1};
        const char *why;
        if (sl_secret_resolve(cc->password_ref, &rules, &P.password, NULL,
                              &why) < 0) {
            snprintf(err, errlen, "cluster.password: %s: %s", cc->password_ref,
                     why);
            return SL_ECONFIG;
        }
    }
    P.port = cc->port;
    P.db = cc->db;
    snprintf(P.prefix, sizeof(P.prefix), "%s", cc->prefix);
    snprintf(P.instance, sizeof(P.instance), "%s", cc->instance);
    unsigned long long r = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&r, sizeof(r), 1, f) != 1)
        r = (unsigned long long)time(NULL) ^
            ((unsigned long long)getpid() << 32);
    if (f)
        fclose(f);
    snprintf(P.nonce, sizeof(P.nonce), "%016llx", r);
    snprintf(P.channel, sizeof(P.channel), "%sflags", P.prefix);
    P.interval_ms = (double)cc->flush_interval;
    P.timeout_s = (double)cc->timeout / 1000.0;
    sl_cluster__counters_init((double)cc->flush_units, cc->fail_closed);
    if (!sl_cluster_enabled()) {
        snprintf(err, errlen, "cluster: out of memory");
        return SL_ENOMEM;
    }
    sl_log_info("cluster: instance %s counts with Redis at %s:%d/%d "
                "(flush every %gms or %g units)",
                P.instance, P.ip, P.port, P.db, P.interval_ms,
                (double)cc->flush_units);
    return 0;
}

int sl_cluster__setup(const sl_config *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&P.lock);
    if (!P.ready && !P.failed) {
        if (setup_process(cfg, P.err, sizeof(P.err)) < 0)
            P.failed = 1;
        else
            P.ready = 1;
    }
    int failed = P.failed;
    pthread_mutex_unlock(&P.lock);
    if (failed) {
        snprintf(err, errlen, "%s", P.err);
        return SL_ECONFIG;
    }
    return 0;
}

void sl_cluster__server(cl_server *out)
{
    out->ip = P.ip;
    out->port = P.port;
    out->db = P.db;
    out->password = P.password;
    out->prefix = P.prefix;
    out->instance = P.instance;
    out->nonce = P.nonce;
    out->timeout_s = P.timeout_s;
}

/* ---- the client -------------------------------------------------------- */

typedef struct conn {
    sl_cluster *owner;
    redisAsyncContext *ac;
    int sub; /* the subscriber connection */
    int ready;
    int failures; /* in a row, for logging once */
    int ever;     /* was ready once: a new ready is a reconnect */
    uint64_t backoff;
    double started;
    uv_timer_t retry;
} conn;

struct sl_cluster {
    uv_loop_t *loop;
    int worker;
    conn cmd, sub;
    int has_sub;
    uv_timer_t tick;
    cl_batch *sent_head, *sent_tail;   /* in flight, oldest first */
    cl_batch *retry_head, *retry_tail; /* to resend once connected */
    int closing;
    int need_sync;
    double last_sweep;
};

static _Thread_local sl_cluster *tl_client;

static void connect_now(conn *c);
static void flush(sl_cluster *c);
static void on_tick(uv_timer_t *t);

static void push(cl_batch **head, cl_batch **tail, cl_batch *b)
{
    b->next = NULL;
    if (*tail)
        (*tail)->next = b;
    else
        *head = b;
    *tail = b;
}

static cl_batch *pop(cl_batch **head, cl_batch **tail)
{
    cl_batch *b = *head;
    if (b && !(*head = b->next))
        *tail = NULL;
    return b;
}

static void on_retry(uv_timer_t *t)
{
    conn *c = t->data;
    if (!c->owner->closing && !c->ac)
        connect_now(c);
}

/* The connection is gone (or must go): forget it, free it when asked
 * (not from hiredis's own connect/disconnect callbacks, which free it),
 * and try again after the backoff. */
static void conn_lost(conn *c, const redisAsyncContext *ac, const char *why,
                      int free_it)
{
    if (!ac || c->ac != ac)
        return;
    c->ac = NULL;
    if (c->ready) {
        c->ready = 0;
        if (!c->sub && atomic_fetch_sub(&sl_cluster__g.ready, 1) == 1 &&
            !c->owner->closing && !atomic_exchange(&P.down_logged, 1))
            sl_log_error("cluster: Redis at %s:%d unreachable (%s): quota "
                         "counters count locally (fail open) or refuse "
                         "(fail closed) until it returns",
                         P.ip, P.port, why);
    } else if (c->failures++ == 0 && !c->owner->closing &&
               atomic_load(&sl_cluster__g.ready) == 0 &&
               !atomic_exchange(&P.down_logged, 1)) {
        sl_log_error("cluster: cannot reach Redis at %s:%d (%s): quota "
                     "counters count locally (fail open) or refuse (fail "
                     "closed) until it answers",
                     P.ip, P.port, why);
    }
    if (free_it)
        redisAsyncFree((redisAsyncContext *)ac);
    if (c->owner->closing) {
        if (!uv_is_closing((uv_handle_t *)&c->retry))
            uv_close((uv_handle_t *)&c->retry, NULL);
        return;
    }
    uv_timer_start(&c->retry, on_retry, c->backoff, 0);
    c->backoff = c->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : c->backoff * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (status != REDIS_OK)
        conn_lost(c, ac, ac->errstr[0] ? ac->errstr : "connect failed", 0);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    conn_lost(c, ac, ac->errstr[0] ? ac->errstr : "connection closed", 0);
}

static int reply_error(redisAsyncContext *ac, redisReply *r, const char *what)
{
    conn *c = ac->data;
    if (r && r->type != REDIS_REPLY_ERROR)
        return 0;
    if (r && c->ac == ac) {
        sl_log_error("cluster: Redis refused %s: %.200s", what, r->str);
        conn_lost(c, ac, "command refused", 1);
    }
    return 1;
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *what)
{
    reply_error(ac, reply, what);
}

/* ---- flushing counters --------------------------------------------------- */

static void on_flushed(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = ac->data;
    sl_cluster *cl = c->owner;
    cl_batch *b = pop(&cl->sent_head, &cl->sent_tail);
    (void)priv; /* replies come in order: b == priv */
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || (int)r->elements != b->n) {
        if (r && r->type == REDIS_REPLY_ERROR)
            sl_log_error("cluster: Redis refused a counter flush: %.200s",
                         r->str);
        push(&cl->retry_head, &cl->retry_tail, b);
        if (r)
            conn_lost(c, ac, "unexpected answer to a flush", 1);
        return;
    }
    double vals[BATCH_MAX];
    for (int i = 0; i < b->n; i++) {
        redisReply *e = r->element[i];
        vals[i] = e->type == REDIS_REPLY_STRING    ? strtod(e->str, NULL)
                  : e->type == REDIS_REPLY_INTEGER ? (double)e->integer
                                                   : 0;
    }
    sl_cluster__batch_done(b, vals);
    sl_cluster__batch_free(b);
}

static void send_batch(sl_cluster *cl, cl_batch *b)
{
    int n = b->n, argc = 4 + 3 * n;
    const char **argv = malloc((size_t)argc * sizeof(*argv));
    size_t *lens = malloc((size_t)argc * sizeof(*lens));
    char *keys = NULL, *nums = malloc((size_t)(2 * n + 1) * 40);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t kl;
        sl_cluster__counter_key(b->counters[i], &kl);
        total += strlen(P.prefix) + 2 + kl;
    }
    keys = malloc(total + 1);
    char idkey[256];
    if (!argv || !lens || !keys || !nums) {
        push(&cl->retry_head, &cl->retry_tail, b);
        goto out;
    }
    argv[0] = "EVAL";
    lens[0] = 4;
    argv[1] = FLUSH_SCRIPT;
    lens[1] = sizeof(FLUSH_SCRIPT) - 1;
    char *num = nums;
    lens[2] = (size_t)sprintf(num, "%d", n + 1);
    argv[2] = num;
    num += 40;
    lens[3] = (size_t)snprintf(idkey, sizeof(idkey), "%sf:%s", P.prefix, b->id);
    argv[3] = idkey;
    char *k = keys;
    for (int i = 0; i < n; i++) {
        size_t kl;
        const char *key = sl_cluster__counter_key(b->counters[i], &kl);
        size_t pl = (size_t)sprintf(k, "%sc:", P.prefix);
        memcpy(k + pl, key, kl);
        argv[4 + i] = k;
        lens[4 + i] = pl + kl;
        k += pl + kl;
        int a = 4 + n + 2 * i;
        lens[a] = (size_t)sprintf(num, "%.17g", b->deltas[i]);
        argv[a] = num;
        num += 40;
        lens[a + 1] =
            (size_t)sprintf(num, "%lld", (long long)(b->ttls[i] * 1000));
        argv[a + 1] = num;
        num += 40;
    }
    b->sent_at = sl_now_mono();
    push(&cl->sent_head, &cl->sent_tail, b);
    if (redisAsyncCommandArgv(cl->cmd.ac, on_flushed, b, argc, argv, lens) !=
        REDIS_OK) {
        /* not queued: it never reaches Redis */
        cl_batch *x = NULL;
        for (cl_batch **l = &cl->sent_head; *l; l = &(*l)->next)
            if (*l == b) {
                x = b;
                *l = b->next;
                break;
            }
        cl->sent_tail = NULL;
        for (cl_batch *s = cl->sent_head; s; s = s->next)
            cl->sent_tail = s;
        if (x)
            push(&cl->retry_head, &cl->retry_tail, x);
    }
out:
    free(argv);
    free(lens);
    free(keys);
    free(nums);
}

static void flush(sl_cluster *cl)
{
    if (!cl->cmd.ready)
        return;
    cl_batch *b;
    while ((b = pop(&cl->retry_head, &cl->retry_tail)))
        send_batch(cl, b);
    while (cl->cmd.ready && (b = sl_cluster__take_batch(BATCH_MAX))) {
        snprintf(b->id, sizeof(b->id), "%s:%s:%llu", P.instance, P.nonce,
                 (unsigned long long)atomic_fetch_add(&P.seq, 1));
        send_batch(cl, b);
    }
}

void sl_cluster__kick(void)
{
    sl_cluster *cl = tl_client;
    if (cl && cl->cmd.ready && !cl->closing)
        uv_timer_start(&cl->tick, on_tick, 0, (uint64_t)P.interval_ms);
}

/* ---- shared flags ------------------------------------------------------ */

/* A value as stored in Redis: a type letter, then the value. */
static size_t encode_value(const sl_shd_value *v, char *small, size_t cap,
                           const char **out)
{
    switch (v->type) {
    case SL_SHD_NUMBER:
        *out = small;
        return (size_t)snprintf(small, cap, "n%.17g", v->num);
    case SL_SHD_BOOLEAN:
        *out = small;
        return (size_t)snprintf(small, cap, "b%d", v->boolean ? 1 : 0);
    case SL_SHD_STRING:
        *out = NULL; /* the caller sends "s" + the string */
        return v->len + 1;
    default:
        *out = "";
        return 0;
    }
}

static int decode_value(const char *s, size_t n, sl_shd_value *v)
{
    memset(v, 0, sizeof(*v));
    if (n == 0)
        return 0; /* deleted */
    switch (s[0]) {
    case 'n':
        v->type = SL_SHD_NUMBER;
        v->num = strtod(s + 1, NULL);
        return 1;
    case 'b':
        v->type = SL_SHD_BOOLEAN;
        v->boolean = n > 1 && s[1] == '1';
        return 1;
    case 's':
        v->type = SL_SHD_STRING;
        v->str = s + 1;
        v->len = n - 1;
        return 1;
    }
    return -1;
}

static void on_flag_written(redisAsyncContext *ac, void *reply, void *priv)
{
    if (reply)
        reply_error(ac, reply, "a shared flag");
}

/* Write one flag to Redis and announce it. `val` is the encoded value
 * ("" deletes). */
static void send_flag(sl_cluster *cl, const char *key, size_t klen,
                      const char *val, size_t vlen, long long ttl_ms)
{
    size_t mlen = strlen(P.nonce) + 64 + klen + vlen;
    size_t rlen = strlen(P.prefix) + 2 + klen;
    char *msg = malloc(mlen), *rkey = malloc(rlen + 1);
    char ttl[32];
    if (!msg || !rkey) {
        free(msg);
        free(rkey);
        return;
    }
    int h = snprintf(msg, mlen, "%s|%c|%lld|%zu|", P.nonce, vlen ? 's' : 'd',
                     ttl_ms, klen);
    memcpy(msg + h, key, klen);
    memcpy(msg + h + klen, val, vlen);
    int pl = sprintf(rkey, "%ss:", P.prefix);
    memcpy(rkey + pl, key, klen);
    snprintf(ttl, sizeof(ttl), "%lld", ttl_ms);
    const char *argv[] = {"EVAL", FLAG_SCRIPT, "1",       rkey,
                          val,    ttl,         P.channel, msg};
    size_t lens[] = {4,
                     sizeof(FLAG_SCRIPT) - 1,
                     1,
                     (size_t)pl + klen,
                     vlen,
                     strlen(ttl),
                     strlen(P.channel),
                     (size_t)h + klen + vlen};
    redisAsyncCommandArgv(cl->cmd.ac, on_flag_written, NULL, 8, argv, lens);
    free(msg);
    free(rkey);
}

static void outbox_push(const char *key, size_t klen, const char *val,
                        size_t vlen, long long ttl_ms)
{
    struct outbox *o = malloc(sizeof(*o) + klen + vlen);
    if (!o)
        return;
    o->next = NULL;
    o->klen = klen;
    o->vlen = vlen;
    o->ttl_ms = ttl_ms;
    memcpy(o->data, key, klen);
    memcpy(o->data + klen, val, vlen);
    pthread_mutex_lock(&P.lock);
    if (P.out_count >= OUTBOX_MAX) { /* keep the newest */
        struct outbox *old = P.out_head;
        P.out_head = old->next;
        if (!P.out_head)
            P.out_tail = NULL;
        P.out_count--;
        free(old);
    }
    if (P.out_tail)
        P.out_tail->next = o;
    else
        P.out_head = o;
    P.out_tail = o;
    P.out_count++;
    pthread_mutex_unlock(&P.lock);
}

static void outbox_drain(sl_cluster *cl)
{
    pthread_mutex_lock(&P.lock);
    struct outbox *o = P.out_head;
    P.out_head = P.out_tail = NULL;
    P.out_count = 0;
    pthread_mutex_unlock(&P.lock);
    while (o) {
        struct outbox *next = o->next;
        send_flag(cl, o->data, o->klen, o->data + o->klen, o->vlen, o->ttl_ms);
        free(o);
        o = next;
    }
}

int sl_cluster_set(sl_shdict *d, const char *key, size_t klen,
                   const sl_shd_value *v, double ttl)
{
    int rc = sl_shdict_set(d, key, klen, v, ttl);
    if (rc < 0 || !sl_cluster_enabled())
        return rc;
    char small[64];
    const char *enc;
    size_t vlen = encode_value(v, small, sizeof(small), &enc);
    char *heap = NULL;
    if (!enc) { /* a string */
        if (!(heap = malloc(vlen)))
            return rc;
        heap[0] = 's';
        memcpy(heap + 1, v->str, v->len);
        enc = heap;
    }
    long long ttl_ms = (long long)(ttl * 1000 + 0.5);
    sl_cluster *cl = tl_client;
    if (cl && cl->cmd.ready && !cl->closing)
        send_flag(cl, key, klen, enc, vlen, ttl_ms);
    else
        outbox_push(key, klen, enc, vlen, ttl_ms);
    free(heap);
    return rc;
}

/* "origin|op|ttl_ms|klen|key value" from another instance. */
static void apply_message(const char *m, size_t n)
{
    const char *end = m + n, *f[4];
    const char *p = m;
    for (int i = 0; i < 4; i++) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        if (!bar)
            return;
        f[i] = p;
        p = bar + 1;
    }
    if ((size_t)(f[1] - f[0] - 1) == strlen(P.nonce) &&
        memcmp(f[0], P.nonce, strlen(P.nonce)) == 0)
        return; /* our own, stored already */
    long long ttl_ms = strtoll(f[2], NULL, 10);
    size_t klen = strtoull(f[3], NULL, 10);
    if (klen == 0 || klen > (size_t)(end - p))
        return;
    sl_shd_value v;
    if (decode_value(p + klen, (size_t)(end - p) - klen, &v) < 0)
        return;
    if (f[1][0] == 'd')
        v.type = SL_SHD_NIL;
    if (ttl_ms < 0)
        ttl_ms = 0;
    sl_shdict_set(sl_shdict_global(), p, klen, &v, (double)ttl_ms / 1000);
    atomic_fetch_add(&sl_cluster__g.flags_received, 1);
}

static void on_synced(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *r = reply;
    if (!r || reply_error(ac, r, "reading shared flags") ||
        r->type != REDIS_REPLY_ARRAY)
        return;
    size_t pl = strlen(P.prefix) + 2;
    for (size_t i = 0; i + 3 <= r->elements; i += 3) {
        redisReply *k = r->element[i], *v = r->element[i + 1],
                   *t = r->element[i + 2];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            (size_t)k->len <= pl)
            continue;
        sl_shd_value val;
        if (decode_value(v->str, (size_t)v->len, &val) <= 0)
            continue;
        long long pttl =
            t->type == REDIS_REPLY_STRING ? strtoll(t->str, NULL, 10) : 0;
        sl_shdict_set(sl_shdict_global(), k->str + pl, (size_t)k->len - pl,
                      &val, pttl > 0 ? (double)pttl / 1000 : 0);
    }
}

static void sync_flags(sl_cluster *cl)
{
    char pattern[200];
    snprintf(pattern, sizeof(pattern), "%ss:*", P.prefix);
    redisAsyncCommand(cl->cmd.ac, on_synced, NULL, "EVAL %s 0 %s", SYNC_SCRIPT,
                      pattern);
    cl->need_sync = 0;
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = ac->data;
    redisReply *r = reply;
    if (!r || reply_error(ac, r, "the subscription") ||
        r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    redisReply *kind = r->element[0];
    if (kind->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(kind->str, "subscribe") == 0) {
        c->ready = 1;
        c->failures = 0;
        c->backoff = BACKOFF_MIN;
        /* flags written while we were not listening */
        c->owner->need_sync = 1;
        if (c->owner->cmd.ready)
            sync_flags(c->owner);
    } else if (strcmp(kind->str, "message") == 0 &&
               r->element[2]->type == REDIS_REPLY_STRING) {
        apply_message(r->element[2]->str, (size_t)r->element[2]->len);
    }
}

/* ---- connecting ---------------------------------------------------------- */

static void on_epoch(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = ac->data;
    sl_cluster *cl = c->owner;
    redisReply *r = reply;
    if (!r || reply_error(ac, r, "the epoch check") || c->ac != ac)
        return;
    if (r->type != REDIS_REPLY_STRING) {
        conn_lost(c, ac, "unexpected answer to the epoch check", 1);
        return;
    }
    if (sl_cluster__epoch_seen(r->str))
        sl_log_warn("cluster: Redis at %s:%d came back without the "
                    "counters: writing back this instance's counts",
                    P.ip, P.port);
    int was_ready = atomic_fetch_add(&sl_cluster__g.ready, 1) > 0;
    if (c->ever)
        atomic_fetch_add(&sl_cluster__g.reconnects, 1);
    c->ever = 1;
    c->ready = 1;
    c->failures = 0;
    c->backoff = BACKOFF_MIN;
    if (!was_ready && atomic_exchange(&P.down_logged, 0))
        sl_log_info("cluster: Redis at %s:%d answers again: counts made "
                    "locally meanwhile are merged",
                    P.ip, P.port);
    if (cl->need_sync)
        sync_flags(cl);
    outbox_drain(cl);
    flush(cl);
}

static void connect_now(conn *c)
{
    sl_cluster *cl = c->owner;
    redisAsyncContext *ac = redisAsyncConnect(P.ip, P.port);
    if (!ac || ac->err) {
        const char *why = ac ? ac->errstr : "out of memory";
        if (c->failures++ == 0)
            sl_log_error("cluster: cannot connect to Redis at %s:%d: %s", P.ip,
                         P.port, why);
        if (ac)
            redisAsyncFree(ac);
        uv_timer_start(&c->retry, on_retry, c->backoff, 0);
        c->backoff =
            c->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : c->backoff * 2;
        return;
    }
    ac->data = c;
    if (redisLibuvAttach(ac, cl->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        uv_timer_start(&c->retry, on_retry, c->backoff, 0);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->started = sl_now_mono();
    if (P.password)
        redisAsyncCommand(ac, on_handshake, "the password", "AUTH %s",
                          P.password);
    if (P.db)
        redisAsyncCommand(ac, on_handshake, "the database", "SELECT %d", P.db);
    if (c->sub) {
        redisAsyncCommand(ac, on_message, NULL, "SUBSCRIBE %s", P.channel);
    } else {
        char epoch[64];
        unsigned long long r = ((unsigned long long)time(NULL) << 20) ^
                               (unsigned long long)atomic_fetch_add(&P.seq, 1);
        snprintf(epoch, sizeof(epoch), "%s-%llx", P.nonce, r);
        redisAsyncCommand(ac, on_epoch, NULL, "EVAL %s 1 %sepoch %s",
                          EPOCH_SCRIPT, P.prefix, epoch);
    }
}

/* ---- the tick: flush, watch for silence, heartbeat ------------------------
 */

static void check_silence(conn *c, double now, double since)
{
    if (c->ac && since > 0 && now - since > P.timeout_s)
        conn_lost(c, c->ac,
                  c->ready ? "no answer in time" : "connect timed out", 1);
}

static void on_tick(uv_timer_t *t)
{
    sl_cluster *cl = t->data;
    double now = sl_now_mono();
    check_silence(&cl->cmd, now,
                  cl->cmd.ready ? (cl->sent_head ? cl->sent_head->sent_at : 0)
                                : cl->cmd.started);
    if (cl->has_sub && !cl->sub.ready)
        check_silence(&cl->sub, now, cl->sub.started);
    if (!cl->cmd.ac && !cl->cmd.ready &&
        !uv_is_active((uv_handle_t *)&cl->cmd.retry))
        connect_now(&cl->cmd);
    if (cl->has_sub && !cl->sub.ac &&
        !uv_is_active((uv_handle_t *)&cl->sub.retry))
        connect_now(&cl->sub);
    if (!cl->cmd.ready)
        return;
    if (P.out_head)
        outbox_drain(cl);
    flush(cl);
    if (now - cl->last_sweep > 1) {
        cl->last_sweep = now;
        sl_cluster__sweep();
    }
}

/* ---- life cycle ------------------------------------------------------------
 */

int sl_cluster_client_new(uv_loop_t *loop, const sl_config *cfg, int worker,
                          sl_cluster **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->cluster.enabled)
        return 0;
    int rc = sl_cluster__setup(cfg, err, errlen);
    if (rc < 0)
        return rc;
    sl_cluster *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return SL_ENOMEM;
    cl->loop = loop;
    cl->worker = worker;
    cl->has_sub = atomic_exchange(&P.subscriber_taken, 1) == 0;
    conn *cs[] = {&cl->cmd, &cl->sub};
    for (int i = 0; i < 2; i++) {
        cs[i]->owner = cl;
        cs[i]->sub = i == 1;
        cs[i]->backoff = BACKOFF_MIN;
        uv_timer_init(loop, &cs[i]->retry);
        cs[i]->retry.data = cs[i];
    }
    cl->need_sync = cl->has_sub;
    uv_timer_init(loop, &cl->tick);
    cl->tick.data = cl;
    /* the first tick connects: nothing touches Redis during setup */
    uv_timer_start(&cl->tick, on_tick, 0, (uint64_t)P.interval_ms);
    tl_client = cl;
    *out = cl;
    return 0;
}

static void on_close_deadline(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac);
    }
    if (!uv_is_closing((uv_handle_t *)t))
        uv_close((uv_handle_t *)t, NULL);
}

void sl_cluster_client_close(sl_cluster *cl)
{
    if (!cl || cl->closing)
        return;
    /* the last pending units go out before the connection closes */
    flush(cl);
    cl->closing = 1;
    if (tl_client == cl)
        tl_client = NULL;
    if (cl->has_sub)
        atomic_store(&P.subscriber_taken, 0);
    uv_close((uv_handle_t *)&cl->tick, NULL);
    conn *cs[] = {&cl->cmd, &cl->sub};
    for (int i = 0; i < 2; i++) {
        conn *c = cs[i];
        uv_timer_stop(&c->retry);
        if (c->ready && !c->sub) {
            c->ready = 0;
            atomic_fetch_sub(&sl_cluster__g.ready, 1);
        }
        c->ready = 0;
        if (c->ac && !c->sub && cl->sent_head) {
            /* answers still due: wait for them, but not forever */
            redisAsyncDisconnect(c->ac);
            uv_timer_start(&c->retry, on_close_deadline,
                           (uint64_t)(P.timeout_s * 1000), 0);
            continue;
        }
        on_close_deadline(&c->retry);
    }
}

void sl_cluster_client_free(sl_cluster *cl)
{
    if (!cl)
        return;
    cl_batch *b;
    while ((b = pop(&cl->retry_head, &cl->retry_tail)))
        sl_cluster__batch_abort(b);
    while ((b = pop(&cl->sent_head, &cl->sent_tail)))
        sl_cluster__batch_abort(b);
    free(cl);
}
