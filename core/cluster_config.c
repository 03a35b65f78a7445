/* cluster_config.c — sluice.yaml `cluster:` (see docs/scale-out.md):
 *
 *   cluster:
 *     address: redis://10.0.0.5:6379/0
 *     password: env:SLUICE_REDIS_PASSWORD
 *     instance: gw-eu-1
 *     flush_interval: 5ms
 *     flush_units: 100
 *     fail: open
 *
 * rediss:// is refused: hiredis 0.14 (Debian's) has no TLS of its own, and
 * a Redis reached over a network it does not trust belongs behind a TLS
 * tunnel on loopback (stunnel, spiped) until a hiredis with TLS is
 * packaged. A password is taken by reference only, never inline. */
#include "cluster_config.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DEFAULT_PORT 6379

/* redis://host[:port][/db] into c; "" when fine, else the reason. */
static const char *parse_address(const char *a, sl_cluster_cfg *c)
{
    if (strncmp(a, "rediss://", 9) == 0)
        return "rediss:// is not supported: this build's Redis client "
               "(hiredis 0.14) has no TLS; reach Redis over a private "
               "network or through a TLS tunnel on loopback (stunnel, "
               "spiped) and use redis://";
    if (strncmp(a, "redis://", 8) != 0)
        return "expected redis://host:port/db";
    a += 8;
    if (strchr(a, '@'))
        return "no credentials in the address: set cluster.password to "
               "env:NAME or file:/path";
    char hostport[300];
    const char *slash = strchr(a, '/');
    size_t n = slash ? (size_t)(slash - a) : strlen(a);
    if (n == 0 || n >= sizeof(hostport))
        return "expected redis://host:port/db";
    memcpy(hostport, a, n);
    hostport[n] = 0;
    if (!strchr(hostport, ':')) { /* no port: Redis's own */
        if (strlen(hostport) >= sizeof(c->host))
            return "expected redis://host:port/db";
        memcpy(c->host, hostport, strlen(hostport) + 1);
        c->port = DEFAULT_PORT;
    } else if (sl_parse_hostport(hostport, c->host, sizeof(c->host), &c->port) <
                   0 ||
               c->port == 0) {
        return "expected redis://host:port/db";
    }
    c->db = 0;
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 1000)
            return "the database after / is a number (0 by default)";
        c->db = (int)db;
    }
    return "";
}

static int default_instance(sl_cluster_cfg *c)
{
    char host[200] = "sluice";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = 0;
    char name[256];
    snprintf(name, sizeof(name), "%s-%ld", host, (long)getpid());
    return (c->instance = strdup(name)) ? 0 : SL_ENOMEM;
}

static int check_name(sl_ck *ck, const sl_node *n, const char *key,
                      const char *v)
{
    if (!*v || strlen(v) > 100 ||
        v[strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789-_.:")])
        return sl_ck_fail(ck, n, key,
                          "expected 1 to 100 letters, digits, '-', '_', "
                          "'.' or ':'");
    return 0;
}

int sl_cluster_config_parse(sl_ck *ck, const sl_node *n, sl_cluster_cfg *c)
{
    static const char *const known[] = {
        "address",     "password", "instance", "prefix", "flush_interval",
        "flush_units", "fail",     "timeout",  NULL};
    const sl_node *m;
    uint64_t v;
    c->flush_interval = 5;
    c->flush_units = 100;
    c->timeout = 1000;
    if (sl_ck_keys(ck, n, "cluster", known) < 0)
        return SL_ECONFIG;
    if (!(m = sl_node_get(n, "address")))
        return sl_ck_fail(ck, n, "cluster",
                          "missing 'address' "
                          "(redis://host:port/db)");
    if (sl_ck_scalar(ck, m, "cluster.address") < 0)
        return SL_ECONFIG;
    const char *why = parse_address(m->value, c);
    if (*why)
        return sl_ck_fail(ck, m, "cluster.address", "%s", why);
    if ((m = sl_node_get(n, "password"))) {
        if (sl_ck_str(ck, m, "cluster.password", &c->password_ref) < 0)
            return SL_ECONFIG;
        if (strncmp(c->password_ref, "env:", 4) != 0 &&
            strncmp(c->password_ref, "file:", 5) != 0)
            return sl_ck_fail(ck, m, "cluster.password",
                              "given by reference (env:NAME or "
                              "file:/path), never inline");
    }
    if ((m = sl_node_get(n, "instance")) &&
        (sl_ck_str(ck, m, "cluster.instance", &c->instance) < 0 ||
         check_name(ck, m, "cluster.instance", c->instance) < 0))
        return SL_ECONFIG;
    if (!c->instance && default_instance(c) < 0)
        return SL_ENOMEM;
    if ((m = sl_node_get(n, "prefix")) &&
        (sl_ck_str(ck, m, "cluster.prefix", &c->prefix) < 0 ||
         check_name(ck, m, "cluster.prefix", c->prefix) < 0))
        return SL_ECONFIG;
    if (!c->prefix && !(c->prefix = strdup("sluice:")))
        return SL_ENOMEM;
    if ((m = sl_node_get(n, "flush_interval"))) {
        if (sl_ck_duration(ck, m, "cluster.flush_interval",
                           &c->flush_interval) < 0)
            return SL_ECONFIG;
        if (c->flush_interval > 1000)
            return sl_ck_fail(ck, m, "cluster.flush_interval",
                              "at most 1s: counters would lag too far "
                              "behind");
    }
    if ((m = sl_node_get(n, "flush_units"))) {
        if (sl_ck_uint(ck, m, "cluster.flush_units", 1, 1000000000, &v) < 0)
            return SL_ECONFIG;
        c->flush_units = v;
    }
    if ((m = sl_node_get(n, "fail"))) {
        if (sl_ck_scalar(ck, m, "cluster.fail") < 0)
            return SL_ECONFIG;
        if (strcmp(m->value, "open") == 0)
            c->fail_closed = 0;
        else if (strcmp(m->value, "closed") == 0)
            c->fail_closed = 1;
        else
            return sl_ck_fail(ck, m, "cluster.fail",
                              "expected open (count locally while Redis "
                              "is down) or closed (refuse)");
    }
    if ((m = sl_node_get(n, "timeout")) &&
        sl_ck_duration(ck, m, "cluster.timeout", &c->timeout) < 0)
        return SL_ECONFIG;
    c->enabled = 1;
    return 0;
}

void sl_cluster_config_free(sl_cluster_cfg *c)
{
    free(c->password_ref);
    free(c->instance);
    free(c->prefix);
    memset(c, 0, sizeof(*c));
}
