/* lua_bridge.h — one LuaJIT state per worker, and the calls from the
 * request path into the Lua runtime (lua/sluice/runtime.lua).
 *
 * The proxy calls Lua only for phases that some plugin of the live chain
 * defines (sl_chain.mask), so an empty chain costs nothing. Every plugin
 * call runs under a time budget (a count hook; plugin code runs with the
 * JIT off so the hook fires) and a memory budget (the state's allocator). */
#ifndef SL_LUA_BRIDGE_H
#define SL_LUA_BRIDGE_H

#include "buf.h"
#include "config.h"
#include "http_server.h"

typedef struct sl_lua sl_lua;

enum {
    SL_PHASE_ACCESS = 1,
    SL_PHASE_ROUTE = 2,
    SL_PHASE_UPSTREAM_RESPONSE = 4,
    SL_PHASE_BODY_FILTER = 8,
    SL_PHASE_LOG = 16,
};

/* A policy version compiled in one state. */
typedef struct sl_chain {
    int ref;       /* registry reference to the chain table */
    unsigned mask; /* SL_PHASE_* bits some plugin defines */
} sl_chain;

/* A new state with the runtime loaded. NULL with a reason in err. */
sl_lua *sl_lua_new(const sl_config *cfg, char *err, size_t errlen);
void sl_lua_free(sl_lua *lua);
/* The raw state, for the CLI commands that run Lua tools (spec,
 * new-plugin) on the main thread. */
struct lua_State *sl_lua_state(sl_lua *lua);

/* Compile policy p in this state: load its plugins in their sandboxes,
 * check their configuration, run their init. 0, or SL_ECONFIG with
 * "file:line: key: reason" in err. */
int sl_lua_compile(sl_lua *lua, const sl_policy *p, sl_chain *out, char *err,
                   size_t errlen);
/* Call the runtime's report function `what` (e.g. "exceptions") on a
 * compiled chain with `format` ("json" or "text"); appends the string it
 * returns to `out`. 0, or SL_EIO when it failed. */
int sl_lua_chain_report(sl_lua *lua, const sl_chain *c, const char *what,
                        const char *format, sl_buf *out);

void sl_lua_chain_release(sl_lua *lua, sl_chain *c);

enum { SL_LUA_OK, SL_LUA_DENY, SL_LUA_ERROR, SL_LUA_RESPOND };

#define SL_LUA_MAX_TARGETS 8

/* What the access and route phases decided. The caller owns the buffers
 * (initialised, possibly pooled) and releases them. */
typedef struct sl_lua_verdict {
    int action;          /* SL_LUA_* */
    int ctx_ref;         /* the request's ctx for later phases, or
                            LUA_NOREF; release with sl_lua_unref() */
    int headers_changed; /* headers: "name: value\r\n" lines to send */
    sl_buf headers;
    int body_changed;
    sl_buf body;
    int ntargets; /* route: backend names in order */
    char targets[SL_LUA_MAX_TARGETS][64];
    int status; /* deny */
    char code[64];
    char message[512];
    sl_buf resp_headers;       /* for the client's answer, served or not:
                                  "name: value\r\n" lines */
    char plugin[64];           /* the plugin that denied or failed */
    int ai;                    /* an AI front-door request: each attempt is
                                  prepared by a provider adapter (sl_lua_prepare)
                                  and its answer translated (body_filter) */
    char model[128];           /* the public model, for x-sluice-model */
    int end_stream;            /* body_filter: a filter ended the answer */
    struct sl_lua_reqbox *box; /* Lua's handle on the request: cut it off
                                  with sl_lua_request_done() */
    int box_ref;
} sl_lua_verdict;

/* Run access then route for r. SL_LUA_RESPOND means the runtime answers
 * itself (status, body, resp_headers) without a backend. */
int sl_lua_request(sl_lua *lua, const sl_chain *c, sl_http_req *r,
                   const char *version, sl_lua_verdict *v);

/* Prepare attempt number `attempt` (1-based) of an AI request toward
 * `backend`: the provider adapter writes the path (after the backend's
 * prefix, query included) into path, the headers into v->headers as
 * "name: value\r\n" lines and the body into v->body. 0; SL_EINVAL when the
 * provider cannot take the request (v: status, code, message, to answer);
 * SL_EIO when the runtime failed (v: plugin, message). */
int sl_lua_prepare(sl_lua *lua, const sl_chain *c, int ctx_ref, int attempt,
                   const char *backend, sl_buf *path, sl_lua_verdict *v);

/* Attempt number `attempt` (1-based) toward `backend` came to a point
 * where nothing has reached the client: its head arrived (status, hdrs;
 * body holds the whole body of an error answer when the proxy read it
 * first, else NULL), or it failed before answering (status 0, `error` one
 * of "connect_error", "timeout", "reset", "tls", "dns", "protocol",
 * "error"). ms: the attempt's time so far. `more` says whether another
 * target is left. Returns 0 to accept, 1 to move on to the next target, 2
 * to move on with new targets (v->targets[0..v->ntargets): what to try
 * after this attempt, replacing the rest of the list), or SL_EIO when a
 * plugin failed (plugin/message filled). */
int sl_lua_upstream_response(sl_lua *lua, const sl_chain *c, int ctx_ref,
                             int status, const sl_http_hdr *hdrs, int n,
                             const char *backend, int attempt, int more,
                             const char *error, double ms, const char *body,
                             size_t bodylen, sl_lua_verdict *v);

/* What the chain's upstream_response plugins set as limits on attempts,
 * in their configuration (attempt_timeout, total_timeout: ms, the smallest
 * wins; 0 when none sets one). Read once per policy version. */
void sl_lua_attempt_limits(sl_lua *lua, const sl_chain *c, uint64_t *attempt_ms,
                           uint64_t *total_ms);

/* One attempt toward a backend, for the audit record. */
typedef struct sl_lua_attempt {
    const char *backend;
    int status;          /* the backend's status, 0 without a head */
    const char *error;   /* as for sl_lua_upstream_response, or NULL */
    double ms;           /* from the attempt's start to its head or end */
    const char *outcome; /* "next", "served", "failed", "aborted" */
} sl_lua_attempt;

/* Pass a body piece through the filters (and an AI answer through its
 * adapter first); v->status is set when the answer must carry another
 * status (only meaningful for a whole body). out and outlen point at the bytes
 * to send (valid until the next call). 0 or SL_EIO (plugin failed). */
int sl_lua_body_filter(sl_lua *lua, const sl_chain *c, int ctx_ref,
                       const char *data, size_t len, int last, const char **out,
                       size_t *outlen, sl_lua_verdict *v);

/* The request is over: run the log phase with a few facts about it (the
 * attempts too: record.attempts, and the audit record's "attempts"), and
 * append to `record` what the policy adds to its audit record (JSON
 * members, each with a leading comma; nothing when there is nothing —
 * the runtime hands them over as one object, or as such members).
 * record NULL: no audit sink, the fields are not built. */
void sl_lua_log(sl_lua *lua, const sl_chain *c, int ctx_ref, int status,
                const char *backend, const sl_lua_attempt *attempts,
                int nattempts, sl_buf *record);

void sl_lua_unref(sl_lua *lua, int ref);

/* The request is over: a plugin that kept ctx.request now gets an error
 * instead of reading freed memory. Releases v's references. */
void sl_lua_request_done(sl_lua *lua, sl_lua_verdict *v);

#endif
