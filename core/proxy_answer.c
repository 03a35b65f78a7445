/* proxy_answer.c — what a gateway worker answers itself (upstream
 * failures, plugin errors, denials, the runtime's own answers) and the
 * access log line every request leaves (see proxy_req.h). */
#include "proxy_req.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* ---- access log ----------------------------------------------------- */

/* ,"attempts":[{backend, status, error, latency_ms, outcome}…], the shape
 * the runtime's audit fields give them. */
static void log_attempts(sl_buf *b, const preq *q)
{
    sl_buf_puts(b, ",\"attempts\":[");
    for (int i = 0; i < q->nattempts; i++) {
        const sl_lua_attempt *a = &q->attempts[i];
        char name[200];
        const char *be = a->backend ? a->backend : "";
        size_t nl = sl_json_escape(name, sizeof(name), be, strlen(be));
        sl_buf_printf(b, "%s{\"backend\":\"%.*s\",\"status\":%d", i ? "," : "",
                      (int)nl, name, a->status);
        if (a->error)
            sl_buf_printf(b, ",\"error\":\"%s\"", a->error);
        sl_buf_printf(b, ",\"latency_ms\":%.3f,\"outcome\":\"%s\"}", a->ms,
                      a->outcome ? a->outcome : "");
    }
    sl_buf_puts(b, "]");
}

void sl_proxy__access_log(sl_accesslog *alog, sl_http_req *r, const preq *q,
                          const char *error, const sl_buf *policy)
{
    sl_buf *b = sl_access_line(alog);
    if (!b)
        return;
    char ts[32], path[512];
    sl_time_rfc3339(ts);
    size_t pl = sl_json_escape(path, sizeof(path), r->path.p, r->path.n);
    double ms = (double)(sl_now_ns() - r->start_ns) / 1e6;
    /* The query string is not logged: some providers take keys there. */
    sl_buf_printf(
        b,
        "{\"v\":1,\"time\":\"%s\",\"request_id\":\"%s\",\"client\":\"%s\","
        "\"method\":\"%.*s\",\"path\":\"%.*s\",\"status\":%d,"
        "\"bytes\":%llu,\"duration_ms\":%.3f",
        ts, r->id, r->client_addr, (int)r->method_name.n, r->method_name.p,
        (int)pl, path, r->status, (unsigned long long)r->bytes_sent, ms);
    if (q && q->ver)
        sl_buf_printf(b, ",\"policy_version\":\"%s\"", q->ver->policy->version);
    if (q && q->v.plugin[0] && q->v.action != SL_LUA_OK)
        sl_buf_printf(b, ",\"plugin\":\"%s\"", q->v.plugin);
    if (r->first_byte_ns > r->start_ns)
        sl_buf_printf(b, ",\"ttft_ms\":%.3f",
                      (double)(r->first_byte_ns - r->start_ns) / 1e6);
    if (q && q->be) {
        sl_buf_printf(b, ",\"provider\":\"%s\"", q->be->provider);
        if (q->be->region) {
            char reg[130];
            size_t rl = sl_json_escape(reg, sizeof(reg), q->be->region,
                                       strlen(q->be->region));
            sl_buf_printf(b, ",\"region\":\"%.*s\"", (int)rl, reg);
        }
        sl_buf_printf(b,
                      ",\"backend\":\"%s\",\"upstream_status\":%d,"
                      "\"upstream_reused\":%s,\"upstream_head_ms\":%.3f",
                      q->be->name, q->res.status,
                      q->res.reused ? "true" : "false",
                      (double)q->res.head_ns / 1e6);
        if (q->res.err) {
            char d[300];
            const char *det = q->res.detail ? q->res.detail : "";
            size_t dl = sl_json_escape(d, sizeof(d), det, strlen(det));
            sl_buf_printf(
                b,
                ",\"upstream_error\":\"%s\",\"upstream_phase\":\"%s\","
                "\"upstream_detail\":\"%.*s\"",
                sl_strerror(q->res.err), q->res.phase ? q->res.phase : "",
                (int)dl, d);
        }
    }
    if (q && q->nattempts > 0 && q->v.ctx_ref == LUA_NOREF)
        log_attempts(b, q); /* else the runtime's audit fields carry them */
    if (error)
        sl_buf_printf(b, ",\"error\":\"%s\"", error);
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
