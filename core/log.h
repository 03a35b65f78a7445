/* log.h — the error log and the per-worker buffered access log.
 *
 * The error log is line-oriented text, one write() per line. The access
 * log (the audit record) is one JSON object per request, collected in a
 * per-worker buffer that is handed to the sink threads of audit_sink.c
 * when it fills or by a periodic flush, so a request never waits on the
 * disk or on a collector. Neither log ever receives a header value:
 * secrets travel in headers. */
#ifndef SL_LOG_H
#define SL_LOG_H

#include "buf.h"
#include "config.h"
#include <uv.h>

/* Open the error and access logs named in c and start the audit sinks
 * (main thread, before workers start). Returns 0, or SL_EIO or
 * SL_ECONFIG (a collector header's secret) with a reason in err. */
int sl_log_open(const sl_config *c, char *err, size_t errlen);
/* Reopen both files in place (log rotation, SIGUSR1); a file that cannot
 * be reopened is logged and the old one kept. */
void sl_log_reopen(void);
/* Deliver what the workers handed over, stop the sinks, close the files
 * (after the workers ended). */
void sl_log_close(void);

void sl_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define sl_log_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)
#define sl_log_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_log_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_log_debug(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)
int sl_log_enabled(int level);

/* A worker's access-log buffer. */
typedef struct sl_accesslog {
    sl_buf buf;
    uv_timer_t timer;
    int enabled;
    uint32_t records; /* in buf */
} sl_accesslog;

void sl_access_init(sl_accesslog *a, uv_loop_t *loop);
/* The buffer to append one line to (the caller adds the trailing '\n' and
 * then calls sl_access_commit), or NULL when the access log is off. */
sl_buf *sl_access_line(sl_accesslog *a);
void sl_access_commit(sl_accesslog *a);
/* Hand the buffered records to the sinks (never blocks; see
 * audit_sink.h). */
void sl_access_flush(sl_accesslog *a);
/* Flush and close the timer; `done` runs when the handle is closed. */
void sl_access_close(sl_accesslog *a);

#endif
