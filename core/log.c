/* log.c — error log and buffered access log (see log.h). The access
 * log's delivery (file, stdout, collector) is audit_sink.c's. */
#include "log.h"
#include "audit_sink.h"
#include "secret.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define ACCESS_FLUSH_BYTES (32 * 1024)
#define ACCESS_FLUSH_MS 200

static int error_fd = 2;
static int access_fd = -1;
static int log_level = SL_LOG_INFO;
static char *error_path;
static char *access_path;
static pthread_mutex_t reopen_lock = PTHREAD_MUTEX_INITIALIZER;

static int open_log(const char *path, char *err, size_t errlen)
{
    if (strcmp(path, "stdout") == 0)
        return 1;
    if (strcmp(path, "stderr") == 0)
        return 2;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0 && err)
        snprintf(err, errlen, "%s: cannot open log: %s", path, strerror(errno));
    return fd;
}

/* Resolve the collector's header values (secret references) into hs;
 * SL_ECONFIG naming file, line and key when one cannot be read. */
static int resolve_headers(const sl_config *c, sl_fetch_header *hs, char *err,
                           size_t errlen)
{
    const sl_audit_http_cfg *h = &c->audit_http;
    sl_secret_rules rules = {c->secret_dirs, c->nsecret_dirs, NULL, -1};
    for (int i = 0; i < h->nheaders; i++) {
        const char *why;
        char *v = NULL;
        hs[i].name = h->header_names[i];
        if (sl_secret_resolve(h->header_refs[i], &rules, &v, NULL, &why) < 0) {
            snprintf(err, errlen, "%s:%d: log.audit_http.headers.%s: %s: %s",
                     c->path ? c->path : "sluice.yaml", h->header_lines[i],
                     h->header_names[i], h->header_refs[i], why);
            return SL_ECONFIG;
        }
        hs[i].value = v;
        if (v[strcspn(v, "\r\n")]) {
            snprintf(err, errlen,
                     "%s:%d: log.audit_http.headers.%s: the secret in %s "
                     "holds a line break",
                     c->path ? c->path : "sluice.yaml", h->header_lines[i],
                     h->header_names[i], h->header_refs[i]);
            return SL_ECONFIG;
        }
    }
    return 0;
}

static int start_audit(const sl_config *c, char *err, size_t errlen)
{
    const sl_audit_http_cfg *h = &c->audit_http;
    if (access_fd < 0 && !h->url)
        return 0;
    sl_fetch_header *hs = calloc((size_t)h->nheaders + 1, sizeof(*hs));
    if (!hs) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    int rc = resolve_headers(c, hs, err, errlen);
    if (rc == 0) {
        sl_audit_opts o = {.file_fd = access_fd,
                           .file_name = c->access_log,
                           .queue_bytes = c->audit_queue,
                           .url = h->url,
                           .ca_file = h->ca_file,
                           .headers = hs,
                           .nheaders = h->nheaders,
                           .batch_bytes = h->batch,
                           .flush_ms = h->flush,
                           .timeout_ms = h->timeout};
        rc = sl_audit_start(&o, err, errlen);
    }
    for (int i = 0; i < h->nheaders; i++) /* the sink keeps its own copy */
        sl_secret_free((char *)hs[i].value);
    free(hs);
    return rc;
}

int sl_log_open(const sl_config *c, char *err, size_t errlen)
{
    log_level = c->log_level;
    if (c->error_log) {
        int fd = open_log(c->error_log, err, errlen);
        if (fd < 0)
            return SL_EIO;
        error_fd = fd;
        error_path = strdup(c->error_log);
    }
    if (c->access_log) {
        int fd = open_log(c->access_log, err, errlen);
        if (fd < 0) {
            sl_log_close();
            return SL_EIO;
        }
        access_fd = fd;
        if (fd > 2)
            access_path = strdup(c->access_log);
    }
    int rc = start_audit(c, err, errlen);
    if (rc < 0)
        sl_log_close();
    return rc;
}

static void reopen_one(int *fd, const char *path)
{
    if (!path || *fd <= 2)
        return;
    char err[512];
    int nfd = open_log(path, err, sizeof(err));
    if (nfd < 0) { /* keep writing to the old file rather than lose lines */
        sl_log_error("log reopen: %s; writing on to the file already open",
                     err);
        return;
    }
    /* dup2 swaps the file under writers in other threads atomically. */
    dup2(nfd, *fd);
    close(nfd);
}

void sl_log_reopen(void)
{
    pthread_mutex_lock(&reopen_lock);
    reopen_one(&error_fd, error_path);
    reopen_one(&access_fd, access_path);
    pthread_mutex_unlock(&reopen_lock);
}

void sl_log_close(void)
{
    sl_audit_stop(); /* delivers what the workers handed over */
    if (access_fd > 2)
        close(access_fd);
    if (error_fd > 2)
        close(error_fd);
    access_fd = -1;
    error_fd = 2;
    free(error_path);
    free(access_path);
    error_path = access_path = NULL;
}

int sl_log_enabled(int level)
{
    return level <= log_level;
}

void sl_log(int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level > log_level)
        return;
    char line[2048];
    size_t n = sl_time_rfc3339(line);
    n += (size_t)snprintf(line + n, sizeof(line) - n, " [%s] ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(error_fd, line, n);
    (void)w; /* nowhere better to report a failing error log */
}

static void flush_timer(uv_timer_t *t)
{
    sl_access_flush(t->data);
}

void sl_access_init(sl_accesslog *a, uv_loop_t *loop)
{
    sl_buf_init(&a->buf, NULL);
    a->records = 0;
    a->enabled = sl_audit_enabled();
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    if (a->enabled) {
        uv_timer_start(&a->timer, flush_timer, ACCESS_FLUSH_MS,
                       ACCESS_FLUSH_MS);
        uv_unref((uv_handle_t *)&a->timer);
    }
}

sl_buf *sl_access_line(sl_accesslog *a)
{
    return a->enabled ? &a->buf : NULL;
}

void sl_access_commit(sl_accesslog *a)
{
    a->records++;
    if (a->buf.len >= ACCESS_FLUSH_BYTES)
        sl_access_flush(a);
}

void sl_access_flush(sl_accesslog *a)
{
    sl_audit_submit(&a->buf, a->records);
    a->records = 0;
}

void sl_access_close(sl_accesslog *a)
{
    if (a->enabled)
        sl_access_flush(a);
    sl_buf_release(&a->buf);
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->timer, NULL);
}
