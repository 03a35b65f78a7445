/* admin_publish.c — the publish fan-out: one version in flight at a time,
 * sent to every worker's uv_async_t; each worker compiles it and reports
 * back (worker_ack, on its own thread). When all took it, it is live: the
 * history file names it (a restart comes back on it), the admin audit log
 * records it, the caller gets its answer. When any refused, the workers
 * that took it get the previous version back, and the publish fails. */
#include "admin_int.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

#define HISTORY_MAX 1000 /* entries the history file keeps */

/* ---- the publish fan-out ------------------------------------------------- */

/* On a worker's thread. */
static void worker_ack(void *arg, int id, int rc, const char *err)
{
    sl_admin *a = arg;
    pthread_mutex_lock(&a->lock);
    if (rc == 0 && !a->job.rolling_back && id >= 0 && id < a->nworkers)
        a->job.applied[id] = 1;
    if (rc < 0 && !a->job.rolling_back && !a->job.failed) {
        a->job.failed = 1;
        snprintf(a->job.err, sizeof(a->job.err), "worker %d: %s", id,
                 err && *err ? err : sl_strerror(rc));
    }
    if (rc < 0 && a->job.rolling_back)
        sl_log_error("worker %d could not go back to the previous version: "
                     "%s",
                     id, err);
    /* under the lock: sl_admin_close() closes the handle holding it */
    if (--a->job.pending == 0 && a->async_open)
        uv_async_send(&a->async);
    pthread_mutex_unlock(&a->lock);
}

/* Send next (reference taken over) to every worker; cb runs once all is
 * settled. SL_EAGAIN when a publish is already in flight. */
static int start_job(sl_admin *a, sl_policy *next, admin_done_cb cb, void *arg)
{
    if (a->job.active || a->closing)
        return SL_EAGAIN;
    admin_job *j = &a->job;
    j->active = 1;
    j->rolling_back = 0;
    j->failed = 0;
    j->err[0] = '\0';
    j->next = next;
    j->prev = *a->live;
    if (j->prev)
        sl_policy_ref(j->prev);
    j->cb = cb;
    j->arg = arg;
    memset(j->applied, 0, (size_t)a->nworkers * sizeof(int));
    pthread_mutex_lock(&a->lock);
    j->pending = a->nworkers;
    pthread_mutex_unlock(&a->lock);
    if (a->nworkers == 0)
        uv_async_send(&a->async);
    for (int i = 0; i < a->nworkers; i++)
        sl_worker_publish(a->workers[i], next, worker_ack, a);
    return 0;
}

void sl_admin__job_settle(sl_admin *a)
{
    admin_job *j = &a->job;
    pthread_mutex_lock(&a->lock);
    int pending = j->pending;
    pthread_mutex_unlock(&a->lock);
    if (!j->active || pending > 0)
        return;
    if (j->failed && !j->rolling_back && j->prev) {
        int n = 0;
        for (int i = 0; i < a->nworkers; i++)
            n += j->applied[i];
        j->rolling_back = 1;
        if (n > 0) {
            sl_log_warn("policy %s refused by %s; rolling the other workers "
                        "back to %s",
                        j->next->version, j->err, j->prev->version);
            pthread_mutex_lock(&a->lock);
            j->pending = n;
            pthread_mutex_unlock(&a->lock);
            for (int i = 0; i < a->nworkers; i++)
                if (j->applied[i])
                    sl_worker_publish(a->workers[i], j->prev, worker_ack, a);
            return;
        }
    }
    int rc = j->failed ? SL_ECONFIG : 0;
    char err[1024];
    snprintf(err, sizeof(err), "%s", j->err);
    if (rc == 0) {
        if (*a->live)
            sl_policy_unref(*a->live);
        *a->live = j->next;
    } else {
        sl_policy_unref(j->next);
    }
    j->next = NULL;
    if (j->prev)
        sl_policy_unref(j->prev);
    j->prev = NULL;
    j->active = 0;
    j->cb(a, j->arg, rc, err);
    if (a->reload_queued && !a->closing) {
        a->reload_queued = 0;
        sl_admin_reload(a, "signal:SIGHUP");
    }
}

typedef struct publish_ctx {
    sl_http_req *req; /* NULL: no one waits (SIGHUP, client gone) */
    char actor[128];
    char addr[64];
    char action[32];
    char change[17];
    char flags[128];
    char *diff;
    sl_ver_id before, after;
} publish_ctx;

/* The publish in flight, so on_abort can tell it nobody waits. */

static publish_ctx *inflight;

void sl_admin__forget_request(sl_admin *a, sl_http_req *r)
{
    (void)a;
    if (inflight && inflight->req == r)
        inflight->req = NULL;
}

static int update_history(sl_admin *a, publish_ctx *c, char *err, size_t errlen)
{
    sl_ver_id *hist;
    int n;
    if (!a->store)
        return 0;
    if (sl_ver_history(a->store, &hist, &n) < 0) {
        snprintf(err, errlen, "cannot read the published history");
        return SL_EIO;
    }
    /* a log of what went live, newest first; the live one on top */
    int m = n < HISTORY_MAX ? n + 1 : HISTORY_MAX;
    sl_ver_id *nh = calloc((size_t)m, sizeof(sl_ver_id));
    if (!nh) {
        free(hist);
        return SL_ENOMEM;
    }
    memcpy(nh[0], c->after, sizeof(sl_ver_id));
    for (int i = 1; i < m; i++)
        memcpy(nh[i], hist[i - 1], sizeof(sl_ver_id));
    int rc = sl_ver_set_history(a->store, nh, m, err, errlen);
    free(nh);
    free(hist);
    return rc;
}

static void publish_done(sl_admin *a, void *arg, int rc, const char *err)
{
    publish_ctx *c = arg;
    char herr[512] = "";
    inflight = NULL;
    if (rc == 0 && update_history(a, c, herr, sizeof(herr)) < 0)
        sl_log_error("admin: %s is live but not recorded for restart: %s",
                     c->after, herr);
    admin_change *ch =
        c->change[0] ? sl_admin__find_change(a, c->change) : NULL;
    if (ch) {
        snprintf(ch->status, sizeof(ch->status), "%s",
                 rc == 0 ? "published" : "failed");
        sl_admin__save_changes(a);
    }
    admin_event e = {.actor = c->actor,
                     .addr = c->addr[0] ? c->addr : NULL,
                     .action = c->action,
                     .result = rc == 0 ? "ok" : "failed",
                     .before = c->before[0] ? c->before : NULL,
                     .after = c->after,
                     .change = c->change[0] ? c->change : NULL,
                     .flags = c->flags[0] ? c->flags : NULL,
                     .diff = c->diff,
                     .detail = rc == 0 ? NULL : err};
    sl_admin__audit(a, &e);
    if (rc == 0) {
        sl_log_info("policy %s is live on every worker (%s by %s)", c->after,
                    c->action, c->actor);
        if (a->store)
            sl_admin__prune(a);
    } else {
        sl_log_error("%s refused, the live policy stays: %s", c->action, err);
    }
    if (c->req) {
        sl_buf b;
        sl_buf_init(&b, NULL);
        if (rc == 0) {
            sl_buf_printf(
                &b, "{\"ok\":true,\"version\":\"%s\",\"previous\":", c->after);
            sl_admin__jstr(&b, c->before[0] ? c->before : NULL);
            sl_buf_printf(&b, ",\"flags\":%s", c->flags[0] ? c->flags : "[]");
            if (c->change[0])
                sl_buf_printf(&b, ",\"change\":\"%s\"", c->change);
            sl_buf_puts(&b, "}");
            sl_admin__reply(c->req, 200, b.data, b.len);
        } else {
            sl_admin__error(c->req, 500, "publish_failed",
                            "version %s was refused and rolled back on every "
                            "worker: %s",
                            c->after, err);
        }
        sl_buf_release(&b);
    }
    sl_admin__cluster_settled(a, c->action, c->actor, rc, c->after,
                              c->change[0] ? c->change : NULL, err);
    free(c->diff);
    free(c);
}

void sl_admin__publish(sl_admin *a, sl_http_req *r, const char *actor,
                       const char *addr, const char *action, sl_policy *p,
                       const char *change, const char *flags, char *diff)
{
    publish_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        sl_policy_unref(p);
        free(diff);
        if (r)
            sl_admin__error(r, 500, "internal", "out of memory");
        return;
    }
    c->req = r;
    snprintf(c->actor, sizeof(c->actor), "%s", actor);
    snprintf(c->addr, sizeof(c->addr), "%s", addr ? addr : "");
    snprintf(c->action, sizeof(c->action), "%s", action);
    snprintf(c->change, sizeof(c->change), "%s", change ? change : "");
    snprintf(c->flags, sizeof(c->flags), "%s", flags ? flags : "");
    snprintf(c->before, sizeof(c->before), "%s",
             sl_admin__live_version(a) ? sl_admin__live_version(a) : "");
    snprintf(c->after, sizeof(c->after), "%s", p->version);
    c->diff = diff;
    if (start_job(a, p, publish_done, c) < 0) {
        sl_policy_unref(p);
        if (r)
            sl_admin__error(r, 409, "busy",
                            "another publish is in progress; try again");
        free(diff);
        free(c);
        return;
    }
    inflight = c;
}

void sl_admin__job_free(sl_admin *a)
{
    if (inflight) {
        free(inflight->diff);
        free(inflight);
        inflight = NULL;
    }
    if (a->job.next)
        sl_policy_unref(a->job.next);
    if (a->job.prev)
        sl_policy_unref(a->job.prev);
    a->job.next = a->job.prev = NULL;
}
