/* admin_cli.c — `sluice policy ...`: the policy lifecycle from a shell or
 * a CI pipeline, over the admin API. One blocking request per command
 * (plain HTTP or HTTPS with certificate verification); the answer's JSON
 * goes to stdout, and the exit status says whether it was a success (0),
 * a refusal (1: invalid policy, missing role, needs approval...) or a
 * usage or connection problem (2). */
#include "admin_int.h"
#include "lua_services.h"
#include "tls.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <mbedtls/sha256.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static const char cli_usage[] =
    "usage: sluice policy <command> [--admin URL] [--token-file F]\n"
    "\n"
    "  validate [DIR]            dry run: compile, check, run each init\n"
    "  diff [DIR]                governance diff against the live version\n"
    "  submit [DIR] [-m TEXT]    propose DIR as a change (prints its id)\n"
    "  approve ID                approve someone else's change\n"
    "  publish ID                publish an (approved) change\n"
    "  publish --dir DIR         publish DIR directly (admin; audited)\n"
    "  rollback [VERSION]        back to the previous (or a given) version\n"
    "  reload                    reload the gateway's policy directory\n"
    "  status [--json]           version, instances, backends and health\n"
    "  changes | versions | audit  what is proposed, kept, done\n"
    "  tokens list               admin tokens: names, roles, where defined\n"
    "  tokens add NAME --roles R[,R...] [--sha256 HEX | --hash-of F]\n"
    "                            add a token (admin); without a hash sluice\n"
    "                            makes one and shows it once (--out F: write\n"
    "                            it to F, mode 0600, instead of stdout)\n"
    "  tokens revoke NAME        revoke a token added through the API\n"
    "  hash-token                SHA-256 of the token (for sluice.yaml)\n"
    "\n"
    "DIR defaults to ./policies; plugins come from --plugins DIR (default\n"
    "DIR/../plugins when it exists). --admin defaults to $SLUICE_ADMIN or\n"
    "http://127.0.0.1:9090; --token-file to $SLUICE_ADMIN_TOKEN_FILE.\n"
    "--ca-file F trusts F for an https:// admin URL.\n";

typedef struct cli {
    const char *url, *token_file, *ca_file, *dir, *plugins, *message;
    const char *arg;     /* the command's (last) positional argument */
    const char *args[4]; /* every positional argument */
    int nargs;
    const char *roles, *sha256, *hash_of, *out;
    int json;
    char host[256];
    char port[8];
    int tls;
    char token[512];
} cli;

/* ---- the bundle -------------------------------------------------------- */

static int has_ext(const char *name, const char *const *exts)
{
    const char *dot = strrchr(name, '.');
    for (int i = 0; dot && exts[i]; i++)
        if (strcmp(dot, exts[i]) == 0)
            return 1;
    return 0;
}

static int add_dir(sl_buf *b, int *first, const char *dir, const char *prefix,
                   const char *const *exts, int required)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (!required)
            return 0;
        fprintf(stderr, "sluice policy: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_ext(e->d_name, exts))
            continue;
        char path[PATH_MAX], key[PATH_MAX], *data;
        size_t len;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (sl_read_file(path, &data, &len) < 0) {
            fprintf(stderr, "sluice policy: cannot read %s\n", path);
            rc = -1;
            break;
        }
        snprintf(key, sizeof(key), "%s%s", prefix, e->d_name);
        sl_buf_puts(b, *first ? "" : ",");
        *first = 0;
        sl_admin__jstr(b, key);
        sl_buf_puts(b, ":");
        sl_admin__jstr(b, data);
        free(data);
    }
    closedir(d);
    return rc;
}

/* {"files": {...}[, "message": m]} from the policy and plugin folders. */
static int bundle(const cli *c, sl_buf *b)
{
    static const char *const pol[] = {".yaml", ".yml", ".json", NULL};
    static const char *const lua[] = {".lua", NULL};
    const char *dir = c->dir ? c->dir : "policies";
    char plugins[PATH_MAX];
    if (c->plugins)
        snprintf(plugins, sizeof(plugins), "%s", c->plugins);
    else
        snprintf(plugins, sizeof(plugins), "%s/../plugins", dir);
    int first = 1;
    sl_buf_puts(b, "{\"files\":{");
    if (add_dir(b, &first, dir, "policies/", pol, 1) < 0 ||
        add_dir(b, &first, plugins, "plugins/", lua, c->plugins != NULL) < 0)
        return -1;
    sl_buf_puts(b, "}");
    if (c->message) {
        sl_buf_puts(b, ",\"message\":");
        sl_admin__jstr(b, c->message);
    }
    sl_buf_puts(b, "}");
    return b->data ? 0 : -1;
}

/* ---- one HTTP exchange ------------------------------------------------- */

static int parse_url(cli *c)
{
    const char *u = c->url, *rest;
    if (strncmp(u, "http://", 7) == 0)
        rest = u + 7;
    else if (strncmp(u, "https://", 8) == 0) {
        rest = u + 8;
        c->tls = 1;
    } else
        return -1;
    size_t n = strcspn(rest, "/");
    char auth[sizeof(c->host)];
    if (n == 0 || n >= sizeof(auth))
        return -1;
    memcpy(auth, rest, n);
    auth[n] = '\0';
    uint16_t port = c->tls ? 443 : 80;
    if (strrchr(auth, ':') && auth[n - 1] != ']') {
        if (sl_parse_hostport(auth, c->host, sizeof(c->host), &port) < 0)
            return -1;
    } else {
        snprintf(c->host, sizeof(c->host), "%s", auth);
    }
    snprintf(c->port, sizeof(c->port), "%u", port);
    return 0;
}

static int dial(const cli *c)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    if (getaddrinfo(c->host, c->port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int tls_flush(int fd, sl_tls *s)
{
    const char *d;
    size_t n;
    while ((n = sl_tls_pending(s, &d)) > 0) {
        if (send_all(fd, d, n) < 0)
            return -1;
        sl_tls_out_consumed(s, n);
    }
    return 0;
}

/* Read ciphertext into the session: 0, or -1 at EOF / error. */
static int tls_fill(int fd, sl_tls *s)
{
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0)
        return -1;
    return sl_tls_feed(s, buf, (size_t)n) < 0 ? -1 : 0;
}

static int exchange_tls(const cli *c, int fd, const sl_buf *req, sl_buf *resp)
{
    sl_tls_config *cfg;
    char err[512];
    if (sl_tls_client_config_new(&cfg, c->ca_file, 1, err, sizeof(err)) < 0) {
        fprintf(stderr, "sluice policy: %s\n", err);
        return -1;
    }
    sl_tls *s = sl_tls_new(cfg, c->host);
    int rc = s ? 0 : -1;
    while (rc == 0) {
        int hs = sl_tls_handshake(s);
        if (tls_flush(fd, s) < 0)
            rc = -1;
        else if (hs == 0)
            break;
        else if (hs != SL_EAGAIN || tls_fill(fd, s) < 0) {
            fprintf(stderr, "sluice policy: TLS with %s: %s\n", c->host,
                    sl_tls_error(s));
            rc = -1;
        }
    }
    if (rc == 0 &&
        (sl_tls_write(s, req->data, req->len) < 0 || tls_flush(fd, s) < 0))
        rc = -1;
    char buf[16384];
    while (rc == 0) {
        int n = sl_tls_read(s, buf, sizeof(buf));
        if (n > 0)
            sl_buf_append(resp, buf, (size_t)n);
        else if (n == SL_EAGAIN) {
            if (tls_fill(fd, s) < 0)
                break; /* the server closed: the answer is whole */
        } else
            break;
    }
    sl_tls_free(s);
    sl_tls_config_free(cfg);
    return rc;
}

/* Send method path [body]; print the answer's body (or, with `answer`,
 * keep it there, NUL-terminated); return its status. */
static int call_into(cli *c, const char *method, const char *path,
                     const sl_buf *body, sl_buf *answer)
{
    sl_buf req, resp;
    sl_buf_init(&req, NULL);
    sl_buf_init(&resp, NULL);
    sl_buf_printf(&req,
                  "%s %s HTTP/1.1\r\nhost: %s\r\nauthorization: Bearer %s\r\n"
                  "content-type: application/json\r\ncontent-length: %zu\r\n"
                  "connection: close\r\n\r\n",
                  method, path, c->host, c->token, body ? body->len : 0);
    if (body)
        sl_buf_append(&req, body->data, body->len);
    int fd = dial(c);
    if (fd < 0) {
        fprintf(stderr, "sluice policy: cannot connect to %s: %s\n", c->url,
                strerror(errno));
        sl_buf_release(&req);
        return -1;
    }
    int rc = 0;
    if (c->tls)
        rc = exchange_tls(c, fd, &req, &resp);
    else if (send_all(fd, req.data, req.len) < 0)
        rc = -1;
    else {
        char buf[16384];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
            sl_buf_append(&resp, buf, (size_t)n);
    }
    close(fd);
    sl_buf_release(&req);
    int status = -1;
    if (rc == 0 && sl_buf_append(&resp, "", 1) == 0 &&
        sscanf(resp.data, "HTTP/1.%*d %d", &status) == 1) {
        const char *bodyp = strstr(resp.data, "\r\n\r\n");
        if (answer && status < 300 &&
            sl_buf_append(answer, bodyp ? bodyp + 4 : "",
                          strlen(bodyp ? bodyp + 4 : "") + 1) == 0)
            answer->len--; /* a C string, the NUL not counted */
        else
            printf("%s\n", bodyp ? bodyp + 4 : "");
        if (status >= 300) {
            const char *m = bodyp ? strstr(bodyp, "\"message\":\"") : NULL;
            const char *end = m ? strstr(m + 11, "\",\"") : NULL;
            fprintf(stderr, "sluice policy: %s %s: HTTP %d%s%.*s\n", method,
                    path, status, m ? ": " : "",
                    m && end ? (int)(end - m - 11) : 0, m ? m + 11 : "");
        }
    } else {
        fprintf(stderr, "sluice policy: no answer from %s\n", c->url);
    }
    sl_buf_release(&resp);
    return status;
}

static int call(cli *c, const char *method, const char *path,
                const sl_buf *body)
{
    return call_into(c, method, path, body, NULL);
}

/* ---- commands ----------------------------------------------------------- */

static int read_token(cli *c)
{
    const char *f =
        c->token_file ? c->token_file : getenv("SLUICE_ADMIN_TOKEN_FILE");
    char *data;
    size_t len;
    if (!f) {
        fprintf(stderr, "sluice policy: give the token with --token-file F "
                        "(or $SLUICE_ADMIN_TOKEN_FILE)\n");
        return -1;
    }
    if (sl_read_file(f, &data, &len) < 0) {
        fprintf(stderr, "sluice policy: %s: %s\n", f, strerror(errno));
        return -1;
    }
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' ||
                   data[len - 1] == ' '))
        data[--len] = '\0';
    int ok = len > 0 && len < sizeof(c->token);
    for (size_t i = 0; ok && i < len; i++)
        ok = data[i] > 0x20 && data[i] < 0x7f;
    if (ok)
        memcpy(c->token, data, len + 1);
    else
        fprintf(stderr, "sluice policy: %s does not hold a token\n", f);
    free(data);
    return ok ? 0 : -1;
}

static int hash_token(cli *c)
{
    if (read_token(c) < 0)
        return 2;
    unsigned char sum[32];
    mbedtls_sha256_ret((const unsigned char *)c->token, strlen(c->token), sum,
                       0);
    for (int i = 0; i < 32; i++)
        printf("%02x", sum[i]);
    printf("\n");
    return 0;
}

static int exit_of(int status)
{
    return status < 0 ? 2 : status < 300 ? 0 : 1;
}

static int with_bundle(cli *c, const char *path)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    int rc = bundle(c, &b) < 0 ? 2 : exit_of(call(c, "POST", path, &b));
    sl_buf_release(&b);
    return rc;
}

static int with_json(cli *c, const char *path, const char *key,
                     const char *value)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{");
    if (value) {
        sl_admin__jstr(&b, key);
        sl_buf_puts(&b, ":");
        sl_admin__jstr(&b, value);
    }
    sl_buf_puts(&b, "}");
    int rc = exit_of(call(c, "POST", path, &b));
    sl_buf_release(&b);
    return rc;
}

/* ---- tokens ------------------------------------------------------------- */

/* The token the answer carries (made by sluice) to file F, mode 0600, and
 * the answer without it to stdout. */
static int write_secret(const cli *c, sl_buf *answer)
{
    char *at = answer->data ? strstr(answer->data, ",\"secret\":\"") : NULL;
    if (!at) {
        printf("%s\n", answer->data ? answer->data : "");
        return 0;
    }
    char *val = at + strlen(",\"secret\":\"");
    char *end = strchr(val, '"');
    if (!end)
        return -1;
    FILE *f = NULL;
    int fd = open(c->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0 && !(f = fdopen(fd, "w")))
        close(fd);
    int rc = f && fprintf(f, "%.*s\n", (int)(end - val), val) > 0 ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    explicit_bzero(val, (size_t)(end - val));
    if (rc < 0) {
        fprintf(stderr,
                "sluice policy: cannot write %s: %s (the token was added: "
                "revoke it and add it again)\n",
                c->out, strerror(errno));
        return -1;
    }
    memmove(at, end + 1, strlen(end + 1) + 1); /* drop ,"secret":"…" */
    printf("%s\n", answer->data);
    fprintf(stderr, "sluice policy: the new token is in %s\n", c->out);
    return 0;
}

static int tokens_cmd(cli *c)
{
    const char *sub = c->nargs > 0 ? c->args[0] : "list";
    const char *name = c->nargs > 1 ? c->args[1] : NULL;
    char path[300];
    if (strcmp(sub, "list") == 0)
        return exit_of(call(c, "GET", "/admin/tokens", NULL));
    if (strcmp(sub, "revoke") == 0 && name) {
        snprintf(path, sizeof(path), "/admin/tokens/%s", name);
        return exit_of(call(c, "DELETE", path, NULL));
    }
    if (strcmp(sub, "add") != 0 || !name || !c->roles) {
        fprintf(stderr, "sluice policy: tokens list | tokens add NAME --roles "
                        "R[,R...] | tokens revoke NAME\n");
        return 2;
    }
    char hex[65] = "";
    if (c->sha256)
        snprintf(hex, sizeof(hex), "%s", c->sha256);
    if (c->hash_of) {
        cli other = *c;
        other.token_file = c->hash_of;
        if (read_token(&other) < 0)
            return 2;
        unsigned char sum[32];
        mbedtls_sha256_ret((const unsigned char *)other.token,
                           strlen(other.token), sum, 0);
        for (int i = 0; i < 32; i++)
            snprintf(hex + i * 2, 3, "%02x", sum[i]);
        explicit_bzero(other.token, sizeof(other.token));
    }
    sl_buf b, answer;
    sl_buf_init(&b, NULL);
    sl_buf_init(&answer, NULL);
    sl_buf_puts(&b, "{\"name\":");
    sl_admin__jstr(&b, name);
    sl_buf_puts(&b, ",\"roles\":[");
    for (const char *p = c->roles; *p;) {
        size_t n = strcspn(p, ", ");
        if (n) {
            char role[32];
            snprintf(role, sizeof(role), "%.*s", (int)n, p);
            sl_buf_puts(&b, b.data[b.len - 1] == '[' ? "" : ",");
            sl_admin__jstr(&b, role);
        }
        p += n;
        p += strspn(p, ", ");
    }
    sl_buf_puts(&b, "]");
    if (hex[0]) {
        sl_buf_puts(&b, ",\"sha256\":");
        sl_admin__jstr(&b, hex);
    }
    sl_buf_puts(&b, "}");
    int st = call_into(c, "POST", "/admin/tokens", &b, c->out ? &answer : NULL);
    int rc = exit_of(st);
    if (rc == 0 && c->out && write_secret(c, &answer) < 0)
        rc = 1;
    sl_buf_release(&b);
    if (answer.data)
        explicit_bzero(answer.data, answer.len);
    sl_buf_release(&answer);
    return rc;
}

/* ---- status as a table --------------------------------------------------- */

static const char *tstr(lua_State *L, int t, const char *key, const char *dflt)
{
    lua_getfield(L, t, key);
    const char *s = lua_type(L, -1) == LUA_TSTRING   ? lua_tostring(L, -1)
                    : lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1)
                                                     : NULL;
    lua_pop(L, 1); /* the table still holds it */
    return s ? s : dflt;
}

static double tnum(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static int tbool(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static void print_uptime(double s)
{
    unsigned long u = (unsigned long)s;
    if (u >= 86400)
        printf("%lud%02luh", u / 86400, u % 86400 / 3600);
    else if (u >= 3600)
        printf("%luh%02lum", u / 3600, u % 3600 / 60);
    else
        printf("%lum%02lus", u / 60, u % 60);
}

static void print_status(lua_State *L, int st)
{
    printf("version   %s\n", tstr(L, st, "version", "(none)"));
    printf("uptime    ");
    print_uptime(tnum(L, st, "uptime_s"));
    printf("  (since %s)\n", tstr(L, st, "started_at", "?"));
    printf("workers   %.0f%s\n", tnum(L, st, "workers"),
           tbool(L, st, "publishing") ? "  (publishing now)" : "");
    printf("changes   %.0f pending\n", tnum(L, st, "pending_changes"));
    printf("you       %s\n", tstr(L, st, "you", "?"));
    lua_getfield(L, st, "cluster");
    if (lua_istable(L, -1)) {
        int cl = lua_gettop(L);
        printf("cluster   instance %s, redis %s%s\n",
               tstr(L, cl, "instance", "?"),
               tbool(L, cl, "redis") ? "up" : "DOWN",
               tbool(L, cl, "announce_pending") ? ", announce pending" : "");
    }
    lua_pop(L, 1);
    lua_getfield(L, st, "instances");
    if (lua_istable(L, -1) && lua_objlen(L, -1) > 0) {
        int list = lua_gettop(L);
        printf("\n%-24s %-18s %-8s %s\n", "INSTANCE", "VERSION", "WORKERS",
               "REFUSED");
        for (int i = 1; i <= (int)lua_objlen(L, list); i++) {
            lua_rawgeti(L, list, i);
            int in = lua_gettop(L);
            if (lua_istable(L, in)) {
                const char *refused = "-";
                lua_getfield(L, in, "refused");
                if (lua_istable(L, -1))
                    refused = tstr(L, lua_gettop(L), "version", "?");
                printf("%-24s %-18s %-8.0f %s\n", tstr(L, in, "instance", "?"),
                       tstr(L, in, "version", "-"), tnum(L, in, "workers"),
                       refused);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    printf("\n%-16s %-10s %-10s %-9s %9s %7s %8s  %-34s %s\n", "BACKEND",
           "PROVIDER", "REGION", "HEALTH", "REQUESTS", "ERRORS", "LAST 5M",
           "LAST ERROR", "BREAKER");
    lua_getfield(L, st, "backends");
    int list = lua_gettop(L);
    for (int i = 1; lua_istable(L, list) && i <= (int)lua_objlen(L, list);
         i++) {
        lua_rawgeti(L, list, i);
        int be = lua_gettop(L);
        lua_getfield(L, be, "health");
        int h = lua_gettop(L);
        int has = lua_istable(L, h);
        char name[80], last[80];
        snprintf(name, sizeof(name), "%s%s", tstr(L, be, "name", "?"),
                 tbool(L, be, "default") ? " *" : "");
        if (has && strcmp(tstr(L, h, "last_error_at", ""), "") != 0)
            snprintf(last, sizeof(last), "%s %s", tstr(L, h, "last_error", "?"),
                     tstr(L, h, "last_error_at", ""));
        else
            snprintf(last, sizeof(last), "-");
        printf("%-16s %-10s %-10s %-9s %9.0f %7.0f %8.0f  %-34s %s\n", name,
               tstr(L, be, "provider", "-"), tstr(L, be, "region", "-"),
               has ? tstr(L, h, "status", "?") : "?",
               has ? tnum(L, h, "requests") : 0,
               has ? tnum(L, h, "upstream_errors") : 0,
               has ? tnum(L, h, "recent_errors") : 0, last,
               has ? tstr(L, h, "breaker", "-") : "-");
        lua_settop(L, list);
    }
    lua_settop(L, st);
    printf("\n* default backend. Health is this instance's view (requests "
           "and errors since start;\n  LAST 5M: upstream errors in the last "
           "5 minutes); --json for the full answer.\n");
}

static int status_table(cli *c)
{
    sl_buf answer;
    sl_buf_init(&answer, NULL);
    int rc = exit_of(call_into(c, "GET", "/admin/status", NULL, &answer));
    if (rc != 0 || !answer.data) {
        sl_buf_release(&answer);
        return rc;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        sl_buf_release(&answer);
        return 2;
    }
    luaL_openlibs(L);
    lua_pushcfunction(L, sl_luaopen_json);
    int ok = lua_pcall(L, 0, 1, 0) == 0 && lua_istable(L, -1);
    if (ok) {
        lua_getfield(L, -1, "decode");
        lua_pushlstring(L, answer.data, answer.len);
        ok = lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1);
    }
    if (ok)
        print_status(L, lua_gettop(L));
    else
        printf("%s\n", answer.data); /* not what we know: show it as is */
    lua_close(L);
    sl_buf_release(&answer);
    return 0;
}

int sl_admin_cli(int argc, char **argv)
{
    cli c = {.url = getenv("SLUICE_ADMIN")};
    const char *cmd = argc > 0 ? argv[0] : "help";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--admin") == 0 && v)
            c.url = argv[++i];
        else if (strcmp(a, "--token-file") == 0 && v)
            c.token_file = argv[++i];
        else if (strcmp(a, "--ca-file") == 0 && v)
            c.ca_file = argv[++i];
        else if (strcmp(a, "--plugins") == 0 && v)
            c.plugins = argv[++i];
        else if (strcmp(a, "--dir") == 0 && v)
            c.dir = argv[++i];
        else if ((strcmp(a, "-m") == 0 || strcmp(a, "--message") == 0) && v)
            c.message = argv[++i];
        else if (strcmp(a, "--roles") == 0 && v)
            c.roles = argv[++i];
        else if (strcmp(a, "--sha256") == 0 && v)
            c.sha256 = argv[++i];
        else if (strcmp(a, "--hash-of") == 0 && v)
            c.hash_of = argv[++i];
        else if (strcmp(a, "--out") == 0 && v)
            c.out = argv[++i];
        else if (strcmp(a, "--json") == 0)
            c.json = 1;
        else if (a[0] == '-') {
            fprintf(stderr, "sluice policy: unknown option %s\n\n%s", a,
                    cli_usage);
            return 2;
        } else {
            c.arg = a;
            if (c.nargs < (int)SL_ARRAY_LEN(c.args))
                c.args[c.nargs++] = a;
        }
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0) {
        fputs(cli_usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "hash-token") == 0)
        return hash_token(&c);
    if (!c.url)
        c.url = "http://127.0.0.1:9090";
    if (parse_url(&c) < 0) {
        fprintf(stderr, "sluice policy: --admin wants http(s)://HOST:PORT\n");
        return 2;
    }
    if (read_token(&c) < 0)
        return 2;
    char path[300];
    if (strcmp(cmd, "validate") == 0 || strcmp(cmd, "diff") == 0 ||
        strcmp(cmd, "submit") == 0) {
        if (c.arg)
            c.dir = c.arg;
        return with_bundle(&c, strcmp(cmd, "validate") == 0
                                   ? "/admin/policy/validate"
                               : strcmp(cmd, "diff") == 0 ? "/admin/policy/diff"
                                                          : "/admin/changes");
    }
    if (strcmp(cmd, "approve") == 0 && c.arg) {
        snprintf(path, sizeof(path), "/admin/changes/%s/approve", c.arg);
        return with_json(&c, path, NULL, NULL);
    }
    if (strcmp(cmd, "publish") == 0 && c.dir)
        return with_bundle(&c, "/admin/publish");
    if (strcmp(cmd, "publish") == 0 && c.arg)
        return with_json(&c, "/admin/publish", "change", c.arg);
    if (strcmp(cmd, "rollback") == 0)
        return with_json(&c, "/admin/rollback", "version", c.arg);
    if (strcmp(cmd, "reload") == 0)
        return with_json(&c, "/admin/reload", NULL, NULL);
    if (strcmp(cmd, "tokens") == 0)
        return tokens_cmd(&c);
    if (strcmp(cmd, "status") == 0 && !c.json)
        return status_table(&c);
    static const char *const reads[][2] = {{"status", "/admin/status"},
                                           {"changes", "/admin/changes"},
                                           {"audit", "/admin/audit"},
                                           {"versions", "/admin/versions"}};
    for (size_t i = 0; i < SL_ARRAY_LEN(reads); i++)
        if (strcmp(cmd, reads[i][0]) == 0)
            return exit_of(call(&c, "GET", reads[i][1], NULL));
    fprintf(stderr, "sluice policy: unknown command '%s'\n\n%s", cmd,
            cli_usage);
    return 2;
}
