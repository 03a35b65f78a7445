/* admin_tokens.c — admin tokens managed through the API: an `admin` token
 * holder adds a token (a name, its roles, and the SHA-256 of the token, or
 * nothing, and sluice makes a token and shows it once) and revokes one.
 *
 * Tokens of sluice.yaml stay as they are: listed, never changed here, and
 * no API token may take one's name. API tokens live in the state
 * directory's tokens.json (rewritten whole, write-then-rename, fsync),
 * are read at start and take effect at once. Only their hashes are kept;
 * no token value is ever logged, audited or written to disk. The last
 * token holding `admin` cannot be revoked: someone must be able to manage
 * the others. In cluster mode the tokens are also kept in Redis, so a
 * token added or revoked on one instance holds on all (admin_cluster.c). */
#include "admin_int.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#define TOKEN_NAME_MAX 64
#define TOKEN_PREFIX "sla_"

static const struct {
    const char *name;
    unsigned bit;
} role_names[] = {{"read", SL_ROLE_READ},
                  {"propose", SL_ROLE_PROPOSE},
                  {"approve", SL_ROLE_APPROVE},
                  {"admin", SL_ROLE_ADMIN}};

void sl_admin__roles_json(sl_buf *b, unsigned roles)
{
    int first = 1;
    sl_buf_puts(b, "[");
    for (size_t i = 0; i < SL_ARRAY_LEN(role_names); i++)
        if (roles & role_names[i].bit) {
            sl_buf_printf(b, "%s\"%s\"", first ? "" : ",", role_names[i].name);
            first = 0;
        }
    sl_buf_puts(b, "]");
}

static void roles_text(char *out, size_t cap, unsigned roles)
{
    out[0] = '\0';
    for (size_t i = 0; i < SL_ARRAY_LEN(role_names); i++)
        if (roles & role_names[i].bit)
            snprintf(out + strlen(out), cap - strlen(out), "%s%s",
                     out[0] ? ", " : "", role_names[i].name);
}

/* The roles of the list at the stack top: 0 and *roles, or -1 with why. */
static int roles_of(lua_State *L, unsigned *roles, char *why, size_t cap)
{
    *roles = 0;
    if (!lua_istable(L, -1) || lua_objlen(L, -1) == 0) {
        snprintf(why, cap,
                 "roles: expected a list of roles (read, propose, "
                 "approve, admin)");
        return -1;
    }
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *s =
            lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        unsigned bit = 0;
        for (size_t j = 0; s && j < SL_ARRAY_LEN(role_names); j++)
            if (strcmp(s, role_names[j].name) == 0)
                bit = role_names[j].bit;
        if (!bit)
            snprintf(why, cap,
                     "roles[%d]: '%.64s' is not a role (read, propose, "
                     "approve, admin)",
                     i, s ? s : "?");
        lua_pop(L, 1);
        if (!bit)
            return -1;
        *roles |= bit;
    }
    return 0;
}

static int valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > TOKEN_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
              c == '@'))
            return 0;
    }
    return 1;
}

/* 64 hex digits, lowered into out; 0 or -1. */
static int valid_hash(const char *s, char out[65])
{
    if (!s || strlen(s) != 64)
        return -1;
    for (int i = 0; i < 64; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -1;
        out[i] = c;
    }
    out[64] = '\0';
    return 0;
}

const sl_admin_token *sl_admin__config_token(const sl_admin *a,
                                             const char *name)
{
    const sl_admin_cfg *c = &a->cfg->admin;
    for (int i = 0; i < c->ntokens; i++)
        if (strcmp(c->tokens[i].name, name) == 0)
            return &c->tokens[i];
    return NULL;
}

admin_token *sl_admin__api_token(sl_admin *a, const char *name)
{
    for (int i = 0; i < a->ntokens; i++)
        if (strcmp(a->tokens[i].name, name) == 0)
            return &a->tokens[i];
    return NULL;
}

/* Every hash is compared in full, so the time taken says nothing about
 * which token (or how much of one) matched. */
static unsigned hash_diff(const char *x, const char *y)
{
    unsigned diff = 0;
    for (int j = 0; j < 64; j++)
        diff |= (unsigned)(x[j] ^ y[j]);
    return diff;
}

int sl_admin__token_lookup(sl_admin *a, const char *tok, size_t n,
                           admin_actor *who)
{
    unsigned char sum[32];
    char hex[65];
    mbedtls_sha256_ret((const unsigned char *)tok, n, sum, 0);
    for (int i = 0; i < 32; i++)
        snprintf(hex + i * 2, 3, "%02x", sum[i]);
    const sl_admin_cfg *c = &a->cfg->admin;
    const char *name = NULL;
    unsigned roles = 0;
    for (int i = 0; i < c->ntokens; i++)
        if (hash_diff(hex, c->tokens[i].sha256) == 0) {
            name = c->tokens[i].name;
            roles = c->tokens[i].roles;
        }
    for (int i = 0; i < a->ntokens; i++)
        if (hash_diff(hex, a->tokens[i].sha256) == 0 && !name) {
            name = a->tokens[i].name;
            roles = a->tokens[i].roles;
        }
    if (!name)
        return -1;
    snprintf(who->name, sizeof(who->name), "%s", name);
    who->roles = roles;
    return 0;
}

/* ---- tokens.json ----------------------------------------------------------
 */

void sl_admin__token_record(sl_buf *b, const admin_token *t, int with_hash)
{
    sl_buf_puts(b, "{\"name\":");
    sl_admin__jstr(b, t->name);
    sl_buf_puts(b, ",\"roles\":");
    sl_admin__roles_json(b, t->roles);
    if (with_hash)
        sl_buf_printf(b, ",\"sha256\":\"%s\"", t->sha256);
    sl_buf_puts(b, ",\"created\":");
    sl_admin__jstr(b, t->created);
    sl_buf_puts(b, ",\"created_by\":");
    sl_admin__jstr(b, t->created_by);
    sl_buf_puts(b, "}");
}

int sl_admin__save_tokens(sl_admin *a)
{
    char path[PATH_MAX];
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"tokens\":[");
    for (int i = 0; i < a->ntokens; i++) {
        sl_buf_puts(&b, i ? ",\n" : "\n");
        sl_admin__token_record(&b, &a->tokens[i], 1);
    }
    sl_buf_puts(&b, "]}\n");
    snprintf(path, sizeof(path), "%s/tokens.json", a->cfg->admin.state_dir);
    int rc = b.data ? sl_ver_write_atomic(path, b.data, b.len) : SL_ENOMEM;
    sl_buf_release(&b);
    if (rc < 0)
        sl_log_error("admin: cannot write %s", path);
    return rc;
}

/* A token from the decoded record at the stack top: 0, or -1 with why. */
static int token_of_record(lua_State *L, admin_token *t, char *why, size_t cap)
{
    memset(t, 0, sizeof(*t));
    const char *name = sl_admin__field(L, "name");
    const char *sha = sl_admin__field(L, "sha256");
    const char *created = sl_admin__field(L, "created");
    const char *by = sl_admin__field(L, "created_by");
    if (!valid_name(name)) {
        snprintf(why, cap, "a token without a valid name");
        return -1;
    }
    snprintf(t->name, sizeof(t->name), "%s", name);
    if (valid_hash(sha, t->sha256) < 0) {
        snprintf(why, cap, "token '%s': sha256 is not 64 hex digits", name);
        return -1;
    }
    lua_getfield(L, -1, "roles");
    int rc = roles_of(L, &t->roles, why, cap);
    lua_pop(L, 1);
    snprintf(t->created, sizeof(t->created), "%s", created ? created : "");
    snprintf(t->created_by, sizeof(t->created_by), "%s", by ? by : "");
    return rc;
}

static int json_decode(lua_State *L, const char *data, size_t len)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.json");
    if (lua_pcall(L, 1, 1, 0) != 0)
        return -1;
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
    lua_pushlstring(L, data, len);
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1))
        return -1;
    return 0;
}

int sl_admin__tokens_from_json(sl_admin *a, const char *data, size_t len,
                               admin_token **out, int *nout)
{
    lua_State *L = sl_lua_state(a->lua);
    int top = lua_gettop(L);
    *out = NULL;
    *nout = 0;
    if (json_decode(L, data, len) < 0) {
        lua_settop(L, top);
        return SL_ECONFIG;
    }
    lua_getfield(L, -1, "tokens");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    admin_token *list = calloc((size_t)n + 1, sizeof(*list));
    if (!list) {
        lua_settop(L, top);
        return SL_ENOMEM;
    }
    int k = 0;
    for (int i = 1; i <= n; i++) {
        char why[200];
        lua_rawgeti(L, -1, i);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (token_of_record(L, &list[k], why, sizeof(why)) < 0)
            sl_log_warn("admin: tokens.json: %s; it is ignored", why);
        else if (sl_admin__config_token(a, list[k].name))
            sl_log_warn("admin: tokens.json: token '%s' is also in "
                        "sluice.yaml, which wins; the stored one is ignored",
                        list[k].name);
        else
            k++;
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    *out = list;
    *nout = k;
    return 0;
}

int sl_admin__load_tokens(sl_admin *a)
{
    char path[PATH_MAX], *data;
    size_t len;
    snprintf(path, sizeof(path), "%s/tokens.json", a->cfg->admin.state_dir);
    if (sl_read_file(path, &data, &len) < 0)
        return errno == ENOENT ? 0 : SL_EIO;
    admin_token *list;
    int n;
    int rc = sl_admin__tokens_from_json(a, data, len, &list, &n);
    free(data);
    if (rc < 0)
        return rc;
    free(a->tokens);
    a->tokens = list;
    a->ntokens = n;
    return 0;
}

void sl_admin__free_tokens(sl_admin *a)
{
    free(a->tokens);
    a->tokens = NULL;
    a->ntokens = 0;
}

/* ---- endpoints ------------------------------------------------------------
 */

static void token_json(sl_buf *b, const admin_token *t)
{
    sl_buf_puts(b, "{\"name\":");
    sl_admin__jstr(b, t->name);
    sl_buf_puts(b, ",\"roles\":");
    sl_admin__roles_json(b, t->roles);
    sl_buf_puts(b, ",\"source\":\"api\",\"created\":");
    sl_admin__jstr(b, t->created);
    sl_buf_puts(b, ",\"created_by\":");
    sl_admin__jstr(b, t->created_by);
    sl_buf_puts(b, "}");
}

/* GET /admin/tokens: names, roles, where each is defined; never hashes. */
void sl_admin__tokens_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    (void)who;
    const sl_admin_cfg *c = &a->cfg->admin;
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"tokens\":[");
    for (int i = 0; i < c->ntokens; i++) {
        sl_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        sl_admin__jstr(&b, c->tokens[i].name);
        sl_buf_puts(&b, ",\"roles\":");
        sl_admin__roles_json(&b, c->tokens[i].roles);
        sl_buf_puts(&b, ",\"source\":\"config\",\"created\":null,"
                        "\"created_by\":null}");
    }
    for (int i = 0; i < a->ntokens; i++) {
        sl_buf_puts(&b, c->ntokens + i ? "," : "");
        token_json(&b, &a->tokens[i]);
    }
    sl_buf_puts(&b, "]}");
    sl_admin__reply_buf(r, 200, &b);
}

static void audit_token(sl_admin *a, admin_actor *who, const char *action,
                        const char *result, const char *name, unsigned roles,
                        const char *why)
{
    char detail[400], rl[64];
    roles_text(rl, sizeof(rl), roles);
    if (why)
        snprintf(detail, sizeof(detail), "token %s: %s", name, why);
    else if (roles)
        snprintf(detail, sizeof(detail), "token %s (%s)", name, rl);
    else
        snprintf(detail, sizeof(detail), "token %s", name);
    sl_admin__audit_simple(a, who, action, result, NULL, NULL, detail);
}

static int count_admins(const sl_admin *a)
{
    int n = 0;
    for (int i = 0; i < a->cfg->admin.ntokens; i++)
        n += (a->cfg->admin.tokens[i].roles & SL_ROLE_ADMIN) != 0;
    for (int i = 0; i < a->ntokens; i++)
        n += (a->tokens[i].roles & SL_ROLE_ADMIN) != 0;
    return n;
}

static int hash_taken(const sl_admin *a, const char *hex)
{
    int taken = 0;
    for (int i = 0; i < a->cfg->admin.ntokens; i++)
        taken |= hash_diff(hex, a->cfg->admin.tokens[i].sha256) == 0;
    for (int i = 0; i < a->ntokens; i++)
        taken |= hash_diff(hex, a->tokens[i].sha256) == 0;
    return taken;
}

/* A token value: "sla_" and 64 hex digits of the kernel's randomness. */
static int make_secret(char out[72])
{
    unsigned char raw[32];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    memcpy(out, TOKEN_PREFIX, sizeof(TOKEN_PREFIX) - 1);
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + sizeof(TOKEN_PREFIX) - 1 + i * 2, 3, "%02x", raw[i]);
    return 0;
}

/* The token is in a->tokens (saved): answer 201, with the secret once. */
static void added(sl_admin *a, sl_http_req *r, const admin_token *t,
                  const char *secret)
{
    (void)a;
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"token\":");
    token_json(&b, t);
    if (secret) {
        sl_buf_puts(&b, ",\"secret\":");
        sl_admin__jstr(&b, secret);
    }
    sl_buf_puts(&b, "}");
    sl_admin__reply_buf(r, 201, &b);
}

int sl_admin__token_insert(sl_admin *a, const admin_token *t)
{
    admin_token *grown =
        realloc(a->tokens, (size_t)(a->ntokens + 1) * sizeof(*grown));
    if (!grown)
        return SL_ENOMEM;
    a->tokens = grown;
    a->tokens[a->ntokens++] = *t;
    return 0;
}

void sl_admin__token_remove(sl_admin *a, const char *name)
{
    for (int i = 0; i < a->ntokens; i++)
        if (strcmp(a->tokens[i].name, name) == 0) {
            memmove(&a->tokens[i], &a->tokens[i + 1],
                    (size_t)(a->ntokens - i - 1) * sizeof(*a->tokens));
            a->ntokens--;
            return;
        }
}

/* POST /admin/tokens {name, roles[, sha256]}. */
void sl_admin__token_add_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    lua_State *L = sl_lua_state(a->lua);
    int top = lua_gettop(L);
    if (sl_admin__body(a, r) < 0)
        return;
    admin_token t;
    memset(&t, 0, sizeof(t));
    char why[300] = "", secret[72] = "";
    int status = 400;
    const char *code = "invalid_token_request";
    const char *name = sl_admin__field(L, "name");
    const char *sha = sl_admin__field(L, "sha256");
    int generate = sha == NULL;
    char shown[TOKEN_NAME_MAX + 1] = "?"; /* the body is gone below */
    if (valid_name(name))
        snprintf(shown, sizeof(shown), "%s", name);
    if (!valid_name(name)) {
        snprintf(why, sizeof(why),
                 "name: expected 1 to %d letters, digits, '-', '_', '.' or "
                 "'@'",
                 TOKEN_NAME_MAX);
    } else {
        snprintf(t.name, sizeof(t.name), "%s", name);
        lua_getfield(L, -1, "roles");
        roles_of(L, &t.roles, why, sizeof(why));
        lua_pop(L, 1);
    }
    if (!why[0] && sha && valid_hash(sha, t.sha256) < 0)
        snprintf(why, sizeof(why),
                 "sha256: expected the token's SHA-256 as 64 hex digits "
                 "(sluice policy hash-token), never the token");
    lua_settop(L, top);
    if (!why[0] && sl_admin__config_token(a, t.name)) {
        status = 409;
        code = "config_token";
        snprintf(why, sizeof(why),
                 "token '%s' is defined in sluice.yaml; choose another name",
                 t.name);
    } else if (!why[0] && sl_admin__api_token(a, t.name)) {
        status = 409;
        code = "token_exists";
        snprintf(why, sizeof(why),
                 "token '%s' exists; revoke it first to replace it", t.name);
    }
    if (!why[0] && generate) {
        /* a fresh token, unlike any held: its hash is all that is kept */
        if (make_secret(secret) < 0) {
            sl_admin__error(r, 500, "internal", "no randomness for a token");
            return;
        }
        unsigned char sum[32];
        mbedtls_sha256_ret((const unsigned char *)secret, strlen(secret), sum,
                           0);
        for (int i = 0; i < 32; i++)
            snprintf(t.sha256 + i * 2, 3, "%02x", sum[i]);
    }
    if (!why[0] && hash_taken(a, t.sha256)) {
        status = 409;
        code = "token_exists";
        snprintf(why, sizeof(why),
                 "another token has this SHA-256; make a new token");
    }
    if (why[0]) {
        audit_token(a, who, "token_add", "refused", shown, 0, why);
        sl_admin__error(r, status, code, "%s", why);
        return;
    }
    sl_time_rfc3339(t.created);
    snprintf(t.created_by, sizeof(t.created_by), "%s", who->name);
    if (sl_admin__cluster_token(a, r, who, &t, secret[0] ? secret : NULL) == 0)
        return; /* in Redis first; answered from there */
    if (sl_admin__token_insert(a, &t) < 0 || sl_admin__save_tokens(a) < 0) {
        sl_admin__token_remove(a, t.name);
        audit_token(a, who, "token_add", "failed", t.name, t.roles,
                    "cannot write tokens.json");
        sl_admin__error(r, 500, "state_unwritable",
                        "the token could not be stored");
        explicit_bzero(secret, sizeof(secret));
        return;
    }
    audit_token(a, who, "token_add", "ok", t.name, t.roles, NULL);
    added(a, r, &t, secret[0] ? secret : NULL);
    explicit_bzero(secret, sizeof(secret));
}

void sl_admin__token_added(sl_admin *a, sl_http_req *r, admin_actor *who,
                           const admin_token *t, const char *secret, int rc)
{
    if (rc == 0 && !sl_admin__api_token(a, t->name))
        rc = sl_admin__token_insert(a, t);
    if (rc == 0)
        sl_admin__save_tokens(a); /* Redis holds it: the copy may lag */
    if (rc < 0) {
        audit_token(a, who, "token_add", "failed", t->name, t->roles,
                    "the cluster's Redis could not store it");
        if (r)
            sl_admin__error(r, 503, "cluster_unavailable",
                            "the token could not be stored in the cluster's "
                            "Redis; try again");
        return;
    }
    audit_token(a, who, "token_add", "ok", t->name, t->roles, NULL);
    if (r)
        added(a, r, t, secret);
}

/* DELETE /admin/tokens/{name}. */
void sl_admin__token_revoke_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    char name[TOKEN_NAME_MAX + 2];
    size_t off = strlen("/admin/tokens/");
    size_t n = r->path.n > off ? r->path.n - off : 0;
    if (n >= sizeof(name))
        n = sizeof(name) - 1;
    memcpy(name, r->path.p + off, n);
    name[n] = '\0';
    if (sl_admin__config_token(a, name)) {
        audit_token(a, who, "token_revoke", "refused", name, 0,
                    "defined in sluice.yaml");
        sl_admin__error(r, 409, "config_token",
                        "token '%s' is defined in sluice.yaml: remove it "
                        "there and restart",
                        name);
        return;
    }
    admin_token *t = sl_admin__api_token(a, name);
    if (!t) {
        sl_admin__error(r, 404, "no_token", "no token '%s'", name);
        return;
    }
    if ((t->roles & SL_ROLE_ADMIN) && count_admins(a) <= 1) {
        audit_token(a, who, "token_revoke", "refused", name, 0,
                    "the last admin token");
        sl_admin__error(r, 409, "last_admin",
                        "token '%s' is the last one with the admin role; add "
                        "another admin token first",
                        name);
        return;
    }
    admin_token copy = *t;
    if (sl_admin__cluster_token_revoke(a, r, who, &copy) == 0)
        return;
    sl_admin__token_remove(a, name);
    if (sl_admin__save_tokens(a) < 0) {
        sl_admin__token_insert(a, &copy);
        audit_token(a, who, "token_revoke", "failed", name, 0,
                    "cannot write tokens.json");
        sl_admin__error(r, 500, "state_unwritable",
                        "the revocation could not be stored");
        return;
    }
    sl_admin__token_revoked(a, r, who, &copy, 0);
}

void sl_admin__token_revoked(sl_admin *a, sl_http_req *r, admin_actor *who,
                             const admin_token *t, int rc)
{
    if (rc == 0 && sl_admin__api_token(a, t->name)) {
        sl_admin__token_remove(a, t->name);
        sl_admin__save_tokens(a); /* Redis holds it: the copy may lag */
    }
    audit_token(a, who, "token_revoke", rc == 0 ? "ok" : "failed", t->name,
                rc == 0 ? t->roles : 0,
                rc == 0 ? NULL : "the cluster's Redis could not store it");
    if (!r)
        return;
    if (rc < 0) {
        sl_admin__error(r, 503, "cluster_unavailable",
                        "the revocation could not be stored in the cluster's "
                        "Redis; try again");
        return;
    }
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"revoked\":");
    sl_admin__jstr(&b, t->name);
    sl_buf_puts(&b, "}");
    sl_admin__reply_buf(r, 200, &b);
}
