/* admin.h — the policy lifecycle, on the main thread: which version the
 * gateway starts on, reload (SIGHUP), and the admin API (`admin:` in
 * sluice.yaml) through which platform teams validate, diff, propose,
 * approve, publish and roll back policy versions.
 *
 * It runs on the main thread's loop, beside the signals: publishing is a
 * fan-out to the workers' uv_async_t and a compile on this thread, and the
 * admin API is low-traffic, so it needs no thread of its own and never
 * touches a worker's state. A publish switches every worker or none: a
 * version a worker refuses is rolled back on the workers that took it. */
#ifndef SL_ADMIN_H
#define SL_ADMIN_H

#include "config.h"
#include "worker.h"

#include <uv.h>

typedef struct sl_admin sl_admin;

/* The lifecycle for cfg and the policy to start on: the last published
 * version when the state directory has one, else the policy directory
 * (stored as the first version). *first holds one reference, given to the
 * caller. NULL policy when cfg names no policy directory. Errors name
 * file, line and key. */
int sl_admin_new(const sl_config *cfg, sl_admin **out, sl_policy **first,
                 char *err, size_t errlen);

/* The workers are running: publish to these (borrowed; ws must outlive
 * the admin) and keep *live, the caller's pointer to the live version,
 * up to date. Opens the admin listener on loop when configured. */
int sl_admin_start(sl_admin *a, uv_loop_t *loop, sl_worker **ws, int n,
                   sl_policy **live, char *err, size_t errlen);

/* Reload the policy directory and publish it (SIGHUP); `actor` is what
 * the admin audit log records as who. */
void sl_admin_reload(sl_admin *a, const char *actor);

/* Stop listening and close admin connections (shutdown). */
void sl_admin_close(sl_admin *a);

/* Free, once the loop ran its closes. */
void sl_admin_free(sl_admin *a);

/* Compile p in a fresh Lua state on this thread: load its plugins, check
 * their configuration, run their init. 0 or SL_ECONFIG with the reason. */
int sl_admin_validate(const sl_config *cfg, sl_policy *p, char *err,
                      size_t errlen);

/* `sluice policy ...`: the CLI over the admin API (admin_cli.c). Returns
 * the process exit status. */
int sl_admin_cli(int argc, char **argv);

#endif
