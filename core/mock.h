/* mock.h — the mock provider shipped with sluice: a real HTTP server that
 * answers like an OpenAI-style backend, for the quickstart, the tests and
 * the benchmarks. Faults are chosen per request with x-mock-* headers or
 * for every request with the defaults given here.
 *
 *   x-mock-status: 429|500|503…   answer with that error status
 *   x-mock-retry-after: 2          Retry-After on that error
 *   x-mock-delay-ms: 300           wait before the response head
 *   x-mock-chunks: 8               content events in a stream
 *   x-mock-chunk-delay-ms: 50      wait between stream events
 *   x-mock-fault: reset | reset-mid-stream | garbage | garbage-body | hang
 *
 * Routes: POST /v1/chat/completions, GET /v1/models, GET /health,
 * GET /mock/stats (connections and requests seen), ANY /mock/echo (the
 * request as received, as JSON). */
#ifndef SL_MOCK_H
#define SL_MOCK_H

#include "http_server.h"

typedef struct sl_mock_opts {
    int status;   /* default error status, 0 for none */
    int delay_ms; /* default delay before the head */
    const char *fault;
} sl_mock_opts;

typedef struct sl_mock sl_mock;

sl_mock *sl_mock_new(uv_loop_t *loop, const sl_mock_opts *opts);
sl_http_handler sl_mock_handler(sl_mock *m);
/* Stop pending timers (shutdown); requests waiting on them are aborted. */
void sl_mock_close(sl_mock *m);
void sl_mock_free(sl_mock *m);

#endif
