/* proxy.c — the request path of a gateway worker (see proxy.h): the
 * policy phases, the attempts toward targets, the answer streamed back
 * (filtered or translated when the chain or the front door asks). What goes
 * upstream is built in proxy_head.c; what the gateway answers itself, and
 * the access log, in proxy_answer.c. */
#include "proxy_req.h"
#include "metrics.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- versions --------------------------------------------------------------
 */

static void version_unref(sl_proxy *px, version *v)
{
    if (--v->refs > 0)
        return;
    if (v->chain.ref != LUA_NOREF)
        sl_lua_chain_release(px->lua, &v->chain);
    sl_policy_unref(v->policy);
    free(v);
}

int sl_proxy_set_policy(sl_proxy *px, sl_policy *p, char *err, size_t errlen)
{
    version *v = calloc(1, sizeof(*v));
    if (!v)
        return SL_ENOMEM;
    v->chain.ref = LUA_NOREF;
    if (p->nplugins > 0 || p->nfiles > 0) {
        int rc = sl_lua_compile(px->lua, p, &v->chain, err, errlen);
        if (rc < 0) {
            free(v);
            return rc;
        }
    }
    if (v->chain.mask & SL_PHASE_UPSTREAM_RESPONSE)
        sl_lua_attempt_limits(px->lua, &v->chain, &v->attempt_ms, &v->total_ms);
    sl_policy_ref(p);
    v->policy = p;
    v->refs = 1;
    if (px->cur)
        version_unref(px, px->cur);
    px->cur = v;
    return 0;
}

/* ---- request lifetime -------------------------------------------------------
 */

/* The request is over: log it, run the log phase, give everything back.
 * Call before the final response call, which may start the connection's
 * next request in the same sl_http_req. */
void sl_proxy__finish(preq *q, const char *error)
{
    sl_proxy *px = q->px;
    version *ver = q->ver;
    /* The log phase first: what the policy adds to the record goes into
     * the filter buffer, which nothing needs any more. */
    q->fbuf.len = 0;
    /* With no audit sink, the policy's fields are not even built. */
    if (q->v.ctx_ref != LUA_NOREF)
        sl_lua_log(px->lua, &ver->chain, q->v.ctx_ref, q->r->status,
                   q->be ? q->be->name : NULL, q->attempts, q->nattempts,
                   sl_access_line(px->alog) ? &q->fbuf : NULL);
    sl_proxy__access_log(px->alog, q->r, q, error, &q->fbuf);
    sl_metrics_request_end(q->r, q->be ? q->be->name : NULL, q->attempts,
                           q->nattempts, ver->policy->version);
    if (ver->chain.mask)
        sl_lua_request_done(px->lua, &q->v);
    sl_buf_release(&q->head);
    sl_buf_release(&q->path);
    sl_buf_release(&q->fbuf);
    sl_buf_release(&q->fhead);
    sl_buf_release(&q->hhead);
    sl_buf_release(&q->hbody);
    sl_buf_release(&q->v.headers);
    sl_buf_release(&q->v.body);
    sl_buf_release(&q->v.resp_headers);
    q->r->handler_data = NULL;
    version_unref(px, ver);
    sl_pool_put(&px->preqs, q);
}

static const sl_up_cbs up_cbs;

/* ---- attempts ---------------------------------------------------------------
 */

/* The word the chain and the audit record use for a failed attempt. */
static const char *error_reason(int err)
{
    switch (err) {
    case SL_ETIMEDOUT:
        return "timeout";
    case SL_ECONNREFUSED:
    case SL_ECONNECT:
        return "connect_error";
    case SL_ECONNRESET:
    case SL_EEOF:
        return "reset";
    case SL_ETLS:
        return "tls";
    case SL_EDNS:
        return "dns";
    case SL_EPROTO:
        return "protocol";
    case SL_ECANCELED:
        return "canceled";
    }
    return "error";
}

static double attempt_ms(const preq *q)
{
    return (double)(sl_now_ns() - q->attempt_ns) / 1e6;
}

/* Record how the current attempt went (once more overwrites). */
static void note_attempt(preq *q, int status, int err, const char *outcome)
{
    sl_lua_attempt *a = &q->attempts[q->attempt];
    a->backend = q->be->name;
    a->status = status;
    a->error = err ? error_reason(err) : NULL;
    a->ms = attempt_ms(q);
    a->outcome = outcome;
    if (q->nattempts < q->attempt + 1)
        q->nattempts = q->attempt + 1;
}

/* Another attempt may start: a target is left, the overall deadline has
 * not passed, and nothing reached the client. */
static int can_move_on(const preq *q)
{
    return q->attempt + 1 < q->ntargets &&
           (!q->deadline_ns || sl_now_ns() < q->deadline_ns) &&
           !q->r->head_sent;
}

static int backend_index(const sl_policy *p, const char *name)
{
    for (int j = 0; j < p->nbackends; j++)
        if (strcmp(p->backends[j].name, name) == 0)
            return j;
    return -1;
}

/* Ask the chain about the current attempt: its head (status, hdrs, and
 * the body when it was held), or its failure (status 0, err). 1 to move
 * on (q->targets already holds what a plugin chose), 0 to accept, or
 * SL_EIO when a plugin failed (q->v says which). */
static int ask_chain(preq *q, int status, const sl_http_hdr *hdrs, int n,
                     int err, const sl_buf *body)
{
    int rc = sl_lua_upstream_response(
        q->px->lua, &q->ver->chain, q->v.ctx_ref, status, hdrs, n, q->be->name,
        q->attempt + 1, can_move_on(q), err ? error_reason(err) : NULL,
        attempt_ms(q), body ? (body->data ? body->data : "") : NULL,
        body ? body->len : 0, &q->v);
    if (rc == 2) { /* the rest of the list, as the plugin chose it */
        const sl_policy *p = q->ver->policy;
        int at = q->attempt + 1;
        for (int i = 0; i < q->v.ntargets && at < SL_LUA_MAX_TARGETS; i++) {
            int found = backend_index(p, q->v.targets[i]);
            if (found < 0) {
                snprintf(q->v.plugin, sizeof(q->v.plugin), "upstream_response");
                snprintf(q->v.message, sizeof(q->v.message),
                         "set_targets chose unknown backend '%s'",
                         q->v.targets[i]);
                return SL_EIO;
            }
            q->targets[at++] = found;
        }
        q->ntargets = at;
        rc = 1;
    }
    if (rc < 0)
        return rc;
    return rc == 1 && can_move_on(q);
}

/* Start the current attempt. Returns 0 when it runs, 1 when the client was
 * already answered (the adapter refused the request), or SL_E*. */
static int start_attempt(preq *q)
{
    sl_http_req *r = q->r;
    version *ver = q->ver;
    q->be = &ver->policy->backends[q->targets[q->attempt]];
    memset(&q->res, 0, sizeof(q->res));
    q->filter = FILTER_NONE;
    q->fbuf.len = q->fhead.len = q->hhead.len = q->hbody.len = 0;
    q->fscan = 0;
    q->held = 0;
    q->attempt_ns = sl_now_ns();
    if (q->attempt == 0 && ver->total_ms)
        q->deadline_ns = q->attempt_ns + ver->total_ms * 1000000;
    /* The attempt's head must come within its own limit and within what
     * the overall deadline leaves. */
    uint64_t head_ms = ver->attempt_ms;
    if (q->deadline_ns) {
        uint64_t left =
            q->deadline_ns > q->attempt_ns
                ? (q->deadline_ns - q->attempt_ns + 999999) / 1000000
                : 1;
        if (!head_ms || left < head_ms)
            head_ms = left;
    }
    if (q->v.ai) {
        int rc = sl_lua_prepare(q->px->lua, &ver->chain, q->v.ctx_ref,
                                q->attempt + 1, q->be->name, &q->path, &q->v);
        if (rc == SL_EINVAL) { /* e.g. a feature this provider lacks */
            r->status = q->v.status;
            sl_proxy__answer_deny(q);
            return 1;
        }
        if (rc < 0) {
            sl_proxy__answer_plugin_error(q);
            return 1;
        }
    }
    if (sl_proxy__build_head(q) < 0)
        return SL_ENOMEM;
    const sl_buf *body = q->v.body_changed ? &q->v.body : &r->body;
    q->bufs[0] = uv_buf_init(q->head.data, (unsigned)q->head.len);
    q->bufs[1] = uv_buf_init(body->data, (unsigned)body->len);
    q->paused = 0;
    return sl_up_start(q->px->up, q->be, q->bufs, body->len ? 2 : 1,
                       r->method == HTTP_HEAD, head_ms, &up_cbs, q, &q->x);
}

/* Drop the current attempt and start the next target. */
static void next_attempt(preq *q, const char *why)
{
    if (q->x) {
        sl_up_cancel(q->x);
        q->x = NULL;
    }
    sl_log_info("request %s: backend %s: %s, trying the next target", q->r->id,
                q->be->name, why);
    q->attempt++;
    int rc = start_attempt(q);
    if (rc < 0) {
        q->res.err = rc;
        sl_proxy__answer_upstream_error(q);
    }
}

static void write_head(preq *q, int status, const sl_http_hdr *hdrs, int n,
                       int64_t content_length)
{
    sl_http_req *r = q->r;
    sl_http_response_begin(r, status);
    for (int i = 0; i < n; i++) {
        const sl_http_hdr *h = &hdrs[i];
        if (sl_proxy__is_hop_by_hop(&h->name) ||
            (h->name.n == 12 && sl_ieq(h->name.p, 12, "x-request-id")))
            continue;
        sl_http_response_header(r, h->name.p, h->name.n, h->value.p,
                                h->value.n);
    }
    sl_proxy__policy_headers(q);
    sl_http_response_header(r, "x-sluice-backend", 16, q->be->name,
                            strlen(q->be->name));
    if (q->v.model[0])
        sl_http_response_header(r, "x-sluice-model", 14, q->v.model,
                                strlen(q->v.model));
    sl_http_response_head_end(r, content_length);
}

static int is_event_stream(const sl_http_hdr *hdrs, int n)
{
    for (int i = 0; i < n; i++)
        if (sl_ieq(hdrs[i].name.p, hdrs[i].name.n, "content-type"))
            return hdrs[i].value.n >= 17 &&
                   strncasecmp(hdrs[i].value.p, "text/event-stream", 17) == 0;
    return 0;
}

/* An attempt's head is known (with its body when it was held): the chain
 * accepts it, or the request moves on. 0 when accepted and the answer is
 * on its way; 1 when q moved on or was answered. */
static int head_arrived(preq *q, int status, const sl_http_hdr *hdrs, int n,
                        int64_t content_length, const sl_buf *body)
{
    version *ver = q->ver;
    if ((ver->chain.mask & SL_PHASE_UPSTREAM_RESPONSE) || q->v.ai) {
        int rc = ask_chain(q, status, hdrs, n, 0, body);
        if (rc < 0) {
            if (q->x)
                sl_up_cancel(q->x);
            q->x = NULL;
            sl_proxy__answer_plugin_error(q);
            return 1;
        }
        if (rc == 1) {
            char why[48];
            snprintf(why, sizeof(why), "answered %d", status);
            note_attempt(q, status, 0, "next");
            next_attempt(q, why);
            return 1;
        }
    }
    note_attempt(q, status, 0, "served");
    /* AI answers are translated (and their usage read) like a filter. */
    if ((ver->chain.mask & SL_PHASE_BODY_FILTER) || q->v.ai) {
        if (is_event_stream(hdrs, n)) {
            q->filter = FILTER_SSE;
            write_head(q, status, hdrs, n, -1);
        } else {
            /* The filtered length is known only at the end: hold the head. */
            q->filter = FILTER_WHOLE;
            q->fstatus = status;
            for (int i = 0; i < n; i++) {
                if (sl_proxy__is_hop_by_hop(&hdrs[i].name))
                    continue;
                sl_buf_append(&q->fhead, hdrs[i].name.p, hdrs[i].name.n);
                sl_buf_append(&q->fhead, ": ", 2);
                sl_buf_append(&q->fhead, hdrs[i].value.p, hdrs[i].value.n);
                sl_buf_append(&q->fhead, "\r\n", 2);
            }
        }
        return 0;
    }
    write_head(q, status, hdrs, n, content_length);
    return 0;
}

static void up_head(void *data, int status, const sl_http_hdr *hdrs, int n,
                    int64_t content_length)
{
    preq *q = data;
    q->res.status = status; /* for the log, whatever happens next */
    /* An error answer is read whole before the chain judges it: the body
     * tells a context-length error from another 400. */
    if (status >= 400 && (q->ver->chain.mask & SL_PHASE_UPSTREAM_RESPONSE) &&
        content_length <= HOLD_MAX_BODY) {
        q->held = 1;
        q->held_status = status;
        q->held_cl = content_length;
        for (int i = 0; i < n; i++) {
            sl_buf_append(&q->hhead, hdrs[i].name.p, hdrs[i].name.n);
            sl_buf_append(&q->hhead, ": ", 2);
            sl_buf_append(&q->hhead, hdrs[i].value.p, hdrs[i].value.n);
            sl_buf_append(&q->hhead, "\r\n", 2);
        }
        return;
    }
    head_arrived(q, status, hdrs, n, content_length, NULL);
}

/* Run one piece through the body filters and send what they return. */
static int filter_piece(preq *q, const char *p, size_t n, int last)
{
    const char *out;
    size_t outlen;
    q->v.status = 0;
    if (sl_lua_body_filter(q->px->lua, &q->ver->chain, q->v.ctx_ref, p, n, last,
                           &out, &outlen, &q->v) < 0)
        return SL_EIO;
    return sl_http_response_body(q->r, out, outlen);
}

/* Cut complete SSE events (RFC: blank-line terminated) out of fbuf. */
static int filter_events(preq *q, int last)
{
    size_t off = 0;
    sl_buf *b = &q->fbuf;
    /* Bytes before `skip` were searched on an earlier read and hold no
     * event end (less the 3 a terminator may straddle): a backend that
     * never ends an event must not make every read rescan the buffer. */
    size_t skip = q->fscan > 3 ? q->fscan - 3 : 0;
    for (;;) {
        char *p = b->data + off;
        size_t left = b->len - off;
        if (left == 0)
            break;
        if (skip > left)
            skip = left;
        char *end = memmem(p + skip, left - skip, "\n\n", 2);
        char *crend = memmem(p + skip, left - skip, "\r\n\r\n", 4);
        skip = 0;
        size_t evlen;
        if (crend && (!end || crend < end))
            evlen = (size_t)(crend - p) + 4;
        else if (end)
            evlen = (size_t)(end - p) + 2;
        else
            break;
        if (filter_piece(q, p, evlen, 0) < 0)
            return SL_EIO;
        off += evlen;
        if (q->v.end_stream) /* a filter ended the answer here */
            return 1;
    }
    sl_buf_consume(b, off);
    q->fscan = b->len;
    if (last) { /* what is left (maybe nothing), flagged as the end */
        if (filter_piece(q, b->data ? b->data : "", b->len, 1) < 0)
            return SL_EIO;
        b->len = 0;
    }
    return 0;
}

/* Body bytes of an accepted answer. Returns -1 when q was finished (a
 * filter failed), else 0. */
static int body_piece(preq *q, const char *p, size_t n)
{
    if (q->filter == FILTER_NONE) {
        sl_http_response_body(q->r, p, n);
        return 0;
    }
    if (q->fbuf.len + n > FILTER_MAX_BODY ||
        sl_buf_append(&q->fbuf, p, n) < 0) {
        q->v.action = SL_LUA_ERROR;
        snprintf(q->v.plugin, sizeof(q->v.plugin), "body_filter");
        snprintf(q->v.message, sizeof(q->v.message),
                 "body too large to filter");
        if (q->x)
            sl_up_cancel(q->x);
        q->x = NULL;
        sl_proxy__answer_plugin_error(q);
        return -1;
    }
    int fe = q->filter == FILTER_SSE ? filter_events(q, 0) : 0;
    if (fe == 1) { /* ended by a filter: the backend's rest is not read */
        if (q->x)
            sl_up_cancel(q->x);
        q->x = NULL;
        sl_proxy__finish(q, NULL);
        sl_http_response_end(q->r);
        return -1;
    }
    if (fe < 0) {
        if (q->x)
            sl_up_cancel(q->x);
        q->x = NULL;
        if (q->r->head_sent) {
            sl_proxy__finish(q, "body filter failed mid-stream");
            sl_http_response_abort(q->r);
        } else {
            sl_proxy__answer_plugin_error(q);
        }
        return -1;
    }
    return 0;
}

/* The held error answer is read (or too long to hold): let the chain
 * judge it. 1 when q moved on or was finished; 0 when accepted (its body
 * went the way of any body). */
static int release_held(preq *q)
{
    sl_http_hdr hdrs[256];
    int n = sl_proxy__parse_lines(&q->hhead, hdrs, 256);
    q->held = 0;
    if (head_arrived(q, q->held_status, hdrs, n, q->held_cl, &q->hbody))
        return 1;
    int rc = q->hbody.len ? body_piece(q, q->hbody.data, q->hbody.len) : 0;
    q->hbody.len = 0;
    return rc < 0;
}

static void up_body(void *data, const char *p, size_t n)
{
    preq *q = data;
    if (q->held) {
        if (sl_buf_append(&q->hbody, p, n) < 0 ||
            q->hbody.len > HOLD_MAX_BODY) /* judged on what came so far */
            release_held(q);
        return;
    }
    body_piece(q, p, n);
}

static void up_read_done(void *data)
{
    preq *q = data;
    sl_http_req *r = q->r;
    if (!r->head_sent)
        return;
    /* A failed flush closes the connection, which ends q (on_abort). */
    if (sl_http_response_flush(r) < 0 || r->handler_data != q)
        return;
    if (!q->paused && sl_http_write_pending(r) > CLIENT_HIGH_WATER) {
        q->paused = 1; /* a slow client must not make us buffer the stream */
        sl_up_pause(q->x);
    }
}

/* The whole body is in: filter it once and send head and body. */
static int finish_whole(preq *q)
{
    const char *out;
    size_t outlen;
    q->v.status = 0;
    if (sl_lua_body_filter(q->px->lua, &q->ver->chain, q->v.ctx_ref,
                           q->fbuf.data ? q->fbuf.data : "", q->fbuf.len, 1,
                           &out, &outlen, &q->v) < 0)
        return SL_EIO;
    sl_http_hdr hdrs[256];
    int n = sl_proxy__parse_lines(&q->fhead, hdrs, 256);
    write_head(q, q->v.status > 0 ? q->v.status : q->fstatus, hdrs, n,
               (int64_t)outlen);
    sl_http_response_body(q->r, out, outlen);
    return 0;
}

/* A streamed answer broke after its head went out: end the stream with an
 * error event the client's SDK raises, instead of a cut connection. The
 * partial event in fbuf, if any, never reached the client and is dropped. */
static void end_stream_with_error(preq *q, int err)
{
    char msg[200], body[400];
    snprintf(msg, sizeof(msg),
             "the backend '%s' failed mid-stream (%s); the answer is "
             "incomplete",
             q->be->name, error_reason(err));
    int n;
    if (sl_ieq(q->r->path.p, q->r->path.n, "/v1/messages"))
        n = snprintf(body, sizeof(body),
                     "event: error\ndata: {\"type\":\"error\",\"error\":{"
                     "\"type\":\"api_error\",\"message\":\"%s\"}}\n\n",
                     msg);
    else
        n = snprintf(body, sizeof(body),
                     "data: {\"error\":{\"message\":\"%s\",\"type\":"
                     "\"upstream_error\",\"code\":\"upstream_stream_error\"}}"
                     "\n\n",
                     msg);
    sl_http_response_body(q->r, body, (size_t)n);
}

static void up_done(void *data, const sl_up_result *res)
{
    preq *q = data;
    sl_http_req *r = q->r;
    q->res = *res;
    q->x = NULL;
    if (res->err && res->detail)
        sl_log_warn("request %s: backend %s: %s: %s", r->id, q->be->name,
                    sl_strerror(res->err), res->detail);
    if (q->held) {
        if (res->err == 0 && release_held(q))
            return;
        q->held = 0; /* a failure reading an error answer: a failed attempt */
    }
    if (res->err == 0) {
        int rc = 0;
        if (q->filter == FILTER_WHOLE)
            rc = finish_whole(q);
        else if (q->filter == FILTER_SSE)
            rc = filter_events(q, 1);
        if (rc < 0) {
            if (r->head_sent) {
                sl_proxy__finish(q, "body filter failed");
                sl_http_response_abort(r);
            } else {
                sl_proxy__answer_plugin_error(q);
            }
            return;
        }
        sl_proxy__finish(q, NULL);
        sl_http_response_end(r);
    } else if (!r->head_sent) {
        /* Nothing reached the client: the chain may move on. */
        if (res->err != SL_ECANCELED &&
            (q->ver->chain.mask & SL_PHASE_UPSTREAM_RESPONSE)) {
            int rc = ask_chain(q, 0, NULL, 0, res->err, NULL);
            if (rc < 0) {
                sl_proxy__answer_plugin_error(q);
                return;
            }
            if (rc == 1) {
                note_attempt(q, 0, res->err, "next");
                next_attempt(q, error_reason(res->err));
                return;
            }
        }
        note_attempt(q, res->status, res->err, "failed");
        sl_proxy__answer_upstream_error(q);
    } else {
        /* Part of the answer is out: never retried, a clean end would be a
         * lie. A filtered event stream ends with an error event instead. */
        note_attempt(q, res->status, res->err, "failed");
        if (q->filter == FILTER_SSE) {
            end_stream_with_error(q, res->err);
            sl_proxy__finish(q, "upstream failed mid-response");
            sl_http_response_end(r);
            return;
        }
        sl_proxy__finish(q, "upstream failed mid-response");
        sl_http_response_abort(r);
    }
}

static const sl_up_cbs up_cbs = {
    .on_head = up_head,
    .on_body = up_body,
    .on_read_done = up_read_done,
    .on_done = up_done,
};

/* Backend names chosen by a route phase, to indices of the policy. */
static int resolve_targets(preq *q)
{
    const sl_policy *p = q->ver->policy;
    if (q->v.ntargets == 0) {
        if (p->default_backend < 0)
            return SL_EINVAL;
        q->targets[0] = p->default_backend;
        q->ntargets = 1;
        return 0;
    }
    for (int i = 0; i < q->v.ntargets; i++) {
        int found = backend_index(p, q->v.targets[i]);
        if (found < 0) {
            snprintf(q->v.message, sizeof(q->v.message),
                     "route chose unknown backend '%s'", q->v.targets[i]);
            return SL_ECONFIG;
        }
        q->targets[q->ntargets++] = found;
    }
    return 0;
}

static void on_request(sl_http_req *r, void *data)
{
    sl_proxy *px = data;
    version *ver = px->cur;
    if (!ver) {
        r->status = 503;
        sl_proxy__access_log(px->alog, r, NULL, "no policy", NULL);
        sl_http_send_error(r, 503, "server_error", "no_policy",
                           "no policy is loaded");
        return;
    }
    preq *q = sl_pool_get(&px->preqs);
    if (!q) {
        sl_http_send_error(r, 500, "server_error", "internal_error",
                           "out of memory");
        return;
    }
    memset(q, 0, sizeof(*q));
    q->px = px;
    q->r = r;
    q->ver = ver;
    ver->refs++;
    q->v.ctx_ref = LUA_NOREF;
    sl_buf_init(&q->head, NULL);
    sl_buf_init(&q->fbuf, NULL);
    sl_buf_init(&q->fhead, NULL);
    sl_buf_init(&q->path, NULL);
    sl_buf_init(&q->hhead, NULL);
    sl_buf_init(&q->hbody, NULL);
    sl_buf_init(&q->v.headers, NULL);
    sl_buf_init(&q->v.body, NULL);
    sl_buf_init(&q->v.resp_headers, NULL);
    r->handler_data = q;
    if (ver->chain.mask) {
        sl_lua_request(px->lua, &ver->chain, r, ver->policy->version, &q->v);
        if (q->v.action == SL_LUA_DENY) {
            r->status = q->v.status;
            sl_proxy__answer_deny(q);
            return;
        }
        if (q->v.action == SL_LUA_ERROR) {
            sl_proxy__answer_plugin_error(q);
            return;
        }
        if (q->v.action == SL_LUA_RESPOND) {
            r->status = q->v.status;
            sl_proxy__answer_respond(q);
            return;
        }
    }
    int rc = resolve_targets(q);
    if (rc == SL_EINVAL) {
        r->status = 503;
        sl_proxy__finish(q, "no backend");
        sl_http_send_error(r, 503, "server_error", "no_backend",
                           "no backend is configured for this request");
        return;
    }
    if (rc < 0) {
        q->v.action = SL_LUA_ERROR;
        snprintf(q->v.plugin, sizeof(q->v.plugin), "route");
        sl_proxy__answer_plugin_error(q);
        return;
    }
    rc = start_attempt(q);
    if (rc < 0) {
        q->res.err = rc;
        sl_proxy__answer_upstream_error(q);
    }
}

static void on_abort(sl_http_req *r, void *data)
{
    preq *q = r->handler_data;
    if (!q)
        return;
    if (q->x) {
        sl_up_cancel(q->x); /* the backend stops working for nobody */
        note_attempt(q, q->res.status, 0, "aborted");
    }
    q->x = NULL;
    r->status = 499;
    sl_proxy__finish(q, "client closed the connection");
}

static void on_drain(sl_http_req *r, void *data)
{
    preq *q = r->handler_data;
    if (q && q->paused && q->x) {
        q->paused = 0;
        sl_up_resume(q->x);
    }
}

static void on_rejected(sl_http_req *r, const char *code, void *data)
{
    sl_proxy *px = data;
    sl_proxy__access_log(px->alog, r, NULL, code, NULL);
}

sl_proxy *sl_proxy_new(sl_up *up, sl_accesslog *alog, sl_lua *lua)
{
    sl_proxy *px = calloc(1, sizeof(*px));
    if (!px)
        return NULL;
    px->up = up;
    px->alog = alog;
    px->lua = lua;
    sl_pool_init(&px->preqs, sizeof(preq), 4096);
    return px;
}

sl_http_handler sl_proxy_handler(sl_proxy *px)
{
    sl_http_handler h = {
        .on_request = on_request,
        .on_abort = on_abort,
        .on_drain = on_drain,
        .on_rejected = on_rejected,
        .data = px,
    };
    return h;
}

void sl_proxy_free(sl_proxy *px)
{
    if (!px)
        return;
    if (px->cur)
        version_unref(px, px->cur);
    sl_pool_destroy(&px->preqs);
    free(px);
}
