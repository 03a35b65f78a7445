/* admin_int.h — the admin room's internals, shared by its files:
 * admin.c (listener, authentication, routing, read endpoints),
 * admin_policy.c (candidates, diff, changes, publish fan-out) and
 * admin_audit.c (the append-only admin audit log). Nothing outside them
 * includes this. */
#ifndef SL_ADMIN_INT_H
#define SL_ADMIN_INT_H

#include "admin.h"
#include "cluster.h"
#include "buf.h"
#include "http_server.h"
#include "lua_bridge.h"
#include "tls.h"
#include "versions.h"

#include <lua.h>
#include <pthread.h>

#define ADMIN_FAIL_SLOTS 256
#define ADMIN_MAX_APPROVERS 8

/* Failed logins from one address (brute-force limit). */
typedef struct admin_fail {
    char addr[64];
    uint32_t count;
    uint64_t first_ms;
    uint64_t locked_until_ms;
} admin_fail;

/* Who is calling: the token's name and roles (copied: a token revoked
 * while the request runs does not take its name away). */
typedef struct admin_actor {
    char name[128];
    unsigned roles;
    char addr[64];
} admin_actor;

/* A token added through the API (admin_tokens.c): only its hash. */
typedef struct admin_token {
    char name[72];
    char sha256[65];
    unsigned roles;
    char created[32];
    char created_by[128];
} admin_token;

/* A proposed change: a stored version waiting for approval / publish. */
typedef struct admin_change {
    char id[17];
    sl_ver_id version;
    sl_ver_id base; /* live when submitted */
    char *author;
    char *message;
    char submitted[32];
    char *approvers[ADMIN_MAX_APPROVERS];
    int napprovers;
    char status[16]; /* pending, published, failed */
    int needs_approval;
    char *diff_json;
    int in_cluster; /* also in Redis: approvals go through it */
} admin_change;

typedef void (*admin_done_cb)(sl_admin *a, void *arg, int rc, const char *err);

/* The one publish in flight: switching every worker, then (when one
 * refused) switching back those that took it. */
typedef struct admin_job {
    int active;
    int rolling_back;
    sl_policy *next, *prev;
    int pending;      /* acks still to come (guarded by lock) */
    int *applied;     /* per worker: took `next` */
    int failed;       /* a worker refused (guarded by lock) */
    char err[1024];   /* the first refusal (guarded by lock) */
    admin_done_cb cb; /* on the main thread when all is settled */
    void *arg;
} admin_job;

struct sl_admin {
    const sl_config *cfg;
    uv_loop_t *loop;
    sl_http_server *srv;
    sl_tls_config *tls;
    sl_worker **workers;
    int nworkers;
    sl_policy **live;
    sl_policy *boot;     /* the first policy until start */
    sl_ver_store *store; /* NULL without `admin:` */
    sl_lua *lua;         /* JSON and the governance diff */
    int audit_fd;
    uint64_t started_ns;
    char started_at[32];
    admin_fail fails[ADMIN_FAIL_SLOTS];
    admin_change *changes;
    int nchanges;
    admin_job job;
    pthread_mutex_t lock;
    uv_async_t async;
    int async_open;
    int closing;
    int reload_queued; /* SIGHUP during a publish: reload after it */
    /* cluster mode (admin_cluster.c) */
    sl_cluster_admin *cl;
    struct admin_wait *waits; /* requests waiting on Redis */
    int follow_busy;          /* fetching or switching to a version */
    sl_ver_id follow_next;    /* announced meanwhile: follow it next */
    char follow_origin[192];  /* "actor@instance" of the next one */
    int announce_pending;     /* the live version is not announced yet */
    sl_ver_id refused;        /* the last version this instance refused */
    char refused_reason[1024];
    int no_store_logged;
    /* tokens added through the API (admin_tokens.c) */
    admin_token *tokens;
    int ntokens;
};

/* ---- admin.c ---- */
/* A JSON answer (body copied), then end the request. */
void sl_admin__reply(sl_http_req *r, int status, const char *json, size_t len);
/* Answer with b's JSON (500 if building it ran out of memory), then
 * release b. */
void sl_admin__reply_buf(sl_http_req *r, int status, sl_buf *b);
/* {"error":{"message","type","code"}} with status. */
void sl_admin__error(sl_http_req *r, int status, const char *code,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Append s as a JSON string (quotes included); NULL as null. */
int sl_admin__jstr(sl_buf *b, const char *s);
/* Decode r's body (empty = {}) as a JSON object onto the admin Lua
 * stack: 0, or -1 after answering 400 itself. */
int sl_admin__body(sl_admin *a, sl_http_req *r);
/* A string field of the table at the stack top, or NULL. */
const char *sl_admin__field(lua_State *L, const char *key);

/* ---- admin_policy.c ---- */
const char *sl_admin__live_version(sl_admin *a);
/* An audit line for who's action on the live version. */
void sl_admin__audit_simple(sl_admin *a, admin_actor *who, const char *action,
                            const char *result, const char *after,
                            const char *change, const char *detail);
/* diff.<fn>(p1[, p2]) from sluice.diff: its JSON (malloc'd) and, for
 * "report", whether the change needs a second person. */
int sl_admin__call_diff(sl_admin *a, const char *fn, const sl_policy *p1,
                        const sl_policy *p2, int nargs, char **json,
                        int *needs);
/* An invalid policy ("file:line: key: reason") as a JSON error. */
void sl_admin__policy_error(sl_http_req *r, int status, const char *msg);
void sl_admin__validate_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__diff_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__submit_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__publish_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__rollback_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__reload_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__exceptions_h(sl_admin *a, sl_http_req *r, admin_actor *who);
/* Push a policy as the diff module reads it: {files, plugins}. */
void sl_admin__push_doc(lua_State *L, const sl_policy *p);

/* ---- admin_changes.c ---- */
void sl_admin__changes_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__change_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__approve_h(sl_admin *a, sl_http_req *r, admin_actor *who);
/* Changes kept in the state directory (changes.json). */
int sl_admin__load_changes(sl_admin *a);
int sl_admin__save_changes(sl_admin *a);
void sl_admin__free_changes(sl_admin *a);
/* A new zeroed change at the end of the list, or NULL. */
admin_change *sl_admin__add_change(sl_admin *a);
admin_change *sl_admin__find_change(sl_admin *a, const char *id);
void sl_admin__change_json(sl_buf *b, const admin_change *c);
/* Answer 200 {"change": ...} with c. */
void sl_admin__reply_change(sl_http_req *r, const admin_change *c);
/* Has someone other than the author approved c? */
int sl_admin__second_person(const admin_change *c);
/* Drop stored versions neither recent nor named by a pending change. */
void sl_admin__prune(sl_admin *a);

/* ---- admin_publish.c ---- */
/* Publish p (its reference taken over) on every worker, on behalf of
 * actor; r (may be NULL) gets the answer. diff (malloc'd, taken over) goes
 * to the audit log. Once live, p goes on top of the history. */
void sl_admin__publish(sl_admin *a, sl_http_req *r, const char *actor,
                       const char *addr, const char *action, sl_policy *p,
                       const char *change, const char *flags, char *diff);
/* The request's client went away: forget it, the publish goes on. */
void sl_admin__forget_request(sl_admin *a, sl_http_req *r);
/* The worker acks arrive here (main thread, via a->async). */
void sl_admin__job_settle(sl_admin *a);
/* Shutdown with a publish in flight: drop what it holds. */
void sl_admin__job_free(sl_admin *a);

/* ---- admin_cluster.c: several instances, one Redis ---- */
typedef void (*admin_route_fn)(sl_admin *a, sl_http_req *r, admin_actor *who);
/* At start, before the first policy is chosen: the latest version
 * published in the cluster, stored and validated here. 1 and *out when the
 * instance starts on it, 0 when it does not (no cluster, nothing published,
 * Redis down: said in the log). */
int sl_admin__cluster_first(sl_admin *a, sl_policy **out);
/* The main loop runs: connect, heartbeat, follow announcements. */
int sl_admin__cluster_start(sl_admin *a, char *err, size_t errlen);
void sl_admin__cluster_close(sl_admin *a);
void sl_admin__cluster_free(sl_admin *a);
/* A publish settled (publish_done): announce a local one, record a
 * refused follow, take the next announced version, refresh the
 * heartbeat. */
void sl_admin__cluster_settled(sl_admin *a, const char *action,
                               const char *actor, int rc, const char *version,
                               const char *change, const char *err);
/* Read the cluster's changes into a->changes, then run fn. 0 when the
 * call is under way (fn runs later, or the answer is sent), -1 when fn
 * should run now (no cluster, Redis down). */
int sl_admin__cluster_sync(sl_admin *a, sl_http_req *r, admin_actor *who,
                           admin_route_fn fn);
/* Fetch version from Redis into the store, then run fn again; -1 when
 * that is impossible (fn then reports the missing version). */
int sl_admin__cluster_fetch(sl_admin *a, sl_http_req *r, admin_actor *who,
                            const char *version, admin_route_fn fn);
/* The status answer so far (`b`, without its closing brace; taken over):
 * add this instance and every instance's heartbeat, then answer. */
void sl_admin__cluster_status(sl_admin *a, sl_http_req *r, sl_buf *b);
/* A change just submitted: put its version and record in Redis, then
 * answer `body` with 201 (taken over). */
void sl_admin__cluster_submitted(sl_admin *a, sl_http_req *r,
                                 const admin_change *c, const sl_policy *p,
                                 char *body, size_t len);
/* Approve c through Redis (atomic across instances) and answer. 0 when
 * under way, -1 when c is local to this instance. */
int sl_admin__cluster_approve(sl_admin *a, sl_http_req *r, admin_actor *who,
                              admin_change *c);
/* Forget r in the requests waiting on Redis (the client went away). */
void sl_admin__cluster_forget(sl_admin *a, sl_http_req *r);

/* Shared by admin_cluster.c and admin_cluster_req.c. */
void sl_admin__sha256_hex(const char *s, size_t n, char out[65]);
/* A version as one blob (files and plugin sources), appended to b. */
int sl_admin__bundle_of(const sl_policy *p, sl_buf *b);
/* Check a bundle from Redis (hash, version id) and store it. */
int sl_admin__store_bundle(sl_admin *a, const char *version, const char *data,
                           size_t len, const char *sha, char *err,
                           size_t errlen);
/* This instance's heartbeat JSON, appended to b. */
void sl_admin__beat_json(sl_admin *a, sl_buf *b);
/* The requests still waiting on Redis: answer none of them (closing), or
 * drop them (shutdown). */
void sl_admin__waits_detach(sl_admin *a);
void sl_admin__waits_free(sl_admin *a);

/* ---- admin_changes.c (cluster) ---- */
/* A change from its JSON record (as sl_admin__change_json writes it),
 * appended to a->changes unless one with its id exists; NULL on error. */
admin_change *sl_admin__change_from_json(sl_admin *a, const char *json,
                                         size_t len);
void sl_admin__change_set_approvers(admin_change *c, const char *list);

/* ---- admin_tokens.c: tokens managed through the API ---- */
/* Find the token whose SHA-256 is that of tok (sluice.yaml's win): 0 and
 * who's name and roles, or -1. */
int sl_admin__token_lookup(sl_admin *a, const char *tok, size_t n,
                           admin_actor *who);
const sl_admin_token *sl_admin__config_token(const sl_admin *a,
                                             const char *name);
admin_token *sl_admin__api_token(sl_admin *a, const char *name);
/* ["read", ...] of SL_ROLE_* bits. */
void sl_admin__roles_json(sl_buf *b, unsigned roles);
/* A token's record, as tokens.json and Redis keep it (with_hash). */
void sl_admin__token_record(sl_buf *b, const admin_token *t, int with_hash);
/* {"tokens": [records]} decoded into a new list (malloc'd); records that
 * are invalid or shadow a token of sluice.yaml are dropped (logged). */
int sl_admin__tokens_from_json(sl_admin *a, const char *data, size_t len,
                               admin_token **out, int *nout);
int sl_admin__token_insert(sl_admin *a, const admin_token *t);
void sl_admin__token_remove(sl_admin *a, const char *name);
int sl_admin__load_tokens(sl_admin *a);
int sl_admin__save_tokens(sl_admin *a);
void sl_admin__free_tokens(sl_admin *a);
void sl_admin__tokens_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__token_add_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__token_revoke_h(sl_admin *a, sl_http_req *r, admin_actor *who);
/* The cluster's Redis answered an add (secret: the generated token, or
 * NULL) or a revocation: apply it here, audit it, answer r (may be
 * NULL: the client went away). rc < 0: Redis did not store it. */
void sl_admin__token_added(sl_admin *a, sl_http_req *r, admin_actor *who,
                           const admin_token *t, const char *secret, int rc);
void sl_admin__token_revoked(sl_admin *a, sl_http_req *r, admin_actor *who,
                             const admin_token *t, int rc);

/* ---- admin_cluster_req.c (tokens) ---- */
/* In cluster mode, put t in Redis first (an add; secret: the token
 * sluice made, or NULL) or its revocation, then finish with
 * sl_admin__token_added / _revoked: 0 (under way, or answered: Redis
 * down), -1 without a cluster (apply it locally). */
int sl_admin__cluster_token(sl_admin *a, sl_http_req *r, admin_actor *who,
                            const admin_token *t, const char *secret);
int sl_admin__cluster_token_revoke(sl_admin *a, sl_http_req *r,
                                   admin_actor *who, const admin_token *t);
/* Read the cluster's API tokens from Redis and replace this instance's
 * with them (on connect, and when another instance changed one). */
void sl_admin__cluster_tokens_sync(sl_admin *a);

/* ---- admin_audit.c ---- */
typedef struct admin_event {
    const char *actor;
    const char *addr;
    const char *action;
    const char *result; /* ok, refused, failed */
    const char *before, *after;
    const char *change;
    const char *flags;  /* a JSON array, or NULL */
    const char *diff;   /* the diff's JSON, or NULL */
    const char *detail; /* a reason, or NULL */
} admin_event;

int sl_admin__audit_open(sl_admin *a, char *err, size_t errlen);
/* Append one line and fsync it. */
void sl_admin__audit(sl_admin *a, const admin_event *e);
void sl_admin__audit_h(sl_admin *a, sl_http_req *r, admin_actor *who);
void sl_admin__audit_close(sl_admin *a);

#endif
