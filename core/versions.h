/* versions.h — policy versions on disk: each published or proposed policy
 * bundle (policy files + the source of every plugin its chain names) is
 * stored whole under its content hash, and a short history names the
 * versions that were live, newest first.
 *
 * Layout of the state directory:
 *   versions/ID/policies/NAME.yaml  the policy files
 *   versions/ID/plugins/NAME.lua    the plugin sources
 *   published                       history: what went live, newest first
 *   tmp/                            work in progress, emptied at open
 *
 * Every write is write-then-rename with fsync of the file and its folder, so
 * a crash at any moment leaves the old state or the new one, never a mix: a
 * version folder appears whole (renamed from tmp/) and the history file
 * names only versions that are already whole on disk. */
#ifndef SL_VERSIONS_H
#define SL_VERSIONS_H

#include "config.h"

typedef struct sl_ver_store sl_ver_store;

/* A version id: 16 hex digits and a NUL (sl_policy.version). */
typedef char sl_ver_id[17];

/* Open (creating) the store in dir and clear its tmp/ leftovers. The
 * caller frees with sl_ver_close(). */
int sl_ver_open(const char *dir, sl_ver_store **out, char *err, size_t errlen);
void sl_ver_close(sl_ver_store *s);

/* Store p under p->version (no-op when already stored). The files are
 * copied from disk, the plugins from p. */
int sl_ver_save(sl_ver_store *s, const sl_policy *p, char *err, size_t errlen);

/* Is version id stored whole? */
int sl_ver_exists(sl_ver_store *s, const char *id);

/* Load stored version id with the bundle's own plugin sources only. The
 * result holds one reference. */
int sl_ver_load(sl_ver_store *s, const char *id, const sl_config *cfg,
                sl_policy **out, char *err, size_t errlen);

/* The history, newest (live) first; *ids is malloc'd, caller frees. */
int sl_ver_history(sl_ver_store *s, sl_ver_id **ids, int *n);
/* Replace the history atomically. */
int sl_ver_set_history(sl_ver_store *s, const sl_ver_id *ids, int n, char *err,
                       size_t errlen);

/* Delete stored versions that are neither among the first `keep`
 * distinct versions of the history nor listed in `pinned` (versions of
 * open changes). */
void sl_ver_prune(sl_ver_store *s, int keep, const sl_ver_id *pinned,
                  int npinned);

/* A staging folder under tmp/ holding uploaded files; names are
 * "policies/NAME.yaml|yml|json" or "plugins/NAME.lua". On success *dir is
 * malloc'd (free it after sl_ver_unstage()). SL_EINVAL with a reason when a
 * name is not allowed. */
int sl_ver_stage(sl_ver_store *s, const char *const *names,
                 const char *const *data, const size_t *lens, int n, char **dir,
                 char *err, size_t errlen);
/* Load a staged upload: its plugins first, then the configured ones. */
int sl_ver_load_staged(const char *dir, const sl_config *cfg, sl_policy **out,
                       char *err, size_t errlen);
void sl_ver_unstage(const char *dir);

/* Write path atomically (tmp file, fsync, rename, fsync of the folder). */
int sl_ver_write_atomic(const char *path, const char *data, size_t len);

#endif
