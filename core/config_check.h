/* config_check.h — typed reads of YAML nodes for sluice.yaml and policy
 * files. Each returns 0, or SL_ECONFIG with "file:line: key: reason" in the
 * checker's err (SL_ENOMEM when memory ran out). */
#ifndef SL_CONFIG_CHECK_H
#define SL_CONFIG_CHECK_H

#include "common.h"
#include "yaml_tree.h"

typedef struct {
    const char *file;
    char *err;
    size_t errlen;
} sl_ck;

/* Record an error at node `at` (line 1 when NULL) for `key`. */
int sl_ck_fail(sl_ck *ck, const sl_node *at, const char *key, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));
/* A map whose keys are all in `known` (NULL-terminated). */
int sl_ck_keys(sl_ck *ck, const sl_node *map, const char *section,
               const char *const *known);
/* A non-null scalar. */
int sl_ck_scalar(sl_ck *ck, const sl_node *n, const char *key);
/* Scalars into C values; *out of sl_ck_str is replaced (and owned). */
int sl_ck_str(sl_ck *ck, const sl_node *n, const char *key, char **out);
int sl_ck_uint(sl_ck *ck, const sl_node *n, const char *key, uint64_t min,
               uint64_t max, uint64_t *out);
int sl_ck_duration(sl_ck *ck, const sl_node *n, const char *key, uint64_t *ms);
int sl_ck_size(sl_ck *ck, const sl_node *n, const char *key, uint64_t *bytes);
int sl_ck_bool(sl_ck *ck, const sl_node *n, const char *key, int *out);
/* Make *p absolute against the folder of base_file (stdout/stderr kept). */
int sl_ck_path(const char *base_file, char **p);
/* A list of strings (paths resolved when `paths`), replacing *out. */
int sl_ck_list(sl_ck *ck, const sl_node *n, const char *key, char ***out,
               int *count, int paths);

#endif
