/* policy.c — a policy version from the policy directory: the backends the
 * C runtime connects to, the plugin sources the chain names, the files
 * themselves for the Lua policy compiler, and the version id. */
#include "buf.h"
#include "config.h"
#include "config_check.h"
#include "secret.h"
#include "spec_runner.h"
#include "util.h"

#include <mbedtls/sha256.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

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
    free(b->api_version);
    free(b->credential_ref);
    sl_secret_free(b->credential);
}

/* Resolve a credential reference (secret.h). Policies may name any
 * environment variable; files only below secret_dirs. */
static int resolve_credential(sl_ck *ck, const sl_node *n, const char *key,
                              const sl_config *cfg, sl_backend *b)
{
    const char *ref = n->value;
    if (strncmp(ref, "env:", 4) != 0 && strncmp(ref, "file:", 5) != 0)
        return sl_ck_fail(ck, n, key,
                          "secrets are given by reference (env:NAME or "
                          "file:/path), never inline");
    if (!(b->credential_ref = strdup(ref)))
        return SL_ENOMEM;
    if (cfg->skip_secrets)
        return 0;
    sl_secret_rules rules = {cfg->secret_dirs, cfg->nsecret_dirs, NULL, -1};
    const char *why;
    if (sl_secret_resolve(ref, &rules, &b->credential, NULL, &why) < 0)
        return sl_ck_fail(ck, n, key, "%s: %s", ref, why);
    for (const char *c = b->credential; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return sl_ck_fail(
                ck, n, key, "the secret in %s holds a control character", ref);
    return 0;
}

static int parse_url(sl_ck *ck, const sl_node *n, const char *key,
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
        return sl_ck_fail(ck, n, key, "must start with http:// or https://");
    }
    const char *slash = strchr(rest, '/');
    size_t authlen = slash ? (size_t)(slash - rest) : strlen(rest);
    char auth[300];
    if (authlen == 0 || authlen >= sizeof(auth) - 8)
        return sl_ck_fail(ck, n, key, "has no host");
    memcpy(auth, rest, authlen);
    auth[authlen] = '\0';
    if (strchr(auth, '@'))
        return sl_ck_fail(ck, n, key,
                          "must not carry credentials; use the backend's "
                          "credentials reference");
    char host[256];
    uint16_t port = b->tls ? 443 : 80;
    int explicit_port = 0;
    char *colon = strrchr(auth, ':');
    if (colon && (auth[0] != '[' || colon > strchr(auth, ']'))) {
        if (sl_parse_hostport(auth, host, sizeof(host), &port) < 0)
            return sl_ck_fail(ck, n, key, "has a bad port");
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

static int parse_backend(sl_ck *ck, const sl_node *n, const sl_config *cfg,
                         sl_backend *b)
{
    static const char *const known[] = {
        "provider",   "url",     "region",   "data_classes", "credentials",
        "tls_verify", "ca_file", "timeouts", "api_version",  NULL};
    char key[300];
    snprintf(key, sizeof(key), "backends.%s", n->key);
    if (sl_ck_keys(ck, n, key, known) < 0)
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
    if ((m = sl_node_get(n, "provider")) &&
        sl_ck_str(ck, m, k, &b->provider) < 0)
        return SL_ECONFIG;
    snprintf(k, sizeof(k), "%s.region", key);
    if ((m = sl_node_get(n, "region")) && sl_ck_str(ck, m, k, &b->region) < 0)
        return SL_ECONFIG;
    snprintf(k, sizeof(k), "%s.api_version", key);
    if ((m = sl_node_get(n, "api_version")) &&
        sl_ck_str(ck, m, k, &b->api_version) < 0)
        return SL_ECONFIG;
    snprintf(k, sizeof(k), "%s.tls_verify", key);
    if ((m = sl_node_get(n, "tls_verify")) &&
        sl_ck_bool(ck, m, k, &b->tls_verify) < 0)
        return SL_ECONFIG;
    snprintf(k, sizeof(k), "%s.ca_file", key);
    if ((m = sl_node_get(n, "ca_file")) &&
        (sl_ck_str(ck, m, k, &b->ca_file) < 0 ||
         sl_ck_path(ck->file, &b->ca_file) < 0))
        return SL_ECONFIG;
    if ((m = sl_node_get(n, "timeouts"))) {
        static const char *const tk[] = {"connect", "first_byte", "idle", NULL};
        uint64_t *dst[] = {&b->connect_timeout, &b->first_byte_timeout,
                           &b->idle_timeout};
        snprintf(k, sizeof(k), "%s.timeouts", key);
        if (sl_ck_keys(ck, m, k, tk) < 0)
            return SL_ECONFIG;
        for (int i = 0; tk[i]; i++) {
            const sl_node *t = sl_node_get(m, tk[i]);
            snprintf(k, sizeof(k), "%s.timeouts.%s", key, tk[i]);
            if (t && sl_ck_duration(ck, t, k, dst[i]) < 0)
                return SL_ECONFIG;
        }
    }
    snprintf(k, sizeof(k), "%s.url", key);
    if (!(m = sl_node_get(n, "url")))
        return sl_ck_fail(ck, n, key, "missing 'url'");
    if (sl_ck_str(ck, m, k, &b->url) < 0 || parse_url(ck, m, k, b) < 0)
        return SL_ECONFIG;
    if (!b->provider && !(b->provider = strdup("openai")))
        return SL_ENOMEM;
    static const char *const providers[] = {
        "openai", "azure", "anthropic", "gemini", "openai_compat", NULL};
    int known_provider = 0;
    for (int i = 0; providers[i]; i++)
        known_provider |= strcmp(b->provider, providers[i]) == 0;
    if (!known_provider)
        return sl_ck_fail(ck, sl_node_get(n, "provider"), key,
                          "provider '%s' is not one of openai, azure, "
                          "anthropic, gemini, openai_compat",
                          b->provider);
    snprintf(k, sizeof(k), "%s.credentials", key);
    if ((m = sl_node_get(n, "credentials")) &&
        (sl_ck_scalar(ck, m, k) < 0 ||
         resolve_credential(ck, m, k, cfg, b) < 0))
        return SL_ECONFIG;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int sl_policy_list_files(const char *dir, char ***out, int *count, char *err,
                         size_t errlen)
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
            (strcmp(dot, ".yaml") && strcmp(dot, ".yml") &&
             strcmp(dot, ".json")))
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
static const char *const policy_sections[] = {
    "backends",   "default_backend",         "plugins",    "models",
    "exceptions", "exceptions_max_lifetime", "governance", NULL};

/* governance.require_approval: change kinds that need a second person on
 * top of the built-in ones (admin.c); the admin API reads the list. */
static int check_governance(sl_ck *ck, const sl_node *g)
{
    static const char *const known[] = {"require_approval", NULL};
    static const char *const kinds[] = {
        "backends", "credentials", "data_classes", "plugins_removed", "plugins",
        "models",   "consumers",   "quotas",       "exceptions",      NULL};
    if (sl_ck_keys(ck, g, "governance", known) < 0)
        return SL_ECONFIG;
    const sl_node *l = sl_node_get(g, "require_approval");
    if (!l)
        return 0;
    if (l->type != SL_NODE_SEQ)
        return sl_ck_fail(ck, l, "governance.require_approval",
                          "expected a list of change kinds");
    for (const sl_node *k = l->child; k; k = k->next) {
        int ok = 0;
        if (sl_ck_scalar(ck, k, "governance.require_approval") < 0)
            return SL_ECONFIG;
        for (int i = 0; kinds[i]; i++)
            ok |= strcmp(k->value, kinds[i]) == 0;
        if (!ok)
            return sl_ck_fail(ck, k, "governance.require_approval",
                              "'%s' is not a change kind (backends, "
                              "credentials, data_classes, plugins_removed, "
                              "plugins, models, consumers, quotas, "
                              "exceptions)",
                              k->value);
    }
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
static int load_plugin_sources(sl_ck *ck, const sl_node *list,
                               const sl_config *cfg, sl_policy *p)
{
    if (list->type != SL_NODE_SEQ)
        return sl_ck_fail(ck, list, "plugins", "expected a list of plugins");
    int i = 0;
    for (const sl_node *it = list->child; it; it = it->next, i++) {
        char key[64];
        snprintf(key, sizeof(key), "plugins[%d].name", i + 1);
        const sl_node *name = sl_node_get(it, "name");
        if (it->type != SL_NODE_MAP || !name)
            return sl_ck_fail(ck, it, key, "each plugin needs a name");
        if (sl_ck_scalar(ck, name, key) < 0)
            return SL_ECONFIG;
        if (!valid_plugin_name(name->value))
            return sl_ck_fail(
                ck, name, key,
                "'%s' is not a plugin name (a-z, 0-9, '-' and '_')",
                name->value);
        int known = 0;
        for (int j = 0; j < p->nplugins; j++)
            known |= strcmp(p->plugins[j].name, name->value) == 0;
        if (known)
            continue;
        sl_plugin_src *np =
            realloc(p->plugins, (size_t)(p->nplugins + 1) * sizeof(*np));
        if (!np)
            return SL_ENOMEM;
        p->plugins = np;
        sl_plugin_src *src = &p->plugins[p->nplugins];
        memset(src, 0, sizeof(*src));
        char fallback[PATH_MAX];
        snprintf(fallback, sizeof(fallback), "%s/plugins", sl_home());
        char *fallback_dirs[] = {fallback};
        char *const *dirs =
            cfg->nplugin_dirs ? cfg->plugin_dirs : fallback_dirs;
        int ndirs = cfg->nplugin_dirs ? cfg->nplugin_dirs : 1;
        for (int d = 0; d < ndirs && !src->code; d++) {
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%s.lua", dirs[d], name->value);
            if (sl_read_file(path, &src->code, &src->len) == 0 &&
                !(src->path = strdup(path)))
                return SL_ENOMEM;
        }
        if (!src->code)
            return sl_ck_fail(ck, name, key, "no plugin '%s' in %s%s",
                              name->value, dirs[0],
                              ndirs > 1 ? " or the other plugin_dirs" : "");
        if (!(src->name = strdup(name->value)))
            return SL_ENOMEM;
        p->nplugins++;
    }
    return 0;
}

static int load_policy_file(sl_ck *ck, const sl_node *root,
                            const sl_config *cfg, sl_policy *p,
                            const sl_node **default_node,
                            const char **default_file)
{
    if (sl_ck_keys(ck, root, "", policy_sections) < 0)
        return SL_ECONFIG;
    const sl_node *gov = sl_node_get(root, "governance");
    if (gov && check_governance(ck, gov) < 0)
        return SL_ECONFIG;
    const sl_node *bes = sl_node_get(root, "backends");
    if (bes) {
        if (bes->type != SL_NODE_MAP)
            return sl_ck_fail(ck, bes, "backends",
                              "expected a map of name: backend");
        sl_backend *nb =
            realloc(p->backends, (size_t)(p->nbackends + bes->n) * sizeof(*nb));
        if (!nb)
            return SL_ENOMEM;
        p->backends = nb;
        for (const sl_node *b = bes->child; b; b = b->next) {
            char key[300];
            snprintf(key, sizeof(key), "backends.%s", b->key);
            if (sl_policy_backend(p, b->key))
                return sl_ck_fail(ck, b, key, "defined twice");
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
        if (sl_ck_scalar(ck, d, "default_backend") < 0)
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
        if (sl_read_file(p->files[i].path, &code, &len) == 0) {
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
    int rc = sl_policy_list_files(dir, &files, &nfiles, err, errlen);
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
        sl_ck ck = {files[i], err, errlen};
        p->files[i].path = files[i];
        files[i] = NULL;
        p->nfiles++;
        rc = sl_yaml_load(p->files[i].path, &p->files[i].root, err, errlen);
        if (rc == 0)
            rc =
                load_policy_file(&ck, p->files[i].root, cfg, p, &dnode, &dfile);
    }
    if (rc == 0 && dnode) {
        for (int i = 0; i < p->nbackends; i++)
            if (strcmp(p->backends[i].name, dnode->value) == 0)
                p->default_backend = i;
        if (p->default_backend < 0) {
            sl_ck ck = {dfile, err, errlen};
            rc = sl_ck_fail(&ck, dnode, "default_backend",
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
