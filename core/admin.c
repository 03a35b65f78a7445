/* admin.c — the admin room's door (admin.h): the first policy, the admin
 * listener on the main loop, bearer tokens with roles and a brute-force
 * limit, the route table, and the read-only endpoints.
 *
 * Tokens are compared by SHA-256: sluice.yaml holds only hashes, so the
 * configuration can be read by anyone who may read it without handing out
 * the keys to policy. A wrong token counts against the caller's address;
 * past admin.max_failures within admin.lockout, the address is refused
 * (429) until the lockout passes, whatever token it shows. */
#include "admin_int.h"
#include "metrics.h"
#include "log.h"
#include "util.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ---- answers ---------------------------------------------------------- */

void sl_admin__reply(sl_http_req *r, int status, const char *json, size_t len)
{
    static const char ct[] = "application/json";
    static const char cc[] = "no-store";
    sl_http_response_begin(r, status);
    sl_http_response_header(r, "content-type", 12, ct, sizeof(ct) - 1);
    sl_http_response_header(r, "cache-control", 13, cc, sizeof(cc) - 1);
    sl_http_response_head_end(r, (int64_t)len);
    sl_http_response_body(r, json, len);
    sl_http_response_end(r);
}

void sl_admin__reply_buf(sl_http_req *r, int status, sl_buf *b)
{
    if (b->data)
        sl_admin__reply(r, status, b->data, b->len);
    else
        sl_admin__error(r, 500, "internal", "out of memory");
    sl_buf_release(b);
}

int sl_admin__jstr(sl_buf *b, const char *s)
{
    if (!s)
        return sl_buf_puts(b, "null");
    int rc = sl_buf_append(b, "\"", 1);
    for (const char *p = s; rc == 0 && *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            rc = sl_buf_append(b, esc, 2);
        } else if (c == '\n') {
            rc = sl_buf_puts(b, "\\n");
        } else if (c < 0x20 || c == 0x7f) {
            rc = sl_buf_printf(b, "\\u%04x", c);
        } else {
            rc = sl_buf_append(b, p, 1);
        }
    }
    return rc ? rc : sl_buf_append(b, "\"", 1);
}

static void error_with(sl_http_req *r, int status, const char *code,
                       const char *msg, const char *hname, const char *hval)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"error\":{\"message\":");
    sl_admin__jstr(&b, msg);
    sl_buf_puts(&b, ",\"type\":\"admin_error\",\"code\":");
    sl_admin__jstr(&b, code);
    sl_buf_puts(&b, "}}");
    if (!b.data) {
        sl_http_response_abort(r);
        return;
    }
    sl_http_response_begin(r, status);
    sl_http_response_header(r, "content-type", 12, "application/json", 16);
    if (hname)
        sl_http_response_header(r, hname, strlen(hname), hval, strlen(hval));
    sl_http_response_head_end(r, (int64_t)b.len);
    sl_http_response_body(r, b.data, b.len);
    sl_http_response_end(r);
    sl_buf_release(&b);
}

void sl_admin__error(sl_http_req *r, int status, const char *code,
                     const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    error_with(r, status, code, msg, NULL, NULL);
}

/* ---- JSON bodies (decoded by sluice.json in the admin's Lua state) ---- */

int sl_admin__body(sl_admin *a, sl_http_req *r)
{
    lua_State *L = sl_lua_state(a->lua);
    int top = lua_gettop(L);
    if (r->body.len == 0) {
        lua_newtable(L);
        return 0;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.json");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_settop(L, top);
        sl_admin__error(r, 500, "internal", "the JSON module is missing");
        return -1;
    }
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
    lua_pushlstring(L, r->body.data, r->body.len);
    if (lua_pcall(L, 1, 2, 0) != 0 || !lua_istable(L, -2)) {
        const char *why = lua_isstring(L, -1) ? lua_tostring(L, -1)
                                              : "expected a JSON object";
        sl_admin__error(r, 400, "bad_json", "the request body: %s", why);
        lua_settop(L, top);
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

const char *sl_admin__field(lua_State *L, const char *key)
{
    lua_getfield(L, -1, key);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the table still holds the string */
    return s;
}

/* ---- tokens and the brute-force limit ---------------------------------- */

static uint64_t now_ms(void)
{
    return sl_now_ns() / 1000000;
}

static admin_fail *fail_slot(sl_admin *a, const char *addr, int create)
{
    admin_fail *oldest = &a->fails[0];
    for (int i = 0; i < ADMIN_FAIL_SLOTS; i++) {
        admin_fail *f = &a->fails[i];
        if (f->addr[0] && strcmp(f->addr, addr) == 0)
            return f;
        if (!f->addr[0] || f->first_ms < oldest->first_ms)
            oldest = f;
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    snprintf(oldest->addr, sizeof(oldest->addr), "%s", addr);
    return oldest;
}

static void count_failure(sl_admin *a, const char *addr)
{
    const sl_admin_cfg *c = &a->cfg->admin;
    uint64_t now = now_ms();
    admin_fail *f = fail_slot(a, addr, 1);
    if (!f->count || now - f->first_ms > c->failure_window) {
        f->count = 0;
        f->first_ms = now;
    }
    if (++f->count >= c->max_failures && f->locked_until_ms <= now) {
        f->locked_until_ms = now + c->failure_window;
        sl_log_warn("admin: %u failed logins from %s, refusing it for %llus",
                    f->count, addr,
                    (unsigned long long)(c->failure_window / 1000));
        admin_event e = {.actor = NULL,
                         .addr = addr,
                         .action = "lockout",
                         .result = "refused",
                         .detail = "too many failed logins"};
        sl_admin__audit(a, &e);
    }
}

static void client_ip(const sl_http_req *r, char out[64])
{
    snprintf(out, 64, "%s", r->client_addr);
    char *colon = strrchr(out, ':');
    if (colon && colon != out)
        *colon = '\0';
}

/* The caller's token, or an answer already sent (NULL). */
static int authenticate(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    client_ip(r, who->addr);
    admin_fail *f = fail_slot(a, who->addr, 0);
    uint64_t now = now_ms();
    if (f && f->locked_until_ms > now) {
        char secs[32];
        snprintf(secs, sizeof(secs), "%llu",
                 (unsigned long long)((f->locked_until_ms - now + 999) / 1000));
        error_with(r, 429, "too_many_failures",
                   "too many failed logins from this address; try again "
                   "later",
                   "retry-after", secs);
        return -1;
    }
    const sl_str *h = sl_http_header(r, "authorization");
    if (!h || h->n < 8 || !sl_ieq(h->p, 7, "bearer ")) {
        error_with(r, 401, "missing_token",
                   "the admin API needs a bearer token "
                   "(Authorization: Bearer ...)",
                   "www-authenticate", "Bearer realm=\"sluice-admin\"");
        return -1;
    }
    const char *tok = h->p + 7;
    size_t n = h->n - 7;
    while (n && *tok == ' ')
        tok++, n--;
    if (sl_admin__token_lookup(a, tok, n, who) < 0) {
        count_failure(a, who->addr);
        admin_event e = {.addr = who->addr,
                         .action = "login",
                         .result = "refused",
                         .detail = "unknown token"};
        sl_admin__audit(a, &e);
        error_with(r, 401, "invalid_token", "the bearer token is not valid",
                   "www-authenticate", "Bearer error=\"invalid_token\"");
        return -1;
    }
    return 0;
}

/* ---- routes ----------------------------------------------------------- */

typedef void (*route_fn)(sl_admin *a, sl_http_req *r, admin_actor *who);

static void status_h(sl_admin *a, sl_http_req *r, admin_actor *who);
static void policy_h(sl_admin *a, sl_http_req *r, admin_actor *who);
static void versions_h(sl_admin *a, sl_http_req *r, admin_actor *who);
static void metrics_h(sl_admin *a, sl_http_req *r, admin_actor *who);

/* One line per endpoint: method, path ('*' is one path segment), the
 * role it needs (admin holds every role), and its handler. */
/* `changes`: in cluster mode, read the cluster's changes first, so a
 * change submitted on another instance can be seen, approved and
 * published here. */
static const struct route {
    const char *method;
    const char *path;
    unsigned role;
    route_fn fn;
    int changes;
} routes[] = {
    {"GET", "/metrics", SL_ROLE_READ, metrics_h, 0},
    {"GET", "/admin/status", SL_ROLE_READ, status_h, 0},
    {"GET", "/admin/policy", SL_ROLE_READ, policy_h, 0},
    {"GET", "/admin/versions", SL_ROLE_READ, versions_h, 0},
    {"GET", "/admin/changes", SL_ROLE_READ, sl_admin__changes_h, 1},
    {"GET", "/admin/changes/*", SL_ROLE_READ, sl_admin__change_h, 1},
    {"GET", "/admin/exceptions", SL_ROLE_READ, sl_admin__exceptions_h, 0},
    {"GET", "/admin/audit", SL_ROLE_READ, sl_admin__audit_h, 0},
    {"POST", "/admin/policy/validate", SL_ROLE_PROPOSE, sl_admin__validate_h,
     0},
    {"POST", "/admin/policy/diff", SL_ROLE_PROPOSE, sl_admin__diff_h, 0},
    {"POST", "/admin/changes", SL_ROLE_PROPOSE, sl_admin__submit_h, 0},
    {"POST", "/admin/changes/*/approve", SL_ROLE_APPROVE, sl_admin__approve_h,
     1},
    {"POST", "/admin/publish", SL_ROLE_APPROVE, sl_admin__publish_h, 1},
    {"POST", "/admin/rollback", SL_ROLE_ADMIN, sl_admin__rollback_h, 0},
    {"POST", "/admin/reload", SL_ROLE_ADMIN, sl_admin__reload_h, 0},
    {"GET", "/admin/tokens", SL_ROLE_READ, sl_admin__tokens_h, 0},
    {"POST", "/admin/tokens", SL_ROLE_ADMIN, sl_admin__token_add_h, 0},
    {"DELETE", "/admin/tokens/*", SL_ROLE_ADMIN, sl_admin__token_revoke_h, 0},
};

static int path_matches(const char *pat, const sl_str *path)
{
    const char *p = path->p, *end = path->p + path->n;
    while (*pat) {
        if (*pat == '*') {
            const char *seg = p;
            while (p < end && *p != '/')
                p++;
            if (p == seg)
                return 0;
            pat++;
        } else if (p < end && *p == *pat) {
            p++;
            pat++;
        } else {
            return 0;
        }
    }
    return p == end;
}

static const char *role_name(unsigned role)
{
    return role == SL_ROLE_READ      ? "read"
           : role == SL_ROLE_PROPOSE ? "propose"
           : role == SL_ROLE_APPROVE ? "approve"
                                     : "admin";
}

static void on_request(sl_http_req *r, void *data)
{
    sl_admin *a = data;
    admin_actor who = {0};
    if (a->closing) {
        sl_admin__error(r, 503, "shutting_down", "sluice is shutting down");
        return;
    }
    if (authenticate(a, r, &who) < 0)
        return;
    const struct route *hit = NULL;
    int path_known = 0;
    for (size_t i = 0; i < SL_ARRAY_LEN(routes) && !hit; i++) {
        if (!path_matches(routes[i].path, &r->path))
            continue;
        path_known = 1;
        if (r->method_name.n == strlen(routes[i].method) &&
            memcmp(r->method_name.p, routes[i].method, r->method_name.n) == 0)
            hit = &routes[i];
    }
    if (!hit) {
        if (path_known)
            sl_admin__error(r, 405, "method_not_allowed",
                            "%.*s is not allowed on %.*s",
                            (int)r->method_name.n, r->method_name.p,
                            (int)r->path.n, r->path.p);
        else
            sl_admin__error(r, 404, "not_found", "no admin endpoint %.*s",
                            (int)r->path.n, r->path.p);
        return;
    }
    if (!(who.roles & SL_ROLE_ADMIN) && !(who.roles & hit->role)) {
        char action[128];
        snprintf(action, sizeof(action), "%s %.*s", hit->method, (int)r->path.n,
                 r->path.p);
        admin_event e = {.actor = who.name,
                         .addr = who.addr,
                         .action = action,
                         .result = "refused",
                         .detail = "missing role"};
        if (strcmp(hit->method, "GET") != 0)
            sl_admin__audit(a, &e);
        sl_admin__error(r, 403, "forbidden",
                        "token '%s' lacks the '%s' role this endpoint needs",
                        who.name, role_name(hit->role));
        return;
    }
    if (hit->changes && sl_admin__cluster_sync(a, r, &who, hit->fn) == 0)
        return;
    hit->fn(a, r, &who);
}

static void on_abort(sl_http_req *r, void *data)
{
    sl_admin__forget_request(data, r);
    sl_admin__cluster_forget(data, r);
}

/* ---- read endpoints ---------------------------------------------------- */

static void send_buf(sl_http_req *r, sl_buf *b)
{
    if (!b->data)
        sl_admin__error(r, 500, "internal", "out of memory");
    else
        sl_admin__reply(r, 200, b->data, b->len);
    sl_buf_release(b);
}

/* Prometheus text format (core/metrics.h): the live version first, so it
 * shows before any request ran on it. */
static void metrics_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    (void)who;
    if (*a->live)
        sl_metrics_policy_version((*a->live)->version);
    sl_buf b;
    sl_buf_init(&b, NULL);
    if (sl_metrics_render(&b) < 0) {
        sl_buf_release(&b);
        sl_admin__error(r, 500, "out_of_memory", "cannot render the metrics");
        return;
    }
    static const char ct[] = SL_METRICS_CONTENT_TYPE;
    sl_http_response_begin(r, 200);
    sl_http_response_header(r, "content-type", 12, ct, sizeof(ct) - 1);
    sl_http_response_head_end(r, (int64_t)b.len);
    sl_http_response_body(r, b.data ? b.data : "", b.len);
    sl_http_response_end(r);
    sl_buf_release(&b);
}

/* A backend's health as this instance's workers saw it (metrics.h):
 * "down" while its circuit breaker is open, "degraded" while it is
 * half-open or when an attempt failed within the window, "unknown" when
 * no request went to it since start, else "ok". */
static void health_json(sl_buf *b, const sl_backend_health *h)
{
    if (!h) {
        sl_buf_puts(b, "null");
        return;
    }
    static const char *const breaker[] = {"closed", "half_open", "open"};
    const char *status = h->breaker == 2                           ? "down"
                         : h->breaker == 1 || h->recent_errors > 0 ? "degraded"
                         : h->requests == 0 && h->errors == 0      ? "unknown"
                                                                   : "ok";
    sl_buf_printf(b,
                  "{\"status\":\"%s\",\"requests\":%.0f,"
                  "\"upstream_errors\":%.0f,\"errors_by_reason\":{",
                  status, h->requests, h->errors);
    for (int i = 0; i < h->nreasons; i++) {
        sl_buf_puts(b, i ? "," : "");
        sl_admin__jstr(b, h->reasons[i].reason);
        sl_buf_printf(b, ":%.0f", h->reasons[i].n);
    }
    sl_buf_printf(
        b, "},\"recent_errors\":%.0f,\"last_error_at\":", h->recent_errors);
    if (h->last_error_at > 0) {
        time_t t = (time_t)h->last_error_at;
        struct tm tm;
        char ts[40];
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        sl_buf_printf(b, "\"%s.%03dZ\"", ts,
                      (int)((h->last_error_at - (double)t) * 1000));
    } else {
        sl_buf_puts(b, "null");
    }
    sl_buf_puts(b, ",\"last_error\":");
    sl_admin__jstr(b, h->last_error[0] ? h->last_error : NULL);
    sl_buf_puts(b, ",\"breaker\":");
    sl_admin__jstr(b, h->breaker >= 0 ? breaker[h->breaker] : NULL);
    if (h->breaker == 2)
        sl_buf_printf(b, ",\"breaker_open_for_s\":%.1f", h->open_for_s);
    sl_buf_puts(b, "}");
}

static void status_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    sl_policy *p = *a->live;
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"version\":");
    sl_admin__jstr(&b, p ? p->version : NULL);
    sl_buf_printf(
        &b,
        ",\"started_at\":\"%s\",\"uptime_s\":%llu,\"workers\":%d,"
        "\"publishing\":%s,\"pending_changes\":",
        a->started_at,
        (unsigned long long)((sl_now_ns() - a->started_ns) / 1000000000ull),
        a->nworkers, a->job.active ? "true" : "false");
    int pending = 0;
    for (int i = 0; i < a->nchanges; i++)
        pending += strcmp(a->changes[i].status, "pending") == 0;
    sl_buf_printf(&b, "%d,\"health_window_s\":%d,\"backends\":[", pending,
                  SL_HEALTH_WINDOW_S);
    int nb = p ? p->nbackends : 0;
    const char **names = calloc((size_t)nb + 1, sizeof(*names));
    sl_backend_health *health = calloc((size_t)nb + 1, sizeof(*health));
    for (int i = 0; names && i < nb; i++)
        names[i] = p->backends[i].name;
    if (!names || !health || sl_metrics_backend_health(names, nb, health) < 0) {
        free(health);
        health = NULL;
    }
    for (int i = 0; p && i < p->nbackends; i++) {
        const sl_backend *be = &p->backends[i];
        sl_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        sl_admin__jstr(&b, be->name);
        sl_buf_puts(&b, ",\"provider\":");
        sl_admin__jstr(&b, be->provider);
        sl_buf_puts(&b, ",\"region\":");
        sl_admin__jstr(&b, be->region);
        sl_buf_puts(&b, ",\"url\":");
        sl_admin__jstr(&b, be->url);
        sl_buf_printf(&b, ",\"default\":%s,\"health\":",
                      p->default_backend == i ? "true" : "false");
        health_json(&b, health ? &health[i] : NULL);
        sl_buf_puts(&b, "}");
    }
    free(health);
    free(names);
    sl_buf_puts(&b, "],\"you\":");
    sl_admin__jstr(&b, who->name);
    if (a->cl) {
        sl_admin__cluster_status(a, r, &b);
        return;
    }
    sl_buf_puts(&b, "}");
    send_buf(r, &b);
}

static void add_file(sl_buf *b, int *first, const char *prefix,
                     const char *name, const char *data, size_t len)
{
    char key[400];
    snprintf(key, sizeof(key), "%s%s", prefix, name);
    sl_buf_puts(b, *first ? "" : ",");
    *first = 0;
    sl_admin__jstr(b, key);
    sl_buf_puts(b, ":");
    /* sources hold no NUL, but stay exact about their length */
    char *copy = strndup(data, len);
    sl_admin__jstr(b, copy ? copy : "");
    free(copy);
}

static void policy_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    sl_policy *p = *a->live;
    if (!p) {
        sl_admin__error(r, 404, "no_policy", "no policy is loaded");
        return;
    }
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"version\":");
    sl_admin__jstr(&b, p->version);
    sl_buf_puts(&b, ",\"files\":{");
    int first = 1;
    for (int i = 0; i < p->nfiles; i++) {
        char *data;
        size_t len;
        const char *base = strrchr(p->files[i].path, '/');
        if (sl_read_file(p->files[i].path, &data, &len) < 0)
            continue;
        add_file(&b, &first, "policies/", base ? base + 1 : p->files[i].path,
                 data, len);
        free(data);
    }
    for (int i = 0; i < p->nplugins; i++) {
        char name[128];
        snprintf(name, sizeof(name), "%s.lua", p->plugins[i].name);
        add_file(&b, &first, "plugins/", name, p->plugins[i].code,
                 p->plugins[i].len);
    }
    sl_buf_puts(&b, "}}");
    send_buf(r, &b);
}

static void versions_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    sl_ver_id *hist = NULL;
    int n = 0;
    if (a->store)
        sl_ver_history(a->store, &hist, &n);
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"live\":");
    sl_admin__jstr(&b, *a->live ? (*a->live)->version : NULL);
    sl_buf_puts(&b, ",\"history\":[");
    for (int i = 0; i < n; i++) {
        sl_buf_puts(&b, i ? "," : "");
        sl_admin__jstr(&b, hist[i]);
    }
    sl_buf_puts(&b, "]}");
    free(hist);
    send_buf(r, &b);
}

/* ---- lifecycle ----------------------------------------------------------- */

int sl_admin_validate(const sl_config *cfg, sl_policy *p, char *err,
                      size_t errlen)
{
    sl_lua *lua = sl_lua_new(cfg, err, errlen);
    if (!lua)
        return SL_ECONFIG;
    sl_chain chain;
    int rc = sl_lua_compile(lua, p, &chain, err, errlen);
    if (rc == 0)
        sl_lua_chain_release(lua, &chain);
    sl_lua_free(lua);
    return rc;
}

/* The policy directory as a stored version: read, check, store, and load
 * back from the store so the live version is exactly what is on disk. */
static int first_from_dir(sl_admin *a, sl_policy **out, char *err,
                          size_t errlen)
{
    const sl_config *cfg = a->cfg;
    sl_policy *p = NULL;
    int rc = sl_policy_load(cfg->policy_dir, cfg, &p, err, errlen);
    if (rc == 0)
        rc = sl_admin_validate(cfg, p, err, errlen);
    if (rc == 0 && a->store) {
        sl_policy *stored = NULL;
        rc = sl_ver_save(a->store, p, err, errlen);
        if (rc == 0)
            rc = sl_ver_load(a->store, p->version, cfg, &stored, err, errlen);
        if (rc == 0) {
            sl_ver_id id;
            memcpy(id, stored->version, sizeof(id));
            rc = sl_ver_set_history(a->store, &id, 1, err, errlen);
        }
        if (rc == 0) {
            admin_event e = {.actor = "startup",
                             .action = "initial",
                             .result = "ok",
                             .after = stored->version,
                             .detail = cfg->policy_dir};
            sl_admin__audit(a, &e);
        }
        sl_policy_unref(p);
        p = stored;
    }
    if (rc < 0) {
        if (p)
            sl_policy_unref(p);
        return rc;
    }
    *out = p;
    return 0;
}

static int first_policy(sl_admin *a, sl_policy **out, char *err, size_t errlen)
{
    *out = NULL;
    if (sl_admin__cluster_first(a, out) == 1)
        return 0;
    if (a->store) {
        sl_ver_id *hist;
        int n;
        if (sl_ver_history(a->store, &hist, &n) < 0) {
            snprintf(err, errlen, "%s: cannot read the published history",
                     a->cfg->admin.state_dir);
            return SL_EIO;
        }
        if (n > 0) {
            char why[1024];
            int rc =
                sl_ver_load(a->store, hist[0], a->cfg, out, why, sizeof(why));
            if (rc == 0 &&
                (rc = sl_admin_validate(a->cfg, *out, why, sizeof(why))) < 0) {
                sl_policy_unref(*out);
                *out = NULL;
            }
            if (rc < 0)
                snprintf(err, errlen,
                         "%s: the published version %s cannot be loaded: %s",
                         a->cfg->admin.state_dir, hist[0], why);
            else
                sl_log_info("starting on published version %s (%s); "
                            "reload applies %s",
                            hist[0], a->cfg->admin.state_dir,
                            a->cfg->policy_dir ? a->cfg->policy_dir
                                               : "the policy directory");
            free(hist);
            return rc;
        }
        free(hist);
    }
    if (!a->cfg->policy_dir)
        return 0;
    return first_from_dir(a, out, err, errlen);
}

int sl_admin_new(const sl_config *cfg, sl_admin **out, sl_policy **first,
                 char *err, size_t errlen)
{
    sl_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    a->cfg = cfg;
    a->audit_fd = -1;
    a->started_ns = sl_now_ns();
    sl_time_rfc3339(a->started_at);
    pthread_mutex_init(&a->lock, NULL);
    int rc = 0;
    if (cfg->admin.enabled) {
        rc = sl_ver_open(cfg->admin.state_dir, &a->store, err, errlen);
        if (rc == 0)
            rc = sl_admin__audit_open(a, err, errlen);
        if (rc == 0 && !(a->lua = sl_lua_new(cfg, err, errlen)))
            rc = SL_ECONFIG;
        if (rc == 0)
            rc = sl_admin__load_changes(a);
        if (rc < 0 && !err[0])
            snprintf(err, errlen, "%s: cannot read changes.json",
                     cfg->admin.state_dir);
        if (rc == 0 && (rc = sl_admin__load_tokens(a)) < 0)
            snprintf(err, errlen, "%s: cannot read tokens.json",
                     cfg->admin.state_dir);
    }
    if (rc == 0)
        rc = first_policy(a, first, err, errlen);
    if (rc < 0) {
        sl_admin_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

static void on_async(uv_async_t *h)
{
    sl_admin__job_settle(h->data);
}

int sl_admin_start(sl_admin *a, uv_loop_t *loop, sl_worker **ws, int n,
                   sl_policy **live, char *err, size_t errlen)
{
    a->loop = loop;
    a->workers = ws;
    a->nworkers = n;
    a->live = live;
    if (!(a->job.applied = calloc((size_t)n + 1, sizeof(int)))) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    uv_async_init(loop, &a->async, on_async);
    a->async.data = a;
    a->async_open = 1;
    int rc = sl_admin__cluster_start(a, err, errlen);
    if (rc < 0 || !a->cfg->admin.enabled)
        return rc;
    const sl_config *c = a->cfg;
    sl_http_settings st = {
        .limits = c->limits,
        .header_timeout = c->timeouts.header_read,
        .body_timeout = c->timeouts.body_read,
        .keepalive_timeout = c->timeouts.keepalive_idle,
    };
    if (st.limits.max_body_bytes < (16u << 20))
        st.limits.max_body_bytes = 16u << 20; /* a bundle with plugins */
    sl_http_handler h = {
        .on_request = on_request, .on_abort = on_abort, .data = a};
    const sl_listen_cfg *l = &c->admin.listen;
    if (l->tls_cert && (rc = sl_tls_server_config_new(
                            &a->tls, l->tls_cert, l->tls_key, err, errlen)) < 0)
        return rc;
    if (!(a->srv = sl_http_server_new(loop, &st, &h))) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    if ((rc = sl_http_server_listen(a->srv, l, a->tls, err, errlen)) < 0)
        return rc;
    sl_log_info("admin API listening on %s:%u%s (state in %s)", l->host,
                l->port, l->tls_cert ? " (TLS)" : "", c->admin.state_dir);
    return 0;
}

static void server_closed(void *arg)
{
    (void)arg;
}

void sl_admin_close(sl_admin *a)
{
    if (!a || a->closing)
        return;
    a->closing = 1;
    if (a->srv)
        sl_http_server_drain(a->srv, server_closed, a);
    if (a->srv)
        sl_http_server_close_all(a->srv);
    sl_admin__cluster_close(a);
    pthread_mutex_lock(&a->lock);
    int open = a->async_open;
    a->async_open = 0;
    pthread_mutex_unlock(&a->lock);
    if (open)
        uv_close((uv_handle_t *)&a->async, NULL);
}

void sl_admin_free(sl_admin *a)
{
    if (!a)
        return;
    if (a->srv)
        sl_http_server_free(a->srv);
    if (a->tls)
        sl_tls_config_free(a->tls);
    sl_admin__job_free(a);
    sl_admin__cluster_free(a);
    free(a->job.applied);
    sl_admin__free_changes(a);
    sl_admin__free_tokens(a);
    sl_admin__audit_close(a);
    sl_lua_free(a->lua);
    sl_ver_close(a->store);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
