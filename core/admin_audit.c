/* admin_audit.c — the admin audit log: one JSON line per admin action
 * (who, from where, what, when, the version before and after, the change,
 * the diff summary, the result), appended and fsynced before the action is
 * answered, so an acknowledged action is on disk. Opened O_APPEND: the
 * log is only ever added to. */
#include "admin_int.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int sl_admin__audit_open(sl_admin *a, char *err, size_t errlen)
{
    const char *path = a->cfg->admin.audit_log;
    a->audit_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (a->audit_fd < 0) {
        snprintf(err, errlen, "admin.audit_log: %s: %s", path, strerror(errno));
        return SL_EIO;
    }
    return 0;
}

void sl_admin__audit_close(sl_admin *a)
{
    if (a->audit_fd >= 0)
        close(a->audit_fd);
    a->audit_fd = -1;
}

void sl_admin__audit(sl_admin *a, const admin_event *e)
{
    if (a->audit_fd < 0)
        return;
    char ts[32];
    sl_time_rfc3339(ts);
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_printf(&b, "{\"time\":\"%s\",\"actor\":", ts);
    sl_admin__jstr(&b, e->actor);
    sl_buf_puts(&b, ",\"client\":");
    sl_admin__jstr(&b, e->addr);
    sl_buf_puts(&b, ",\"action\":");
    sl_admin__jstr(&b, e->action);
    sl_buf_puts(&b, ",\"result\":");
    sl_admin__jstr(&b, e->result);
    sl_buf_puts(&b, ",\"version_before\":");
    sl_admin__jstr(&b, e->before);
    sl_buf_puts(&b, ",\"version_after\":");
    sl_admin__jstr(&b, e->after);
    sl_buf_puts(&b, ",\"change\":");
    sl_admin__jstr(&b, e->change);
    sl_buf_printf(&b, ",\"flags\":%s", e->flags ? e->flags : "[]");
    if (e->diff)
        sl_buf_printf(&b, ",\"diff\":%s", e->diff);
    sl_buf_puts(&b, ",\"detail\":");
    sl_admin__jstr(&b, e->detail);
    sl_buf_puts(&b, "}\n");
    if (!b.data) {
        sl_log_error("admin audit: out of memory, an action went unrecorded");
        return;
    }
    size_t off = 0;
    while (off < b.len) {
        ssize_t n = write(a->audit_fd, b.data + off, b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (off < b.len || fsync(a->audit_fd) < 0)
        sl_log_error("admin audit: cannot write %s: %s",
                     a->cfg->admin.audit_log, strerror(errno));
    sl_buf_release(&b);
}

/* GET /admin/audit?limit=N: the last N lines (default 100), oldest
 * first, as a JSON array. */
void sl_admin__audit_h(sl_admin *a, sl_http_req *r, admin_actor *who)
{
    long limit = 100;
    const char *q = r->query.p, *end = r->query.p + r->query.n;
    for (const char *p = q; p && p < end; p++)
        if ((p == q || p[-1] == '&') && end - p > 6 &&
            memcmp(p, "limit=", 6) == 0)
            limit = strtol(p + 6, NULL, 10);
    if (limit <= 0 || limit > 10000)
        limit = 100;
    char *data = NULL;
    size_t len = 0;
    if (sl_read_file(a->cfg->admin.audit_log, &data, &len) < 0) {
        sl_admin__error(r, 500, "audit_unreadable",
                        "the admin audit log cannot be read");
        return;
    }
    /* the start of the last `limit` lines */
    size_t start = len;
    long lines = 0;
    while (start > 0) {
        if (data[start - 1] == '\n' && start != len && ++lines >= limit)
            break;
        start--;
    }
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"entries\":[");
    int first = 1;
    for (char *line = data + start; line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t l = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
        if (l > 0) {
            sl_buf_puts(&b, first ? "" : ",");
            sl_buf_append(&b, line, l);
            first = 0;
        }
        line += l + 1;
    }
    sl_buf_puts(&b, "]}");
    free(data);
    sl_admin__reply_buf(r, 200, &b);
}
