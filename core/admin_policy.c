/* admin_policy.c — policy versions through the admin API: candidates
 * (uploaded bundles, the policy directory, stored versions), the governance
 * diff, proposed changes with four-eyes approval, and the publish fan-out
 * that switches every worker or none.
 *
 * A publish: the candidate is validated here, stored whole (versions.c),
 * loaded back from the store and sent to every worker; when all of them
 * took it, the history file names it live (so a restart comes back on it)
 * and the action is audited. When one refused, those that took it get the
 * previous version back and the publish is reported failed. */
#include "admin_int.h"
#include "log.h"
#include "util.h"

#include <lauxlib.h>
#include <limits.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_UPLOAD_FILES 256

/* ---- the policy as the diff module reads it ---------------------------- */

static void push_node(lua_State *L, const sl_node *n)
{
    if (n->type == SL_NODE_SCALAR) {
        if (n->plain && sl_node_is_null(n))
            lua_pushnil(L);
        else if (n->plain && strcmp(n->value, "true") == 0)
            lua_pushboolean(L, 1);
        else if (n->plain && strcmp(n->value, "false") == 0)
            lua_pushboolean(L, 0);
        else {
            char *end;
            double d = n->plain && n->len ? strtod(n->value, &end) : 0;
            if (n->plain && n->len && *end == '\0')
                lua_pushnumber(L, d);
            else
                lua_pushlstring(L, n->value, n->len);
        }
        return;
    }
    lua_createtable(L, n->type == SL_NODE_SEQ ? n->n : 0,
                    n->type == SL_NODE_MAP ? n->n : 0);
    int i = 1;
    for (const sl_node *c = n->child; c; c = c->next, i++) {
        push_node(L, c);
        if (n->type == SL_NODE_SEQ)
            lua_rawseti(L, -2, i);
        else
            lua_setfield(L, -2, c->key);
    }
}

void sl_admin__push_doc(lua_State *L, const sl_policy *p)
{
    lua_createtable(L, 0, 3);
    if (!p)
        return;
    lua_pushstring(L, p->version);
    lua_setfield(L, -2, "version");
    lua_createtable(L, p->nfiles, 0);
    for (int i = 0; i < p->nfiles; i++) {
        const char *base = strrchr(p->files[i].path, '/');
        lua_createtable(L, 0, 2);
        lua_pushfstring(L, "policies/%s", base ? base + 1 : p->files[i].path);
        lua_setfield(L, -2, "path");
        push_node(L, p->files[i].root);
        lua_setfield(L, -2, "root");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "files");
    lua_createtable(L, 0, p->nplugins);
    for (int i = 0; i < p->nplugins; i++) {
        unsigned char sum[32];
        char hex[65];
        mbedtls_sha256_ret((const unsigned char *)p->plugins[i].code,
                           p->plugins[i].len, sum, 0);
        for (int j = 0; j < 32; j++)
            snprintf(hex + j * 2, 3, "%02x", sum[j]);
        lua_createtable(L, 0, 1);
        lua_pushstring(L, hex);
        lua_setfield(L, -2, "sha256");
        lua_setfield(L, -2, p->plugins[i].name);
    }
    lua_setfield(L, -2, "plugins");
}

/* Call diff.<fn>(docs...) and take its JSON text (malloc'd) and, for
 * compare, whether the change needs a second person. */
int sl_admin__call_diff(sl_admin *a, const char *fn, const sl_policy *p1,
                        const sl_policy *p2, int nargs, char **json, int *needs)
{
    lua_State *L = sl_lua_state(a->lua);
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.diff");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        sl_log_error("admin: cannot load sluice.diff: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        return SL_EIO;
    }
    lua_getfield(L, -1, fn);
    sl_admin__push_doc(L, p1);
    if (nargs > 1)
        sl_admin__push_doc(L, p2);
    if (lua_pcall(L, nargs, 2, 0) != 0 || !lua_isstring(L, -2)) {
        sl_log_error("admin: diff.%s failed: %s", fn,
                     lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_settop(L, top);
        return SL_EIO;
    }
    *json = strdup(lua_tostring(L, -2));
    if (needs)
        *needs = lua_toboolean(L, -1);
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return *json ? 0 : SL_ENOMEM;
}

/* ---- candidates ---------------------------------------------------------- */

/* "file:line: key: reason" as JSON fields, for a CI to point at. */
void sl_admin__policy_error(sl_http_req *r, int status, const char *msg)
{
    char file[256] = "", key[256] = "";
    int line = 0;
    const char *c1 = strchr(msg, ':');
    if (c1 && (size_t)(c1 - msg) < sizeof(file) &&
        sscanf(c1 + 1, "%d", &line) == 1) {
        memcpy(file, msg, (size_t)(c1 - msg));
        file[c1 - msg] = '\0';
        const char *c2 = strchr(c1 + 1, ':');
        const char *c3 = c2 ? strstr(c2 + 1, ": ") : NULL;
        if (c2 && c3 && c2[1] == ' ' && (size_t)(c3 - c2 - 2) < sizeof(key)) {
            memcpy(key, c2 + 2, (size_t)(c3 - c2 - 2));
            key[c3 - c2 - 2] = '\0';
        }
    }
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"ok\":false,\"error\":{\"message\":");
    sl_admin__jstr(&b, msg);
    sl_buf_puts(&b, ",\"type\":\"admin_error\",\"code\":\"invalid_policy\"");
    if (line > 0) {
        sl_buf_puts(&b, ",\"file\":");
        sl_admin__jstr(&b, file);
        sl_buf_printf(&b, ",\"line\":%d", line);
        if (key[0]) {
            sl_buf_puts(&b, ",\"key\":");
            sl_admin__jstr(&b, key);
        }
    }
    sl_buf_puts(&b, "}}");
    sl_admin__reply_buf(r, status, &b);
}

/* Drop every "<dir>/" from msg so errors name the uploaded file. */
static void strip_prefix(char *msg, const char *dir)
{
    char pre[PATH_MAX];
    int pl = snprintf(pre, sizeof(pre), "%s/", dir);
    char *hit;
    while ((hit = strstr(msg, pre)))
        memmove(hit, hit + pl, strlen(hit + pl) + 1);
}

/* Read, stage, load and validate the body's files (see below); the Lua
 * stack is left for the caller to restore. */
static sl_policy *load_upload(sl_admin *a, sl_http_req *r, char **stage,
                              char **message)
{
    lua_State *L = sl_lua_state(a->lua);
    char err[2048] = "";
    if (sl_admin__body(a, r) < 0)
        return NULL;
    if (message) {
        const char *m = sl_admin__field(L, "message");
        *message = m ? strdup(m) : NULL;
    }
    lua_getfield(L, -1, "files");
    if (!lua_istable(L, -1)) {
        sl_admin__error(r, 400, "missing_files",
                        "the body needs files: {\"policies/NAME.yaml\": "
                        "text, \"plugins/NAME.lua\": text}");
        return NULL;
    }
    const char *names[MAX_UPLOAD_FILES], *data[MAX_UPLOAD_FILES];
    size_t lens[MAX_UPLOAD_FILES];
    int n = 0, bad = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
            n == MAX_UPLOAD_FILES)
            bad = 1;
        else {
            names[n] = lua_tostring(L, -2);
            data[n] = lua_tolstring(L, -1, &lens[n]);
            n++;
        }
        lua_pop(L, 1);
    }
    if (bad || n == 0) {
        sl_admin__error(r, 400, "bad_files",
                        "files must map up to %d file names to their text",
                        MAX_UPLOAD_FILES);
        return NULL;
    }
    if (sl_ver_stage(a->store, names, data, lens, n, stage, err, sizeof(err)) <
        0) {
        sl_admin__error(r, 400, "bad_files", "%s", err);
        return NULL;
    }
    sl_policy *p = NULL;
    int rc = sl_ver_load_staged(*stage, a->cfg, &p, err, sizeof(err));
    if (rc == 0 && (rc = sl_admin_validate(a->cfg, p, err, sizeof(err))) < 0)
        sl_policy_unref(p);
    if (rc < 0) {
        strip_prefix(err, *stage);
        sl_admin__policy_error(r, 422, err);
        return NULL;
    }
    return p;
}

/* The uploaded bundle in r's body ({"files": {"policies/x.yaml": "..."}}),
 * loaded and validated. NULL after answering the error. *stage is the
 * staging folder (or NULL) to end_candidate(); *message (optional) the
 * body's "message", malloc'd or NULL. */
static sl_policy *candidate_from_body(sl_admin *a, sl_http_req *r, char **stage,
                                      char **message)
{
    lua_State *L = sl_lua_state(a->lua);
    int top = lua_gettop(L);
    *stage = NULL;
    if (message)
        *message = NULL;
    sl_policy *p = load_upload(a, r, stage, message);
    lua_settop(L, top);
    return p;
}

static void end_candidate(char *stage)
{
    sl_ver_unstage(stage);
    free(stage);
}

/* Store p and load it back: what is live is then exactly what is on disk.
 * Takes p's reference. */
static sl_policy *store_and_reload(sl_admin *a, sl_policy *p, char *err,
                                   size_t errlen)
{
    sl_policy *stored = NULL;
    int rc = sl_ver_save(a->store, p, err, errlen);
    if (rc == 0)
        rc = sl_ver_load(a->store, p->version, a->cfg, &stored, err, errlen);
    sl_policy_unref(p);
    return rc == 0 ? stored : NULL;
}

/* ---- endpoints ----------------------------------------------------------- */

const char *sl_admin__live_version(sl_admin *a)
{
    return *a->live ? (*a->live)->version : NULL;
}

void sl_admin__audit_simple(sl_admin *a, admin_actor *who, const char *action,
                            const char *result, const char *after,
                            const char *change, const char *detail)
{
    admin_event e = {.actor = who->name,
                     .addr = who->addr,
                     .action = action,
                     .result = result,
                     .before = sl_admin__live_version(a),
                     .after = after,
                     .change = change,
                     .detail = detail};
    sl_admin__audit(a, &e);
}
void sl_admin__validate_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    char *stage;
    sl_policy *p = candidate_from_body(a, r, &stage, NULL);
    if (!p) {
        sl_admin__audit_simple(a, who, "validate", "refused", NULL, NULL,
                               "invalid policy");
        end_candidate(stage);
        return;
    }
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_printf(&b,
                  "{\"ok\":true,\"version\":\"%s\",\"backends\":%d,"
                  "\"plugins\":[",
                  p->version, p->nbackends);
    for (int i = 0; i < p->nplugins; i++) {
        sl_buf_puts(&b, i ? "," : "");
        sl_admin__jstr(&b, p->plugins[i].name);
    }
    sl_buf_puts(&b, "]}");
    sl_admin__audit_simple(a, who, "validate", "ok", p->version, NULL, NULL);
    sl_admin__reply(r, 200, b.data, b.len);
    sl_buf_release(&b);
    sl_policy_unref(p);
    end_candidate(stage);
}

void sl_admin__diff_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    char *stage, *json = NULL;
    int needs = 0;
    sl_policy *p = candidate_from_body(a, r, &stage, NULL);
    if (!p) {
        end_candidate(stage);
        return;
    }
    if (sl_admin__call_diff(a, "report", *a->live, p, 2, &json, &needs) < 0)
        sl_admin__error(r, 500, "diff_failed", "the diff could not be made");
    else
        sl_admin__reply(r, 200, json, strlen(json));
    free(json);
    sl_policy_unref(p);
    end_candidate(stage);
}

void sl_admin__submit_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    char *stage, *json = NULL, *message, err[1024];
    int needs = 0;
    sl_policy *p = candidate_from_body(a, r, &stage, &message);
    if (!p) {
        sl_admin__audit_simple(a, who, "submit", "refused", NULL, NULL,
                               "invalid policy");
        end_candidate(stage);
        free(message);
        return;
    }
    p = store_and_reload(a, p, err, sizeof(err));
    end_candidate(stage);
    if (!p) {
        free(message);
        sl_admin__error(r, 500, "store_failed", "%s", err);
        return;
    }
    admin_change *c = NULL;
    if (sl_admin__call_diff(a, "report", *a->live, p, 2, &json, &needs) < 0 ||
        !(c = sl_admin__add_change(a))) {
        free(message);
        free(json);
        sl_policy_unref(p);
        sl_admin__error(r, 500, "internal", "the change could not be made");
        return;
    }
    sl_rand rnd;
    sl_rand_seed(&rnd);
    snprintf(c->id, sizeof(c->id), "%016llx",
             (unsigned long long)sl_rand_next(&rnd));
    memcpy(c->version, p->version, sizeof(c->version));
    snprintf(c->base, sizeof(c->base), "%s",
             sl_admin__live_version(a) ? sl_admin__live_version(a) : "");
    c->author = strdup(who->name);
    c->message = message;
    sl_time_rfc3339(c->submitted);
    snprintf(c->status, sizeof(c->status), "pending");
    c->needs_approval = needs;
    c->diff_json = json;
    sl_admin__save_changes(a);
    admin_event e = {.actor = who->name,
                     .addr = who->addr,
                     .action = "submit",
                     .result = "ok",
                     .before = sl_admin__live_version(a),
                     .after = p->version,
                     .change = c->id,
                     .diff = json};
    sl_admin__audit(a, &e);
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"change\":");
    sl_admin__change_json(&b, c);
    sl_buf_puts(&b, "}");
    if (a->cl && b.data) {
        /* in Redis too, so another instance can approve and publish it */
        sl_admin__cluster_submitted(a, r, c, p, b.data, b.len);
        sl_policy_unref(p);
        return;
    }
    sl_admin__reply(r, 201, b.data, b.len);
    sl_buf_release(&b);
    sl_policy_unref(p);
}

/* POST /admin/publish {"change": id} (approve or admin) or
 * {"files": {...}} (admin: a direct publish, flagged in the audit). */
void sl_admin__publish_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    char err[1024], *diff = NULL, *stage = NULL;
    int needs = 0, is_admin = (who->roles & SL_ROLE_ADMIN) != 0;
    if (a->job.active) {
        sl_admin__error(r, 409, "busy",
                        "another publish is in progress; try again");
        return;
    }
    if (sl_admin__body(a, r) < 0)
        return;
    lua_State *L = sl_lua_state(a->lua);
    const char *field = sl_admin__field(L, "change");
    char idbuf[32] = "";
    const char *cid = field ? idbuf : NULL;
    if (field)
        snprintf(idbuf, sizeof(idbuf), "%s", field);
    lua_getfield(L, -1, "files");
    int has_files = lua_istable(L, -1);
    lua_pop(L, 2);
    sl_policy *p = NULL;
    admin_change *c = NULL;
    char flags[128] = "";
    if (cid) {
        if (!(c = sl_admin__find_change(a, cid))) {
            sl_admin__error(r, 404, "no_change", "no change '%s'", cid);
            return;
        }
        if (strcmp(c->status, "pending") != 0) {
            sl_admin__error(r, 409, "not_pending", "change %s is %s", c->id,
                            c->status);
            return;
        }
        /* submitted on another instance: its version is in Redis */
        if (!sl_ver_exists(a->store, c->version) &&
            sl_admin__cluster_fetch(a, r, who, c->version,
                                    sl_admin__publish_h) == 0)
            return;
        if (sl_ver_load(a->store, c->version, a->cfg, &p, err, sizeof(err)) <
                0 ||
            sl_admin_validate(a->cfg, p, err, sizeof(err)) < 0) {
            if (p)
                sl_policy_unref(p);
            sl_admin__policy_error(r, 422, err);
            return;
        }
    } else if (has_files) {
        if (!is_admin) {
            sl_admin__audit_simple(a, who, "publish", "refused", NULL, NULL,
                                   "direct publish needs the admin role");
            sl_admin__error(r, 403, "forbidden",
                            "publishing an upload directly needs the admin "
                            "role; submit it as a change instead");
            return;
        }
        p = candidate_from_body(a, r, &stage, NULL);
        if (p)
            p = store_and_reload(a, p, err, sizeof(err));
        else
            err[0] = '\0';
        end_candidate(stage);
        if (!p && err[0])
            sl_admin__error(r, 500, "store_failed", "%s", err);
        if (!p)
            return; /* answered */
        snprintf(flags, sizeof(flags), "\"direct_publish\"");
    } else {
        sl_admin__error(r, 400, "missing_change",
                        "the body needs {\"change\": id} or, for admins, "
                        "{\"files\": {...}}");
        return;
    }
    /* Four-eyes is judged against what is live now, not at submit time. */
    if (sl_admin__call_diff(a, "report", *a->live, p, 2, &diff, &needs) < 0) {
        sl_policy_unref(p);
        sl_admin__error(r, 500, "diff_failed", "the diff could not be made");
        return;
    }
    if (needs && !(c && sl_admin__second_person(c))) {
        if (!is_admin) {
            sl_admin__audit_simple(a, who, "publish", "refused", p->version,
                                   c ? c->id : NULL,
                                   "needs approval by a second person");
            sl_admin__error(r, 403, "needs_approval",
                            "change %s needs approval by a second person "
                            "before it can be published (see its diff's "
                            "approval_reasons)",
                            c ? c->id : p->version);
            sl_policy_unref(p);
            free(diff);
            return;
        }
        size_t l = strlen(flags);
        snprintf(flags + l, sizeof(flags) - l, "%s\"four_eyes_bypassed\"",
                 l ? "," : "");
    }
    /* Published on top of something else than it was proposed against:
     * the diff in the audit is against what is live now. */
    if (c && sl_admin__live_version(a) &&
        strcmp(c->base, sl_admin__live_version(a)) != 0) {
        size_t l = strlen(flags);
        snprintf(flags + l, sizeof(flags) - l, "%s\"base_changed\"",
                 l ? "," : "");
    }
    char fl[160] = "";
    if (flags[0])
        snprintf(fl, sizeof(fl), "[%s]", flags);
    sl_admin__publish(a, r, who->name, who->addr, "publish", p,
                      c ? c->id : NULL, fl[0] ? fl : NULL, diff);
}

/* POST /admin/rollback {"version": id}? — back to the previous published
 * version, or to a given stored one. */
void sl_admin__rollback_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    char err[1024];
    if (a->job.active) {
        sl_admin__error(r, 409, "busy",
                        "another publish is in progress; try again");
        return;
    }
    if (sl_admin__body(a, r) < 0)
        return;
    lua_State *L = sl_lua_state(a->lua);
    const char *v = sl_admin__field(L, "version");
    sl_ver_id target = "";
    if (v)
        snprintf(target, sizeof(target), "%s", v);
    lua_pop(L, 1);
    if (!target[0]) {
        /* the version live before the current one (a second rollback
         * undoes the first) */
        sl_ver_id *hist;
        int n;
        if (sl_ver_history(a->store, &hist, &n) == 0)
            for (int i = 1; i < n && !target[0]; i++)
                if (strcmp(hist[i], hist[0]) != 0)
                    memcpy(target, hist[i], sizeof(target));
        free(hist);
        if (!target[0]) {
            sl_admin__error(r, 409, "no_previous",
                            "there is no earlier published version to roll "
                            "back to");
            return;
        }
    }
    sl_policy *p = NULL;
    if (sl_ver_load(a->store, target, a->cfg, &p, err, sizeof(err)) < 0 ||
        sl_admin_validate(a->cfg, p, err, sizeof(err)) < 0) {
        if (p)
            sl_policy_unref(p);
        sl_admin__audit_simple(a, who, "rollback", "refused", target, NULL,
                               err);
        sl_admin__error(r, 404, "no_version", "%s", err);
        return;
    }
    char *diff = NULL;
    sl_admin__call_diff(a, "report", *a->live, p, 2, &diff, NULL);
    sl_admin__publish(a, r, who->name, who->addr, "rollback", p, NULL, NULL,
                      diff);
}

/* Reload the policy directory (SIGHUP and POST /admin/reload). */
static void reload(sl_admin *a, const char *actor, sl_http_req *r)
{
    char err[1024];
    const sl_config *cfg = a->cfg;
    sl_policy *p = NULL;
    if (!cfg->policy_dir) {
        if (r)
            sl_admin__error(r, 409, "no_policy_dir",
                            "sluice.yaml names no policy_dir to reload");
        return;
    }
    if (a->job.active) {
        if (r) {
            sl_admin__error(r, 409, "busy",
                            "another publish is in progress; try again");
        } else {
            a->reload_queued = 1;
        }
        return;
    }
    int rc = sl_policy_load(cfg->policy_dir, cfg, &p, err, sizeof(err));
    if (rc == 0 && (rc = sl_admin_validate(cfg, p, err, sizeof(err))) < 0)
        sl_policy_unref(p);
    if (rc == 0 && a->store && !(p = store_and_reload(a, p, err, sizeof(err))))
        rc = SL_EIO;
    if (rc < 0) {
        sl_log_error("reload refused, the live policy stays: %s", err);
        admin_event e = {.actor = actor,
                         .action = "reload",
                         .result = "refused",
                         .before = sl_admin__live_version(a),
                         .detail = err};
        sl_admin__audit(a, &e);
        if (r)
            sl_admin__policy_error(r, 422, err);
        return;
    }
    sl_log_info("policy %s loaded from %s (%d backends, %d plugins)",
                p->version, cfg->policy_dir, p->nbackends, p->nplugins);
    char *diff = NULL;
    if (a->lua)
        sl_admin__call_diff(a, "report", *a->live, p, 2, &diff, NULL);
    sl_admin__publish(a, r, actor, NULL, "reload", p, NULL, NULL, diff);
}

void sl_admin__reload_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    reload(a, who->name, r);
}

void sl_admin_reload(sl_admin *a, const char *actor)
{
    if (a && !a->closing)
        reload(a, actor, NULL);
}

/* GET /admin/exceptions: the live version's exceptions in force (those
 * expiring within 7 days marked), as the policy compiler reports them. */
void sl_admin__exceptions_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    char err[1024];
    sl_policy *p = *a->live;
    sl_buf list, b;
    sl_buf_init(&list, NULL);
    sl_buf_init(&b, NULL);
    sl_lua *lua = p ? sl_lua_new(a->cfg, err, sizeof(err)) : NULL;
    sl_chain chain;
    int rc = lua ? sl_lua_compile(lua, p, &chain, err, sizeof(err)) : 0;
    if (lua && rc == 0) {
        rc = sl_lua_chain_report(lua, &chain, "exceptions", "json", &list);
        sl_lua_chain_release(lua, &chain);
    }
    sl_lua_free(lua);
    if (p && (!lua || rc < 0)) {
        sl_admin__error(r, 500, "internal", "the exceptions could not be read");
    } else {
        sl_buf_puts(&b, "{\"version\":");
        sl_admin__jstr(&b, p ? p->version : NULL);
        sl_buf_puts(&b, ",\"exceptions\":");
        if (list.len)
            sl_buf_append(&b, list.data, list.len);
        else
            sl_buf_puts(&b, "[]");
        sl_buf_puts(&b, "}");
        sl_admin__reply(r, 200, b.data, b.len);
    }
    sl_buf_release(&list);
    sl_buf_release(&b);
}
