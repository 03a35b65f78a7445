/* log.c — error log and buffered access log (see log.h). */
#include "log.h"
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
        if (fd < 0)
            return SL_EIO;
        access_fd = fd;
        access_path = strdup(c->access_log);
    }
    return 0;
}

static void reopen_one(int *fd, const char *path)
{
    if (!path || *fd <= 2)
        return;
    int nfd = open_log(path, NULL, 0);
    if (nfd < 0)
        return; /* keep writing to the old file rather than lose lines */
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
    a->enabled = access_fd >= 0;
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
    if (a->buf.len >= ACCESS_FLUSH_BYTES)
        sl_access_flush(a);
}

void sl_access_flush(sl_accesslog *a)
{
    size_t off = 0;
    while (off < a->buf.len) {
        ssize_t w = write(access_fd, a->buf.data + off, a->buf.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            sl_log_error("access log write failed: %s; %zu bytes dropped",
                         strerror(errno), a->buf.len - off);
            break;
        }
        off += (size_t)w;
    }
    a->buf.len = 0;
}

void sl_access_close(sl_accesslog *a)
{
    if (a->enabled)
        sl_access_flush(a);
    sl_buf_release(&a->buf);
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->timer, NULL);
}
