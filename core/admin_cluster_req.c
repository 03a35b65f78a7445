/* admin_cluster_req.c — admin requests that wait on Redis in cluster mode
 * (see admin_cluster.c for distribution itself): the cluster's changes read
 * before the change endpoints, a change's version fetched from Redis, a
 * change put in Redis when submitted, approvals recorded there atomically,
 * and the instance list of GET /admin/status. A request whose client goes
 * away while it waits is forgotten, never answered. */
#include "admin_int.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

/* A request waiting on Redis. */
typedef struct admin_wait {
    struct admin_wait *next;
    sl_admin *a;
    sl_http_req *req; /* NULL once the client went away */
    admin_actor who;
    admin_route_fn then;
    sl_buf body; /* a prepared answer */
    char id[17];
    char version[17];
    int pending; /* commands still to answer */
    int failed;
    admin_token tok; /* a token added or revoked */
    char secret[72]; /* the token made for it, shown once */
} admin_wait;

static admin_wait *wait_new(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    admin_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->a = a;
    w->req = r;
    if (who)
        w->who = *who;
    sl_buf_init(&w->body, NULL);
    w->next = a->waits;
    a->waits = w;
    return w;
}

static void wait_free(admin_wait *w)
{
    for (admin_wait **l = &w->a->waits; *l; l = &(*l)->next)
        if (*l == w) {
            *l = w->next;
            break;
        }
    sl_buf_release(&w->body);
    explicit_bzero(w->secret, sizeof(w->secret));
    free(w);
}

void sl_admin__cluster_forget(sl_admin *a, sl_http_req *r)
{
    for (admin_wait *w = a ? a->waits : NULL; w; w = w->next)
        if (w->req == r)
            w->req = NULL;
}

void sl_admin__waits_detach(sl_admin *a)
{
    for (admin_wait *w = a->waits; w; w = w->next)
        w->req = NULL;
}

void sl_admin__waits_free(sl_admin *a)
{
    while (a->waits)
        wait_free(a->waits);
}

/* ---- cluster-wide changes
 * ------------------------------------------------------ */

/* Triples [record, status, approvers] from Redis into a->changes. */
static void merge_changes(sl_admin *a, const sl_cluster_strs *r)
{
    int changed = 0;
    for (int i = 0; i + 2 < r->n; i += 3) {
        if (!r->s[i])
            continue;
        admin_change *c = sl_admin__change_from_json(a, r->s[i], r->len[i]);
        if (!c)
            continue;
        c->in_cluster = 1;
        if (r->s[i + 1])
            snprintf(c->status, sizeof(c->status), "%.*s", (int)r->len[i + 1],
                     r->s[i + 1]);
        sl_admin__change_set_approvers(c, r->s[i + 2]);
        changed = 1;
    }
    if (changed)
        sl_admin__save_changes(a);
}

static void on_synced(void *arg, int rc, const sl_cluster_strs *r)
{
    admin_wait *w = arg;
    sl_admin *a = w->a;
    if (rc == 0 && r)
        merge_changes(a, r);
    else if (rc != SL_ECANCELED)
        sl_log_warn("cluster: cannot read the cluster's changes (%s): "
                    "answering from this instance's",
                    sl_strerror(rc));
    if (w->req && !a->closing)
        w->then(a, w->req, &w->who);
    wait_free(w);
}

int sl_admin__cluster_sync(sl_admin *a, sl_http_req *r, admin_actor *who,
                           admin_route_fn fn)
{
    if (!a->cl || !a->store || !sl_cluster_admin_ready(a->cl))
        return -1;
    admin_wait *w = wait_new(a, r, who);
    if (!w)
        return -1;
    w->then = fn;
    if (sl_cluster_changes(a->cl, on_synced, w) < 0) {
        wait_free(w);
        return -1;
    }
    return 0;
}

static void on_fetched(void *arg, int rc, const sl_cluster_strs *r)
{
    admin_wait *w = arg;
    sl_admin *a = w->a;
    char err[1024] = "";
    if (rc == 0 && (r->n < 2 || !r->s[0])) {
        snprintf(err, sizeof(err), "version %s is not stored here nor in Redis",
                 w->version);
        rc = SL_EINVAL;
    } else if (rc == 0) {
        rc = sl_admin__store_bundle(a, w->version, r->s[0], r->len[0], r->s[1],
                                    err, sizeof(err));
    } else {
        snprintf(err, sizeof(err),
                 "version %s is not stored here and Redis cannot be asked (%s)",
                 w->version, sl_strerror(rc));
    }
    if (w->req && !a->closing) {
        if (rc == 0)
            w->then(a, w->req, &w->who);
        else
            sl_admin__policy_error(w->req, rc == SL_EINVAL ? 422 : 503, err);
    }
    wait_free(w);
}

int sl_admin__cluster_fetch(sl_admin *a, sl_http_req *r, admin_actor *who,
                            const char *version, admin_route_fn fn)
{
    if (!a->cl || !a->store)
        return -1;
    admin_wait *w = wait_new(a, r, who);
    if (!w)
        return -1;
    w->then = fn;
    snprintf(w->version, sizeof(w->version), "%s", version);
    if (sl_cluster_policy_get(a->cl, version, on_fetched, w) < 0) {
        wait_free(w);
        return -1;
    }
    return 0;
}

static void on_submit_put(void *arg, int rc, const sl_cluster_strs *r)
{
    admin_wait *w = arg;
    sl_admin *a = w->a;
    (void)r;
    if (rc < 0)
        w->failed = 1;
    if (--w->pending > 0)
        return;
    admin_change *c = sl_admin__find_change(a, w->id);
    if (c && !w->failed)
        c->in_cluster = 1;
    else if (w->failed)
        sl_log_warn("cluster: change %s could not be put in Redis: it can be "
                    "approved and published on this instance only",
                    w->id);
    if (w->req && !a->closing)
        sl_admin__reply(w->req, 201, w->body.data, w->body.len);
    wait_free(w);
}

void sl_admin__cluster_submitted(sl_admin *a, sl_http_req *r,
                                 const admin_change *c, const sl_policy *p,
                                 char *body, size_t len)
{
    admin_wait *w = wait_new(a, r, NULL);
    if (!w) {
        sl_admin__reply(r, 201, body, len);
        free(body);
        return;
    }
    w->body.data = body;
    w->body.len = w->body.cap = len;
    snprintf(w->id, sizeof(w->id), "%s", c->id);
    sl_buf rec, bundle;
    sl_buf_init(&rec, NULL);
    sl_buf_init(&bundle, NULL);
    sl_admin__change_json(&rec, c);
    sl_buf_append(&rec, "", 1);
    char sha[65];
    int rc = rec.data && sl_admin__bundle_of(p, &bundle) == 0 ? 0 : SL_ENOMEM;
    if (rc == 0) {
        sl_admin__sha256_hex(bundle.data ? bundle.data : "", bundle.len, sha);
        w->pending = 2;
        /* one connection, in order: the version before the record */
        if (sl_cluster_policy_put(a->cl, p->version,
                                  bundle.data ? bundle.data : "", bundle.len,
                                  sha, c->author, "submit",
                                  SL_CLUSTER_PUT_STORE, on_submit_put, w) < 0)
            rc = SL_ECONNECT;
        else if (sl_cluster_change_put(a->cl, c->id, rec.data, on_submit_put,
                                       w) < 0)
            w->pending = 1, w->failed = 1; /* the put answers and replies */
    }
    sl_buf_release(&rec);
    sl_buf_release(&bundle);
    if (rc < 0) {
        w->pending = 1;
        on_submit_put(w, rc, NULL);
    }
}

static void on_approved(void *arg, int rc, const sl_cluster_strs *r)
{
    admin_wait *w = arg;
    sl_admin *a = w->a;
    sl_http_req *req = a->closing ? NULL : w->req;
    admin_change *c = sl_admin__find_change(a, w->id);
    if (rc < 0 || !c) {
        if (req)
            sl_admin__error(req, 503, "cluster_unavailable",
                            "approvals of change %s are recorded in Redis, "
                            "which does not answer; try again",
                            w->id);
    } else if (r->n < 1 || !r->s[0]) {
        if (req)
            sl_admin__error(req, 404, "no_change",
                            "change %s is no longer in the cluster", w->id);
    } else if (r->n < 2 || strcmp(r->s[0], "pending") != 0) {
        snprintf(c->status, sizeof(c->status), "%.*s", (int)r->len[0], r->s[0]);
        sl_admin__save_changes(a);
        if (req)
            sl_admin__error(req, 409, "not_pending", "change %s is %s", c->id,
                            c->status);
    } else {
        sl_admin__change_set_approvers(c, r->s[1]);
        sl_admin__save_changes(a);
        sl_admin__audit_simple(a, &w->who, "approve", "ok", c->version, c->id,
                               NULL);
        if (req)
            sl_admin__reply_change(req, c);
    }
    wait_free(w);
}

int sl_admin__cluster_approve(sl_admin *a, sl_http_req *r, admin_actor *who,
                              admin_change *c)
{
    if (!a->cl || !c->in_cluster)
        return -1;
    admin_wait *w = wait_new(a, r, who);
    if (!w)
        return -1;
    snprintf(w->id, sizeof(w->id), "%s", c->id);
    if (sl_cluster_change_approve(a->cl, c->id, who->name, on_approved, w) <
        0) {
        /* four-eyes holds cluster-wide: no approval Redis did not record */
        wait_free(w);
        sl_admin__error(r, 503, "cluster_unavailable",
                        "approvals of change %s are recorded in Redis, which "
                        "does not answer; try again",
                        c->id);
    }
    return 0;
}

/* ---- status
 * ---------------------------------------------------------------------- */

static void on_instances(void *arg, int rc, const sl_cluster_strs *r)
{
    admin_wait *w = arg;
    sl_admin *a = w->a;
    sl_buf *b = &w->body;
    sl_buf_puts(b, ",\"cluster\":{\"instance\":");
    sl_admin__jstr(b, sl_cluster_instance());
    sl_buf_printf(b, ",\"redis\":%s,\"announce_pending\":%s},\"instances\":[",
                  rc == 0 ? "true" : "false",
                  a->announce_pending ? "true" : "false");
    int n = 0;
    for (int i = 0; rc == 0 && r && i < r->n; i++) {
        /* heartbeats are JSON objects written by sluice instances */
        if (!r->s[i] || r->len[i] < 2 || r->s[i][0] != '{' ||
            r->s[i][r->len[i] - 1] != '}')
            continue;
        sl_buf_puts(b, n++ ? "," : "");
        sl_buf_append(b, r->s[i], r->len[i]);
    }
    if (n == 0) /* Redis does not answer: this instance at least */
        sl_admin__beat_json(a, b);
    sl_buf_puts(b, "]}");
    if (w->req && !a->closing) {
        if (b->data)
            sl_admin__reply(w->req, 200, b->data, b->len);
        else
            sl_admin__error(w->req, 500, "internal", "out of memory");
    }
    wait_free(w);
}

void sl_admin__cluster_status(sl_admin *a, sl_http_req *r, sl_buf *b)
{
    admin_wait *w = wait_new(a, r, NULL);
    if (!w) {
        sl_buf_release(b);
        sl_admin__error(r, 500, "internal", "out of memory");
        return;
    }
    w->body = *b;
    sl_buf_init(b, NULL);
    if (sl_cluster_instances(a->cl, on_instances, w) < 0)
        on_instances(w, SL_ECONNECT, NULL);
}

/* ---- admin tokens ------------------------------------------------------- */

static void on_token_put(void *arg, int rc, const sl_cluster_strs *r)
{
    admin_wait *w = arg;
    (void)r;
    sl_http_req *req = w->a->closing ? NULL : w->req;
    if (w->pending) /* a revocation */
        sl_admin__token_revoked(w->a, req, &w->who, &w->tok, rc);
    else
        sl_admin__token_added(w->a, req, &w->who, &w->tok,
                              w->secret[0] ? w->secret : NULL, rc);
    wait_free(w);
}

static int token_put(sl_admin *a, sl_http_req *r, admin_actor *who,
                     const admin_token *t, const char *secret, int revoke)
{
    if (!a->cl)
        return -1;
    admin_wait *w = wait_new(a, r, who);
    sl_buf rec;
    sl_buf_init(&rec, NULL);
    if (!revoke) {
        sl_admin__token_record(&rec, t, 1);
        sl_buf_append(&rec, "", 1); /* a C string for the command */
    }
    int rc = w && (revoke || rec.data) ? 0 : SL_ENOMEM;
    if (w) {
        w->tok = *t;
        w->pending = revoke;
        if (secret)
            snprintf(w->secret, sizeof(w->secret), "%s", secret);
    }
    if (rc == 0)
        rc = sl_cluster_token_put(a->cl, t->name, revoke ? "" : rec.data,
                                  who->name, on_token_put, w);
    sl_buf_release(&rec);
    if (rc < 0) {
        /* tokens hold cluster-wide: no change Redis did not record */
        if (revoke)
            sl_admin__token_revoked(a, r, who, t, rc);
        else
            sl_admin__token_added(a, r, who, t, secret, rc);
        if (w)
            wait_free(w);
    }
    return 0;
}

int sl_admin__cluster_token(sl_admin *a, sl_http_req *r, admin_actor *who,
                            const admin_token *t, const char *secret)
{
    return token_put(a, r, who, t, secret, 0);
}

int sl_admin__cluster_token_revoke(sl_admin *a, sl_http_req *r,
                                   admin_actor *who, const admin_token *t)
{
    return token_put(a, r, who, t, NULL, 1);
}

static void on_token_seeded(void *arg, int rc, const sl_cluster_strs *r)
{
    (void)arg;
    (void)rc;
    (void)r;
}

/* Pairs [name, record] from Redis: the cluster's tokens replace this
 * instance's; tokens only this instance knows (stored before it joined a
 * cluster) are put in Redis. A revoked one ("") is dropped here too. */
static void on_tokens_read(void *arg, int rc, const sl_cluster_strs *r)
{
    sl_admin *a = arg;
    if (rc < 0 || !r || a->closing)
        return;
    sl_buf all;
    sl_buf_init(&all, NULL);
    sl_buf_puts(&all, "{\"tokens\":[");
    int n = 0;
    for (int i = 0; i + 1 < r->n; i += 2)
        if (r->s[i] && r->s[i + 1] && r->len[i + 1] > 0) {
            sl_buf_puts(&all, n++ ? "," : "");
            sl_buf_append(&all, r->s[i + 1], r->len[i + 1]);
        }
    sl_buf_puts(&all, "]}");
    admin_token *list = NULL;
    int nlist = 0;
    if (!all.data ||
        sl_admin__tokens_from_json(a, all.data, all.len, &list, &nlist) < 0) {
        sl_log_warn("cluster: the admin tokens in Redis cannot be read; "
                    "keeping this instance's");
        sl_buf_release(&all);
        return;
    }
    sl_buf_release(&all);
    for (int j = 0; j < a->ntokens; j++) {
        const admin_token *t = &a->tokens[j];
        int known = 0;
        for (int i = 0; i + 1 < r->n && !known; i += 2)
            known = r->s[i] && r->len[i] == strlen(t->name) &&
                    memcmp(r->s[i], t->name, r->len[i]) == 0;
        if (known)
            continue;
        admin_token *grown =
            realloc(list, (size_t)(nlist + 1) * sizeof(*grown));
        if (!grown)
            continue;
        list = grown;
        list[nlist++] = *t;
        sl_buf rec;
        sl_buf_init(&rec, NULL);
        sl_admin__token_record(&rec, t, 1);
        if (rec.data && sl_buf_append(&rec, "", 1) == 0)
            sl_cluster_token_put(a->cl, t->name, rec.data, "seed",
                                 on_token_seeded, NULL);
        sl_buf_release(&rec);
    }
    free(a->tokens);
    a->tokens = list;
    a->ntokens = nlist;
    sl_admin__save_tokens(a);
}

void sl_admin__cluster_tokens_sync(sl_admin *a)
{
    if (!a->cl || !a->store || a->closing || !sl_cluster_admin_ready(a->cl))
        return;
    sl_cluster_tokens(a->cl, on_tokens_read, a);
}
