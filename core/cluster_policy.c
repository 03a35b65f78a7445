/* cluster_policy.c — the main thread's Redis client (see cluster.h): policy
 * distribution, heartbeats, the instance list and cluster-wide changes.
 *
 * The admin room lives on the main thread's loop, so this client does too:
 * one command connection and one subscriber connection of its own, never a
 * worker's. Nothing here touches the admin state: answers and
 * announcements go back through callbacks on the same loop. A connection
 * that fails, is refused, or goes silent past `timeout` is freed (hiredis
 * then runs every pending callback with no answer: they see SL_ECONNECT)
 * and made again with backoff, 100 ms doubling to 5 s.
 *
 * Redis layout (`prefix` is "sluice:" by default):
 *   <prefix>policy:v:<version>    hash: bundle, sha256, by, action, at
 *   <prefix>policy:latest         the version every instance should run
 *   <prefix>policy:changes:<id>   hash: record (JSON), status, approvers
 *   <prefix>inst:<instance>       heartbeat JSON, every 2 s, lives 10 s
 *   <prefix>policy:tokens         hash: admin token name -> record JSON
 *                                 (hash, roles, created; "" once revoked)
 *   channel <prefix>policy        "nonce|instance|version|actor", or
 *                                 "nonce|instance|tokens|actor" */
#include "cluster_int.h"
#include "log.h"
#include "util.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <hiredis/adapters/libuv.h>
#pragma GCC diagnostic pop

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define BACKOFF_MIN 100
#define BACKOFF_MAX 5000
#define TICK_MS 250
#define BEAT_S 2.0

/* KEYS: the version's hash, latest. ARGV: version, bundle, sha256, actor,
 * action, at, mode (0 store, 1 announce, 2 seed), channel, message. */
static const char PUT_SCRIPT[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'bundle', ARGV[2], 'sha256', ARGV[3],\n"
    "             'by', ARGV[4], 'action', ARGV[5], 'at', ARGV[6])\n"
    "end\n"
    "if ARGV[7] == '1' then\n"
    "  redis.call('SET', KEYS[2], ARGV[1])\n"
    "  redis.call('PUBLISH', ARGV[8], ARGV[9])\n"
    "  return {'1'}\n"
    "elseif ARGV[7] == '2' and redis.call('SETNX', KEYS[2], ARGV[1]) == 1 "
    "then\n"
    "  return {'1'}\n"
    "end\n"
    "return {'0'}\n";

/* ARGV[1] a key pattern: the values of the matching keys, by key. */
static const char VALUES_SCRIPT[] =
    "local keys, cursor = {}, '0'\n"
    "repeat\n"
    "  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)\n"
    "  cursor = r[1]\n"
    "  for _, k in ipairs(r[2]) do keys[#keys + 1] = k end\n"
    "until cursor == '0'\n"
    "table.sort(keys)\n"
    "local out = {}\n"
    "for _, k in ipairs(keys) do\n"
    "  if ARGV[2] == 'hash' then\n"
    "    local v = redis.call('HMGET', k, 'record', 'status', 'approvers')\n"
    "    if v[1] then\n"
    "      out[#out + 1] = v[1]; out[#out + 1] = v[2] or 'pending'\n"
    "      out[#out + 1] = v[3] or ''\n"
    "    end\n"
    "  else\n"
    "    local v = redis.call('GET', k)\n"
    "    if v then out[#out + 1] = v end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS[1] the change; ARGV[1] its record. */
static const char CHANGE_PUT_SCRIPT[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'record', ARGV[1], 'status', 'pending',\n"
    "             'approvers', '')\n"
    "end\n"
    "return {'1'}\n";

/* KEYS[1] the change; ARGV[1] who approves. */
static const char APPROVE_SCRIPT[] =
    "local st = redis.call('HGET', KEYS[1], 'status')\n"
    "if not st then return {} end\n"
    "if st ~= 'pending' then return {st} end\n"
    "local ap = redis.call('HGET', KEYS[1], 'approvers') or ''\n"
    "for name in string.gmatch(ap, '[^\\n]+') do\n"
    "  if name == ARGV[1] then return {st, ap} end\n"
    "end\n"
    "ap = ap .. ARGV[1] .. '\\n'\n"
    "redis.call('HSET', KEYS[1], 'approvers', ap)\n"
    "return {st, ap}\n";

/* KEYS[1] the change; ARGV[1] its new status. */
static const char STATUS_SCRIPT[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {} end\n"
    "redis.call('HSET', KEYS[1], 'status', ARGV[1])\n"
    "return {ARGV[1]}\n";

/* KEYS[1] the tokens hash; ARGV: name, record ("" revokes), channel,
 * message. A revoked token stays as "" so an instance that still holds it
 * in its tokens.json never brings it back. */
static const char TOKEN_PUT_SCRIPT[] =
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "return {'1'}\n";

typedef struct aconn {
    sl_cluster_admin *owner;
    redisAsyncContext *ac;
    int sub;
    int ready;
    int failures;
    uint64_t backoff;
    double since; /* connect started, or the oldest unanswered command */
    int waiting;  /* commands without an answer yet */
    uv_timer_t retry;
} aconn;

struct sl_cluster_admin {
    uv_loop_t *loop;
    sl_cluster_admin_hooks h;
    cl_server srv;
    aconn cmd, sub;
    uv_timer_t tick;
    char channel[160];
    char *beat;
    double last_beat;
    int closing;
};

typedef struct pending {
    sl_cluster_admin *c;
    sl_cluster_reply_cb cb;
    void *arg;
} pending;

const char *sl_cluster_instance(void)
{
    cl_server s;
    sl_cluster__server(&s);
    return s.instance;
}

int sl_cluster_admin_ready(const sl_cluster_admin *c)
{
    return c && !c->closing && c->cmd.ready;
}

/* ---- connections ------------------------------------------------------- */

static void connect_now(aconn *k);

static void on_retry(uv_timer_t *t)
{
    aconn *k = t->data;
    if (!k->owner->closing && !k->ac)
        connect_now(k);
}

static void lost(aconn *k, const redisAsyncContext *ac, const char *why,
                 int free_it)
{
    sl_cluster_admin *c = k->owner;
    if (!ac || k->ac != ac)
        return;
    k->ac = NULL;
    if (k->ready && !c->closing)
        sl_log_warn("cluster: policy connection to Redis at %s:%d lost (%s): "
                    "published versions are picked up when it returns",
                    c->srv.ip, c->srv.port, why);
    k->ready = 0;
    k->waiting = 0;
    if (free_it)
        redisAsyncFree((redisAsyncContext *)ac);
    if (c->closing)
        return;
    uv_timer_start(&k->retry, on_retry, k->backoff, 0);
    k->backoff = k->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : k->backoff * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        lost(ac->data, ac, ac->errstr[0] ? ac->errstr : "connect failed", 0);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    lost(ac->data, ac, ac->errstr[0] ? ac->errstr : "connection closed", 0);
}

static void send_beat(sl_cluster_admin *c);

static void became_ready(aconn *k)
{
    sl_cluster_admin *c = k->owner;
    k->ready = 1;
    k->failures = 0;
    k->backoff = BACKOFF_MIN;
    if (!k->sub)
        send_beat(c);
    if (c->cmd.ready && c->sub.ready && c->h.on_ready)
        c->h.on_ready(c->h.arg);
}

static void on_ping(redisAsyncContext *ac, void *reply, void *priv)
{
    aconn *k = ac->data;
    redisReply *r = reply;
    (void)priv;
    if (!r || k->ac != ac)
        return;
    if (k->waiting > 0 && --k->waiting == 0)
        k->since = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        sl_log_error("cluster: Redis refused the policy connection: %.200s",
                     r->str);
        lost(k, ac, "refused", 1);
        return;
    }
    became_ready(k);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    aconn *k = ac->data;
    redisReply *r = reply;
    (void)priv;
    if (!r || k->ac != ac)
        return;
    if (k->waiting > 0)
        k->waiting--;
    if (r->type == REDIS_REPLY_ERROR) {
        sl_log_error("cluster: Redis refused the policy connection: %.200s",
                     r->str);
        lost(k, ac, "refused", 1);
    }
}

/* "nonce|instance|version|actor" */
static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    aconn *k = ac->data;
    sl_cluster_admin *c = k->owner;
    redisReply *r = reply;
    (void)priv;
    if (!r || k->ac != ac || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        k->since = 0;
        became_ready(k);
        return;
    }
    if (strcmp(kind, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    char msg[600], *f[4];
    snprintf(msg, sizeof(msg), "%.*s", (int)r->element[2]->len,
             r->element[2]->str);
    char *p = msg;
    for (int i = 0; i < 4; i++) {
        f[i] = p;
        char *bar = i < 3 ? strchr(p, '|') : NULL;
        if (i < 3 && !bar)
            return;
        if (bar) {
            *bar = '\0';
            p = bar + 1;
        }
    }
    if (strcmp(f[0], c->srv.nonce) == 0)
        return; /* our own: live here already */
    if (strcmp(f[2], "tokens") == 0) {
        if (c->h.on_tokens)
            c->h.on_tokens(c->h.arg);
        return;
    }
    if (strlen(f[2]) != 16)
        return;
    if (c->h.on_policy)
        c->h.on_policy(c->h.arg, f[2], f[1], f[3]);
}

static void connect_now(aconn *k)
{
    sl_cluster_admin *c = k->owner;
    redisAsyncContext *ac = redisAsyncConnect(c->srv.ip, c->srv.port);
    if (!ac || ac->err || redisLibuvAttach(ac, c->loop) != REDIS_OK) {
        if (k->failures++ == 0)
            sl_log_warn("cluster: the policy connection cannot reach Redis at "
                        "%s:%d: %s",
                        c->srv.ip, c->srv.port,
                        ac && ac->errstr[0] ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        uv_timer_start(&k->retry, on_retry, k->backoff, 0);
        k->backoff =
            k->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : k->backoff * 2;
        return;
    }
    ac->data = k;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    k->ac = ac;
    k->since = sl_now_mono();
    k->waiting = 0;
    if (c->srv.password) {
        k->waiting++;
        redisAsyncCommand(ac, on_handshake, NULL, "AUTH %s", c->srv.password);
    }
    if (c->srv.db) {
        k->waiting++;
        redisAsyncCommand(ac, on_handshake, NULL, "SELECT %d", c->srv.db);
    }
    if (k->sub) {
        redisAsyncCommand(ac, on_message, NULL, "SUBSCRIBE %s", c->channel);
    } else {
        k->waiting++;
        redisAsyncCommand(ac, on_ping, NULL, "PING");
    }
}

static void on_tick(uv_timer_t *t)
{
    sl_cluster_admin *c = t->data;
    double now = sl_now_mono();
    aconn *ks[] = {&c->cmd, &c->sub};
    for (int i = 0; i < 2; i++) {
        aconn *k = ks[i];
        /* connecting, or answers due, for longer than the timeout */
        if (k->ac && k->since > 0 && now - k->since > c->srv.timeout_s)
            lost(k, k->ac, k->ready ? "no answer in time" : "connect timed out",
                 1);
        if (!k->ac && !uv_is_active((uv_handle_t *)&k->retry))
            connect_now(k);
    }
    if (c->cmd.ready && now - c->last_beat >= BEAT_S)
        send_beat(c);
}

/* ---- commands ------------------------------------------------------------ */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    pending *p = priv;
    aconn *k = ac->data;
    redisReply *r = reply;
    if (r && k->ac == ac && k->waiting > 0 && --k->waiting == 0)
        k->since = 0;
    else if (r && k->ac == ac)
        k->since = sl_now_mono();
    if (!r) {
        p->cb(p->arg, p->c->closing ? SL_ECANCELED : SL_ECONNECT, NULL);
        free(p);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        sl_log_error("cluster: Redis refused a policy command: %.200s", r->str);
        p->cb(p->arg, SL_EIO, NULL);
        free(p);
        return;
    }
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 1;
    const char **s = calloc(n + 1, sizeof(*s));
    size_t *len = calloc(n + 1, sizeof(*len));
    if (!s || !len) {
        free(s);
        free(len);
        p->cb(p->arg, SL_ENOMEM, NULL);
        free(p);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        redisReply *e = r->type == REDIS_REPLY_ARRAY ? r->element[i] : r;
        if (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) {
            s[i] = e->str;
            len[i] = (size_t)e->len;
        } else if (e->type == REDIS_REPLY_INTEGER) {
            s[i] = e->integer ? "1" : "0";
            len[i] = 1;
        }
    }
    sl_cluster_strs out = {(int)n, s, len};
    p->cb(p->arg, 0, &out);
    free(s);
    free(len);
    free(p);
}

static int command(sl_cluster_admin *c, sl_cluster_reply_cb cb, void *arg,
                   int argc, const char **argv, const size_t *lens)
{
    if (!sl_cluster_admin_ready(c))
        return SL_ECONNECT;
    pending *p = malloc(sizeof(*p));
    if (!p)
        return SL_ENOMEM;
    p->c = c;
    p->cb = cb;
    p->arg = arg;
    if (redisAsyncCommandArgv(c->cmd.ac, on_reply, p, argc, argv, lens) !=
        REDIS_OK) {
        free(p);
        return SL_ECONNECT;
    }
    if (c->cmd.waiting++ == 0)
        c->cmd.since = sl_now_mono();
    return 0;
}

/* An EVAL of `script` over keys and args (all NUL-terminated except the
 * one at `blob`, of length blen; blob -1: none). */
static int eval(sl_cluster_admin *c, sl_cluster_reply_cb cb, void *arg,
                const char *script, int nkeys, const char **kv, int n, int blob,
                size_t blen)
{
    const char *argv[16];
    size_t lens[16];
    char nk[8];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = nk;
    for (int i = 0; i < n && i < 13; i++)
        argv[3 + i] = kv[i];
    for (int i = 0; i < 3 + n; i++)
        lens[i] = blob >= 0 && i == 3 + blob ? blen : strlen(argv[i]);
    return command(c, cb, arg, 3 + n, argv, lens);
}

static void key_of(const sl_cluster_admin *c, char *out, size_t cap,
                   const char *what, const char *id)
{
    snprintf(out, cap, "%spolicy:%s%s", c->srv.prefix, what, id ? id : "");
}

static void on_beat(void *arg, int rc, const sl_cluster_strs *r)
{
    (void)arg;
    (void)rc;
    (void)r;
}

static void send_beat(sl_cluster_admin *c)
{
    if (!c->beat || !sl_cluster_admin_ready(c))
        return;
    char key[300];
    snprintf(key, sizeof(key), "%sinst:%s", c->srv.prefix, c->srv.instance);
    const char *argv[] = {"SET", key, c->beat, "PX", "10000"};
    size_t lens[] = {3, strlen(key), strlen(c->beat), 2, 5};
    c->last_beat = sl_now_mono();
    command(c, on_beat, NULL, 5, argv, lens);
}

void sl_cluster_admin_beat(sl_cluster_admin *c, const char *json)
{
    if (!c)
        return;
    char *copy = strdup(json);
    if (!copy)
        return;
    free(c->beat);
    c->beat = copy;
    send_beat(c);
}

int sl_cluster_policy_put(sl_cluster_admin *c, const char *version,
                          const char *bundle, size_t len, const char *sha256,
                          const char *actor, const char *action, int mode,
                          sl_cluster_reply_cb cb, void *arg)
{
    char vkey[300], lkey[300], at[32], m[4], msg[600];
    key_of(c, vkey, sizeof(vkey), "v:", version);
    key_of(c, lkey, sizeof(lkey), "latest", NULL);
    sl_time_rfc3339(at);
    snprintf(m, sizeof(m), "%d", mode);
    snprintf(msg, sizeof(msg), "%s|%s|%s|%.200s", c->srv.nonce, c->srv.instance,
             version, actor ? actor : "");
    const char *kv[] = {
        vkey,   lkey, version, bundle,     sha256, actor ? actor : "",
        action, at,   m,       c->channel, msg};
    return eval(c, cb, arg, PUT_SCRIPT, 2, kv, 11, 3, len);
}

int sl_cluster_policy_get(sl_cluster_admin *c, const char *version,
                          sl_cluster_reply_cb cb, void *arg)
{
    char vkey[300];
    key_of(c, vkey, sizeof(vkey), "v:", version);
    const char *argv[] = {"HMGET", vkey, "bundle", "sha256"};
    size_t lens[] = {5, strlen(vkey), 6, 6};
    return command(c, cb, arg, 4, argv, lens);
}

int sl_cluster_policy_latest(sl_cluster_admin *c, sl_cluster_reply_cb cb,
                             void *arg)
{
    char lkey[300];
    key_of(c, lkey, sizeof(lkey), "latest", NULL);
    const char *argv[] = {"GET", lkey};
    size_t lens[] = {3, strlen(lkey)};
    return command(c, cb, arg, 2, argv, lens);
}

int sl_cluster_instances(sl_cluster_admin *c, sl_cluster_reply_cb cb, void *arg)
{
    char pat[300];
    snprintf(pat, sizeof(pat), "%sinst:*", c->srv.prefix);
    const char *kv[] = {pat, "string"};
    return eval(c, cb, arg, VALUES_SCRIPT, 0, kv, 2, -1, 0);
}

/* Run script on the change id's key with one argument. */
static int change_eval(sl_cluster_admin *c, const char *script, const char *id,
                       const char *argv1, sl_cluster_reply_cb cb, void *arg)
{
    char key[300];
    key_of(c, key, sizeof(key), "changes:", id);
    const char *kv[] = {key, argv1};
    return eval(c, cb, arg, script, 1, kv, 2, -1, 0);
}

int sl_cluster_change_put(sl_cluster_admin *c, const char *id,
                          const char *record, sl_cluster_reply_cb cb, void *arg)
{
    return change_eval(c, CHANGE_PUT_SCRIPT, id, record, cb, arg);
}

int sl_cluster_changes(sl_cluster_admin *c, sl_cluster_reply_cb cb, void *arg)
{
    char pat[300];
    key_of(c, pat, sizeof(pat), "changes:", "*");
    const char *kv[] = {pat, "hash"};
    return eval(c, cb, arg, VALUES_SCRIPT, 0, kv, 2, -1, 0);
}

int sl_cluster_change_approve(sl_cluster_admin *c, const char *id,
                              const char *who, sl_cluster_reply_cb cb,
                              void *arg)
{
    return change_eval(c, APPROVE_SCRIPT, id, who, cb, arg);
}

int sl_cluster_change_status(sl_cluster_admin *c, const char *id,
                             const char *status, sl_cluster_reply_cb cb,
                             void *arg)
{
    return change_eval(c, STATUS_SCRIPT, id, status, cb, arg);
}

int sl_cluster_token_put(sl_cluster_admin *c, const char *name,
                         const char *record, const char *actor,
                         sl_cluster_reply_cb cb, void *arg)
{
    char key[300], msg[400];
    key_of(c, key, sizeof(key), "tokens", NULL);
    snprintf(msg, sizeof(msg), "%s|%s|tokens|%.200s", c->srv.nonce,
             c->srv.instance, actor ? actor : "");
    const char *kv[] = {key, name, record, c->channel, msg};
    return eval(c, cb, arg, TOKEN_PUT_SCRIPT, 1, kv, 5, -1, 0);
}

int sl_cluster_tokens(sl_cluster_admin *c, sl_cluster_reply_cb cb, void *arg)
{
    char key[300];
    key_of(c, key, sizeof(key), "tokens", NULL);
    const char *argv[] = {"HGETALL", key};
    size_t lens[] = {7, strlen(key)};
    return command(c, cb, arg, 2, argv, lens);
}

/* ---- life cycle ------------------------------------------------------------
 */

int sl_cluster_admin_new(uv_loop_t *loop, const sl_config *cfg,
                         const sl_cluster_admin_hooks *h,
                         sl_cluster_admin **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->cluster.enabled)
        return 0;
    int rc = sl_cluster__setup(cfg, err, errlen);
    if (rc < 0)
        return rc;
    sl_cluster_admin *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    c->loop = loop;
    if (h)
        c->h = *h;
    sl_cluster__server(&c->srv);
    snprintf(c->channel, sizeof(c->channel), "%spolicy", c->srv.prefix);
    aconn *ks[] = {&c->cmd, &c->sub};
    for (int i = 0; i < 2; i++) {
        ks[i]->owner = c;
        ks[i]->sub = i == 1;
        ks[i]->backoff = BACKOFF_MIN;
        uv_timer_init(loop, &ks[i]->retry);
        ks[i]->retry.data = ks[i];
    }
    uv_timer_init(loop, &c->tick);
    c->tick.data = c;
    uv_timer_start(&c->tick, on_tick, 0, TICK_MS);
    *out = c;
    return 0;
}

void sl_cluster_admin_close(sl_cluster_admin *c)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tick, NULL);
    aconn *ks[] = {&c->cmd, &c->sub};
    for (int i = 0; i < 2; i++) {
        aconn *k = ks[i];
        k->ready = 0;
        if (k->ac) {
            redisAsyncContext *ac = k->ac;
            k->ac = NULL;
            redisAsyncFree(ac); /* pending callbacks: SL_ECANCELED */
        }
        uv_close((uv_handle_t *)&k->retry, NULL);
    }
}

void sl_cluster_admin_free(sl_cluster_admin *c)
{
    if (!c)
        return;
    free(c->beat);
    free(c);
}

/* ---- start-up --------------------------------------------------------------
 */

int sl_cluster_latest_sync(const sl_config *cfg, char version[17],
                           char **bundle, size_t *len, char sha256[65],
                           char *err, size_t errlen)
{
    version[0] = '\0';
    *bundle = NULL;
    *len = 0;
    sha256[0] = '\0';
    int rc = sl_cluster__setup(cfg, err, errlen);
    if (rc < 0)
        return rc;
    cl_server s;
    sl_cluster__server(&s);
    struct timeval tv = {
        (time_t)s.timeout_s,
        (suseconds_t)((s.timeout_s - (double)(time_t)s.timeout_s) * 1e6)};
    redisContext *rc_ = redisConnectWithTimeout(s.ip, s.port, tv);
    if (!rc_ || rc_->err) {
        snprintf(err, errlen, "%s", rc_ ? rc_->errstr : "out of memory");
        if (rc_)
            redisFree(rc_);
        return SL_ECONNECT;
    }
    redisSetTimeout(rc_, tv);
    redisReply *r = NULL;
    int ok = 1;
    if (s.password) {
        r = redisCommand(rc_, "AUTH %s", s.password);
        ok = r && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
    }
    if (ok && s.db) {
        r = redisCommand(rc_, "SELECT %d", s.db);
        ok = r && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
    }
    char lkey[300];
    snprintf(lkey, sizeof(lkey), "%spolicy:latest", s.prefix);
    r = ok ? redisCommand(rc_, "GET %s", lkey) : NULL;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s",
                 r                ? r->str
                 : rc_->errstr[0] ? rc_->errstr
                                  : "refused");
        freeReplyObject(r);
        redisFree(rc_);
        return SL_ECONNECT;
    }
    if (r->type == REDIS_REPLY_STRING && r->len == 16) {
        memcpy(version, r->str, 17);
        freeReplyObject(r);
        r = redisCommand(rc_, "HMGET %spolicy:v:%s bundle sha256", s.prefix,
                         version);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_STRING &&
            r->element[1]->len == 64 &&
            (*bundle = malloc((size_t)r->element[0]->len + 1))) {
            memcpy(*bundle, r->element[0]->str, (size_t)r->element[0]->len);
            (*bundle)[r->element[0]->len] = '\0';
            *len = (size_t)r->element[0]->len;
            memcpy(sha256, r->element[1]->str, 65);
        } else {
            snprintf(err, errlen, "the bundle of version %s is missing",
                     version);
            rc = SL_EIO;
        }
    }
    freeReplyObject(r);
    redisFree(rc_);
    return rc;
}
