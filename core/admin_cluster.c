/* admin_cluster.c — the policy lifecycle across instances (cluster mode,
 * docs/scale-out.md "Policy distribution").
 *
 * A version published, rolled back or reloaded here is put in Redis as a
 * bundle (its policy files and plugin sources) with the bundle's SHA-256,
 * made the cluster's latest, and announced. Every other instance fetches
 * it, checks the hash, stores it in its own state directory, validates it
 * on its main thread and switches its workers with the same zero-drop
 * publish as a local one (action "follow" in its admin audit log). A
 * version that fails there is never applied: the refusal is in the audit
 * log, the error log and the instance's heartbeat. Each instance writes a
 * heartbeat with its live version; GET /admin/status lists them all. An
 * instance that starts, or gets Redis back, takes the latest version.
 * Proposed changes and their approvals are kept in Redis as well, so a
 * change submitted on one instance can be approved on a second and
 * published on a third, and its author still cannot approve it.
 *
 * Everything runs on the main thread's loop through its own Redis client
 * (cluster_policy.c); no call blocks except the one read at start, before
 * any listener opens. */
#include "admin_int.h"
#include "log.h"
#include "util.h"

#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>

#define BUNDLE_FILES 256

/* ---- bundles ------------------------------------------------------------- */

void sl_admin__sha256_hex(const char *s, size_t n, char out[65])
{
    unsigned char sum[32];
    mbedtls_sha256_ret((const unsigned char *)s, n, sum, 0);
    for (int i = 0; i < 32; i++)
        snprintf(out + i * 2, 3, "%02x", sum[i]);
}

static int bundle_add(sl_buf *b, const char *name, const char *data, size_t len)
{
    int rc = sl_buf_printf(b, "%s\n%zu\n", name, len);
    if (rc == 0)
        rc = sl_buf_append(b, data, len);
    return rc ? rc : sl_buf_append(b, "\n", 1);
}

/* A version as one blob: "NAME\nLENGTH\nBYTES\n" per file, with the names
 * an upload uses (policies/x.yaml, plugins/y.lua). */
int sl_admin__bundle_of(const sl_policy *p, sl_buf *b)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < p->nfiles; i++) {
        char *data, name[400];
        size_t len;
        const char *base = strrchr(p->files[i].path, '/');
        if ((rc = sl_read_file(p->files[i].path, &data, &len)) < 0)
            break;
        snprintf(name, sizeof(name), "policies/%s",
                 base ? base + 1 : p->files[i].path);
        rc = bundle_add(b, name, data, len);
        free(data);
    }
    for (int i = 0; rc == 0 && i < p->nplugins; i++) {
        char name[400];
        snprintf(name, sizeof(name), "plugins/%s.lua", p->plugins[i].name);
        rc = bundle_add(b, name, p->plugins[i].code, p->plugins[i].len);
    }
    return rc;
}

/* Check a bundle from Redis against its hash and its version id, and store
 * it (a whole version folder, as a local upload would be). */
int sl_admin__store_bundle(sl_admin *a, const char *version, const char *data,
                           size_t len, const char *sha, char *err,
                           size_t errlen)
{
    char hex[65];
    sl_admin__sha256_hex(data, len, hex);
    if (!sha || strcmp(hex, sha) != 0) {
        snprintf(err, errlen,
                 "the bundle of version %s in Redis does not match its "
                 "SHA-256",
                 version);
        return SL_EINVAL;
    }
    char *names[BUNDLE_FILES];
    const char *datas[BUNDLE_FILES];
    size_t lens[BUNDLE_FILES];
    int n = 0, rc = 0;
    const char *p = data, *end = data + len;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *nl2 =
            nl ? memchr(nl + 1, '\n', (size_t)(end - nl - 1)) : NULL;
        char *num_end;
        unsigned long long flen = nl2 ? strtoull(nl + 1, &num_end, 10) : 0;
        if (!nl2 || n == BUNDLE_FILES || num_end != nl2 ||
            flen > (unsigned long long)(end - nl2 - 1) ||
            !(names[n] = strndup(p, (size_t)(nl - p)))) {
            rc = SL_EINVAL;
            break;
        }
        datas[n] = nl2 + 1;
        lens[n] = (size_t)flen;
        n++;
        p = nl2 + 1 + flen + 1;
    }
    char *stage = NULL;
    sl_policy *pol = NULL;
    if (rc < 0)
        snprintf(err, errlen, "the bundle of version %s is malformed", version);
    if (rc == 0)
        rc = sl_ver_stage(a->store, (const char *const *)names, datas, lens, n,
                          &stage, err, errlen);
    if (rc == 0 &&
        (rc = sl_ver_load_staged(stage, a->cfg, &pol, err, errlen)) < 0) {
        /* name the bundle's file, not the staging folder */
        char pre[600], *hit;
        int pl = snprintf(pre, sizeof(pre), "%s/", stage);
        while (pl > 0 && (size_t)pl < sizeof(pre) && (hit = strstr(err, pre)))
            memmove(hit, hit + pl, strlen(hit + pl) + 1);
    }
    if (rc == 0 && strcmp(pol->version, version) != 0) {
        snprintf(err, errlen, "the bundle announced as %s hashes to %s",
                 version, pol->version);
        rc = SL_EINVAL;
    }
    if (rc == 0)
        rc = sl_ver_save(a->store, pol, err, errlen);
    if (pol)
        sl_policy_unref(pol);
    if (stage) {
        sl_ver_unstage(stage);
        free(stage);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    return rc;
}

/* Load a stored version and compile it here. */
static sl_policy *load_valid(sl_admin *a, const char *version, char *err,
                             size_t errlen)
{
    sl_policy *p = NULL;
    if (sl_ver_load(a->store, version, a->cfg, &p, err, errlen) < 0)
        return NULL;
    if (sl_admin_validate(a->cfg, p, err, errlen) < 0) {
        sl_policy_unref(p);
        return NULL;
    }
    return p;
}

/* ---- start-up --------------------------------------------------------------
 */

static int history_push(sl_admin *a, const char *version)
{
    sl_ver_id *hist = NULL;
    int n = 0;
    char err[256];
    if (sl_ver_history(a->store, &hist, &n) < 0)
        return SL_EIO;
    int rc = 0;
    if (n == 0 || strcmp(hist[0], version) != 0) {
        sl_ver_id *nh = calloc((size_t)n + 1, sizeof(sl_ver_id));
        if (!nh) {
            free(hist);
            return SL_ENOMEM;
        }
        snprintf(nh[0], sizeof(sl_ver_id), "%s", version);
        for (int i = 0; i < n && i < 999; i++)
            memcpy(nh[i + 1], hist[i], sizeof(sl_ver_id));
        rc = sl_ver_set_history(a->store, nh, n < 999 ? n + 1 : 1000, err,
                                sizeof(err));
        free(nh);
    }
    free(hist);
    return rc;
}

int sl_admin__cluster_first(sl_admin *a, sl_policy **out)
{
    const sl_config *cfg = a->cfg;
    if (!cfg->cluster.enabled || !a->store)
        return 0;
    char version[17], sha[65], err[1024];
    char *bundle = NULL;
    size_t len = 0;
    int rc = sl_cluster_latest_sync(cfg, version, &bundle, &len, sha, err,
                                    sizeof(err));
    if (rc < 0 && rc != SL_EIO) { /* unreachable (SL_EIO: bundle missing) */
        sl_log_warn("cluster: cannot read the latest published version from "
                    "Redis (%s): starting on this instance's own last "
                    "published version; the latest is taken when Redis "
                    "answers",
                    err);
        return 0;
    }
    if (rc == 0 && !version[0]) {
        sl_log_info("cluster: no version published in the cluster yet");
        return 0;
    }
    if (rc == 0 && !sl_ver_exists(a->store, version))
        rc = sl_admin__store_bundle(a, version, bundle, len, sha, err,
                                    sizeof(err));
    free(bundle);
    sl_policy *p = rc == 0 ? load_valid(a, version, err, sizeof(err)) : NULL;
    if (!p) {
        sl_log_error("cluster: the latest published version %s cannot be used "
                     "here: %s; starting on this instance's own last "
                     "published version",
                     version, err);
        snprintf(a->refused, sizeof(a->refused), "%s", version);
        snprintf(a->refused_reason, sizeof(a->refused_reason), "%.1000s", err);
        admin_event e = {.actor = "cluster",
                         .action = "follow",
                         .result = "refused",
                         .after = version,
                         .detail = err};
        sl_admin__audit(a, &e);
        return 0;
    }
    if (history_push(a, version) < 0)
        sl_log_error("cluster: %s is not recorded in %s/published", version,
                     cfg->admin.state_dir);
    admin_event e = {.actor = "cluster",
                     .action = "initial",
                     .result = "ok",
                     .after = version,
                     .detail = "the latest version published in the cluster"};
    sl_admin__audit(a, &e);
    sl_log_info("cluster: starting on %s, the latest published version",
                version);
    *out = p;
    return 1;
}

/* ---- the heartbeat
 * ----------------------------------------------------------- */

/* This instance's heartbeat: who, which version, whether it refused one. */
void sl_admin__beat_json(sl_admin *a, sl_buf *b_)
{
    sl_buf b = *b_;
    char now[32];
    sl_time_rfc3339(now);
    sl_buf_puts(&b, "{\"instance\":");
    sl_admin__jstr(&b, sl_cluster_instance());
    sl_buf_puts(&b, ",\"version\":");
    sl_admin__jstr(&b, sl_admin__live_version(a));
    sl_buf_printf(&b,
                  ",\"started_at\":\"%s\",\"workers\":%d,\"publishing\":%s,"
                  "\"follows\":%s,\"refused\":",
                  a->started_at, a->nworkers, a->job.active ? "true" : "false",
                  a->store ? "true" : "false");
    if (a->refused[0]) {
        sl_buf_printf(&b, "{\"version\":\"%s\",\"reason\":", a->refused);
        sl_admin__jstr(&b, a->refused_reason);
        sl_buf_puts(&b, "}");
    } else {
        sl_buf_puts(&b, "null");
    }
    sl_buf_printf(&b, ",\"at\":\"%s\"}", now);
    *b_ = b;
}

static void beat(sl_admin *a)
{
    if (!a->cl)
        return;
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_admin__beat_json(a, &b);
    if (b.data && sl_buf_append(&b, "", 1) == 0)
        sl_cluster_admin_beat(a->cl, b.data);
    sl_buf_release(&b);
}

/* ---- announcing -------------------------------------------------------------
 */

static void on_put(void *arg, int rc, const sl_cluster_strs *r)
{
    sl_admin *a = arg;
    (void)r;
    if (rc == SL_ECANCELED)
        return;
    if (rc < 0) {
        a->announce_pending = 1; /* again when Redis is back */
        sl_log_warn("cluster: version %s is live here but not announced yet "
                    "(Redis did not take it); retrying when it answers",
                    sl_admin__live_version(a) ? sl_admin__live_version(a)
                                              : "-");
    }
}

/* Put the live version in Redis: announced (a local publish) or seeded
 * (latest only if the cluster has none). */
static int put_live(sl_admin *a, int mode, sl_cluster_reply_cb cb, void *arg,
                    const char *actor, const char *action)
{
    sl_policy *p = *a->live;
    if (!p)
        return SL_EINVAL;
    sl_buf b;
    sl_buf_init(&b, NULL);
    char sha[65];
    int rc = sl_admin__bundle_of(p, &b);
    if (rc == 0 && !b.data)
        rc = sl_buf_append(&b, "", 0);
    if (rc == 0) {
        sl_admin__sha256_hex(b.data ? b.data : "", b.len, sha);
        rc = sl_cluster_policy_put(a->cl, p->version, b.data ? b.data : "",
                                   b.len, sha, actor, action, mode, cb, arg);
    }
    sl_buf_release(&b);
    return rc;
}

static void announce_live(sl_admin *a, const char *actor, const char *action)
{
    a->announce_pending = 0;
    if (put_live(a, SL_CLUSTER_PUT_ANNOUNCE, on_put, a, actor, action) < 0) {
        a->announce_pending = 1;
        sl_log_warn("cluster: Redis is unreachable: version %s is live here "
                    "and is announced to the other instances when it answers",
                    sl_admin__live_version(a));
    } else {
        sl_log_info("cluster: version %s announced to every instance",
                    sl_admin__live_version(a));
    }
}

/* ---- following
 * --------------------------------------------------------------- */

static void follow(sl_admin *a, const char *version, const char *origin);

static void refuse(sl_admin *a, const char *version, const char *origin,
                   const char *why, int audit)
{
    snprintf(a->refused, sizeof(a->refused), "%s", version);
    snprintf(a->refused_reason, sizeof(a->refused_reason), "%.1000s", why);
    sl_log_error("cluster: version %s published by %s is refused here, the "
                 "live policy stays: %s",
                 version, origin, why);
    if (audit) {
        admin_event e = {.actor = origin,
                         .action = "follow",
                         .result = "refused",
                         .before = sl_admin__live_version(a),
                         .after = version,
                         .detail = why};
        sl_admin__audit(a, &e);
    }
    beat(a);
}

static void follow_next(sl_admin *a)
{
    if (!a->follow_next[0] || a->follow_busy || a->job.active || a->closing)
        return;
    sl_ver_id v;
    char origin[192];
    memcpy(v, a->follow_next, sizeof(v));
    snprintf(origin, sizeof(origin), "%s", a->follow_origin);
    a->follow_next[0] = '\0';
    follow(a, v, origin);
}

/* The version is stored here: validate it and switch the workers. */
static void follow_apply(sl_admin *a, const char *version, const char *origin)
{
    char err[1024];
    if (a->job.active) { /* a local publish came first: after it */
        a->follow_busy = 0;
        if (!a->follow_next[0]) {
            snprintf(a->follow_next, sizeof(a->follow_next), "%s", version);
            snprintf(a->follow_origin, sizeof(a->follow_origin), "%s", origin);
        }
        return;
    }
    sl_policy *p = load_valid(a, version, err, sizeof(err));
    if (!p) {
        a->follow_busy = 0;
        refuse(a, version, origin, err, 1);
        follow_next(a);
        return;
    }
    char *diff = NULL;
    sl_admin__call_diff(a, "report", *a->live, p, 2, &diff, NULL);
    sl_log_info("cluster: switching to version %s published by %s", version,
                origin);
    sl_admin__publish(a, NULL, origin, NULL, "follow", p, NULL, NULL, diff);
    if (!a->job.active) /* not started */
        a->follow_busy = 0;
    beat(a);
}

typedef struct fetch_ctx {
    sl_admin *a;
    sl_ver_id version;
    char origin[192];
} fetch_ctx;

static void on_follow_fetched(void *arg, int rc, const sl_cluster_strs *r)
{
    fetch_ctx *f = arg;
    sl_admin *a = f->a;
    char err[1024] = "";
    if (rc == SL_ECANCELED) {
        free(f);
        return;
    }
    if (rc < 0) {
        /* Redis went away: the catch-up when it is back takes it */
        a->follow_busy = 0;
        sl_log_warn("cluster: cannot fetch version %s from Redis (%s)",
                    f->version, sl_strerror(rc));
        free(f);
        return;
    }
    if (r->n < 2 || !r->s[0]) {
        snprintf(err, sizeof(err), "version %s is not in Redis", f->version);
        rc = SL_EINVAL;
    } else {
        rc = sl_admin__store_bundle(a, f->version, r->s[0], r->len[0], r->s[1],
                                    err, sizeof(err));
    }
    if (rc < 0) {
        a->follow_busy = 0;
        refuse(a, f->version, f->origin, err, 1);
        follow_next(a);
    } else {
        follow_apply(a, f->version, f->origin);
    }
    free(f);
}

static void follow(sl_admin *a, const char *version, const char *origin)
{
    if (a->closing)
        return;
    if (!a->store) {
        if (!a->no_store_logged++)
            sl_log_warn("cluster: version %s was published, but this "
                        "instance has no admin: section (no state_dir to "
                        "keep versions in): it stays on its own policy",
                        version);
        return;
    }
    const char *live = sl_admin__live_version(a);
    if (live && strcmp(live, version) == 0)
        return;
    if (strcmp(a->refused, version) == 0)
        return; /* refused already: said once */
    if (a->follow_busy || a->job.active) {
        snprintf(a->follow_next, sizeof(a->follow_next), "%s", version);
        snprintf(a->follow_origin, sizeof(a->follow_origin), "%s", origin);
        return;
    }
    a->follow_busy = 1;
    if (sl_ver_exists(a->store, version)) {
        follow_apply(a, version, origin);
        return;
    }
    fetch_ctx *f = calloc(1, sizeof(*f));
    if (!f) {
        a->follow_busy = 0;
        return;
    }
    f->a = a;
    snprintf(f->version, sizeof(f->version), "%s", version);
    snprintf(f->origin, sizeof(f->origin), "%s", origin);
    if (sl_cluster_policy_get(a->cl, version, on_follow_fetched, f) < 0) {
        a->follow_busy = 0;
        free(f);
    }
}

static void on_policy(void *arg, const char *version, const char *instance,
                      const char *actor)
{
    sl_admin *a = arg;
    char origin[192];
    snprintf(origin, sizeof(origin), "%.80s@%.100s",
             actor && *actor ? actor : "cluster", instance);
    follow(a, version, origin);
}

static void on_latest(void *arg, int rc, const sl_cluster_strs *r)
{
    sl_admin *a = arg;
    if (rc < 0 || !r || r->n < 1 || !r->s[0] || r->len[0] != 16)
        return;
    follow(a, r->s[0], "cluster@latest");
}

static void on_seeded(void *arg, int rc, const sl_cluster_strs *r)
{
    sl_admin *a = arg;
    if (rc < 0 || !r || r->n < 1)
        return;
    if (r->s[0] && strcmp(r->s[0], "1") == 0) {
        sl_log_info("cluster: version %s is the cluster's first published "
                    "version",
                    sl_admin__live_version(a));
        return;
    }
    sl_cluster_policy_latest(a->cl, on_latest, a);
}

/* Another instance added or revoked an admin token. */
static void on_tokens(void *arg)
{
    sl_admin__cluster_tokens_sync(arg);
}

/* Connected (again): announce what was published while Redis was away, or
 * catch up on what the others published meanwhile. */
static void on_ready(void *arg)
{
    sl_admin *a = arg;
    beat(a);
    sl_admin__cluster_tokens_sync(a);
    if (a->announce_pending) {
        announce_live(a, "cluster", "publish");
        return;
    }
    if (!*a->live || put_live(a, SL_CLUSTER_PUT_SEED, on_seeded, a, "startup",
                              "initial") < 0)
        sl_cluster_policy_latest(a->cl, on_latest, a);
}

static void on_put_status(void *arg, int rc, const sl_cluster_strs *r)
{
    (void)arg;
    (void)rc;
    (void)r;
}

void sl_admin__cluster_settled(sl_admin *a, const char *action,
                               const char *actor, int rc, const char *version,
                               const char *change, const char *err)
{
    if (!a->cl)
        return;
    int followed = strcmp(action, "follow") == 0;
    if (followed) {
        a->follow_busy = 0;
        if (rc < 0) /* publish_done audited it as failed */
            refuse(a, version, "cluster", err, 0);
    }
    if (rc == 0) {
        a->refused[0] = '\0';
        if (!followed)
            announce_live(a, actor, action);
    }
    if (change) {
        admin_change *c = sl_admin__find_change(a, change);
        if (c && c->in_cluster)
            sl_cluster_change_status(a->cl, change, c->status, on_put_status,
                                     NULL);
    }
    beat(a);
    follow_next(a);
}

/* ---- life cycle
 * -------------------------------------------------------------- */

int sl_admin__cluster_start(sl_admin *a, char *err, size_t errlen)
{
    sl_cluster_admin_hooks h = {.on_policy = on_policy,
                                .on_ready = on_ready,
                                .on_tokens = on_tokens,
                                .arg = a};
    int rc = sl_cluster_admin_new(a->loop, a->cfg, &h, &a->cl, err, errlen);
    if (rc == 0)
        beat(a);
    return rc;
}

void sl_admin__cluster_close(sl_admin *a)
{
    sl_admin__waits_detach(a); /* the listener closes: nobody to answer */
    sl_cluster_admin_close(a->cl);
}

void sl_admin__cluster_free(sl_admin *a)
{
    sl_admin__waits_free(a);
    sl_cluster_admin_free(a->cl);
    a->cl = NULL;
}
