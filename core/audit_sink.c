/* audit_sink.c — the audit log's sink threads (see audit_sink.h).
 *
 * One mutex guards the queues, the counters and the free list; workers
 * hold it only to link a buffer in, sink threads only to take work out and
 * to count. Every write and every POST happens with the mutex released.
 * A buffer handed over by a worker is a `batch`, linked into the queue of
 * each running sink and freed (or kept for reuse) by the last sink done
 * with it. */
#include "audit_sink.h"
#include "log.h"
#include "secret.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { SINK_FILE, SINK_HTTP, NSINKS };

#define FREE_BUFFERS_MAX 64    /* recycled record buffers kept */
#define RETRY_FIRST_MS 250     /* backoff after a failed POST ... */
#define RETRY_MAX_MS 5000      /* ... doubling up to this */
#define DROP_REPORT_EVERY_S 10 /* queue-full drops: one line per period */

typedef struct batch {
    struct batch *next[NSINKS];
    int refs; /* sinks still holding it */
    uint32_t records;
    size_t len, cap;
    char *data;
    double queued_at; /* mono_s() */
    size_t http_off;  /* bytes of it the collector already has */
} batch;

typedef struct sink {
    const char *name; /* "file" / "http", for log lines */
    int on;
    pthread_t thread;
    pthread_cond_t cond;
    batch *head, *tail;
    uint64_t queued_bytes;
    uint64_t queue_drops;    /* records refused over the bound */
    uint64_t drops_reported; /* queue_drops at the last report */
    double drops_reported_at;
    uint64_t dropped_at_failure; /* dropped_records when failing began */
    struct sl_audit_sink_stats st;
} sink;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static sink sinks[NSINKS];
static int stopping;
static uint64_t queue_bound;
static struct {
    char *data;
    size_t cap;
} free_bufs[FREE_BUFFERS_MAX];
static int nfree;

/* The file sink's target. */
static int file_fd = -1;
static char file_name[256];

/* The HTTP sink's settings, fixed once started. */
static char *http_url;
static char http_shown[300]; /* the URL without its query, for logs */
static char *http_ca_file;
static sl_fetch_header *http_headers; /* values are secrets: wiped at stop */
static int http_nheaders;
static uint64_t http_batch, http_flush_ms, http_timeout_ms;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- handing buffers over (worker threads) -------------------------------
 */

int sl_audit_enabled(void)
{
    return sinks[SINK_FILE].on || sinks[SINK_HTTP].on;
}

void sl_audit_submit(sl_buf *b, uint32_t records)
{
    if (!b->len)
        return;
    batch *bt = malloc(sizeof(*bt));
    if (bt)
        *bt = (batch){.records = records,
                      .len = b->len,
                      .cap = b->cap,
                      .data = b->data,
                      .queued_at = mono_s()};
    pthread_mutex_lock(&lock);
    for (int i = 0; i < NSINKS; i++) {
        sink *s = &sinks[i];
        if (!s->on)
            continue;
        if (!bt || s->queued_bytes + b->len > queue_bound) {
            s->queue_drops += records;
            s->st.dropped_records += records;
            s->st.dropped_bytes += b->len;
            continue;
        }
        if (s->tail)
            s->tail->next[i] = bt;
        else
            s->head = bt;
        s->tail = bt;
        s->queued_bytes += bt->len;
        bt->refs++;
        pthread_cond_signal(&s->cond);
    }
    if (bt && bt->refs > 0) {
        /* the bytes are the sinks' now: start over on a recycled buffer */
        if (nfree > 0) {
            nfree--;
            b->data = free_bufs[nfree].data;
            b->cap = free_bufs[nfree].cap;
        } else {
            b->data = NULL;
            b->cap = 0;
        }
    } else {
        free(bt); /* nobody took them: the worker keeps its buffer */
    }
    pthread_mutex_unlock(&lock);
    b->len = 0;
}

/* Drop one sink's hold on bt; the last one recycles its memory. Called
 * with the lock held. */
static void batch_release(batch *bt)
{
    if (--bt->refs > 0)
        return;
    if (nfree < FREE_BUFFERS_MAX && bt->cap >= 4096) {
        free_bufs[nfree].data = bt->data;
        free_bufs[nfree].cap = bt->cap;
        nfree++;
    } else {
        free(bt->data);
    }
    free(bt);
}

/* Take the first batch off s's queue (lock held). */
static batch *dequeue(sink *s, int idx)
{
    batch *bt = s->head;
    s->head = bt->next[idx];
    if (!s->head)
        s->tail = NULL;
    bt->next[idx] = NULL;
    s->queued_bytes -= bt->len;
    return bt;
}

/* ---- failing and recovering, in the error log ----------------------------
 */

/* Count a failure (lock held); returns 1 when the sink was healthy until
 * now, so the caller logs the change once. */
static int note_failure(sink *s, const char *reason)
{
    s->st.errors++;
    s->st.last_error_at = (int64_t)time(NULL);
    snprintf(s->st.last_error, sizeof(s->st.last_error), "%s", reason);
    if (s->st.failing)
        return 0;
    s->st.failing = 1;
    s->dropped_at_failure = s->st.dropped_records;
    return 1;
}

/* Count a success (lock held); returns 1 when the sink was failing, with
 * the records dropped since in *dropped. */
static int note_success(sink *s, uint64_t *dropped)
{
    if (!s->st.failing)
        return 0;
    s->st.failing = 0;
    *dropped = s->st.dropped_records - s->dropped_at_failure;
    return 1;
}

/* Queue-full drops are counted by workers, which never log: the sink's
 * thread reports them, at most once per period. Lock held; logs after
 * unlocking through *msg. */
static int drops_to_report(sink *s, uint64_t *n)
{
    double now = mono_s();
    if (s->queue_drops == s->drops_reported ||
        now - s->drops_reported_at < DROP_REPORT_EVERY_S)
        return 0;
    *n = s->queue_drops - s->drops_reported;
    s->drops_reported = s->queue_drops;
    s->drops_reported_at = now;
    return 1;
}

static void report_drops(sink *s)
{
    uint64_t n;
    pthread_mutex_lock(&lock);
    int report = drops_to_report(s, &n);
    pthread_mutex_unlock(&lock);
    if (report)
        sl_log_error("audit log: %s sink queue full (log.audit_queue %llu "
                     "bytes): %llu records dropped",
                     s->name, (unsigned long long)queue_bound,
                     (unsigned long long)n);
}

/* ---- the file sink --------------------------------------------------------
 */

/* Write all of p; 0 or an errno. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *file_thread(void *arg)
{
    sink *s = &sinks[SINK_FILE];
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!s->head && !stopping)
            pthread_cond_wait(&s->cond, &lock);
        if (!s->head)
            break;
        batch *bt = dequeue(s, SINK_FILE);
        pthread_mutex_unlock(&lock);

        int e = write_all(file_fd, bt->data, bt->len);

        pthread_mutex_lock(&lock);
        int changed;
        uint64_t dropped = 0;
        if (e == 0) {
            s->st.records += bt->records;
            s->st.bytes += bt->len;
            s->st.batches++;
            changed = note_success(s, &dropped);
        } else {
            /* part of it may be in the file: the count stays an upper
             * bound of what was lost rather than a guess */
            s->st.dropped_records += bt->records;
            s->st.dropped_bytes += bt->len;
            changed = note_failure(s, strerror(e));
        }
        batch_release(bt);
        pthread_mutex_unlock(&lock);
        if (changed && e)
            sl_log_error("audit log: writing to %s failed: %s; records are "
                         "dropped and counted until it works again",
                         file_name, strerror(e));
        else if (changed)
            sl_log_error("audit log: writing to %s works again; %llu "
                         "records were dropped meanwhile",
                         file_name, (unsigned long long)dropped);
        report_drops(s);
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* ---- the HTTP sink -------------------------------------------------------
 */

static void deadline_in(struct timespec *ts, double s)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    double t = (double)ts->tv_sec + (double)ts->tv_nsec / 1e9 + s;
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

/* Wait (lock held) until a POST is due: the queue holds a full batch, or
 * its oldest record waited `flush`, and any backoff has passed; or we are
 * stopping. Returns 0 when there is nothing left to do. */
static int wait_for_batch(sink *s, double retry_at)
{
    for (;;) {
        if (stopping)
            return s->head != NULL;
        double now = mono_s(), due;
        if (!s->head) {
            due = now + 3600;
        } else {
            due = s->queued_bytes >= http_batch
                      ? now
                      : s->head->queued_at + (double)http_flush_ms / 1000;
            if (due < retry_at)
                due = retry_at;
            if (due <= now)
                return 1;
        }
        struct timespec ts;
        deadline_in(&ts, due - now);
        pthread_cond_timedwait(&s->cond, &lock, &ts);
    }
}

/* Is this answer worth retrying? (RFC 9110 §15.5.9, §15.6; 429 RFC
 * 6585 §4.) Other 4xx answers will not change on a retry. */
static int retryable(int status)
{
    return status == 408 || status == 429 || status >= 500;
}

/* The bytes of bt the collector has not had yet. */
static size_t http_left(const batch *bt)
{
    return bt->len - bt->http_off;
}

/* How much of p[0..n) fits in `room` bytes without splitting a record:
 * up to the last newline that fits; when not even one record fits and
 * `must` is set, the first whole record (a record is never split). */
static size_t fit_records(const char *p, size_t n, size_t room, int must)
{
    if (n <= room)
        return n;
    for (size_t i = room; i > 0; i--)
        if (p[i - 1] == '\n')
            return i;
    if (!must)
        return 0;
    const char *nl = memchr(p, '\n', n);
    return nl ? (size_t)(nl - p) + 1 : n;
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t c = 0;
    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))); p++)
        c++;
    return c;
}

/* Fill body from the head of the queue: at most http_batch bytes (more
 * only for a single record that is larger), whole records only. Lock
 * held. */
static int fill_body(sink *s, sl_buf *body)
{
    body->len = 0;
    for (batch *bt = s->head; bt; bt = bt->next[SINK_HTTP]) {
        size_t room = http_batch > body->len ? http_batch - body->len : 0;
        size_t take = fit_records(bt->data + bt->http_off, http_left(bt), room,
                                  body->len == 0);
        if (take && sl_buf_append(body, bt->data + bt->http_off, take) < 0)
            return SL_ENOMEM;
        if (take < http_left(bt))
            break;
    }
    return 0;
}

/* Forget the first n bytes of the queue: delivered (ok) or given up on.
 * Lock held. */
static void consume(sink *s, size_t n, int ok)
{
    uint64_t records = 0;
    while (n > 0 && s->head) {
        batch *bt = s->head;
        size_t part = http_left(bt) < n ? http_left(bt) : n;
        records += count_lines(bt->data + bt->http_off, part);
        bt->http_off += part;
        s->queued_bytes -= part;
        n -= part;
        if (http_left(bt) == 0) {
            s->head = bt->next[SINK_HTTP];
            if (!s->head)
                s->tail = NULL;
            bt->next[SINK_HTTP] = NULL;
            batch_release(bt);
        }
    }
    if (ok)
        s->st.records += records;
    else
        s->st.dropped_records += records;
}

/* POST body; the HTTP status, or a negative SL_E* code with a reason.
 * Called without the lock. */
static int post(const sl_buf *body, char *err, size_t errlen)
{
    sl_fetch_req rq = {.method = "POST",
                       .url = http_url,
                       .headers = http_headers,
                       .nheaders = http_nheaders,
                       .body = body->data,
                       .body_len = body->len,
                       .ca_file = http_ca_file,
                       .timeout_ms = (int)http_timeout_ms,
                       .max_body = 64 * 1024};
    sl_fetch_res res;
    int rc = sl_fetch(&rq, &res, err, errlen);
    if (rc == 0) {
        rc = res.status;
        free(res.body); /* a collector's answer is not ours to log */
        if (rc < 200 || rc > 299)
            snprintf(err, errlen, "HTTP status %d", rc);
    }
    return rc;
}

static void *http_thread(void *arg)
{
    sink *s = &sinks[SINK_HTTP];
    (void)arg;
    sl_buf body;
    sl_buf_init(&body, NULL);
    double retry_at = 0, backoff_ms = RETRY_FIRST_MS;
    pthread_mutex_lock(&lock);
    while (wait_for_batch(s, retry_at)) {
        char err[256] = "";
        int rc = fill_body(s, &body);
        if (rc < 0) {
            snprintf(err, sizeof(err), "out of memory");
        } else {
            pthread_mutex_unlock(&lock);
            rc = post(&body, err, sizeof(err));
            pthread_mutex_lock(&lock);
        }
        int ok = rc >= 200 && rc <= 299, changed;
        int give_up = !ok && (stopping || (rc >= 400 && !retryable(rc)));
        uint64_t dropped = 0, before = s->st.dropped_records;
        if (ok || give_up) {
            consume(s, body.len, ok);
            if (ok)
                s->st.bytes += body.len;
            else
                s->st.dropped_bytes += body.len;
        }
        if (ok) {
            s->st.batches++;
            changed = note_success(s, &dropped);
            retry_at = 0;
            backoff_ms = RETRY_FIRST_MS;
        } else {
            changed = note_failure(s, err);
            retry_at = mono_s() + backoff_ms / 1000;
            backoff_ms =
                backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff_ms * 2;
        }
        if (stopping && !ok) { /* no second try at exit: count the rest */
            s->st.dropped_bytes += s->queued_bytes;
            consume(s, s->queued_bytes, 0);
        }
        uint64_t gone = s->st.dropped_records - before;
        pthread_mutex_unlock(&lock);
        if (changed && ok)
            sl_log_error("audit log: collector %s accepts records again; "
                         "%llu records were dropped meanwhile",
                         http_shown, (unsigned long long)dropped);
        else if (changed)
            sl_log_error("audit log: posting to collector %s failed: %s; "
                         "retrying with backoff, records wait in a queue of "
                         "at most %llu bytes",
                         http_shown, err, (unsigned long long)queue_bound);
        if (gone)
            sl_log_error("audit log: %llu records dropped for collector %s "
                         "(%s)",
                         (unsigned long long)gone, http_shown,
                         stopping ? "undelivered at exit" : err);
        report_drops(s);
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    sl_buf_release(&body);
    return NULL;
}

/* ---- start, stop, counters ------------------------------------------------
 */

static int start_sink(int idx, const char *name, void *(*fn)(void *), char *err,
                      size_t errlen)
{
    sink *s = &sinks[idx];
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    s->name = name;
    s->drops_reported_at = -DROP_REPORT_EVERY_S; /* the first is at once */
    s->st.enabled = 1;
    s->on = 1;
    if (pthread_create(&s->thread, NULL, fn, NULL) != 0) {
        s->on = 0;
        s->st.enabled = 0;
        pthread_cond_destroy(&s->cond);
        snprintf(err, errlen, "cannot start the audit log's %s thread", name);
        return SL_ENOMEM;
    }
    return 0;
}

static void free_http_settings(void)
{
    for (int i = 0; i < http_nheaders; i++) {
        free((char *)http_headers[i].name);
        sl_secret_free((char *)http_headers[i].value);
    }
    free(http_headers);
    free(http_url);
    free(http_ca_file);
    http_headers = NULL;
    http_nheaders = 0;
    http_url = http_ca_file = NULL;
}

static int copy_http_settings(const sl_audit_opts *o)
{
    http_url = strdup(o->url);
    http_ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
    http_headers = calloc((size_t)o->nheaders + 1, sizeof(*http_headers));
    if (!http_url || (o->ca_file && !http_ca_file) || !http_headers)
        return SL_ENOMEM;
    /* sl_fetch sends these after its own; content-type is ours to say */
    http_headers[0].name = strdup("Content-Type");
    http_headers[0].value = strdup("application/x-ndjson");
    http_nheaders = 1;
    if (!http_headers[0].name || !http_headers[0].value)
        return SL_ENOMEM;
    for (int i = 0; i < o->nheaders; i++) {
        sl_fetch_header *h = &http_headers[http_nheaders++];
        h->name = strdup(o->headers[i].name);
        h->value = strdup(o->headers[i].value);
        if (!h->name || !h->value)
            return SL_ENOMEM;
    }
    snprintf(http_shown, sizeof(http_shown), "%.*s",
             (int)strcspn(http_url, "?#"), http_url);
    http_batch = o->batch_bytes;
    http_flush_ms = o->flush_ms;
    /* sl_fetch takes an int of ms: ten minutes is plenty for one POST */
    http_timeout_ms = o->timeout_ms < 600000 ? o->timeout_ms : 600000;
    return 0;
}

int sl_audit_start(const sl_audit_opts *o, char *err, size_t errlen)
{
    queue_bound = o->queue_bytes ? o->queue_bytes : 64u << 20;
    stopping = 0;
    if (o->file_fd >= 0) {
        file_fd = o->file_fd;
        snprintf(file_name, sizeof(file_name), "%s",
                 o->file_name ? o->file_name : "the access log");
        if (start_sink(SINK_FILE, "file", file_thread, err, errlen) < 0)
            return SL_ENOMEM;
    }
    if (o->url) {
        if (copy_http_settings(o) < 0) {
            free_http_settings();
            snprintf(err, errlen, "out of memory");
            sl_audit_stop();
            return SL_ENOMEM;
        }
        if (start_sink(SINK_HTTP, "http", http_thread, err, errlen) < 0) {
            free_http_settings();
            sl_audit_stop();
            return SL_ENOMEM;
        }
    }
    return 0;
}

void sl_audit_stop(void)
{
    pthread_mutex_lock(&lock);
    stopping = 1;
    for (int i = 0; i < NSINKS; i++)
        if (sinks[i].on)
            pthread_cond_signal(&sinks[i].cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < NSINKS; i++) {
        sink *s = &sinks[i];
        if (!s->on)
            continue;
        pthread_join(s->thread, NULL);
        pthread_cond_destroy(&s->cond);
        report_drops(s);
        s->on = 0;
    }
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nfree; i++)
        free(free_bufs[i].data);
    nfree = 0;
    pthread_mutex_unlock(&lock);
    free_http_settings();
    file_fd = -1;
}

void sl_audit_stats(struct sl_audit_stats *out)
{
    pthread_mutex_lock(&lock);
    out->file = sinks[SINK_FILE].st;
    out->file.queued_bytes = sinks[SINK_FILE].queued_bytes;
    out->http = sinks[SINK_HTTP].st;
    out->http.queued_bytes = sinks[SINK_HTTP].queued_bytes;
    pthread_mutex_unlock(&lock);
}
