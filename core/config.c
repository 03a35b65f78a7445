/* config.c — sluice.yaml: the runtime settings, validated with errors that
 * name file, line and key. */
#include "config.h"
#include "config_check.h"
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
    c->secret_dirs = calloc(2, sizeof(char *));
    if (c->secret_dirs && (c->secret_dirs[0] = strdup("/run/secrets")))
        c->nsecret_dirs = 1;
    c->lua_time_budget = 100;
    c->lua_memory_budget = 64u << 20;
    c->lua_memory_limit = 128u << 20;
}

static int parse_config(sl_ck *ck, const sl_node *root, sl_config *c)
{
    static const char *const known[] = {
        "workers",    "listen", "policy_dir", "limits",      "timeouts",
        "upstream",   "log",    "mock",       "plugin_dirs", "secret_dirs",
        "secret_env", "lua",    NULL};
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
        static const char *const k[] = {"access", "error", "level", NULL};
        const sl_node *m;
        if (sl_ck_keys(ck, n, "log", k) < 0)
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
    for (int i = 0; i < c->nplugin_dirs; i++)
        free(c->plugin_dirs[i]);
    free(c->plugin_dirs);
    for (int i = 0; i < c->nsecret_dirs; i++)
        free(c->secret_dirs[i]);
    free(c->secret_dirs);
    for (int i = 0; i < c->nsecret_env; i++)
        free(c->secret_env[i]);
    free(c->secret_env);
    memset(c, 0, sizeof(*c));
}
