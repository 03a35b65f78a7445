/* worker.h — a worker thread: its own libuv loop, its own listeners
 * (SO_REUSEPORT), upstream pools and access-log buffer.
 *
 * The main thread talks to a worker only through the functions below; they
 * post a message to the worker's uv_async_t, so nothing a worker owns is
 * ever touched by another thread. */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include "config.h"
#include "mock.h"

typedef struct sl_worker sl_worker;

typedef enum { SL_WORKER_GATEWAY, SL_WORKER_MOCK } sl_worker_kind;

/* A worker serving `listen` (borrowed, must outlive the worker). For a
 * gateway, `policy` is its first policy (a reference is taken); for a mock,
 * `mock` gives its defaults. */
sl_worker *sl_worker_new(int id, sl_worker_kind kind, const sl_config *cfg,
                         const sl_listen_cfg *listen, int nlisten,
                         sl_policy *policy, const sl_mock_opts *mock);

/* Start the thread and wait until it listens: 0, or an error with the
 * reason in err (the worker is then finished; free it). */
int sl_worker_start(sl_worker *w, char *err, size_t errlen);

/* Serve new requests with p from now on (thread-safe). */
void sl_worker_set_policy(sl_worker *w, sl_policy *p);

/* Told, on the worker's thread, whether worker `id` now serves the policy
 * it was given (rc 0) or kept its live one (rc < 0, err says why;
 * SL_ECANCELED when a newer policy replaced it before the worker looked). */
typedef void (*sl_worker_ack_cb)(void *arg, int id, int rc, const char *err);

/* sl_worker_set_policy() with a report: ack runs exactly once, on the
 * worker's thread (or on the caller's when superseded), so it must be
 * thread-safe. */
void sl_worker_publish(sl_worker *w, sl_policy *p, sl_worker_ack_cb ack,
                       void *arg);

/* Drain: stop accepting, finish in-flight requests (up to the drain
 * timeout), then end the thread (thread-safe). */
void sl_worker_stop(sl_worker *w);

/* Wait for the thread to end, then free the worker. */
void sl_worker_join(sl_worker *w);

#endif
