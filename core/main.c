/* main.c — the sluice command: run the gateway, run the mock provider,
 * check configuration, run specs. Owns signals and the worker threads. */
#include "admin.h"
#include "config.h"
#include "log.h"
#include "lua_bridge.h"
#include "lua_crypto.h"
#include "mock.h"
#include "report.h"
#include "spec_runner.h"
#include "worker.h"

#include <getopt.h>
#include <lua.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

static const char usage[] =
    "usage: sluice <command> [options]\n"
    "\n"
    "commands:\n"
    "  run [-c sluice.yaml]       start the gateway\n"
    "  check [-c sluice.yaml] [policy-dir]\n"
    "                             validate the configuration and policy\n"
    "  policy "
    "validate|diff|submit|approve|publish|rollback|status|audit|tokens\n"
    "         --admin URL --token-file F\n"
    "                             the policy lifecycle over the admin API\n"
    "                             (sluice policy help)\n"
    "  mock [--listen HOST:PORT] [--workers N] [--tls-cert F --tls-key F]\n"
    "       [--status N] [--delay-ms N] [--fault NAME] [--require-auth]\n"
    "                             run the mock provider\n"
    "  report REPORT [--json|--csv] FILE...\n"
    "                             governance reports over audit logs\n"
    "                             (sluice report help)\n"
    "  spec [busted args]         run busted specs inside sluice's LuaJIT\n"
    "  new-plugin NAME [--dir plugins] [--spec-dir spec/plugins]\n"
    "                             scaffold a plugin and its spec\n"
    "  version                    print the version\n"
    "  help                       this text\n";

typedef struct {
    sl_worker **workers;
    int n;
    sl_config *cfg;
    sl_policy **policy;
    sl_admin *admin; /* the policy lifecycle (gateway only) */
    uv_signal_t sig[4];
    int stopping;
} runtime;

static int worker_count(int configured)
{
    if (configured > 0)
        return configured;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void close_signals(runtime *rt)
{
    for (int i = 0; i < 4; i++)
        if (!uv_is_closing((uv_handle_t *)&rt->sig[i]))
            uv_close((uv_handle_t *)&rt->sig[i], NULL);
}

/* Compile p once on this thread so a broken plugin or configuration is
 * refused before any worker sees it. With `exceptions`, the live policy
 * exceptions are appended to it as text (for `sluice check`). */
static int validate_policy(const sl_config *cfg, sl_policy *p, char *err,
                           size_t errlen, sl_buf *exceptions)
{
    sl_lua *lua = sl_lua_new(cfg, err, errlen);
    if (!lua)
        return SL_ECONFIG;
    sl_chain chain;
    int rc = sl_lua_compile(lua, p, &chain, err, errlen);
    if (rc == 0) {
        if (exceptions)
            sl_lua_chain_report(lua, &chain, "exceptions", "text", exceptions);
        sl_lua_chain_release(lua, &chain);
    }
    sl_lua_free(lua);
    return rc;
}

static void on_signal(uv_signal_t *s, int signum)
{
    runtime *rt = s->data;
    if (signum == SIGHUP) {
        if (!rt->stopping && rt->admin)
            sl_admin_reload(rt->admin, "signal:SIGHUP");
        return;
    }
    if (signum == SIGUSR1) {
        sl_log_reopen();
        return;
    }
    if (rt->stopping)
        return;
    rt->stopping = 1;
    sl_log_info("%s: draining in-flight requests, then exiting",
                signum == SIGTERM ? "SIGTERM" : "SIGINT");
    for (int i = 0; i < rt->n; i++)
        sl_worker_stop(rt->workers[i]);
    sl_admin_close(rt->admin);
    close_signals(rt);
}

/* Catch the signals before any worker listens: a signal that arrives while
 * workers start is handled once the loop runs, instead of killing us. */
static void catch_signals(runtime *rt)
{
    uv_loop_t *loop = uv_default_loop();
    static const int sigs[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(loop, &rt->sig[i]);
        rt->sig[i].data = rt;
        uv_signal_start(&rt->sig[i], on_signal, sigs[i]);
    }
}

/* Wait on signals until the workers finish. */
static int serve(runtime *rt)
{
    uv_loop_t *loop = uv_default_loop();
    uv_run(loop, UV_RUN_DEFAULT);
    for (int i = 0; i < rt->n; i++)
        sl_worker_join(rt->workers[i]);
    sl_crypto_quiesce(10000); /* a fetch ends within its own timeout */
    uv_loop_close(loop);
    return 0;
}

static int start_workers(runtime *rt, sl_worker **ws, int n)
{
    char err[600];
    for (int i = 0; i < n; i++) {
        if (sl_worker_start(ws[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "sluice: %s\n", err);
            sl_worker_join(ws[i]);
            for (int j = 0; j < i; j++)
                sl_worker_stop(ws[j]);
            for (int j = 0; j < i; j++)
                sl_worker_join(ws[j]);
            for (int j = i + 1; j < n; j++)
                sl_worker_join(ws[j]); /* never started */
            return -1;
        }
    }
    return 0;
}

static const char *config_path(int argc, char **argv)
{
    const char *path = "sluice.yaml";
    for (int i = 0; i < argc - 1; i++)
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
            path = argv[i + 1];
    return path;
}

static int cmd_run(int argc, char **argv)
{
    char err[1024];
    sl_config cfg;
    sl_policy *policy = NULL;
    const char *path = config_path(argc, argv);
    if (sl_config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        return 2;
    }
    if (sl_log_open(&cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        sl_config_free(&cfg);
        return 2;
    }
    /* The last published version when the admin state has one, else the
     * policy directory. */
    sl_admin *admin = NULL;
    err[0] = '\0';
    if (sl_admin_new(&cfg, &admin, &policy, err, sizeof(err)) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        sl_log_close();
        sl_config_free(&cfg);
        return 2;
    }
    int n = worker_count(cfg.workers);
    int total = n + (cfg.mock_enabled ? 1 : 0);
    sl_worker **ws = calloc((size_t)total, sizeof(*ws));
    int rc = ws ? 0 : 1;
    for (int i = 0; rc == 0 && i < n; i++)
        if (!(ws[i] = sl_worker_new(i, SL_WORKER_GATEWAY, &cfg, cfg.listen,
                                    cfg.nlisten, policy, NULL)))
            rc = 1;
    sl_mock_opts mo = {0};
    if (rc == 0 && cfg.mock_enabled &&
        !(ws[n] = sl_worker_new(n, SL_WORKER_MOCK, &cfg, &cfg.mock_listen, 1,
                                NULL, &mo)))
        rc = 1;
    runtime rt = {.workers = ws,
                  .n = total,
                  .cfg = &cfg,
                  .policy = &policy,
                  .admin = admin};
    if (rc == 0)
        catch_signals(&rt);
    int started = rc == 0 && start_workers(&rt, ws, total) == 0;
    if (started && sl_admin_start(admin, uv_default_loop(), ws, n, &policy, err,
                                  sizeof(err)) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        rt.stopping = 1;
        for (int i = 0; i < total; i++)
            sl_worker_stop(ws[i]);
        sl_admin_close(admin);
        close_signals(&rt);
        serve(&rt);
        rc = 1;
    } else if (started) {
        sl_log_info("sluice %s: %d worker%s on %s:%u%s%s, policy %s "
                    "(%d backend%s)",
                    SLUICE_VERSION, n, n == 1 ? "" : "s", cfg.listen[0].host,
                    cfg.listen[0].port, cfg.listen[0].tls_cert ? " (TLS)" : "",
                    cfg.mock_enabled ? ", mock provider on" : "",
                    cfg.policy_dir ? cfg.policy_dir : "(none)",
                    policy ? policy->nbackends : 0,
                    policy && policy->nbackends == 1 ? "" : "s");
        if (cfg.mock_enabled)
            sl_log_info("mock provider listening on %s:%u",
                        cfg.mock_listen.host, cfg.mock_listen.port);
        serve(&rt);
        sl_log_info("sluice stopped");
    } else if (rc == 0) {
        rc = 1;
        close_signals(&rt);
        uv_run(uv_default_loop(), UV_RUN_DEFAULT);
        uv_loop_close(uv_default_loop());
    } else {
        for (int i = 0; i < total; i++)
            if (ws[i])
                sl_worker_join(ws[i]);
    }
    free(ws);
    sl_admin_free(admin);
    if (policy)
        sl_policy_unref(policy);
    sl_log_close();
    sl_config_free(&cfg);
    return rc;
}

static int cmd_check(int argc, char **argv)
{
    char err[1024];
    sl_config cfg;
    const char *dir = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
            i++;
        else
            dir = argv[i];
    }
    const char *path = config_path(argc, argv);
    if (!dir || access(path, F_OK) == 0) {
        if (sl_config_load(path, &cfg, err, sizeof(err)) < 0) {
            fprintf(stderr, "sluice: %s\n", err);
            return 2;
        }
    } else {
        sl_config_defaults(&cfg);
    }
    /* A policy repository's CI has no secrets: check their form only. */
    cfg.skip_secrets = 1;
    if (!dir)
        dir = cfg.policy_dir;
    int rc = 0;
    if (dir) {
        sl_policy *p;
        if (sl_policy_load(dir, &cfg, &p, err, sizeof(err)) < 0) {
            fprintf(stderr, "sluice: %s\n", err);
            rc = 2;
        } else {
            sl_buf exc;
            sl_buf_init(&exc, NULL);
            if (validate_policy(&cfg, p, err, sizeof(err), &exc) < 0) {
                fprintf(stderr, "sluice: %s\n", err);
                rc = 2;
            } else {
                printf("policy %s: ok, version %s (%d backend%s, %d "
                       "plugin%s)\n",
                       dir, p->version, p->nbackends,
                       p->nbackends == 1 ? "" : "s", p->nplugins,
                       p->nplugins == 1 ? "" : "s");
                fwrite(exc.data ? exc.data : "", 1, exc.len, stdout);
            }
            sl_buf_release(&exc);
            sl_policy_unref(p);
        }
    }
    if (rc == 0 && cfg.path)
        printf("config %s: ok\n", cfg.path);
    sl_config_free(&cfg);
    return rc;
}

static int cmd_mock(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"workers", required_argument, NULL, 'w'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"status", required_argument, NULL, 's'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"fault", required_argument, NULL, 'f'},
        {"require-auth", no_argument, NULL, 'A'},
        {NULL, 0, NULL, 0}};
    sl_config cfg;
    sl_config_defaults(&cfg);
    cfg.log_level = SL_LOG_WARN;
    sl_listen_cfg l = {.port = 8081};
    strcpy(l.host, "127.0.0.1");
    sl_mock_opts mo = {0};
    int workers = 1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (sl_parse_hostport(optarg, l.host, sizeof(l.host), &l.port) <
                0) {
                fprintf(stderr, "sluice mock: --listen wants HOST:PORT\n");
                return 2;
            }
            break;
        case 'w':
            workers = atoi(optarg) > 0 ? atoi(optarg) : 1;
            break;
        case 'C':
            l.tls_cert = optarg;
            break;
        case 'K':
            l.tls_key = optarg;
            break;
        case 's':
            mo.status = atoi(optarg);
            break;
        case 'd':
            mo.delay_ms = atoi(optarg);
            break;
        case 'f':
            mo.fault = optarg;
            break;
        case 'A':
            mo.require_auth = 1;
            break;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (!l.tls_cert != !l.tls_key) {
        fprintf(stderr, "sluice mock: --tls-cert and --tls-key go together\n");
        return 2;
    }
    char err[600];
    sl_log_open(&cfg, err, sizeof(err));
    sl_worker **ws = calloc((size_t)workers, sizeof(*ws));
    for (int i = 0; ws && i < workers; i++)
        ws[i] = sl_worker_new(i, SL_WORKER_MOCK, &cfg, &l, 1, NULL, &mo);
    runtime rt = {.workers = ws, .n = workers, .cfg = &cfg};
    int rc = 1;
    if (ws)
        catch_signals(&rt);
    if (ws && start_workers(&rt, ws, workers) == 0) {
        fprintf(stderr, "sluice mock: listening on %s:%u%s\n", l.host, l.port,
                l.tls_cert ? " (TLS)" : "");
        serve(&rt);
        rc = 0;
    } else if (ws) {
        close_signals(&rt);
        uv_run(uv_default_loop(), UV_RUN_DEFAULT);
        uv_loop_close(uv_default_loop());
    }
    free(ws);
    sl_log_close();
    sl_config_free(&cfg);
    return rc;
}

static int cmd_new_plugin(int argc, char **argv)
{
    const char *name = NULL, *dir = "plugins", *spec_dir = "spec/plugins";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--spec-dir") == 0 && i + 1 < argc)
            spec_dir = argv[++i];
        else
            name = argv[i];
    }
    if (!name) {
        fputs("usage: sluice new-plugin NAME [--dir plugins] "
              "[--spec-dir spec/plugins]\n",
              stderr);
        return 2;
    }
    char err[512];
    sl_config cfg;
    sl_config_defaults(&cfg);
    sl_lua *lua = sl_lua_new(&cfg, err, sizeof(err));
    if (!lua) {
        fprintf(stderr, "sluice: %s\n", err);
        sl_config_free(&cfg);
        return 1;
    }
    lua_State *L = sl_lua_state(lua);
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.scaffold");
    int rc = 1;
    if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_getfield(L, -1, "new_plugin");
        lua_pushstring(L, name);
        lua_pushstring(L, dir);
        lua_pushstring(L, spec_dir);
        if (lua_pcall(L, 3, 2, 0) == 0 && !lua_isnil(L, -2)) {
            printf("created %s\ncreated %s\nrun: sluice spec %s\n",
                   lua_tostring(L, -2), lua_tostring(L, -1),
                   lua_tostring(L, -1));
            rc = 0;
        } else {
            fprintf(stderr, "sluice new-plugin: %s\n", lua_tostring(L, -1));
        }
    } else {
        fprintf(stderr, "sluice new-plugin: %s\n", lua_tostring(L, -1));
    }
    sl_lua_free(lua);
    sl_config_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 2, argv + 2);
    if (strcmp(cmd, "policy") == 0)
        return sl_admin_cli(argc - 2, argv + 2);
    if (strcmp(cmd, "mock") == 0)
        return cmd_mock(argc - 1, argv + 1);
    if (strcmp(cmd, "new-plugin") == 0)
        return cmd_new_plugin(argc - 2, argv + 2);
    if (strcmp(cmd, "report") == 0)
        return sl_report_main(argc - 2, argv + 2);
    if (strcmp(cmd, "spec") == 0)
        return sl_spec_main(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("sluice %s\n", SLUICE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "-h") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    fprintf(stderr, "sluice: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
