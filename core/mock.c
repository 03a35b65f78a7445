/* mock.c — the mock provider (see mock.h).
 *
 * It answers fast and the same way every time, so benchmarks measure the
 * gateway and tests can predict every byte. Anything slow or broken happens
 * only when a request or the command line asks for it. */
#include "mock.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char *const words[] = {"Hello", " from",     " the", " sluice",
                                    " mock", " provider", "."};
#define NWORDS ((int)SL_ARRAY_LEN(words))

typedef struct mreq mreq;

struct sl_mock {
    uv_loop_t *loop;
    sl_mock_opts opts;
    mreq *pending; /* requests waiting on a timer */
};

/* Process-wide counters: several mock workers report one total. */
static uint64_t stat_connections, stat_requests;

struct mreq {
    sl_mock *m;
    sl_http_req *r; /* NULL once the client is gone */
    mreq *prev, *next;
    uv_timer_t timer;
    char model[128];
    int stream;
    int include_usage;
    int chunks;      /* content events to send */
    int sent;        /* content events sent */
    int chunk_delay; /* ms between events */
    int prompt_tokens;
    int status;
    int retry_after;
    int fault; /* one of the FAULT_* values */
};

enum {
    FAULT_NONE,
    FAULT_RESET,
    FAULT_RESET_MID,
    FAULT_GARBAGE,
    FAULT_GARBAGE_BODY,
    FAULT_HANG
};

static int header_int(const sl_http_req *r, const char *name, int dflt)
{
    const sl_str *v = sl_http_header(r, name);
    if (!v || v->n == 0 || v->n > 9)
        return dflt;
    int n = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->p[i] < '0' || v->p[i] > '9')
            return dflt;
        n = n * 10 + (v->p[i] - '0');
    }
    return n;
}

static int parse_fault(const char *s, size_t n)
{
    if (!s)
        return FAULT_NONE;
    if (sl_ieq(s, n, "reset"))
        return FAULT_RESET;
    if (sl_ieq(s, n, "reset-mid-stream"))
        return FAULT_RESET_MID;
    if (sl_ieq(s, n, "garbage"))
        return FAULT_GARBAGE;
    if (sl_ieq(s, n, "garbage-body"))
        return FAULT_GARBAGE_BODY;
    if (sl_ieq(s, n, "hang"))
        return FAULT_HANG;
    return FAULT_NONE;
}

static void send_json(sl_http_req *r, int status, const char *body, size_t n)
{
    sl_http_response_begin(r, status);
    sl_http_response_header(r, "content-type", 12, "application/json", 16);
    sl_http_response_head_end(r, (int64_t)n);
    sl_http_response_body(r, body, n);
    sl_http_response_end(r);
}

static void send_error(sl_http_req *r, int status, int retry_after)
{
    char body[256];
    const char *type = status == 429   ? "rate_limit_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    int n =
        snprintf(body, sizeof(body),
                 "{\"error\":{\"message\":\"mock error %d\",\"type\":\"%s\","
                 "\"code\":\"mock_%d\"}}",
                 status, type, status);
    sl_http_response_begin(r, status);
    sl_http_response_header(r, "content-type", 12, "application/json", 16);
    if (retry_after > 0) {
        char ra[16];
        int l = snprintf(ra, sizeof(ra), "%d", retry_after);
        sl_http_response_header(r, "retry-after", 11, ra, (size_t)l);
    }
    sl_http_response_head_end(r, n);
    sl_http_response_body(r, body, (size_t)n);
    sl_http_response_end(r);
}

static void send_completion(mreq *q)
{
    char body[1024];
    char content[256] = "";
    for (int i = 0; i < NWORDS; i++)
        strcat(content, words[i]);
    int n = snprintf(
        body, sizeof(body),
        "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":%"
        "ld,"
        "\"model\":\"%s\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
        "\"assistant\",\"content\":\"%s\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
        "\"total_tokens\":%d}}",
        (long)time(NULL), q->model, content, q->prompt_tokens, NWORDS,
        q->prompt_tokens + NWORDS);
    send_json(q->r, 200, body, (size_t)n);
}

static void sse_event(sl_http_req *r, const char *json, size_t n)
{
    sl_http_response_body(r, "data: ", 6);
    sl_http_response_body(r, json, n);
    sl_http_response_body(r, "\n\n", 2);
}

static void sse_chunk(mreq *q, const char *delta, const char *finish)
{
    char ev[512];
    int n = snprintf(ev, sizeof(ev),
                     "{\"id\":\"chatcmpl-mock\",\"object\":"
                     "\"chat.completion.chunk\",\"created\":%ld,\"model\":"
                     "\"%s\",\"choices\":[{\"index\":0,\"delta\":{%s},"
                     "\"finish_reason\":%s}]}",
                     (long)time(NULL), q->model, delta, finish);
    sse_event(q->r, ev, (size_t)n);
}

static void mreq_done(mreq *q);

/* Send the next stream event; returns 1 when the stream is over. */
static int stream_step(mreq *q)
{
    sl_http_req *r = q->r;
    if (q->sent == 0 && !r->head_sent) {
        sl_http_response_begin(r, 200);
        sl_http_response_header(r, "content-type", 12, "text/event-stream", 17);
        sl_http_response_header(r, "cache-control", 13, "no-cache", 8);
        sl_http_response_head_end(r, -1);
        sse_chunk(q, "\"role\":\"assistant\",\"content\":\"\"", "null");
    }
    if (q->fault == FAULT_RESET_MID && q->sent >= 2) {
        sl_http_response_flush(r);
        q->r = NULL;
        sl_http_response_abort(r);
        return 1;
    }
    if (q->sent < q->chunks) {
        char d[96];
        snprintf(d, sizeof(d), "\"content\":\"%s\"", words[q->sent % NWORDS]);
        sse_chunk(q, d, "null");
        q->sent++;
        sl_http_response_flush(r);
        return 0;
    }
    sse_chunk(q, "", "\"stop\"");
    if (q->include_usage) {
        char ev[256];
        int n =
            snprintf(ev, sizeof(ev),
                     "{\"id\":\"chatcmpl-mock\",\"object\":"
                     "\"chat.completion.chunk\",\"created\":%ld,\"model\":"
                     "\"%s\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,"
                     "\"completion_tokens\":%d,\"total_tokens\":%d}}",
                     (long)time(NULL), q->model, q->prompt_tokens, q->chunks,
                     q->prompt_tokens + q->chunks);
        sse_event(r, ev, (size_t)n);
    }
    sse_event(r, "[DONE]", 6);
    q->r = NULL;
    sl_http_response_end(r);
    return 1;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void mreq_done(mreq *q)
{
    sl_mock *m = q->m;
    if (q->prev)
        q->prev->next = q->next;
    else
        m->pending = q->next;
    if (q->next)
        q->next->prev = q->prev;
    if (q->r)
        q->r->handler_data = NULL;
    uv_timer_stop(&q->timer);
    uv_close((uv_handle_t *)&q->timer, timer_closed);
}

static void on_timer(uv_timer_t *t);

/* Produce the answer (after any delay). Returns 1 when q is finished. */
static int respond(mreq *q)
{
    sl_http_req *r = q->r;
    switch (q->fault) {
    case FAULT_RESET:
        q->r = NULL;
        sl_http_response_abort(r);
        return 1;
    case FAULT_GARBAGE: {
        static const char junk[] = "SPLORK 999 ???\r\n\x01\x02garbage\r\n\r\n";
        sl_http_response_raw(r, junk, sizeof(junk) - 1);
        q->r = NULL;
        sl_http_response_abort(r);
        return 1;
    }
    case FAULT_GARBAGE_BODY: {
        static const char bad[] =
            "{\"id\": \"chatcmpl-mock\", \"choices\": [tru";
        q->r = NULL;
        send_json(r, 200, bad, sizeof(bad) - 1);
        return 1;
    }
    case FAULT_HANG:
        return 0; /* until the client gives up */
    }
    if (q->status) {
        q->r = NULL;
        send_error(r, q->status, q->retry_after);
        return 1;
    }
    if (!q->stream) {
        send_completion(q);
        q->r = NULL;
        return 1;
    }
    for (;;) {
        if (stream_step(q))
            return 1;
        if (q->chunk_delay > 0) {
            uv_timer_start(&q->timer, on_timer, (uint64_t)q->chunk_delay, 0);
            return 0;
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    mreq *q = t->data;
    if (!q->r)
        return;
    if (q->stream && q->r->head_sent) {
        if (stream_step(q)) {
            mreq_done(q);
            return;
        }
        uv_timer_start(&q->timer, on_timer, (uint64_t)q->chunk_delay, 0);
        return;
    }
    if (respond(q))
        mreq_done(q);
}

static void read_chat_request(mreq *q, const sl_http_req *r)
{
    snprintf(q->model, sizeof(q->model), "mock-model");
    q->prompt_tokens = (int)(r->body.len / 4) + 1;
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    if (!j)
        return;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (cJSON_IsString(model)) {
        /* Names go into JSON we print: keep them to safe characters. */
        size_t o = 0;
        for (const char *p = model->valuestring; *p && o < sizeof(q->model) - 1;
             p++)
            if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
                q->model[o++] = *p;
        q->model[o] = '\0';
    }
    q->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    q->include_usage =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    cJSON_Delete(j);
}

static void echo(sl_http_req *r)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    char tmp[1024];
    size_t n = sl_json_escape(tmp, sizeof(tmp), r->url.p, r->url.n);
    sl_buf_printf(&b,
                  "{\"method\":\"%.*s\",\"url\":\"%.*s\",\"body_bytes\":%zu,"
                  "\"headers\":[",
                  (int)r->method_name.n, r->method_name.p, (int)n, tmp,
                  r->body.len);
    for (int i = 0; i < r->nheaders; i++) {
        size_t kn = sl_json_escape(tmp, 256, r->headers[i].name.p,
                                   r->headers[i].name.n);
        sl_buf_printf(&b, "%s[\"%.*s\",", i ? "," : "", (int)kn, tmp);
        size_t vn = sl_json_escape(tmp, sizeof(tmp), r->headers[i].value.p,
                                   r->headers[i].value.n);
        sl_buf_printf(&b, "\"%.*s\"]", (int)vn, tmp);
    }
    sl_buf_puts(&b, "]}");
    send_json(r, 200, b.data, b.len);
    sl_buf_release(&b);
}

static int path_is(const sl_http_req *r, const char *p)
{
    size_t n = strlen(p);
    return r->path.n == n && memcmp(r->path.p, p, n) == 0;
}

static void on_request(sl_http_req *r, void *data)
{
    sl_mock *m = data;
    __atomic_add_fetch(&stat_requests, 1, __ATOMIC_RELAXED);
    if (r->conn_requests == 0)
        __atomic_add_fetch(&stat_connections, 1, __ATOMIC_RELAXED);

    if (path_is(r, "/health")) {
        send_json(r, 200, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (path_is(r, "/mock/stats")) {
        char b[128];
        int n =
            snprintf(b, sizeof(b), "{\"connections\":%llu,\"requests\":%llu}",
                     (unsigned long long)__atomic_load_n(&stat_connections,
                                                         __ATOMIC_RELAXED),
                     (unsigned long long)__atomic_load_n(&stat_requests,
                                                         __ATOMIC_RELAXED));
        send_json(r, 200, b, (size_t)n);
        return;
    }
    if (path_is(r, "/mock/echo")) {
        echo(r);
        return;
    }
    if (path_is(r, "/v1/models")) {
        static const char models[] =
            "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":"
            "\"model\",\"created\":0,\"owned_by\":\"sluice-mock\"}]}";
        send_json(r, 200, models, sizeof(models) - 1);
        return;
    }
    if (!path_is(r, "/v1/chat/completions")) {
        static const char nf[] =
            "{\"error\":{\"message\":\"unknown path\",\"type\":"
            "\"invalid_request_error\",\"code\":\"not_found\"}}";
        send_json(r, 404, nf, sizeof(nf) - 1);
        return;
    }
    mreq t = {0};
    t.m = m;
    t.r = r;
    read_chat_request(&t, r);
    t.chunks = header_int(r, "x-mock-chunks", NWORDS);
    t.chunk_delay = header_int(r, "x-mock-chunk-delay-ms", 0);
    t.status = header_int(r, "x-mock-status", m->opts.status);
    t.retry_after = header_int(r, "x-mock-retry-after", 0);
    const sl_str *f = sl_http_header(r, "x-mock-fault");
    t.fault = f ? parse_fault(f->p, f->n)
                : parse_fault(m->opts.fault,
                              m->opts.fault ? strlen(m->opts.fault) : 0);
    int delay = header_int(r, "x-mock-delay-ms", m->opts.delay_ms);
    int needs_timer =
        delay > 0 || t.fault == FAULT_HANG ||
        (t.stream && t.chunk_delay > 0 && !t.status && t.fault != FAULT_RESET &&
         t.fault != FAULT_GARBAGE && t.fault != FAULT_GARBAGE_BODY);
    if (!needs_timer) { /* the fast path: answer now, allocate nothing */
        respond(&t);
        return;
    }
    mreq *q = malloc(sizeof(*q));
    if (!q) {
        sl_http_send_error(r, 500, "server_error", "internal_error",
                           "out of memory");
        return;
    }
    *q = t;
    uv_timer_init(m->loop, &q->timer);
    q->timer.data = q;
    q->next = m->pending;
    if (m->pending)
        m->pending->prev = q;
    m->pending = q;
    r->handler_data = q;
    if (delay > 0) {
        uv_timer_start(&q->timer, on_timer, (uint64_t)delay, 0);
        return;
    }
    if (respond(q))
        mreq_done(q);
}

static void on_abort(sl_http_req *r, void *data)
{
    mreq *q = r->handler_data;
    if (q) {
        q->r = NULL;
        mreq_done(q);
    }
}

sl_mock *sl_mock_new(uv_loop_t *loop, const sl_mock_opts *opts)
{
    sl_mock *m = calloc(1, sizeof(*m));
    if (m) {
        m->loop = loop;
        m->opts = *opts;
    }
    return m;
}

sl_http_handler sl_mock_handler(sl_mock *m)
{
    sl_http_handler h = {
        .on_request = on_request, .on_abort = on_abort, .data = m};
    return h;
}

void sl_mock_close(sl_mock *m)
{
    while (m->pending) {
        mreq *q = m->pending;
        sl_http_req *r = q->r;
        q->r = NULL;
        mreq_done(q);
        if (r)
            sl_http_response_abort(r);
    }
}

void sl_mock_free(sl_mock *m)
{
    free(m);
}
