/* proxy.h — the request path of a gateway worker: take a complete client
 * request, choose its backend, forward it, and stream the answer back.
 *
 * This is where the policy phases run: access and route before the first
 * attempt, upstream_response when an attempt's head arrives (it may move
 * on to the next target), body_filter per SSE event or over the whole
 * body, and log at the end. */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include "config.h"
#include "http_server.h"
#include "log.h"
#include "lua_bridge.h"
#include "upstream.h"

typedef struct sl_proxy sl_proxy;

/* A proxy for one worker. Borrows up, alog and lua, which must outlive
 * it. */
sl_proxy *sl_proxy_new(sl_up *up, sl_accesslog *alog, sl_lua *lua);
/* The handler to give the worker's HTTP server (data = the proxy). */
sl_http_handler sl_proxy_handler(sl_proxy *px);
/* Compile p in the worker's Lua state and serve requests that start from
 * now on with it (takes a reference; requests in flight keep their
 * version). On error the live version stays and err says why. */
int sl_proxy_set_policy(sl_proxy *px, sl_policy *p, char *err, size_t errlen);
void sl_proxy_free(sl_proxy *px);

#endif
