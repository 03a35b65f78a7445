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

/* Admin roles; a token holds a set of them (admin implies every other). */
enum {
    SL_ROLE_READ = 1,    /* status, versions, audit, metrics */
    SL_ROLE_PROPOSE = 2, /* validate, diff, submit a change */
    SL_ROLE_APPROVE = 4, /* approve someone else's change, publish it */
    SL_ROLE_ADMIN = 8,   /* publish directly, rollback, reload */
};

/* An admin bearer token as configured: only its SHA-256 is kept. */
typedef struct sl_admin_token {
    char *name;
    char sha256[65]; /* lowercase hex of SHA-256(token) */
    unsigned roles;  /* SL_ROLE_* bits */
} sl_admin_token;

/* The admin API (sluice.yaml `admin:`); enabled when a listener is set. */
typedef struct sl_admin_cfg {
    int enabled;
    sl_listen_cfg listen;
    char *state_dir; /* versions, changes; default: state/ beside the config */
    char *audit_log; /* default: <state_dir>/admin-audit.log */
    sl_admin_token *tokens;
    int ntokens;
    uint32_t max_failures;   /* failed logins per address per window */
    uint64_t failure_window; /* ms; also how long an address is locked out */
    int keep_versions;       /* stored versions kept for rollback */
} sl_admin_cfg;

/* The audit log's HTTP sink (sluice.yaml `log.audit_http`): batches of
 * records POSTed as newline-delimited JSON. Header values are secret
 * references, resolved when the logs open (log.c), never logged. */
typedef struct sl_audit_http_cfg {
    char *url; /* NULL: no HTTP sink */
    char *ca_file;
    uint64_t batch;   /* bytes per POST at most (a record is never split) */
    uint64_t flush;   /* ms a record waits for its batch to fill */
    uint64_t timeout; /* ms for one POST: connect, send, answer */
    char **header_names;
    char **header_refs; /* "env:NAME" or "file:/path" */
    int *header_lines;  /* where each was configured, for errors */
    int nheaders;
} sl_audit_http_cfg;

/* sluice.yaml `cluster:`: several instances sharing one Redis (see
 * cluster.h and docs/scale-out.md). Disabled when the section is absent. */
typedef struct sl_cluster_cfg {
    int enabled;
    char host[256];
    uint16_t port;
    int db;
    char *password_ref;      /* "env:NAME" or "file:/path", or NULL */
    char *instance;          /* this instance's name in the cluster */
    char *prefix;            /* of every Redis key and channel */
    uint64_t flush_interval; /* ms an increment waits before it is sent */
    uint64_t flush_units;    /* units pending that are sent at once */
    int fail_closed;         /* default for counters while Redis is down */
    uint64_t timeout;        /* ms to connect, and for a reply */
} sl_cluster_cfg;

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
    uint64_t audit_queue;           /* bytes of audit records a sink may hold */
    sl_audit_http_cfg audit_http;
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
    sl_admin_cfg admin;
    struct {
        int consumer_labels; /* the consumer's team as a metric label */
        int max_series;      /* label sets per metric family */
    } metrics;               /* sluice.yaml `metrics:` */
    sl_cluster_cfg cluster;
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
/* The paths "dir/NAME" of dir's *.yaml, *.yml and *.json files (not the
 * hidden ones), in name order. Returns 0 (caller frees each path and the
 * array), SL_ECONFIG (message in err) or SL_ENOMEM. */
int sl_policy_list_files(const char *dir, char ***out, int *count, char *err,
                         size_t errlen);
const sl_backend *sl_policy_backend(const sl_policy *p, const char *name);
void sl_policy_ref(sl_policy *p);
/* Drop a reference; the last one frees the policy. */
void sl_policy_unref(sl_policy *p);

#endif
