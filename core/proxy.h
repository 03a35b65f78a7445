/* proxy.h — the request path of a gateway worker: take a complete client
 * request, choose its backend, forward it, and stream the answer back.
 *
 * This is where the policy phases run (access, route, upstream_response,
 * body_filter, log); today the route is the policy's default backend. */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include "config.h"
#include "http_server.h"
#include "log.h"
#include "upstream.h"

typedef struct sl_proxy sl_proxy;

/* A proxy for one worker. Borrows up and alog, which must outlive it. */
sl_proxy *sl_proxy_new(sl_up *up, sl_accesslog *alog);
/* The handler to give the worker's HTTP server (data = the proxy). */
sl_http_handler sl_proxy_handler(sl_proxy *px);
/* Switch to policy p for requests that start from now on (takes a
 * reference; requests in flight keep theirs). */
void sl_proxy_set_policy(sl_proxy *px, sl_policy *p);
void sl_proxy_free(sl_proxy *px);

#endif
