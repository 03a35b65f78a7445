/* worker.c — worker threads (see worker.h). */
#include "worker.h"
#include "cluster.h"
#include "http_server.h"
#include "log.h"
#include "lua_bridge.h"
#include "proxy.h"
#include "upstream.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct sl_worker {
    int id;
    sl_worker_kind kind;
    const sl_config *cfg;
    const sl_listen_cfg *listen;
    int nlisten;
    sl_mock_opts mock_opts;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t drain_timer;
    uv_sem_t ready;
    int start_rc;
    char start_err[512];

    sl_http_server *srv;
    sl_tls_config **tls; /* one per listener, NULL for plain ones */
    sl_up *up;
    sl_lua *lua;
    sl_cluster *cluster; /* NULL without a cluster: section */
    sl_proxy *px;
    sl_mock *mock;
    sl_accesslog alog;

    pthread_mutex_t lock; /* guards the two messages below */
    sl_policy *next_policy;
    sl_worker_ack_cb next_ack;
    void *next_ack_arg;
    int stop_requested;
    int stopping;
};

sl_worker *sl_worker_new(int id, sl_worker_kind kind, const sl_config *cfg,
                         const sl_listen_cfg *listen, int nlisten,
                         sl_policy *policy, const sl_mock_opts *mock)
{
    sl_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->id = id;
    w->kind = kind;
    w->cfg = cfg;
    w->listen = listen;
    w->nlisten = nlisten;
    if (mock)
        w->mock_opts = *mock;
    pthread_mutex_init(&w->lock, NULL);
    if (policy) {
        sl_policy_ref(policy);
        w->next_policy = policy;
    }
    return w;
}

static void drained(void *arg);

static void drain_timeout(uv_timer_t *t)
{
    sl_worker *w = t->data;
    sl_log_warn("worker %d: drain timeout, closing remaining connections",
                w->id);
    sl_http_server_close_all(w->srv);
}

static void begin_stop(sl_worker *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    uv_timer_start(&w->drain_timer, drain_timeout, w->cfg->timeouts.drain, 0);
    if (w->mock)
        sl_mock_close(w->mock);
    sl_http_server_drain(w->srv, drained, w);
}

static void on_message(uv_async_t *a)
{
    sl_worker *w = a->data;
    pthread_mutex_lock(&w->lock);
    sl_policy *p = w->next_policy;
    sl_worker_ack_cb ack = w->next_ack;
    void *ack_arg = w->next_ack_arg;
    w->next_policy = NULL;
    w->next_ack = NULL;
    int stop = w->stop_requested;
    pthread_mutex_unlock(&w->lock);
    if (p) {
        char err[1024] = "";
        int rc = 0;
        if (w->px && (rc = sl_proxy_set_policy(w->px, p, err, sizeof(err))) < 0)
            sl_log_error("worker %d: policy %s refused, the live one stays: %s",
                         w->id, p->version, err);
        if (ack)
            ack(ack_arg, w->id, rc, err);
        sl_policy_unref(p);
    }
    if (stop)
        begin_stop(w);
}

static void drained(void *arg)
{
    sl_worker *w = arg;
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->async, NULL);
    if (w->up)
        sl_up_close(w->up);
    sl_cluster_client_close(w->cluster);
    sl_access_close(&w->alog);
}

static int setup(sl_worker *w)
{
    const sl_config *c = w->cfg;
    sl_http_settings st = {
        .limits = c->limits,
        .header_timeout = c->timeouts.header_read,
        .body_timeout = c->timeouts.body_read,
        .keepalive_timeout = c->timeouts.keepalive_idle,
    };
    sl_http_handler h;
    sl_access_init(&w->alog, &w->loop);
    if (w->kind == SL_WORKER_GATEWAY) {
        w->up = sl_up_new(&w->loop, c);
        w->lua = sl_lua_new(c, w->start_err, sizeof(w->start_err));
        if (!w->lua)
            return SL_ECONFIG;
        int crc = sl_cluster_client_new(&w->loop, c, w->id, &w->cluster,
                                        w->start_err, sizeof(w->start_err));
        if (crc < 0)
            return crc;
        w->px = w->up ? sl_proxy_new(w->up, &w->alog, w->lua) : NULL;
        if (!w->px)
            return SL_ENOMEM;
        on_message(&w->async); /* takes the first policy */
        h = sl_proxy_handler(w->px);
    } else {
        w->mock = sl_mock_new(&w->loop, &w->mock_opts);
        if (!w->mock)
            return SL_ENOMEM;
        h = sl_mock_handler(w->mock);
    }
    w->srv = sl_http_server_new(&w->loop, &st, &h);
    w->tls = calloc((size_t)w->nlisten, sizeof(*w->tls));
    if (!w->srv || !w->tls)
        return SL_ENOMEM;
    for (int i = 0; i < w->nlisten; i++) {
        const sl_listen_cfg *l = &w->listen[i];
        int rc;
        if (l->tls_cert && (rc = sl_tls_server_config_new(
                                &w->tls[i], l->tls_cert, l->tls_key,
                                w->start_err, sizeof(w->start_err))) < 0)
            return rc;
        rc = sl_http_server_listen(w->srv, l, w->tls[i], w->start_err,
                                   sizeof(w->start_err));
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void teardown(sl_worker *w)
{
    sl_proxy_free(w->px);
    sl_lua_free(w->lua);
    w->lua = NULL;
    sl_cluster_client_free(w->cluster);
    w->cluster = NULL;
    sl_up_free(w->up);
    sl_mock_free(w->mock);
    sl_http_server_free(w->srv);
    for (int i = 0; w->tls && i < w->nlisten; i++)
        sl_tls_config_free(w->tls[i]);
    free(w->tls);
    w->px = NULL;
    w->up = NULL;
    w->mock = NULL;
    w->srv = NULL;
    w->tls = NULL;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void thread_main(void *arg)
{
    sl_worker *w = arg;
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->async, on_message);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    w->start_rc = setup(w);
    if (w->start_rc < 0) {
        if (!w->start_err[0])
            snprintf(w->start_err, sizeof(w->start_err), "worker %d: %s", w->id,
                     sl_strerror(w->start_rc));
        if (w->srv)
            sl_http_server_close_all(w->srv);
        sl_access_close(&w->alog);
        uv_walk(&w->loop, walk_close, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        teardown(w);
        uv_loop_close(&w->loop);
        uv_sem_post(&w->ready);
        return;
    }
    uv_sem_post(&w->ready);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    teardown(w);
    if (uv_loop_close(&w->loop) != 0) {
        uv_walk(&w->loop, walk_close, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
}

int sl_worker_start(sl_worker *w, char *err, size_t errlen)
{
    uv_sem_init(&w->ready, 0);
    if (uv_thread_create(&w->thread, thread_main, w) != 0) {
        snprintf(err, errlen, "cannot start worker thread");
        return SL_ENOMEM;
    }
    uv_sem_wait(&w->ready);
    if (w->start_rc < 0) {
        uv_thread_join(&w->thread);
        snprintf(err, errlen, "%s", w->start_err);
        return w->start_rc;
    }
    return 0;
}

void sl_worker_publish(sl_worker *w, sl_policy *p, sl_worker_ack_cb ack,
                       void *arg)
{
    sl_policy_ref(p);
    pthread_mutex_lock(&w->lock);
    sl_policy *old = w->next_policy;
    sl_worker_ack_cb old_ack = w->next_ack;
    void *old_arg = w->next_ack_arg;
    w->next_policy = p;
    w->next_ack = ack;
    w->next_ack_arg = arg;
    pthread_mutex_unlock(&w->lock);
    if (old_ack)
        old_ack(old_arg, w->id, SL_ECANCELED, "replaced by a newer policy");
    if (old)
        sl_policy_unref(old);
    uv_async_send(&w->async);
}

void sl_worker_set_policy(sl_worker *w, sl_policy *p)
{
    sl_worker_publish(w, p, NULL, NULL);
}

void sl_worker_stop(sl_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->stop_requested = 1;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

void sl_worker_join(sl_worker *w)
{
    if (w->start_rc == 0)
        uv_thread_join(&w->thread);
    uv_sem_destroy(&w->ready);
    if (w->next_policy)
        sl_policy_unref(w->next_policy);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
