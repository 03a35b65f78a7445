/* mock.c — the mock provider (see mock.h): routes, credentials, faults,
 * timing, statistics and the record of what it received. The bodies each
 * provider API answers with live in mock_providers.c.
 *
 * It answers fast and the same way every time, so benchmarks measure the
 * gateway and tests can predict every byte. Anything slow or broken happens
 * only when a request or the command line asks for it. */
#include "mock.h"
#include "log.h"
#include "mock_providers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

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
    sl_mock_call call;
    int sent;        /* stream pieces sent */
    int chunk_delay; /* ms between stream events */
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
    FAULT_CLOSE_DELIMITED,
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
    if (sl_ieq(s, n, "close-delimited"))
        return FAULT_CLOSE_DELIMITED;
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

/* ---- the record of received requests ----
 *
 * A ring of the last REC_SLOTS requests, shared by every mock worker of the
 * process. A slot keeps the request's bytes as received (method, url,
 * header names and values, body, each behind its length); JSON is made
 * only when /mock/requests is read. Slots keep their memory between
 * requests, so recording costs a copy and a lock, and allocates only while
 * the ring warms up or meets a bigger request. */

#define REC_SLOTS 50
#define REC_BODY_MAX (256 * 1024)

typedef struct rec_slot {
    sl_buf raw;
    uint64_t seq;
    size_t body_bytes; /* as received; raw keeps at most REC_BODY_MAX */
    int nheaders;
    int ok; /* 0 when copying failed (out of memory) */
} rec_slot;

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static rec_slot rec_ring[REC_SLOTS];
static uint64_t rec_total; /* requests recorded since the start */
static uint64_t rec_first; /* the oldest one not cleared */
static int rec_users;      /* live sl_mock objects; the last frees the ring */

static void rec_put(sl_buf *b, const char *p, size_t n)
{
    uint32_t len = (uint32_t)n;
    memcpy(b->data + b->len, &len, sizeof(len));
    memcpy(b->data + b->len + sizeof(len), p, n);
    b->len += sizeof(len) + n;
}

static const char *rec_get(const char **cur, size_t *n)
{
    uint32_t len;
    memcpy(&len, *cur, sizeof(len));
    const char *p = *cur + sizeof(len);
    *cur = p + len;
    *n = len;
    return p;
}

static void record(const sl_http_req *r)
{
    size_t body = r->body.len < REC_BODY_MAX ? r->body.len : REC_BODY_MAX;
    size_t need =
        4 * (3 + 2 * (size_t)r->nheaders) + r->method_name.n + r->url.n + body;
    for (int i = 0; i < r->nheaders; i++)
        need += r->headers[i].name.n + r->headers[i].value.n;
    pthread_mutex_lock(&rec_lock);
    rec_slot *s = &rec_ring[rec_total % REC_SLOTS];
    s->raw.len = 0;
    s->seq = ++rec_total;
    s->body_bytes = r->body.len;
    s->nheaders = r->nheaders;
    s->ok = sl_buf_reserve(&s->raw, need) == 0;
    if (s->ok) {
        rec_put(&s->raw, r->method_name.p, r->method_name.n);
        rec_put(&s->raw, r->url.p, r->url.n);
        for (int i = 0; i < r->nheaders; i++) {
            rec_put(&s->raw, r->headers[i].name.p, r->headers[i].name.n);
            rec_put(&s->raw, r->headers[i].value.p, r->headers[i].value.n);
        }
        rec_put(&s->raw, r->body.data ? r->body.data : "", body);
    }
    pthread_mutex_unlock(&rec_lock);
}

static int json_str(sl_buf *b, const char *p, size_t n)
{
    if (sl_buf_reserve(b, n * 6 + 2) < 0)
        return -1;
    b->data[b->len++] = '"';
    b->len += sl_json_escape(b->data + b->len, b->cap - b->len, p, n);
    b->data[b->len++] = '"';
    return 0;
}

static int rec_json(sl_buf *b, const rec_slot *s)
{
    const char *cur = s->raw.data;
    size_t n;
    const char *p;
    int rc = sl_buf_printf(
        b, "{\"seq\":%llu,\"method\":", (unsigned long long)s->seq);
    p = rec_get(&cur, &n);
    rc |= json_str(b, p, n);
    rc |= sl_buf_puts(b, ",\"path\":");
    p = rec_get(&cur, &n);
    rc |= json_str(b, p, n);
    rc |= sl_buf_puts(b, ",\"headers\":[");
    for (int i = 0; i < s->nheaders; i++) {
        rc |= sl_buf_puts(b, i ? ",[" : "[");
        p = rec_get(&cur, &n);
        rc |= json_str(b, p, n);
        rc |= sl_buf_puts(b, ",");
        p = rec_get(&cur, &n);
        rc |= json_str(b, p, n);
        rc |= sl_buf_puts(b, "]");
    }
    rc |= sl_buf_printf(b, "],\"body_bytes\":%zu,\"body\":", s->body_bytes);
    p = rec_get(&cur, &n);
    rc |= json_str(b, p, n);
    rc |= sl_buf_puts(b, "}");
    return rc;
}

static void send_records(sl_http_req *r)
{
    sl_buf out;
    sl_buf_init(&out, NULL);
    pthread_mutex_lock(&rec_lock);
    uint64_t from = rec_total > REC_SLOTS ? rec_total - REC_SLOTS : 0;
    if (from < rec_first)
        from = rec_first;
    int rc = sl_buf_printf(&out, "{\"total\":%llu,\"requests\":[",
                           (unsigned long long)rec_total);
    int first = 1;
    for (uint64_t i = from; i < rec_total && rc == 0; i++) {
        const rec_slot *s = &rec_ring[i % REC_SLOTS];
        if (!s->ok)
            continue;
        if (!first)
            rc |= sl_buf_puts(&out, ",");
        rc |= rec_json(&out, s);
        first = 0;
    }
    pthread_mutex_unlock(&rec_lock);
    rc |= sl_buf_puts(&out, "]}");
    if (rc == 0)
        send_json(r, 200, out.data, out.len);
    else
        sl_http_send_error(r, 500, "server_error", "internal_error",
                           "out of memory");
    sl_buf_release(&out);
}

static void clear_records(void)
{
    pthread_mutex_lock(&rec_lock);
    rec_first = rec_total;
    pthread_mutex_unlock(&rec_lock);
}

/* ---- answering a provider call ---- */

static void mreq_done(mreq *q);

/* Send the next stream event; returns 1 when the stream is over. */
static int stream_step(mreq *q)
{
    sl_http_req *r = q->r;
    if (q->sent == 0 && !r->head_sent)
        sl_mock_stream_open(&q->call, r);
    if (q->fault == FAULT_RESET_MID && q->sent >= 2) {
        sl_http_response_flush(r);
        q->r = NULL;
        sl_http_response_abort(r);
        return 1;
    }
    if (q->sent < q->call.pieces) {
        sl_mock_stream_piece(&q->call, r, q->sent);
        q->sent++;
        sl_http_response_flush(r);
        return 0;
    }
    sl_mock_stream_close(&q->call, r);
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
    case FAULT_GARBAGE_BODY:
        q->r = NULL;
        sl_mock_send_garbage_body(r, q->call.api);
        return 1;
    case FAULT_CLOSE_DELIMITED: {
        /* No length, no chunks: the body ends when the connection does
         * (RFC 9112 §6.3, the last rule). */
        static const char ans[] =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            "connection: close\r\n\r\n{\"id\":\"chatcmpl-mock\",\"object\":"
            "\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{"
            "\"role\":\"assistant\",\"content\":\"until close\"},"
            "\"finish_reason\":\"stop\"}]}";
        sl_http_response_raw(r, ans, sizeof(ans) - 1);
        q->r = NULL;
        sl_http_response_abort(r);
        return 1;
    }
    case FAULT_HANG:
        return 0; /* until the client gives up */
    }
    if (q->status) {
        q->r = NULL;
        sl_mock_send_error(r, q->call.api, q->status, q->retry_after, NULL,
                           NULL);
        return 1;
    }
    if (q->call.embeddings || !q->call.stream) {
        q->r = NULL;
        if (q->call.embeddings)
            sl_mock_send_embeddings(&q->call, r);
        else
            sl_mock_send_answer(&q->call, r);
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
    if (q->call.stream && q->r->head_sent) {
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

/* ---- routes ---- */

static int path_is(const sl_http_req *r, const char *p)
{
    size_t n = strlen(p);
    return r->path.n == n && memcmp(r->path.p, p, n) == 0;
}

static int has_prefix(const char *s, size_t n, const char *pre)
{
    size_t pn = strlen(pre);
    return n >= pn && memcmp(s, pre, pn) == 0;
}

static int str_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

static void set_model(sl_mock_call *c, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof(c->model) - 1; i++)
        if (s[i] != '"' && s[i] != '\\' && (unsigned char)s[i] >= 0x20)
            c->model[o++] = s[i];
    c->model[o] = '\0';
}

/* A query parameter's value, as received (not percent-decoded). */
static int query_param(const sl_http_req *r, const char *name, sl_str *out)
{
    size_t nl = strlen(name);
    const char *p = r->query.p, *end = p + r->query.n;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            out->p = p + nl + 1;
            out->n = (size_t)(e - out->p);
            return 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

enum { ROUTE_NONE, ROUTE_CALL, ROUTE_UNKNOWN };

/* Which provider call r is: fills c's api, embeddings, and what the path
 * says (Azure deployment, Gemini model and method). */
static int route(const sl_http_req *r, sl_mock_call *c)
{
    const char *p = r->path.p;
    size_t n = r->path.n;
    if (path_is(r, "/v1/chat/completions"))
        return ROUTE_CALL;
    if (path_is(r, "/v1/embeddings")) {
        c->embeddings = 1;
        return ROUTE_CALL;
    }
    if (path_is(r, "/v1/messages")) {
        c->api = SL_MOCK_ANTHROPIC;
        return ROUTE_CALL;
    }
    static const char az[] = "/openai/deployments/";
    if (has_prefix(p, n, az)) {
        c->api = SL_MOCK_AZURE;
        const char *dep = p + sizeof(az) - 1, *end = p + n;
        const char *slash = memchr(dep, '/', (size_t)(end - dep));
        if (!slash || slash == dep)
            return ROUTE_UNKNOWN;
        set_model(c, dep, (size_t)(slash - dep));
        size_t rest = (size_t)(end - slash);
        if (str_is(slash, rest, "/chat/completions"))
            return ROUTE_CALL;
        if (str_is(slash, rest, "/embeddings")) {
            c->embeddings = 1;
            return ROUTE_CALL;
        }
        return ROUTE_UNKNOWN;
    }
    static const char gv1b[] = "/v1beta/models/", gv1[] = "/v1/models/";
    size_t skip = has_prefix(p, n, gv1b)  ? sizeof(gv1b) - 1
                  : has_prefix(p, n, gv1) ? sizeof(gv1) - 1
                                          : 0;
    if (skip) {
        c->api = SL_MOCK_GEMINI;
        const char *model = p + skip, *end = p + n;
        const char *colon = memchr(model, ':', (size_t)(end - model));
        if (!colon || colon == model)
            return ROUTE_UNKNOWN;
        set_model(c, model, (size_t)(colon - model));
        size_t mn = (size_t)(end - colon);
        sl_str alt;
        if (str_is(colon, mn, ":generateContent"))
            return ROUTE_CALL;
        if (str_is(colon, mn, ":batchEmbedContents")) {
            c->embeddings = 1;
            return ROUTE_CALL;
        }
        if (!str_is(colon, mn, ":streamGenerateContent"))
            return ROUTE_UNKNOWN;
        c->stream = 1;
        c->sse = query_param(r, "alt", &alt) && sl_ieq(alt.p, alt.n, "sse");
        return ROUTE_CALL;
    }
    return ROUTE_NONE;
}

static int header_set(const sl_http_req *r, const char *name)
{
    const sl_str *v = sl_http_header(r, name);
    return v && v->n > 0;
}

/* Does r carry the credential its API wants? OpenAI's check is opt-in
 * (--require-auth, x-mock-require-auth: 1) so the quickstart works with
 * no key; the others always check. Only presence is checked. */
static int has_credentials(const sl_mock *m, const sl_http_req *r, int api)
{
    sl_str key;
    switch (api) {
    case SL_MOCK_AZURE:
        return header_set(r, "api-key");
    case SL_MOCK_ANTHROPIC:
        return header_set(r, "x-api-key");
    case SL_MOCK_GEMINI:
        return header_set(r, "x-goog-api-key") ||
               (query_param(r, "key", &key) && key.n > 0);
    }
    if (!m->opts.require_auth && header_int(r, "x-mock-require-auth", 0) != 1)
        return 1;
    const sl_str *a = sl_http_header(r, "authorization");
    return a && a->n > 7 && sl_ieq(a->p, 7, "bearer ");
}

static const char *const auth_messages[] = {
    [SL_MOCK_OPENAI] = "You didn't provide an API key. You need to provide "
                       "your API key in an Authorization header using "
                       "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    [SL_MOCK_AZURE] = "Access denied due to missing subscription key. Make "
                      "sure to include subscription key when making "
                      "requests to an API.",
    [SL_MOCK_ANTHROPIC] = "x-api-key header is required",
    [SL_MOCK_GEMINI] = "Method doesn't allow unregistered callers (callers "
                       "without established identity). Please use API Key "
                       "or other form of API consumer identity to call this "
                       "API.",
};

/* Answer what is wrong with r before any fault: the route, credentials
 * and required versions. Returns 1 when r was answered. */
static int refuse(const sl_mock *m, sl_http_req *r, int rt, int api)
{
    if (rt == ROUTE_UNKNOWN) {
        sl_mock_send_error(r, api, 404, 0, "not_found", "unknown path");
        return 1;
    }
    if (!has_credentials(m, r, api)) {
        sl_mock_send_error(r, api, 401, 0,
                           api == SL_MOCK_AZURE ? "401" : "invalid_api_key",
                           auth_messages[api]);
        return 1;
    }
    sl_str v;
    if (api == SL_MOCK_AZURE && !(query_param(r, "api-version", &v) && v.n)) {
        sl_mock_send_error(r, api, 400, 0, "MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) "
                           "is required for all requests.");
        return 1;
    }
    if (api == SL_MOCK_ANTHROPIC && !header_set(r, "anthropic-version")) {
        sl_mock_send_error(r, api, 400, 0, NULL,
                           "anthropic-version: header is required");
        return 1;
    }
    return 0;
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

static void send_stats(sl_http_req *r)
{
    char b[160];
    pthread_mutex_lock(&rec_lock);
    uint64_t recorded = rec_total;
    pthread_mutex_unlock(&rec_lock);
    int n = snprintf(
        b, sizeof(b),
        "{\"connections\":%llu,\"requests\":%llu,\"recorded\":%llu}",
        (unsigned long long)__atomic_load_n(&stat_connections,
                                            __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&stat_requests, __ATOMIC_RELAXED),
        (unsigned long long)recorded);
    send_json(r, 200, b, (size_t)n);
}

/* The mock's own routes; returns 1 when r was one of them. */
static int mock_route(sl_http_req *r)
{
    if (path_is(r, "/health")) {
        send_json(r, 200, "{\"status\":\"ok\"}", 15);
        return 1;
    }
    /* /v1/echo too: what a gateway passes through under /v1/ */
    if (path_is(r, "/v1/echo")) {
        echo(r);
        return 1;
    }
    if (!has_prefix(r->path.p, r->path.n, "/mock/"))
        return 0;
    if (path_is(r, "/mock/stats")) {
        send_stats(r);
    } else if (path_is(r, "/mock/echo")) {
        echo(r);
    } else if (path_is(r, "/mock/requests") && r->method == HTTP_DELETE) {
        clear_records();
        send_json(r, 200, "{\"cleared\":true}", 16);
    } else if (path_is(r, "/mock/requests")) {
        send_records(r);
    } else {
        sl_mock_send_error(r, SL_MOCK_OPENAI, 404, 0, "not_found",
                           "unknown path");
    }
    return 1;
}

static void on_request(sl_http_req *r, void *data)
{
    sl_mock *m = data;
    __atomic_add_fetch(&stat_requests, 1, __ATOMIC_RELAXED);
    if (r->conn_requests == 0)
        __atomic_add_fetch(&stat_connections, 1, __ATOMIC_RELAXED);
    if (mock_route(r))
        return;
    record(r);
    if (path_is(r, "/v1/models")) {
        static const char models[] =
            "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":"
            "\"model\",\"created\":0,\"owned_by\":\"sluice-mock\"}]}";
        if (refuse(m, r, ROUTE_CALL, SL_MOCK_OPENAI))
            return;
        send_json(r, 200, models, sizeof(models) - 1);
        return;
    }
    mreq t = {0};
    int rt = route(r, &t.call);
    if (rt == ROUTE_NONE) {
        static const char nf[] =
            "{\"error\":{\"message\":\"unknown path\",\"type\":"
            "\"invalid_request_error\",\"code\":\"not_found\"}}";
        send_json(r, 404, nf, sizeof(nf) - 1);
        return;
    }
    if (refuse(m, r, rt, t.call.api))
        return;
    t.m = m;
    t.r = r;
    sl_mock_read_call(&t.call, r, header_int(r, "x-mock-chunks", -1));
    t.chunk_delay = header_int(r, "x-mock-chunk-delay-ms", 0);
    t.status = header_int(r, "x-mock-status", m->opts.status);
    t.retry_after = header_int(r, "x-mock-retry-after", 0);
    const sl_str *f = sl_http_header(r, "x-mock-fault");
    t.fault = f ? parse_fault(f->p, f->n)
                : parse_fault(m->opts.fault,
                              m->opts.fault ? strlen(m->opts.fault) : 0);
    int delay = header_int(r, "x-mock-delay-ms", m->opts.delay_ms);
    int streams = t.call.stream && !t.call.embeddings;
    int needs_timer =
        delay > 0 || t.fault == FAULT_HANG ||
        (streams && t.chunk_delay > 0 && !t.status && t.fault != FAULT_RESET &&
         t.fault != FAULT_GARBAGE && t.fault != FAULT_GARBAGE_BODY &&
         t.fault != FAULT_CLOSE_DELIMITED);
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
        pthread_mutex_lock(&rec_lock);
        rec_users++;
        pthread_mutex_unlock(&rec_lock);
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
    if (!m)
        return;
    pthread_mutex_lock(&rec_lock);
    if (--rec_users == 0)
        for (int i = 0; i < REC_SLOTS; i++)
            sl_buf_release(&rec_ring[i].raw);
    pthread_mutex_unlock(&rec_lock);
    free(m);
}
