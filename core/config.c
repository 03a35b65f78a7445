/* config.c — sluice.yaml: the runtime settings, validated with errors that
 * name file, line and key. */
#include "config.h"
#include "config_check.h"
#include "cluster_config.h"
#include "http_fetch.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

static int parse_listen(sl_ck *ck, const sl_node *n, const char *key,
                        sl_listen_cfg *l)
{
    static const char *const known[] = {"address", "tls", NULL};
    const sl_node *addr = n;
    if (n->type == SL_NODE_MAP) {
        if (sl_ck_keys(ck, n, key, known) < 0)
            return SL_ECONFIG;
        addr = sl_node_get(n, "address");
        if (!addr)
            return sl_ck_fail(ck, n, key, "missing 'address'");
    }
    if (sl_ck_scalar(ck, addr, key) < 0)
        return SL_ECONFIG;
    if (sl_parse_hostport(addr->value, l->host, sizeof(l->host), &l->port) < 0)
        return sl_ck_fail(ck, addr, key, "expected host:port, got '%s'",
                          addr->value);
    const sl_node *tls = n->type == SL_NODE_MAP ? sl_node_get(n, "tls") : NULL;
    if (tls) {
        static const char *const tknown[] = {"cert", "key", NULL};
        if (sl_ck_keys(ck, tls, "tls", tknown) < 0)
            return SL_ECONFIG;
        const sl_node *c = sl_node_get(tls, "cert"),
                      *k = sl_node_get(tls, "key");
        if (!c || !k)
            return sl_ck_fail(ck, tls, key, "tls needs both 'cert' and 'key'");
        if (sl_ck_str(ck, c, "tls.cert", &l->tls_cert) < 0 ||
            sl_ck_str(ck, k, "tls.key", &l->tls_key) < 0 ||
            sl_ck_path(ck->file, &l->tls_cert) < 0 ||
            sl_ck_path(ck->file, &l->tls_key) < 0)
            return SL_ECONFIG;
    }
    return 0;
}

static int get_dirs(sl_ck *ck, const sl_node *n, const char *key, char ***out,
                    int *count)
{
    return sl_ck_list(ck, n, key, out, count, 1);
}

static int get_names(sl_ck *ck, const sl_node *n, const char *key, char ***out,
                     int *count)
{
    return sl_ck_list(ck, n, key, out, count, 0);
}

static int is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

static int parse_roles(sl_ck *ck, const sl_node *n, const char *key,
                       unsigned *out)
{
    static const char *const names[] = {"read", "propose", "approve", "admin"};
    if (n->type != SL_NODE_SEQ || n->n == 0)
        return sl_ck_fail(ck, n, key,
                          "expected a list of roles (read, propose, approve, "
                          "admin)");
    *out = 0;
    for (const sl_node *r = n->child; r; r = r->next) {
        unsigned bit = 0;
        if (sl_ck_scalar(ck, r, key) < 0)
            return SL_ECONFIG;
        for (int i = 0; i < 4; i++)
            if (strcmp(r->value, names[i]) == 0)
                bit = 1u << i;
        if (!bit)
            return sl_ck_fail(ck, r, key,
                              "'%s' is not a role (read, propose, approve, "
                              "admin)",
                              r->value);
        *out |= bit;
    }
    return 0;
}

static int parse_token(sl_ck *ck, const sl_node *n, int i, sl_admin_cfg *a)
{
    static const char *const known[] = {"name", "sha256", "roles", NULL};
    char key[64];
    snprintf(key, sizeof(key), "admin.tokens[%d]", i);
    if (sl_ck_keys(ck, n, key, known) < 0)
        return SL_ECONFIG;
    sl_admin_token *t = &a->tokens[i];
    const sl_node *name = sl_node_get(n, "name"),
                  *hash = sl_node_get(n, "sha256"),
                  *roles = sl_node_get(n, "roles");
    if (!name || !hash || !roles)
        return sl_ck_fail(ck, n, key,
                          "each token needs name, sha256 and roles");
    snprintf(key, sizeof(key), "admin.tokens[%d].name", i);
    if (sl_ck_str(ck, name, key, &t->name) < 0)
        return SL_ECONFIG;
    for (int j = 0; j < i; j++)
        if (strcmp(a->tokens[j].name, t->name) == 0)
            return sl_ck_fail(ck, name, key, "token '%s' is defined twice",
                              t->name);
    snprintf(key, sizeof(key), "admin.tokens[%d].sha256", i);
    if (sl_ck_scalar(ck, hash, key) < 0)
        return SL_ECONFIG;
    int ok = strlen(hash->value) == 64;
    for (int j = 0; ok && j < 64; j++) {
        char c = hash->value[j];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        t->sha256[j] = c;
    }
    if (!ok)
        return sl_ck_fail(ck, hash, key,
                          "expected the token's SHA-256 as 64 hex digits "
                          "(sluice policy hash-token)");
    snprintf(key, sizeof(key), "admin.tokens[%d].roles", i);
    return parse_roles(ck, roles, key, &t->roles);
}

static int parse_admin(sl_ck *ck, const sl_node *n, sl_admin_cfg *a)
{
    static const char *const known[] = {
        "listen",       "state_dir", "audit_log",     "tokens",
        "max_failures", "lockout",   "keep_versions", NULL};
    const sl_node *m;
    uint64_t v;
    if (sl_ck_keys(ck, n, "admin", known) < 0)
        return SL_ECONFIG;
    if (!(m = sl_node_get(n, "listen")))
        return sl_ck_fail(ck, n, "admin", "missing 'listen'");
    if (parse_listen(ck, m, "admin.listen", &a->listen) < 0)
        return SL_ECONFIG;
    /* A token crossing a network in clear is a token anyone can replay. */
    if (!is_loopback(a->listen.host) && !a->listen.tls_cert)
        return sl_ck_fail(ck, m, "admin.listen",
                          "%s is not a loopback address: an admin listener "
                          "reachable from the network needs tls",
                          a->listen.host);
    if ((m = sl_node_get(n, "state_dir")) &&
        (sl_ck_str(ck, m, "admin.state_dir", &a->state_dir) < 0 ||
         sl_ck_path(ck->file, &a->state_dir) < 0))
        return SL_ECONFIG;
    if (!a->state_dir && (!(a->state_dir = strdup("state")) ||
                          sl_ck_path(ck->file, &a->state_dir) < 0))
        return SL_ENOMEM;
    if ((m = sl_node_get(n, "audit_log")) &&
        (sl_ck_str(ck, m, "admin.audit_log", &a->audit_log) < 0 ||
         sl_ck_path(ck->file, &a->audit_log) < 0))
        return SL_ECONFIG;
    if (!a->audit_log) {
        size_t len = strlen(a->state_dir) + 32;
        if (!(a->audit_log = malloc(len)))
            return SL_ENOMEM;
        snprintf(a->audit_log, len, "%s/admin-audit.log", a->state_dir);
    }
    if ((m = sl_node_get(n, "max_failures"))) {
        if (sl_ck_uint(ck, m, "admin.max_failures", 1, 100000, &v) < 0)
            return SL_ECONFIG;
        a->max_failures = (uint32_t)v;
    }
    if ((m = sl_node_get(n, "lockout")) &&
        sl_ck_duration(ck, m, "admin.lockout", &a->failure_window) < 0)
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "keep_versions"))) {
        if (sl_ck_uint(ck, m, "admin.keep_versions", 2, 100000, &v) < 0)
            return SL_ECONFIG;
        a->keep_versions = (int)v;
    }
    if ((m = sl_node_get(n, "tokens"))) {
        if (m->type != SL_NODE_SEQ)
            return sl_ck_fail(ck, m, "admin.tokens",
                              "expected a list of name, sha256, roles");
        if (!(a->tokens = calloc((size_t)m->n + 1, sizeof(*a->tokens))))
            return SL_ENOMEM;
        int i = 0;
        for (const sl_node *t = m->child; t; t = t->next, i++) {
            a->ntokens = i + 1;
            if (parse_token(ck, t, i, a) < 0)
                return SL_ECONFIG;
        }
    }
    a->enabled = 1;
    return 0;
}

/* log.audit_http: where batches of audit records are POSTed. */
static int parse_audit_http(sl_ck *ck, const sl_node *n, sl_audit_http_cfg *h)
{
    static const char *const known[] = {
        "url", "batch", "flush", "timeout", "ca_file", "headers", NULL};
    static const char *const reserved[] = {
        "host",       "content-length",    "content-type",
        "connection", "transfer-encoding", NULL};
    const sl_node *m;
    if (sl_ck_keys(ck, n, "log.audit_http", known) < 0)
        return SL_ECONFIG;
    if (!(m = sl_node_get(n, "url")))
        return sl_ck_fail(ck, n, "log.audit_http", "missing 'url'");
    if (sl_ck_str(ck, m, "log.audit_http.url", &h->url) < 0)
        return SL_ECONFIG;
    sl_fetch_url u;
    if (sl_fetch_parse_url(h->url, 0, &u) < 0)
        return sl_ck_fail(ck, m, "log.audit_http.url",
                          "expected an http:// or https:// URL without "
                          "user info");
    /* Records name consumers and teams: only a collector on this host may
     * receive them in clear. */
    if (!u.tls && !is_loopback(u.host))
        return sl_ck_fail(ck, m, "log.audit_http.url",
                          "%s is not a loopback address: a collector "
                          "reached over the network needs https",
                          u.host);
    if ((m = sl_node_get(n, "batch")) &&
        sl_ck_size(ck, m, "log.audit_http.batch", &h->batch) < 0)
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "flush")) &&
        sl_ck_duration(ck, m, "log.audit_http.flush", &h->flush) < 0)
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "timeout")) &&
        sl_ck_duration(ck, m, "log.audit_http.timeout", &h->timeout) < 0)
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "ca_file")) &&
        (sl_ck_str(ck, m, "log.audit_http.ca_file", &h->ca_file) < 0 ||
         sl_ck_path(ck->file, &h->ca_file) < 0))
        return SL_ECONFIG;
    if (!(m = sl_node_get(n, "headers")))
        return 0;
    if (m->type != SL_NODE_MAP)
        return sl_ck_fail(ck, m, "log.audit_http.headers",
                          "expected a map of header name to secret "
                          "reference (env:NAME or file:/path)");
    h->header_names = calloc((size_t)m->n + 1, sizeof(char *));
    h->header_refs = calloc((size_t)m->n + 1, sizeof(char *));
    h->header_lines = calloc((size_t)m->n + 1, sizeof(int));
    if (!h->header_names || !h->header_refs || !h->header_lines)
        return SL_ENOMEM;
    for (const sl_node *e = m->child; e; e = e->next) {
        char key[160];
        snprintf(key, sizeof(key), "log.audit_http.headers.%.100s", e->key);
        int i = h->nheaders++;
        h->header_lines[i] = e->line;
        if (!(h->header_names[i] = strdup(e->key)))
            return SL_ENOMEM;
        if (!*e->key ||
            e->key[strspn(e->key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
                                  "KLMNOPQRSTUVWXYZ0123456789-_")])
            return sl_ck_fail(ck, e, key, "not a header name");
        for (int r = 0; reserved[r]; r++)
            if (strcasecmp(e->key, reserved[r]) == 0)
                return sl_ck_fail(ck, e, key, "set by sluice itself");
        if (sl_ck_str(ck, e, key, &h->header_refs[i]) < 0)
            return SL_ECONFIG;
        /* A header that reaches a collector is a credential: by reference,
         * so it never sits in sluice.yaml nor in a log line. */
        if (strncmp(h->header_refs[i], "env:", 4) != 0 &&
            strncmp(h->header_refs[i], "file:", 5) != 0)
            return sl_ck_fail(ck, e, key,
                              "header values are given by reference "
                              "(env:NAME or file:/path), never inline");
    }
    return 0;
}

void sl_config_defaults(sl_config *c)
{
    memset(c, 0, sizeof(*c));
    c->workers = 0; /* one per core */
    c->limits.max_body_bytes = 8u << 20;
    c->limits.max_header_bytes = 32u << 10;
    c->limits.max_headers = 100;
    c->timeouts.header_read = 10000;
    c->timeouts.body_read = 30000;
    c->timeouts.keepalive_idle = 75000;
    c->timeouts.upstream_connect = 5000;
    c->timeouts.upstream_first_byte = 120000;
    c->timeouts.upstream_idle = 60000;
    c->timeouts.drain = 30000;
    c->upstream_max_idle = 64;
    c->upstream_idle_timeout = 60000;
    c->dns_ttl = 30000;
    c->log_level = SL_LOG_INFO;
    c->audit_queue = 64u << 20;
    c->audit_http.batch = 1u << 20;
    c->audit_http.flush = 1000;
    c->audit_http.timeout = 5000;
    c->secret_dirs = calloc(2, sizeof(char *));
    if (c->secret_dirs && (c->secret_dirs[0] = strdup("/run/secrets")))
        c->nsecret_dirs = 1;
    c->lua_time_budget = 100;
    c->lua_memory_budget = 64u << 20;
    c->lua_memory_limit = 128u << 20;
    c->admin.max_failures = 10;
    c->admin.failure_window = 60000;
    c->admin.keep_versions = 50;
    c->metrics.max_series = 1000;
}

/* metrics: { consumer_labels: false, max_series_per_metric: 1000 } */
static int parse_metrics(sl_ck *ck, const sl_node *n, sl_config *c)
{
    static const char *const k[] = {"consumer_labels", "max_series_per_metric",
                                    NULL};
    const sl_node *m;
    uint64_t v;
    if (sl_ck_keys(ck, n, "metrics", k) < 0)
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "consumer_labels")) &&
        sl_ck_bool(ck, m, "metrics.consumer_labels",
                   &c->metrics.consumer_labels) < 0)
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "max_series_per_metric"))) {
        if (sl_ck_uint(ck, m, "metrics.max_series_per_metric", 1, 1000000, &v) <
            0)
            return SL_ECONFIG;
        c->metrics.max_series = (int)v;
    }
    return 0;
}

static int parse_config(sl_ck *ck, const sl_node *root, sl_config *c)
{
    static const char *const known[] = {
        "workers",     "listen",      "policy_dir", "limits",
        "timeouts",    "upstream",    "log",        "mock",
        "plugin_dirs", "secret_dirs", "secret_env", "lua",
        "admin",       "metrics",     "cluster",    NULL};
    if (sl_ck_keys(ck, root, "", known) < 0)
        return SL_ECONFIG;
    const sl_node *n;
    uint64_t v;

    if ((n = sl_node_get(root, "workers"))) {
        if (n->type == SL_NODE_SCALAR && strcmp(n->value, "auto") == 0)
            c->workers = 0;
        else if (sl_ck_uint(ck, n, "workers", 1, 256, &v) < 0)
            return SL_ECONFIG;
        else
            c->workers = (int)v;
    }
    if ((n = sl_node_get(root, "listen"))) {
        int count = n->type == SL_NODE_SEQ ? n->n : 1;
        if (count == 0)
            return sl_ck_fail(ck, n, "listen", "needs at least one address");
        c->listen = calloc((size_t)count, sizeof(*c->listen));
        if (!c->listen)
            return SL_ENOMEM;
        c->nlisten = count;
        const sl_node *item = n->type == SL_NODE_SEQ ? n->child : n;
        for (int i = 0; i < count; i++, item = item->next) {
            char key[32];
            snprintf(key, sizeof(key), "listen[%d]", i);
            if (parse_listen(ck, item, key, &c->listen[i]) < 0)
                return SL_ECONFIG;
        }
    }
    if ((n = sl_node_get(root, "policy_dir"))) {
        if (sl_ck_str(ck, n, "policy_dir", &c->policy_dir) < 0 ||
            sl_ck_path(ck->file, &c->policy_dir) < 0)
            return SL_ECONFIG;
    }
    if ((n = sl_node_get(root, "limits"))) {
        static const char *const k[] = {"max_body_bytes", "max_header_bytes",
                                        "max_headers", NULL};
        const sl_node *m;
        if (sl_ck_keys(ck, n, "limits", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_body_bytes")) &&
            sl_ck_size(ck, m, "limits.max_body_bytes",
                       &c->limits.max_body_bytes) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_header_bytes")) &&
            sl_ck_size(ck, m, "limits.max_header_bytes",
                       &c->limits.max_header_bytes) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_headers"))) {
            if (sl_ck_uint(ck, m, "limits.max_headers", 1, 10000, &v) < 0)
                return SL_ECONFIG;
            c->limits.max_headers = (uint32_t)v;
        }
    }
    if ((n = sl_node_get(root, "timeouts"))) {
        static const char *const k[] = {"header_read",
                                        "body_read",
                                        "keepalive_idle",
                                        "upstream_connect",
                                        "upstream_first_byte",
                                        "upstream_idle",
                                        "drain",
                                        NULL};
        uint64_t *dst[] = {&c->timeouts.header_read,
                           &c->timeouts.body_read,
                           &c->timeouts.keepalive_idle,
                           &c->timeouts.upstream_connect,
                           &c->timeouts.upstream_first_byte,
                           &c->timeouts.upstream_idle,
                           &c->timeouts.drain};
        if (sl_ck_keys(ck, n, "timeouts", k) < 0)
            return SL_ECONFIG;
        for (int i = 0; k[i]; i++) {
            const sl_node *m = sl_node_get(n, k[i]);
            char key[64];
            snprintf(key, sizeof(key), "timeouts.%s", k[i]);
            if (m && sl_ck_duration(ck, m, key, dst[i]) < 0)
                return SL_ECONFIG;
        }
    }
    if ((n = sl_node_get(root, "upstream"))) {
        static const char *const k[] = {"max_idle_per_backend", "idle_timeout",
                                        "dns_ttl", NULL};
        const sl_node *m;
        if (sl_ck_keys(ck, n, "upstream", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_idle_per_backend"))) {
            if (sl_ck_uint(ck, m, "upstream.max_idle_per_backend", 0, 100000,
                           &v) < 0)
                return SL_ECONFIG;
            c->upstream_max_idle = (uint32_t)v;
        }
        if ((m = sl_node_get(n, "idle_timeout")) &&
            sl_ck_duration(ck, m, "upstream.idle_timeout",
                           &c->upstream_idle_timeout) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "dns_ttl")) &&
            sl_ck_duration(ck, m, "upstream.dns_ttl", &c->dns_ttl) < 0)
            return SL_ECONFIG;
    }
    if ((n = sl_node_get(root, "log"))) {
        static const char *const k[] = {"access",      "error",      "level",
                                        "audit_queue", "audit_http", NULL};
        const sl_node *m;
        if (sl_ck_keys(ck, n, "log", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "audit_queue")) &&
            sl_ck_size(ck, m, "log.audit_queue", &c->audit_queue) < 0)
            return SL_ECONFIG;
        /* a worker hands over up to 32 KiB at a time (log.c) */
        if (m && c->audit_queue < (64u << 10))
            return sl_ck_fail(ck, m, "log.audit_queue",
                              "at least 64KiB (a worker hands over up to "
                              "32KiB at once)");
        if ((m = sl_node_get(n, "audit_http")) &&
            parse_audit_http(ck, m, &c->audit_http) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "access"))) {
            if (sl_ck_str(ck, m, "log.access", &c->access_log) < 0)
                return SL_ECONFIG;
            if (strcmp(c->access_log, "off") == 0) {
                free(c->access_log);
                c->access_log = NULL;
            } else if (sl_ck_path(ck->file, &c->access_log) < 0) {
                return SL_ECONFIG;
            }
        }
        if ((m = sl_node_get(n, "error"))) {
            if (sl_ck_str(ck, m, "log.error", &c->error_log) < 0 ||
                sl_ck_path(ck->file, &c->error_log) < 0)
                return SL_ECONFIG;
        }
        if ((m = sl_node_get(n, "level"))) {
            static const char *const lv[] = {"error", "warn", "info", "debug"};
            int found = -1;
            if (sl_ck_scalar(ck, m, "log.level") < 0)
                return SL_ECONFIG;
            for (int i = 0; i < 4; i++)
                if (strcmp(m->value, lv[i]) == 0)
                    found = i;
            if (found < 0)
                return sl_ck_fail(ck, m, "log.level",
                                  "expected error, warn, info or debug");
            c->log_level = found;
        }
    }
    if ((n = sl_node_get(root, "plugin_dirs")) &&
        get_dirs(ck, n, "plugin_dirs", &c->plugin_dirs, &c->nplugin_dirs) < 0)
        return SL_ECONFIG;
    if ((n = sl_node_get(root, "secret_dirs")) &&
        get_dirs(ck, n, "secret_dirs", &c->secret_dirs, &c->nsecret_dirs) < 0)
        return SL_ECONFIG;
    if ((n = sl_node_get(root, "secret_env")) &&
        get_names(ck, n, "secret_env", &c->secret_env, &c->nsecret_env) < 0)
        return SL_ECONFIG;
    if ((n = sl_node_get(root, "lua"))) {
        static const char *const k[] = {"time_budget", "memory_budget",
                                        "memory_limit", NULL};
        const sl_node *m;
        if (sl_ck_keys(ck, n, "lua", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "time_budget")) &&
            sl_ck_duration(ck, m, "lua.time_budget", &c->lua_time_budget) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "memory_budget")) &&
            sl_ck_size(ck, m, "lua.memory_budget", &c->lua_memory_budget) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "memory_limit")) &&
            sl_ck_size(ck, m, "lua.memory_limit", &c->lua_memory_limit) < 0)
            return SL_ECONFIG;
    }
    if ((n = sl_node_get(root, "mock"))) {
        static const char *const k[] = {"listen", NULL};
        const sl_node *m;
        if (sl_ck_keys(ck, n, "mock", k) < 0)
            return SL_ECONFIG;
        if (!(m = sl_node_get(n, "listen")))
            return sl_ck_fail(ck, n, "mock", "missing 'listen'");
        if (parse_listen(ck, m, "mock.listen", &c->mock_listen) < 0)
            return SL_ECONFIG;
        c->mock_enabled = 1;
    }
    if ((n = sl_node_get(root, "admin")) && parse_admin(ck, n, &c->admin) < 0)
        return SL_ECONFIG;
    if ((n = sl_node_get(root, "metrics")) && parse_metrics(ck, n, c) < 0)
        return SL_ECONFIG;
    if ((n = sl_node_get(root, "cluster")) &&
        sl_cluster_config_parse(ck, n, &c->cluster) < 0)
        return SL_ECONFIG;
    return 0;
}

int sl_config_load(const char *path, sl_config *c, char *err, size_t errlen)
{
    sl_node *root;
    sl_ck ck = {path, err, errlen};
    sl_config_defaults(c);
    int rc = sl_yaml_load(path, &root, err, errlen);
    if (rc < 0) {
        sl_config_free(c);
        return rc;
    }
    c->path = strdup(path);
    rc = c->path ? parse_config(&ck, root, c) : SL_ENOMEM;
    sl_node_free(root);
    if (rc == 0 && c->nlisten == 0)
        rc = sl_ck_fail(&ck, NULL, "listen",
                        "at least one listener is required");
    if (rc < 0)
        sl_config_free(c);
    return rc;
}

static void free_listen(sl_listen_cfg *l)
{
    free(l->tls_cert);
    free(l->tls_key);
}

void sl_config_free(sl_config *c)
{
    for (int i = 0; i < c->nlisten; i++)
        free_listen(&c->listen[i]);
    free(c->listen);
    free_listen(&c->mock_listen);
    free(c->path);
    free(c->policy_dir);
    free(c->access_log);
    free(c->error_log);
    free(c->audit_http.url);
    free(c->audit_http.ca_file);
    for (int i = 0; i < c->audit_http.nheaders; i++) {
        free(c->audit_http.header_names[i]);
        free(c->audit_http.header_refs[i]);
    }
    free(c->audit_http.header_names);
    free(c->audit_http.header_refs);
    free(c->audit_http.header_lines);
    for (int i = 0; i < c->nplugin_dirs; i++)
        free(c->plugin_dirs[i]);
    free(c->plugin_dirs);
    for (int i = 0; i < c->nsecret_dirs; i++)
        free(c->secret_dirs[i]);
    free(c->secret_dirs);
    for (int i = 0; i < c->nsecret_env; i++)
        free(c->secret_env[i]);
    free(c->secret_env);
    free_listen(&c->admin.listen);
    free(c->admin.state_dir);
    free(c->admin.audit_log);
    for (int i = 0; i < c->admin.ntokens; i++)
        free(c->admin.tokens[i].name);
    free(c->admin.tokens);
    sl_cluster_config_free(&c->cluster);
    memset(c, 0, sizeof(*c));
}
