/* proxy_answer.c — what a gateway worker answers itself (upstream
 * failures, plugin errors, denials, the runtime's own answers) and the
 * access log line every request leaves (see proxy_req.h). */
#include "proxy_req.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* ---- access log ----------------------------------------------------- */

/* Appends without printf: the line is written for every request. */
static void put_str(sl_buf *b, const char *key, const char *v)
{
    sl_buf_puts(b, key);
    sl_buf_append_json(b, v, strlen(v));
    sl_buf_append(b, "\"", 1);
}

static void put_int(sl_buf *b, const char *key, long long v)
{
    sl_buf_puts(b, key);
    if (v < 0) {
        sl_buf_append(b, "-", 1);
        v = -v;
    }
    sl_buf_append_u64(b, (uint64_t)v);
}

static void put_ms(sl_buf *b, const char *key, uint64_t ns)
{
    sl_buf_puts(b, key);
    sl_buf_append_ms(b, ns);
}

/* ,"attempts":[{backend, status, error, latency_ms, outcome}…], the shape
 * the runtime's audit fields give them. */
static void log_attempts(sl_buf *b, const preq *q)
{
    sl_buf_puts(b, ",\"attempts\":[");
    for (int i = 0; i < q->nattempts; i++) {
        const sl_lua_attempt *a = &q->attempts[i];
        put_str(b, i ? ",{\"backend\":\"" : "{\"backend\":\"",
                a->backend ? a->backend : "");
        put_int(b, ",\"status\":", a->status);
        if (a->error)
            put_str(b, ",\"error\":\"", a->error);
        put_ms(b, ",\"latency_ms\":", (uint64_t)(a->ms * 1e6));
        put_str(b, ",\"outcome\":\"", a->outcome ? a->outcome : "");
        sl_buf_append(b, "}", 1);
    }
    sl_buf_puts(b, "]");
}

void sl_proxy__access_log(sl_accesslog *alog, sl_http_req *r, const preq *q,
                          const char *error, const sl_buf *policy)
{
    sl_buf *b = sl_access_line(alog);
    if (!b)
        return;
    char ts[32];
    size_t tl = sl_time_rfc3339(ts);
    sl_buf_puts(b, "{\"v\":1,\"time\":\"");
    sl_buf_append(b, ts, tl);
    put_str(b, "\",\"request_id\":\"", r->id);
    put_str(b, ",\"client\":\"", r->client_addr);
    sl_buf_puts(b, ",\"method\":\"");
    sl_buf_append_json(b, r->method_name.p, r->method_name.n);
    /* The query string is not logged: some providers take keys there. */
    sl_buf_puts(b, "\",\"path\":\"");
    sl_buf_append_json(b, r->path.p, r->path.n < 500 ? r->path.n : 500);
    put_int(b, "\",\"status\":", r->status);
    put_int(b, ",\"bytes\":", (long long)r->bytes_sent);
    put_ms(b, ",\"duration_ms\":", sl_now_ns() - r->start_ns);
    if (q && q->ver)
        put_str(b, ",\"policy_version\":\"", q->ver->policy->version);
    if (q && q->v.plugin[0] && q->v.action != SL_LUA_OK)
        put_str(b, ",\"plugin\":\"", q->v.plugin);
    if (r->first_byte_ns > r->start_ns)
        put_ms(b, ",\"ttft_ms\":", r->first_byte_ns - r->start_ns);
    if (q && q->be) {
        put_str(b, ",\"provider\":\"", q->be->provider);
        if (q->be->region)
            put_str(b, ",\"region\":\"", q->be->region);
        put_str(b, ",\"backend\":\"", q->be->name);
        put_int(b, ",\"upstream_status\":", q->res.status);
        sl_buf_puts(b, q->res.reused ? ",\"upstream_reused\":true"
                                     : ",\"upstream_reused\":false");
        put_ms(b, ",\"upstream_head_ms\":", q->res.head_ns);
        if (q->res.err) {
            put_str(b, ",\"upstream_error\":\"", sl_strerror(q->res.err));
            put_str(b, ",\"upstream_phase\":\"",
                    q->res.phase ? q->res.phase : "");
            put_str(b, ",\"upstream_detail\":\"",
                    q->res.detail ? q->res.detail : "");
        }
    }
    if (q && q->nattempts > 0 && q->v.ctx_ref == LUA_NOREF)
        log_attempts(b, q); /* else the runtime's audit fields carry them */
    if (error)
        put_str(b, ",\"error\":\"", error);
    if (policy && policy->len)
        sl_buf_append(b, policy->data, policy->len);
    sl_buf_puts(b, "}\n");
    sl_access_commit(alog);
}

/* ---- answers ---------------------------------------------------------- */

static int error_status(int err)
{
    switch (err) {
    case SL_ETIMEDOUT:
        return 504;
    case SL_ECANCELED:
        return 503;
    }
    return 502;
}

/* Answer the client for a failed attempt. */
void sl_proxy__answer_upstream_error(preq *q)
{
    const sl_up_result *res = &q->res;
    sl_http_req *r = q->r;
    char msg[300];
    const char *code = "upstream_error";
    const char *why = "the backend failed";
    switch (res->err) {
    case SL_ETIMEDOUT:
        code = "upstream_timeout";
        why = "the backend did not answer in time";
        break;
    case SL_ECONNREFUSED:
    case SL_ECONNECT:
        code = "upstream_connect_error";
        why = "cannot connect to the backend";
        break;
    case SL_EDNS:
        code = "upstream_dns_error";
        why = "cannot resolve the backend's host";
        break;
    case SL_ETLS:
        code = "upstream_tls_error";
        why = "the TLS connection to the backend failed";
        break;
    case SL_EPROTO:
        code = "upstream_protocol_error";
        why = "the backend sent a malformed response";
        break;
    case SL_ECONNRESET:
        code = "upstream_reset";
        why = "the backend closed the connection";
        break;
    case SL_ECANCELED:
        code = "shutting_down";
        why = "the gateway is shutting down";
        break;
    }
    snprintf(msg, sizeof(msg), "%s (backend '%s')", why, q->be->name);
    r->status = error_status(res->err);
    sl_proxy__finish(q, NULL);
    sl_http_send_error(r, r->status, "upstream_error", code, msg);
}

void sl_proxy__answer_plugin_error(preq *q)
{
    sl_http_req *r = q->r;
    char msg[160];
    snprintf(msg, sizeof(msg), "policy plugin '%s' failed", q->v.plugin);
    sl_log_error("request %s: plugin %s: %s", r->id, q->v.plugin, q->v.message);
    r->status = 500;
    sl_proxy__finish(q, "plugin error");
    sl_http_send_error(r, 500, "server_error", "plugin_error", msg);
}

void sl_proxy__policy_headers(preq *q)
{
    sl_http_hdr extra[32];
    int n = sl_proxy__parse_lines(&q->v.resp_headers, extra, 32);
    for (int i = 0; i < n; i++)
        if (!sl_proxy__is_hop_by_hop(&extra[i].name))
            sl_http_response_header(q->r, extra[i].name.p, extra[i].name.n,
                                    extra[i].value.p, extra[i].value.n);
}

/* A JSON answer the gateway writes itself (a denial, or the runtime's own
 * answer such as the model list), with the headers the verdict carries. */
static void answer_json(preq *q, const char *body, size_t len,
                        const char *log_error)
{
    sl_http_req *r = q->r;
    sl_http_response_begin(r, q->v.status);
    sl_http_response_header(r, "content-type", 12, "application/json", 16);
    sl_proxy__policy_headers(q);
    sl_http_response_head_end(r, (int64_t)len);
    sl_http_response_body(r, body, len);
    sl_proxy__finish(q, log_error);
    sl_http_response_end(r);
}

void sl_proxy__answer_deny(preq *q)
{
    sl_lua_verdict *v = &q->v;
    char body[1100], esc[600], code[140];
    size_t el =
        sl_json_escape(esc, sizeof(esc), v->message, strlen(v->message));
    size_t cl = sl_json_escape(code, sizeof(code), v->code, strlen(v->code));
    const char *type = v->status == 429   ? "rate_limit_error"
                       : v->status >= 500 ? "server_error"
                                          : "invalid_request_error";
    int bl = snprintf(body, sizeof(body),
                      "{\"error\":{\"message\":\"%.*s\",\"type\":\"%s\","
                      "\"code\":\"%.*s\"}}\n",
                      (int)el, esc, type, (int)cl, code);
    answer_json(q, body, (size_t)bl, "denied by policy");
}

/* The runtime answers itself (a model list, say): status and JSON body. */
void sl_proxy__answer_respond(preq *q)
{
    answer_json(q, q->v.body.data ? q->v.body.data : "", q->v.body.len, NULL);
}
