/* config.h — sluice.yaml (the runtime settings, read at start) and the C
 * side of a policy (the backends the upstream pools connect to).
 *
 * Every error names file, line and key:
 *   "sluice.yaml:14: timeouts.upstream_connect: expected a duration like 5s" */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include "common.h"
#include "yaml_tree.h"

typedef struct sl_listen_cfg {
    char host[256];
    uint16_t port;
    char *tls_cert; /* NULL: plain HTTP */
    char *tls_key;
} sl_listen_cfg;

typedef struct sl_limits {
    uint64_t max_body_bytes;
    uint64_t max_header_bytes;
    uint32_t max_headers;
} sl_limits;

typedef struct sl_timeouts { /* milliseconds */
    uint64_t header_read;
    uint64_t body_read;
    uint64_t keepalive_idle;
    uint64_t upstream_connect;
    uint64_t upstream_first_byte;
    uint64_t upstream_idle;
    uint64_t drain;
} sl_timeouts;

enum { SL_LOG_ERROR, SL_LOG_WARN, SL_LOG_INFO, SL_LOG_DEBUG };

typedef struct sl_config {
    char *path;
    int workers;
    sl_listen_cfg *listen;
    int nlisten;
    char *policy_dir;
    sl_limits limits;
    sl_timeouts timeouts;
    uint32_t upstream_max_idle;     /* idle connections kept per backend */
    uint64_t upstream_idle_timeout; /* ms an idle pooled connection lives */
    uint64_t dns_ttl;               /* ms a resolved address is reused */
    char *access_log;               /* path, "stdout", or NULL (off) */
    char *error_log;                /* path or NULL (stderr) */
    int log_level;
    int mock_enabled; /* run the built-in mock provider */
    sl_listen_cfg mock_listen;
    char **plugin_dirs; /* searched in order for NAME.lua */
    int nplugin_dirs;
    char **secret_dirs; /* where file: secrets may live */
    int nsecret_dirs;
    char **secret_env; /* env: secrets plugins may read */
    int nsecret_env;
    uint64_t lua_memory_limit; /* bytes a worker's Lua state may hold */
    int skip_secrets; /* check only the form of secret references (sluice
                         check runs where the secrets are not) */
    uint64_t lua_time_budget;   /* ms one plugin call may run */
    uint64_t lua_memory_budget; /* bytes one plugin call may add */
} sl_config;

/* Defaults for every setting (no listener, no policy dir). */
void sl_config_defaults(sl_config *c);

/* Load sluice.yaml. Relative paths inside it resolve against its folder.
 * The caller frees with sl_config_free(). */
int sl_config_load(const char *path, sl_config *c, char *err, size_t errlen);
void sl_config_free(sl_config *c);

/* A backend named in policy. */
typedef struct sl_backend {
    char *name;
    char *provider;
    char *region;
    char *url;
    char *host; /* for DNS and SNI */
    uint16_t port;
    int tls;
    int tls_verify;
    char *ca_file;        /* NULL: system bundle */
    char *path_prefix;    /* prepended to the request path ("" when none) */
    char *host_header;    /* "host" or "host:port" as sent upstream */
    char *pool_key;       /* pools are shared by backends with equal keys */
    char *api_version;    /* azure: the api-version query parameter */
    char *credential_ref; /* "env:NAME" or "file:/path", or NULL */
    char *credential;     /* the secret itself: never logged, wiped on free */
    uint64_t connect_timeout, first_byte_timeout, idle_timeout; /* ms */
} sl_backend;

/* One policy file as loaded, kept for the Lua policy compiler. */
typedef struct sl_policy_file {
    char *path;
    sl_node *root;
} sl_policy_file;

/* The source of a plugin the chain names, read when the policy loads so a
 * version is the policy files and the plugin code together. */
typedef struct sl_plugin_src {
    char *name;
    char *path;
    char *code;
    size_t len;
} sl_plugin_src;

/* A policy version, immutable once loaded and shared by all workers
 * through reference counting. */
typedef struct sl_policy {
    int refs; /* atomic */
    char *dir;
    char version[17]; /* first 16 hex digits of the bundle's SHA-256 */
    sl_backend *backends;
    int nbackends;
    int default_backend; /* index or -1 */
    sl_policy_file *files;
    int nfiles;
    sl_plugin_src *plugins;
    int nplugins;
} sl_policy;

/* Load every *.yaml, *.yml and *.json file of dir (in name order). The
 * result holds one reference. */
int sl_policy_load(const char *dir, const sl_config *cfg, sl_policy **out,
                   char *err, size_t errlen);
const sl_backend *sl_policy_backend(const sl_policy *p, const char *name);
void sl_policy_ref(sl_policy *p);
/* Drop a reference; the last one frees the policy. */
void sl_policy_unref(sl_policy *p);

#endif
