/* admin_changes.c — proposed changes: a stored version waiting for
 * approval, kept in the state directory's changes.json (rewritten whole and
 * atomically on every change, so a restart keeps pending approvals), and
 * the four-eyes rule: the author of a change can never be its approver. */
#include "admin_int.h"
#include "log.h"
#include "util.h"

#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- changes ------------------------------------------------------------- */

void sl_admin__change_json(sl_buf *b, const admin_change *c)
{
    sl_buf_printf(b,
                  "{\"id\":\"%s\",\"version\":\"%s\",\"base\":\"%s\","
                  "\"author\":",
                  c->id, c->version, c->base);
    sl_admin__jstr(b, c->author);
    sl_buf_puts(b, ",\"message\":");
    sl_admin__jstr(b, c->message);
    sl_buf_printf(b,
                  ",\"submitted\":\"%s\",\"status\":\"%s\","
                  "\"needs_approval\":%s,\"approvers\":[",
                  c->submitted, c->status,
                  c->needs_approval ? "true" : "false");
    for (int i = 0; i < c->napprovers; i++) {
        sl_buf_puts(b, i ? "," : "");
        sl_admin__jstr(b, c->approvers[i]);
    }
    sl_buf_printf(b, "],\"diff\":%s}", c->diff_json ? c->diff_json : "null");
}

int sl_admin__save_changes(sl_admin *a)
{
    char path[PATH_MAX];
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"changes\":[");
    for (int i = 0; i < a->nchanges; i++) {
        sl_buf_puts(&b, i ? ",\n" : "\n");
        sl_admin__change_json(&b, &a->changes[i]);
    }
    sl_buf_puts(&b, "]}\n");
    snprintf(path, sizeof(path), "%s/changes.json", a->cfg->admin.state_dir);
    int rc = b.data ? sl_ver_write_atomic(path, b.data, b.len) : SL_ENOMEM;
    sl_buf_release(&b);
    if (rc < 0)
        sl_log_error("admin: cannot write %s", path);
    return rc;
}

static void free_change(admin_change *c)
{
    free(c->author);
    free(c->message);
    free(c->diff_json);
    for (int i = 0; i < c->napprovers; i++)
        free(c->approvers[i]);
}

void sl_admin__free_changes(sl_admin *a)
{
    for (int i = 0; i < a->nchanges; i++)
        free_change(&a->changes[i]);
    free(a->changes);
    a->changes = NULL;
    a->nchanges = 0;
}

admin_change *sl_admin__add_change(sl_admin *a)
{
    admin_change *n =
        realloc(a->changes, (size_t)(a->nchanges + 1) * sizeof(*n));
    if (!n)
        return NULL;
    a->changes = n;
    memset(&n[a->nchanges], 0, sizeof(*n));
    return &n[a->nchanges++];
}

static void copy_field(lua_State *L, const char *key, char *dst, size_t cap)
{
    const char *s = sl_admin__field(L, key);
    snprintf(dst, cap, "%s", s ? s : "");
}

static char *dup_field(lua_State *L, const char *key)
{
    const char *s = sl_admin__field(L, key);
    return s ? strdup(s) : NULL;
}

/* Re-encode a decoded field as JSON (for the stored diff). */
static char *json_field(lua_State *L, const char *key)
{
    char *out = NULL;
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.json");
    if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_getfield(L, -1, "encode");
        lua_getfield(L, -3, key);
        if (lua_pcall(L, 1, 1, 0) == 0 && lua_isstring(L, -1))
            out = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return out;
}

/* A change from the decoded table at the stack top. */
static void fill_change(lua_State *L, admin_change *c)
{
    copy_field(L, "id", c->id, sizeof(c->id));
    copy_field(L, "version", c->version, sizeof(c->version));
    copy_field(L, "base", c->base, sizeof(c->base));
    copy_field(L, "submitted", c->submitted, sizeof(c->submitted));
    copy_field(L, "status", c->status, sizeof(c->status));
    c->author = dup_field(L, "author");
    c->message = dup_field(L, "message");
    c->diff_json = json_field(L, "diff");
    lua_getfield(L, -1, "needs_approval");
    c->needs_approval = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "approvers");
    int na = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    for (int j = 1; j <= na && j <= ADMIN_MAX_APPROVERS; j++) {
        lua_rawgeti(L, -1, j);
        if (lua_isstring(L, -1))
            c->approvers[c->napprovers++] = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

admin_change *sl_admin__change_from_json(sl_admin *a, const char *json,
                                         size_t len)
{
    lua_State *L = sl_lua_state(a->lua);
    int top = lua_gettop(L);
    admin_change *c = NULL;
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.json");
    if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_getfield(L, -1, "decode");
        lua_pushlstring(L, json, len);
        if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
            lua_getfield(L, -1, "id");
            const char *id = lua_tostring(L, -1);
            int ok = id && strlen(id) == 16 && strlen(id) < sizeof(c->id);
            if (ok)
                c = sl_admin__find_change(a, id);
            lua_pop(L, 1);
            if (ok && !c && (c = sl_admin__add_change(a)))
                fill_change(L, c);
        }
    }
    lua_settop(L, top);
    if (c && (!c->author || c->version[0] == '\0'))
        c = NULL; /* not a change record */
    return c;
}

void sl_admin__change_set_approvers(admin_change *c, const char *list)
{
    for (int i = 0; i < c->napprovers; i++)
        free(c->approvers[i]);
    c->napprovers = 0;
    for (const char *p = list;
         p && *p && c->napprovers < ADMIN_MAX_APPROVERS;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n && (c->approvers[c->napprovers] = strndup(p, n)))
            c->napprovers++;
        p = nl ? nl + 1 : p + n;
    }
}

int sl_admin__load_changes(sl_admin *a)
{
    char path[PATH_MAX], *data;
    size_t len;
    snprintf(path, sizeof(path), "%s/changes.json", a->cfg->admin.state_dir);
    if (sl_read_file(path, &data, &len) < 0)
        return 0; /* none yet */
    lua_State *L = sl_lua_state(a->lua);
    int top = lua_gettop(L), rc = 0;
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.json");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_settop(L, top);
        free(data);
        return SL_EIO;
    }
    lua_getfield(L, -1, "decode");
    lua_pushlstring(L, data, len);
    free(data);
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return SL_ECONFIG;
    }
    lua_getfield(L, -1, "changes");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    for (int i = 1; i <= n && rc == 0; i++) {
        lua_rawgeti(L, -1, i);
        admin_change *c = lua_istable(L, -1) ? sl_admin__add_change(a) : NULL;
        if (c) {
            fill_change(L, c);
        } else if (lua_istable(L, -1)) {
            rc = SL_ENOMEM;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    return rc;
}

admin_change *sl_admin__find_change(sl_admin *a, const char *id)
{
    for (int i = 0; i < a->nchanges; i++)
        if (strcmp(a->changes[i].id, id) == 0)
            return &a->changes[i];
    return NULL;
}

/* Versions that must stay stored: the pending changes'. */
void sl_admin__prune(sl_admin *a)
{
    sl_ver_id *pinned = calloc((size_t)a->nchanges + 1, sizeof(sl_ver_id));
    int n = 0;
    for (int i = 0; pinned && i < a->nchanges; i++)
        if (strcmp(a->changes[i].status, "pending") == 0)
            memcpy(pinned[n++], a->changes[i].version, sizeof(sl_ver_id));
    if (pinned)
        sl_ver_prune(a->store, a->cfg->admin.keep_versions, pinned, n);
    free(pinned);
}

void sl_admin__changes_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"changes\":[");
    for (int i = a->nchanges - 1; i >= 0; i--) {
        sl_admin__change_json(&b, &a->changes[i]);
        sl_buf_puts(&b, i ? "," : "");
    }
    sl_buf_puts(&b, "]}");
    sl_admin__reply(r, 200, b.data, b.len);
    sl_buf_release(&b);
}

/* The {id} segment of /admin/changes/{id}[/approve]. */
static admin_change *change_of_path(sl_admin *a, sl_http_req *r)
{
    char id[32] = "";
    const char *p = r->path.p + strlen("/admin/changes/");
    size_t n = 0;
    while (p + n < r->path.p + r->path.n && p[n] != '/' && n < sizeof(id) - 1)
        n++;
    memcpy(id, p, n);
    id[n] = '\0';
    admin_change *c = sl_admin__find_change(a, id);
    if (!c)
        sl_admin__error(r, 404, "no_change", "no change '%s'", id);
    return c;
}

void sl_admin__reply_change(sl_http_req *r, const admin_change *c)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"change\":");
    sl_admin__change_json(&b, c);
    sl_buf_puts(&b, "}");
    sl_admin__reply_buf(r, 200, &b);
}

void sl_admin__change_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    admin_change *c = change_of_path(a, r);
    if (!c)
        return;
    sl_admin__reply_change(r, c);
}

/* Has someone other than the author approved c? */
int sl_admin__second_person(const admin_change *c)
{
    for (int i = 0; i < c->napprovers; i++)
        if (strcmp(c->approvers[i], c->author) != 0)
            return 1;
    return 0;
}

void sl_admin__approve_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    admin_change *c = change_of_path(a, r);
    if (!c)
        return;
    if (strcmp(c->status, "pending") != 0) {
        sl_admin__error(r, 409, "not_pending", "change %s is %s", c->id,
                        c->status);
        return;
    }
    if (strcmp(c->author, who->name) == 0) {
        sl_admin__audit_simple(a, who, "approve", "refused", c->version, c->id,
                               "the author cannot approve their own change");
        sl_admin__error(r, 403, "four_eyes",
                        "you submitted change %s: a second person must "
                        "approve it",
                        c->id);
        return;
    }
    if (sl_admin__cluster_approve(a, r, who, c) == 0)
        return; /* recorded in Redis, answered from there */
    int known = 0;
    for (int i = 0; i < c->napprovers; i++)
        known |= strcmp(c->approvers[i], who->name) == 0;
    if (!known && c->napprovers < ADMIN_MAX_APPROVERS)
        c->approvers[c->napprovers++] = strdup(who->name);
    sl_admin__save_changes(a);
    sl_admin__audit_simple(a, who, "approve", "ok", c->version, c->id, NULL);
    sl_admin__reply_change(r, c);
}
