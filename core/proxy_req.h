/* proxy_req.h — the request path's internals, shared by proxy.c (the
 * phases, attempts and answers) and proxy_head.c (what goes upstream).
 * Nothing outside the two includes it. */
#ifndef SL_PROXY_REQ_H
#define SL_PROXY_REQ_H

#include "proxy.h"

#define CLIENT_HIGH_WATER (256 * 1024) /* pause the backend above this */
#define FILTER_MAX_BODY (64u << 20)    /* whole bodies held for a filter */
#define HOLD_MAX_BODY (64 * 1024)      /* error bodies read before deciding */

/* A policy version as this worker runs it: the C policy and its chain
 * compiled in the worker's Lua state. Requests hold a reference, so a
 * reload never changes the rules under a request in flight. */
typedef struct version {
    int refs;
    sl_policy *policy;
    sl_chain chain;
    uint64_t attempt_ms; /* limits the chain sets on attempts, 0: none */
    uint64_t total_ms;
} version;

struct sl_proxy {
    sl_up *up;
    sl_accesslog *alog;
    sl_lua *lua;
    version *cur;
    sl_pool preqs; /* per-request state blocks */
};

enum { FILTER_NONE, FILTER_WHOLE, FILTER_SSE };

typedef struct preq {
    sl_proxy *px;
    sl_http_req *r;
    version *ver;
    const sl_backend *be;
    int targets[SL_LUA_MAX_TARGETS];
    int ntargets;
    int attempt;
    uint64_t attempt_ns;  /* when the current attempt started */
    uint64_t deadline_ns; /* 0, or when no further attempt may start */
    sl_lua_attempt attempts[SL_LUA_MAX_TARGETS]; /* by attempt number */
    int nattempts;
    sl_up_exchange *x;
    sl_buf head; /* the request head as sent upstream */
    uv_buf_t bufs[2];
    int paused;
    int filter;   /* FILTER_* for this response */
    sl_buf fbuf;  /* body held for filtering */
    sl_buf fhead; /* response head held until a whole body is filtered */
    sl_buf path;  /* AI requests: the adapter's path for this attempt */
    size_t fscan; /* bytes of fbuf already searched for an event's end */
    int fstatus;
    /* An error answer held whole before the chain decides on it (the body
     * says why: a context-length error is a 400 like any other). */
    int held;
    int held_status;
    int64_t held_cl;
    sl_buf hhead; /* its head, "name: value\r\n" lines */
    sl_buf hbody;
    sl_up_result res;
    sl_lua_verdict v;
} preq;

/* Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way. */
int sl_proxy__is_hop_by_hop(const sl_str *n);
/* "name: value\r\n" lines into hdrs (at most max); returns how many. */
int sl_proxy__parse_lines(const sl_buf *b, sl_http_hdr *hdrs, int max);
/* Write the upstream request head for q's current attempt into q->head. */
int sl_proxy__build_head(preq *q);

/* proxy.c: the request is over — log it, run the log phase, give q back.
 * Call before the final response call. */
void sl_proxy__finish(preq *q, const char *error);

/* proxy_answer.c: what the gateway answers itself; each ends q. */
void sl_proxy__answer_upstream_error(preq *q); /* q->res: 502/503/504 */
void sl_proxy__answer_plugin_error(preq *q);   /* 500 naming the plugin */
void sl_proxy__answer_deny(preq *q);           /* the verdict's denial */
void sl_proxy__answer_respond(preq *q);        /* the runtime's own answer */
/* The headers plugins set for the client's answer (q->v.resp_headers). */
void sl_proxy__policy_headers(preq *q);
/* The access-log line of r (q NULL: refused before the policy ran), with
 * the policy's audit fields. */
void sl_proxy__access_log(sl_accesslog *alog, sl_http_req *r, const preq *q,
                          const char *error, const sl_buf *policy);

#endif
