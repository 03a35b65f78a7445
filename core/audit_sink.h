/* audit_sink.h — delivery of the audit log (one JSON line per request),
 * off the workers' threads.
 *
 * A worker fills a buffer with records (log.c) and hands the whole buffer
 * over with sl_audit_submit(): a pointer swap under a mutex, never a
 * system call, never a wait. Each sink has its own thread and its own
 * queue, bounded in bytes (log.audit_queue); a buffer that would pass the
 * bound is dropped for that sink and counted:
 *   - file: the access log file, or stdout; a failed write drops its
 *     records (counted), and the next write tries again;
 *   - http: POSTs of newline-delimited JSON (application/x-ndjson) to a
 *     collector, up to `batch` bytes each, at least every `flush`; a
 *     failed POST is retried with backoff while its records wait in the
 *     queue (so the bound caps what an outage can hold), a 4xx answer
 *     other than 408 and 429 drops the batch.
 * A sink logs one error line when it starts failing and one when it
 * recovers (with what was dropped meanwhile), never one per record. */
#ifndef SL_AUDIT_SINK_H
#define SL_AUDIT_SINK_H

#include "buf.h"
#include "http_fetch.h"

/* What a sink did since the start; see sl_audit_stats(). */
struct sl_audit_sink_stats {
    int enabled;
    int failing;              /* its last write or POST failed */
    uint64_t records;         /* written or delivered */
    uint64_t bytes;           /* of those records */
    uint64_t batches;         /* successful writes or POSTs */
    uint64_t dropped_records; /* never delivered: queue full, write failed,
                                 refused by the collector, lost at exit */
    uint64_t dropped_bytes;
    uint64_t errors;       /* failed writes or POSTs (each retry counts) */
    uint64_t queued_bytes; /* waiting in memory now */
    int64_t last_error_at; /* unix seconds; 0: never */
    char last_error[200];  /* "" or a reason without any secret */
};

struct sl_audit_stats {
    struct sl_audit_sink_stats file; /* file or stdout */
    struct sl_audit_sink_stats http; /* the collector */
};

/* Copy the counters (any thread; zeros when the audit log is off). */
void sl_audit_stats(struct sl_audit_stats *out);

typedef struct sl_audit_opts {
    int file_fd;           /* -1: no file sink; the fd stays the caller's */
    const char *file_name; /* for log lines: the path or "stdout" */
    uint64_t queue_bytes;  /* bound of each sink's queue */
    /* the HTTP sink, when url is set */
    const char *url;
    const char *ca_file;
    const sl_fetch_header *headers; /* copied; values are secrets */
    int nheaders;
    uint64_t batch_bytes;
    uint64_t flush_ms;
    uint64_t timeout_ms;
} sl_audit_opts;

/* Start the sink threads (main thread, before workers start): 0 or a
 * negative SL_E* code with a reason in err. */
int sl_audit_start(const sl_audit_opts *o, char *err, size_t errlen);
/* Is any sink running? (Workers skip building records otherwise.) */
int sl_audit_enabled(void);
/* Hand b's bytes (whole records, `records` of them) to every sink. b is
 * left empty, on a recycled buffer when one is free. Never blocks. */
void sl_audit_submit(sl_buf *b, uint32_t records);
/* Deliver what is queued (one more try for the collector), then stop the
 * threads and free everything (main thread, after the workers ended). */
void sl_audit_stop(void);

#endif
