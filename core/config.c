/* config.c — sluice.yaml and the policy directory's backends, validated
 * with errors that name file, line and key. */
#include "config.h"
#include "buf.h"
#include "util.h"
#include "spec_runner.h"

#include <mbedtls/sha256.h>

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    const char *file;
    char *err;
    size_t errlen;
} checker;

static int fail(checker *ck, const sl_node *at, const char *key,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(checker *ck, const sl_node *at, const char *key,
                const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ck->err, ck->errlen, "%s:%d: %s: %s", ck->file, at ? at->line : 1,
             key, msg);
    return SL_ECONFIG;
}

/* Refuse keys the section does not know: a typo must not silently fall
 * back to a default. */
static int check_keys(checker *ck, const sl_node *map, const char *section,
                      const char *const *known)
{
    if (map->type != SL_NODE_MAP)
        return fail(ck, map, section, "expected a map");
    for (const sl_node *c = map->child; c; c = c->next) {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(c->key, known[i]) == 0;
        if (!ok) {
            char k[256];
            snprintf(k, sizeof(k), "%s%s%s", section, *section ? "." : "",
                     c->key);
            return fail(ck, c, k, "unknown key");
        }
    }
    return 0;
}

static int want_scalar(checker *ck, const sl_node *n, const char *key)
{
    if (n->type != SL_NODE_SCALAR || sl_node_is_null(n))
        return fail(ck, n, key, "expected a value");
    return 0;
}

static int get_str(checker *ck, const sl_node *n, const char *key, char **out)
{
    if (want_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    char *s = strdup(n->value);
    if (!s)
        return SL_ENOMEM;
    free(*out);
    *out = s;
    return 0;
}

static int get_uint(checker *ck, const sl_node *n, const char *key,
                    uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (want_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    unsigned long long v = strtoull(n->value, &end, 10);
    if (*end || n->value[0] == '-' || v < min || v > max)
        return fail(ck, n, key, "expected a whole number from %llu to %llu",
                    (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

static int get_duration(checker *ck, const sl_node *n, const char *key,
                        uint64_t *ms)
{
    if (want_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    if (sl_parse_duration(n->value, ms) < 0 || *ms == 0)
        return fail(ck, n, key, "expected a duration like 250ms, 10s or 2m");
    return 0;
}

static int get_size(checker *ck, const sl_node *n, const char *key,
                    uint64_t *bytes)
{
    if (want_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    if (sl_parse_size(n->value, bytes) < 0 || *bytes == 0)
        return fail(ck, n, key, "expected a size like 64KiB or 8MiB");
    return 0;
}

static int get_bool(checker *ck, const sl_node *n, const char *key, int *out)
{
    if (want_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    if (strcmp(n->value, "true") == 0 || strcmp(n->value, "yes") == 0 ||
        strcmp(n->value, "on") == 0)
        *out = 1;
    else if (strcmp(n->value, "false") == 0 || strcmp(n->value, "no") == 0 ||
             strcmp(n->value, "off") == 0)
        *out = 0;
    else
        return fail(ck, n, key, "expected true or false");
    return 0;
}

/* Resolve `p` against the folder of the config file unless absolute. */
static int resolve_path(const char *base_file, char **p)
{
    if ((*p)[0] == '/' || strcmp(*p, "stdout") == 0 ||
        strcmp(*p, "stderr") == 0)
        return 0;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", base_file);
    const char *dir = dirname(tmp);
    char full[PATH_MAX];
    if (snprintf(full, sizeof(full), "%s/%s", dir, *p) >= (int)sizeof(full))
        return SL_EINVAL;
    char *s = strdup(full);
    if (!s)
        return SL_ENOMEM;
    free(*p);
    *p = s;
    return 0;
}

static int parse_listen(checker *ck, const sl_node *n, const char *key,
                        sl_listen_cfg *l)
{
    static const char *const known[] = {"address", "tls", NULL};
    const sl_node *addr = n;
    if (n->type == SL_NODE_MAP) {
        if (check_keys(ck, n, key, known) < 0)
            return SL_ECONFIG;
        addr = sl_node_get(n, "address");
        if (!addr)
            return fail(ck, n, key, "missing 'address'");
    }
    if (want_scalar(ck, addr, key) < 0)
        return SL_ECONFIG;
    if (sl_parse_hostport(addr->value, l->host, sizeof(l->host), &l->port) < 0)
        return fail(ck, addr, key, "expected host:port, got '%s'",
                    addr->value);
    const sl_node *tls = n->type == SL_NODE_MAP ? sl_node_get(n, "tls") : NULL;
    if (tls) {
        static const char *const tknown[] = {"cert", "key", NULL};
        if (check_keys(ck, tls, "tls", tknown) < 0)
            return SL_ECONFIG;
        const sl_node *c = sl_node_get(tls, "cert"), *k = sl_node_get(tls, "key");
        if (!c || !k)
            return fail(ck, tls, key, "tls needs both 'cert' and 'key'");
        if (get_str(ck, c, "tls.cert", &l->tls_cert) < 0 ||
            get_str(ck, k, "tls.key", &l->tls_key) < 0 ||
            resolve_path(ck->file, &l->tls_cert) < 0 ||
            resolve_path(ck->file, &l->tls_key) < 0)
            return SL_ECONFIG;
    }
    return 0;
}

static int get_list(checker *ck, const sl_node *n, const char *key,
                    char ***out, int *count, int paths)
{
    if (n->type != SL_NODE_SEQ)
        return fail(ck, n, key, paths ? "expected a list of folders"
                                       : "expected a list of names");
    char **dirs = calloc((size_t)n->n + 1, sizeof(char *));
    if (!dirs)
        return SL_ENOMEM;
    for (int i = 0; i < *count; i++)
        free((*out)[i]);
    free(*out);
    *out = dirs;
    *count = 0;
    int i = 0;
    for (const sl_node *d = n->child; d; d = d->next, i++) {
        char k[64];
        snprintf(k, sizeof(k), "%s[%d]", key, i);
        if (get_str(ck, d, k, &dirs[i]) < 0 ||
            (paths && resolve_path(ck->file, &dirs[i]) < 0))
            return SL_ECONFIG;
        *count = i + 1;
    }
    return 0;
}

static int get_dirs(checker *ck, const sl_node *n, const char *key,
                    char ***out, int *count)
{
    return get_list(ck, n, key, out, count, 1);
}

static int get_names(checker *ck, const sl_node *n, const char *key,
                     char ***out, int *count)
{
    return get_list(ck, n, key, out, count, 0);
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

static int parse_config(checker *ck, const sl_node *root, sl_config *c)
{
    static const char *const known[] = {
        "workers", "listen", "policy_dir", "limits", "timeouts", "upstream",
        "log", "mock", "plugin_dirs", "secret_dirs", "secret_env", "lua", NULL};
    if (check_keys(ck, root, "", known) < 0)
        return SL_ECONFIG;
    const sl_node *n;
    uint64_t v;

    if ((n = sl_node_get(root, "workers"))) {
        if (n->type == SL_NODE_SCALAR && strcmp(n->value, "auto") == 0)
            c->workers = 0;
        else if (get_uint(ck, n, "workers", 1, 256, &v) < 0)
            return SL_ECONFIG;
        else
            c->workers = (int)v;
    }
    if ((n = sl_node_get(root, "listen"))) {
        int count = n->type == SL_NODE_SEQ ? n->n : 1;
        if (count == 0)
            return fail(ck, n, "listen", "needs at least one address");
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
        if (get_str(ck, n, "policy_dir", &c->policy_dir) < 0 ||
            resolve_path(ck->file, &c->policy_dir) < 0)
            return SL_ECONFIG;
    }
    if ((n = sl_node_get(root, "limits"))) {
        static const char *const k[] = {"max_body_bytes", "max_header_bytes",
                                        "max_headers", NULL};
        const sl_node *m;
        if (check_keys(ck, n, "limits", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_body_bytes")) &&
            get_size(ck, m, "limits.max_body_bytes",
                     &c->limits.max_body_bytes) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_header_bytes")) &&
            get_size(ck, m, "limits.max_header_bytes",
                     &c->limits.max_header_bytes) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_headers"))) {
            if (get_uint(ck, m, "limits.max_headers", 1, 10000, &v) < 0)
                return SL_ECONFIG;
            c->limits.max_headers = (uint32_t)v;
        }
    }
    if ((n = sl_node_get(root, "timeouts"))) {
        static const char *const k[] = {
            "header_read", "body_read", "keepalive_idle", "upstream_connect",
            "upstream_first_byte", "upstream_idle", "drain", NULL};
        uint64_t *dst[] = {
            &c->timeouts.header_read, &c->timeouts.body_read,
            &c->timeouts.keepalive_idle, &c->timeouts.upstream_connect,
            &c->timeouts.upstream_first_byte, &c->timeouts.upstream_idle,
            &c->timeouts.drain};
        if (check_keys(ck, n, "timeouts", k) < 0)
            return SL_ECONFIG;
        for (int i = 0; k[i]; i++) {
            const sl_node *m = sl_node_get(n, k[i]);
            char key[64];
            snprintf(key, sizeof(key), "timeouts.%s", k[i]);
            if (m && get_duration(ck, m, key, dst[i]) < 0)
                return SL_ECONFIG;
        }
    }
    if ((n = sl_node_get(root, "upstream"))) {
        static const char *const k[] = {"max_idle_per_backend", "idle_timeout",
                                        "dns_ttl", NULL};
        const sl_node *m;
        if (check_keys(ck, n, "upstream", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "max_idle_per_backend"))) {
            if (get_uint(ck, m, "upstream.max_idle_per_backend", 0, 100000,
                         &v) < 0)
                return SL_ECONFIG;
            c->upstream_max_idle = (uint32_t)v;
        }
        if ((m = sl_node_get(n, "idle_timeout")) &&
            get_duration(ck, m, "upstream.idle_timeout",
                         &c->upstream_idle_timeout) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "dns_ttl")) &&
            get_duration(ck, m, "upstream.dns_ttl", &c->dns_ttl) < 0)
            return SL_ECONFIG;
    }
    if ((n = sl_node_get(root, "log"))) {
        static const char *const k[] = {"access", "error", "level", NULL};
        const sl_node *m;
        if (check_keys(ck, n, "log", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "access"))) {
            if (get_str(ck, m, "log.access", &c->access_log) < 0)
                return SL_ECONFIG;
            if (strcmp(c->access_log, "off") == 0) {
                free(c->access_log);
                c->access_log = NULL;
            } else if (resolve_path(ck->file, &c->access_log) < 0) {
                return SL_ECONFIG;
            }
        }
        if ((m = sl_node_get(n, "error"))) {
            if (get_str(ck, m, "log.error", &c->error_log) < 0 ||
                resolve_path(ck->file, &c->error_log) < 0)
                return SL_ECONFIG;
        }
        if ((m = sl_node_get(n, "level"))) {
            static const char *const lv[] = {"error", "warn", "info", "debug"};
            int found = -1;
            if (want_scalar(ck, m, "log.level") < 0)
                return SL_ECONFIG;
            for (int i = 0; i < 4; i++)
                if (strcmp(m->value, lv[i]) == 0)
                    found = i;
            if (found < 0)
                return fail(ck, m, "log.level",
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
        if (check_keys(ck, n, "lua", k) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "time_budget")) &&
            get_duration(ck, m, "lua.time_budget", &c->lua_time_budget) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "memory_budget")) &&
            get_size(ck, m, "lua.memory_budget", &c->lua_memory_budget) < 0)
            return SL_ECONFIG;
        if ((m = sl_node_get(n, "memory_limit")) &&
            get_size(ck, m, "lua.memory_limit", &c->lua_memory_limit) < 0)
            return SL_ECONFIG;
    }
    if ((n = sl_node_get(root, "mock"))) {
        static const char *const k[] = {"listen", NULL};
        const sl_node *m;
        if (check_keys(ck, n, "mock", k) < 0)
            return SL_ECONFIG;
        if (!(m = sl_node_get(n, "listen")))
            return fail(ck, n, "mock", "missing 'listen'");
        if (parse_listen(ck, m, "mock.listen", &c->mock_listen) < 0)
            return SL_ECONFIG;
        c->mock_enabled = 1;
    }
    return 0;
}

int sl_config_load(const char *path, sl_config *c, char *err, size_t errlen)
{
    sl_node *root;
    checker ck = {path, err, errlen};
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
        rc = fail(&ck, NULL, "listen", "at least one listener is required");
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

/* ---- policy: backends --------------------------------------------------- */

static void free_backend(sl_backend *b)
{
    free(b->name);
    free(b->provider);
    free(b->region);
    free(b->url);
    free(b->host);
    free(b->ca_file);
    free(b->path_prefix);
    free(b->host_header);
    free(b->pool_key);
}

static int parse_url(checker *ck, const sl_node *n, const char *key,
                     sl_backend *b)
{
    const char *u = n->value, *rest;
    if (strncmp(u, "http://", 7) == 0) {
        b->tls = 0;
        rest = u + 7;
    } else if (strncmp(u, "https://", 8) == 0) {
        b->tls = 1;
        rest = u + 8;
    } else {
        return fail(ck, n, key, "must start with http:// or https://");
    }
    const char *slash = strchr(rest, '/');
    size_t authlen = slash ? (size_t)(slash - rest) : strlen(rest);
    char auth[300];
    if (authlen == 0 || authlen >= sizeof(auth) - 8)
        return fail(ck, n, key, "has no host");
    memcpy(auth, rest, authlen);
    auth[authlen] = '\0';
    if (strchr(auth, '@'))
        return fail(ck, n, key,
                    "must not carry credentials; use the backend's "
                    "credentials reference");
    char host[256];
    uint16_t port = b->tls ? 443 : 80;
    int explicit_port = 0;
    char *colon = strrchr(auth, ':');
    if (colon && (auth[0] != '[' || colon > strchr(auth, ']'))) {
        if (sl_parse_hostport(auth, host, sizeof(host), &port) < 0)
            return fail(ck, n, key, "has a bad port");
        explicit_port = 1;
    } else {
        size_t hl = strlen(auth);
        if (auth[0] == '[') {
            memcpy(host, auth + 1, hl - 2);
            host[hl - 2] = '\0';
        } else {
            memcpy(host, auth, hl + 1);
        }
    }
    b->host = strdup(host);
    b->host_header = strdup(auth);
    const char *path = slash ? slash : "";
    size_t pl = strlen(path);
    while (pl > 0 && path[pl - 1] == '/')
        pl--;
    b->path_prefix = strndup(path, pl);
    b->port = port;
    (void)explicit_port;
    char pk[600];
    snprintf(pk, sizeof(pk), "%s://%s:%u|%s|%d", b->tls ? "https" : "http",
             host, port, b->ca_file ? b->ca_file : "", b->tls_verify);
    b->pool_key = strdup(pk);
    if (!b->host || !b->host_header || !b->path_prefix || !b->pool_key)
        return SL_ENOMEM;
    return 0;
}

static int parse_backend(checker *ck, const sl_node *n, const sl_config *cfg,
                         sl_backend *b)
{
    static const char *const known[] = {
        "provider", "url", "region", "data_classes", "credentials",
        "tls_verify", "ca_file", "timeouts", NULL};
    char key[300];
    snprintf(key, sizeof(key), "backends.%s", n->key);
    if (check_keys(ck, n, key, known) < 0)
        return SL_ECONFIG;
    b->name = strdup(n->key);
    if (!b->name)
        return SL_ENOMEM;
    b->tls_verify = 1;
    b->connect_timeout = cfg->timeouts.upstream_connect;
    b->first_byte_timeout = cfg->timeouts.upstream_first_byte;
    b->idle_timeout = cfg->timeouts.upstream_idle;

    const sl_node *m;
    char k[400];
    snprintf(k, sizeof(k), "%s.provider", key);
    if ((m = sl_node_get(n, "provider")) && get_str(ck, m, k, &b->provider) < 0)
        return SL_ECONFIG;
    snprintf(k, sizeof(k), "%s.region", key);
    if ((m = sl_node_get(n, "region")) && get_str(ck, m, k, &b->region) < 0)
        return SL_ECONFIG;
    snprintf(k, sizeof(k), "%s.tls_verify", key);
    if ((m = sl_node_get(n, "tls_verify")) && get_bool(ck, m, k, &b->tls_verify) < 0)
        return SL_ECONFIG;
    snprintf(k, sizeof(k), "%s.ca_file", key);
    if ((m = sl_node_get(n, "ca_file")) &&
        (get_str(ck, m, k, &b->ca_file) < 0 ||
         resolve_path(ck->file, &b->ca_file) < 0))
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "timeouts"))) {
        static const char *const tk[] = {"connect", "first_byte", "idle", NULL};
        uint64_t *dst[] = {&b->connect_timeout, &b->first_byte_timeout,
                           &b->idle_timeout};
        snprintf(k, sizeof(k), "%s.timeouts", key);
        if (check_keys(ck, m, k, tk) < 0)
            return SL_ECONFIG;
        for (int i = 0; tk[i]; i++) {
            const sl_node *t = sl_node_get(m, tk[i]);
            snprintf(k, sizeof(k), "%s.timeouts.%s", key, tk[i]);
            if (t && get_duration(ck, t, k, dst[i]) < 0)
                return SL_ECONFIG;
        }
    }
    snprintf(k, sizeof(k), "%s.url", key);
    if (!(m = sl_node_get(n, "url")))
        return fail(ck, n, key, "missing 'url'");
    if (get_str(ck, m, k, &b->url) < 0 || parse_url(ck, m, k, b) < 0)
        return SL_ECONFIG;
    if (!b->provider && !(b->provider = strdup("openai")))
        return SL_ENOMEM;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_policy_files(const char *dir, char ***out, int *count,
                             char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: cannot open policy directory: %s", dir,
                 strerror(errno));
        return SL_ECONFIG;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (e->d_name[0] == '.' || !dot ||
            (strcmp(dot, ".yaml") && strcmp(dot, ".yml") && strcmp(dot, ".json")))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, (size_t)cap * sizeof(*names));
            if (!nn)
                goto nomem;
            names = nn;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        if (!(names[n] = malloc(len)))
            goto nomem;
        snprintf(names[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(*names), cmp_names);
    *out = names;
    *count = n;
    return 0;
nomem:
    closedir(d);
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return SL_ENOMEM;
}

/* Sections the C runtime reads; the others belong to the Lua policy
 * compiler and are accepted here as they are. */
static const char *const policy_sections[] = {"backends", "default_backend",
                                              "plugins", NULL};

/* Read a whole file into memory (NUL-terminated). */
static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return SL_EIO;
    sl_buf b;
    sl_buf_init(&b, NULL);
    char tmp[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        if ((rc = sl_buf_append(&b, tmp, n)) < 0)
            break;
    if (rc == 0 && ferror(f))
        rc = SL_EIO;
    fclose(f);
    if (rc == 0)
        rc = sl_buf_append(&b, "", 1);
    if (rc < 0) {
        sl_buf_release(&b);
        return rc;
    }
    *out = b.data;
    *len = b.len - 1;
    return 0;
}

static int valid_plugin_name(const char *s)
{
    if (!*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

/* Find and read the source of each plugin the chain names. The Lua policy
 * compiler checks the rest of the section. */
static int load_plugin_sources(checker *ck, const sl_node *list,
                               const sl_config *cfg, sl_policy *p)
{
    if (list->type != SL_NODE_SEQ)
        return fail(ck, list, "plugins", "expected a list of plugins");
    int i = 0;
    for (const sl_node *it = list->child; it; it = it->next, i++) {
        char key[64];
        snprintf(key, sizeof(key), "plugins[%d].name", i + 1);
        const sl_node *name = sl_node_get(it, "name");
        if (it->type != SL_NODE_MAP || !name)
            return fail(ck, it, key, "each plugin needs a name");
        if (want_scalar(ck, name, key) < 0)
            return SL_ECONFIG;
        if (!valid_plugin_name(name->value))
            return fail(ck, name, key,
                        "'%s' is not a plugin name (a-z, 0-9, '-' and '_')",
                        name->value);
        int known = 0;
        for (int j = 0; j < p->nplugins; j++)
            known |= strcmp(p->plugins[j].name, name->value) == 0;
        if (known)
            continue;
        sl_plugin_src *np = realloc(p->plugins, (size_t)(p->nplugins + 1) *
                                                    sizeof(*np));
        if (!np)
            return SL_ENOMEM;
        p->plugins = np;
        sl_plugin_src *src = &p->plugins[p->nplugins];
        memset(src, 0, sizeof(*src));
        char fallback[PATH_MAX];
        snprintf(fallback, sizeof(fallback), "%s/plugins", sl_home());
        char *fallback_dirs[] = {fallback};
        char *const *dirs = cfg->nplugin_dirs ? cfg->plugin_dirs : fallback_dirs;
        int ndirs = cfg->nplugin_dirs ? cfg->nplugin_dirs : 1;
        for (int d = 0; d < ndirs && !src->code; d++) {
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%s.lua", dirs[d], name->value);
            if (read_file(path, &src->code, &src->len) == 0 &&
                !(src->path = strdup(path)))
                return SL_ENOMEM;
        }
        if (!src->code)
            return fail(ck, name, key, "no plugin '%s' in %s%s", name->value,
                        dirs[0], ndirs > 1 ? " or the other plugin_dirs" : "");
        if (!(src->name = strdup(name->value)))
            return SL_ENOMEM;
        p->nplugins++;
    }
    return 0;
}

static int load_policy_file(checker *ck, const sl_node *root,
                            const sl_config *cfg, sl_policy *p,
                            const sl_node **default_node,
                            const char **default_file)
{
    if (check_keys(ck, root, "", policy_sections) < 0)
        return SL_ECONFIG;
    const sl_node *bes = sl_node_get(root, "backends");
    if (bes) {
        if (bes->type != SL_NODE_MAP)
            return fail(ck, bes, "backends", "expected a map of name: backend");
        sl_backend *nb = realloc(p->backends, (size_t)(p->nbackends + bes->n) *
                                                  sizeof(*nb));
        if (!nb)
            return SL_ENOMEM;
        p->backends = nb;
        for (const sl_node *b = bes->child; b; b = b->next) {
            char key[300];
            snprintf(key, sizeof(key), "backends.%s", b->key);
            if (sl_policy_backend(p, b->key))
                return fail(ck, b, key, "defined twice");
            sl_backend *be = &p->backends[p->nbackends];
            memset(be, 0, sizeof(*be));
            p->nbackends++;
            int rc = parse_backend(ck, b, cfg, be);
            if (rc < 0)
                return rc;
        }
    }
    const sl_node *d = sl_node_get(root, "default_backend");
    if (d) {
        if (want_scalar(ck, d, "default_backend") < 0)
            return SL_ECONFIG;
        *default_node = d;
        *default_file = ck->file;
    }
    const sl_node *pl = sl_node_get(root, "plugins");
    if (pl)
        return load_plugin_sources(ck, pl, cfg, p);
    return 0;
}

/* The version id: SHA-256 over every file and plugin source, in order. */
static void compute_version(sl_policy *p)
{
    mbedtls_sha256_context h;
    unsigned char sum[32];
    mbedtls_sha256_init(&h);
    mbedtls_sha256_starts_ret(&h, 0);
    for (int i = 0; i < p->nfiles; i++) {
        char *code;
        size_t len;
        const char *base = strrchr(p->files[i].path, '/');
        base = base ? base + 1 : p->files[i].path;
        mbedtls_sha256_update_ret(&h, (const unsigned char *)base,
                                  strlen(base) + 1);
        if (read_file(p->files[i].path, &code, &len) == 0) {
            mbedtls_sha256_update_ret(&h, (const unsigned char *)code, len);
            free(code);
        }
    }
    for (int i = 0; i < p->nplugins; i++) {
        mbedtls_sha256_update_ret(&h, (const unsigned char *)p->plugins[i].name,
                                  strlen(p->plugins[i].name) + 1);
        mbedtls_sha256_update_ret(&h, (const unsigned char *)p->plugins[i].code,
                                  p->plugins[i].len);
    }
    mbedtls_sha256_finish_ret(&h, sum);
    mbedtls_sha256_free(&h);
    for (int i = 0; i < 8; i++)
        snprintf(p->version + i * 2, 3, "%02x", sum[i]);
}

int sl_policy_load(const char *dir, const sl_config *cfg, sl_policy **out,
                   char *err, size_t errlen)
{
    char **files = NULL;
    int nfiles = 0;
    int rc = list_policy_files(dir, &files, &nfiles, err, errlen);
    if (rc < 0)
        return rc;
    sl_policy *p = calloc(1, sizeof(*p));
    if (!p || !(p->dir = strdup(dir)) ||
        !(p->files = calloc((size_t)nfiles + 1, sizeof(*p->files)))) {
        rc = SL_ENOMEM;
        goto done;
    }
    p->refs = 1;
    p->default_backend = -1;
    const sl_node *dnode = NULL;
    const char *dfile = NULL;
    for (int i = 0; i < nfiles && rc == 0; i++) {
        checker ck = {files[i], err, errlen};
        p->files[i].path = files[i];
        files[i] = NULL;
        p->nfiles++;
        rc = sl_yaml_load(p->files[i].path, &p->files[i].root, err, errlen);
        if (rc == 0)
            rc = load_policy_file(&ck, p->files[i].root, cfg, p, &dnode,
                                  &dfile);
    }
    if (rc == 0 && dnode) {
        for (int i = 0; i < p->nbackends; i++)
            if (strcmp(p->backends[i].name, dnode->value) == 0)
                p->default_backend = i;
        if (p->default_backend < 0) {
            checker ck = {dfile, err, errlen};
            rc = fail(&ck, dnode, "default_backend",
                      "no backend named '%s'", dnode->value);
        }
    } else if (rc == 0 && p->nbackends == 1) {
        p->default_backend = 0;
    }
    if (rc == 0)
        compute_version(p);
done:
    for (int i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    if (rc < 0) {
        if (p)
            sl_policy_unref(p);
        return rc;
    }
    *out = p;
    return 0;
}

const sl_backend *sl_policy_backend(const sl_policy *p, const char *name)
{
    for (int i = 0; i < p->nbackends; i++)
        if (p->backends[i].name && strcmp(p->backends[i].name, name) == 0)
            return &p->backends[i];
    return NULL;
}

void sl_policy_ref(sl_policy *p)
{
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

void sl_policy_unref(sl_policy *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (int i = 0; i < p->nbackends; i++)
        free_backend(&p->backends[i]);
    free(p->backends);
    for (int i = 0; i < p->nfiles; i++) {
        free(p->files[i].path);
        sl_node_free(p->files[i].root);
    }
    free(p->files);
    for (int i = 0; i < p->nplugins; i++) {
        free(p->plugins[i].name);
        free(p->plugins[i].path);
        free(p->plugins[i].code);
    }
    free(p->plugins);
    free(p->dir);
    free(p);
}
