/* config_check.c — the checks every configuration file goes through,
 * with errors that name file, line and key (see config_check.h). */
#include "config_check.h"
#include "util.h"

#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int sl_ck_fail(sl_ck *ck, const sl_node *at, const char *key, const char *fmt,
               ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ck->err, ck->errlen, "%s:%d: %s: %s", ck->file, at ? at->line : 1,
             key, msg);
    return SL_ECONFIG;
}

/* Refuse keys the section does not know: a typo must not silently fall
 * back to a default. */
int sl_ck_keys(sl_ck *ck, const sl_node *map, const char *section,
               const char *const *known)
{
    if (map->type != SL_NODE_MAP)
        return sl_ck_fail(ck, map, section, "expected a map");
    for (const sl_node *c = map->child; c; c = c->next) {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(c->key, known[i]) == 0;
        if (!ok) {
            char k[256];
            snprintf(k, sizeof(k), "%s%s%s", section, *section ? "." : "",
                     c->key);
            return sl_ck_fail(ck, c, k, "unknown key");
        }
    }
    return 0;
}

int sl_ck_scalar(sl_ck *ck, const sl_node *n, const char *key)
{
    if (n->type != SL_NODE_SCALAR || sl_node_is_null(n))
        return sl_ck_fail(ck, n, key, "expected a value");
    return 0;
}

int sl_ck_str(sl_ck *ck, const sl_node *n, const char *key, char **out)
{
    if (sl_ck_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    char *s = strdup(n->value);
    if (!s)
        return SL_ENOMEM;
    free(*out);
    *out = s;
    return 0;
}

int sl_ck_uint(sl_ck *ck, const sl_node *n, const char *key, uint64_t min,
               uint64_t max, uint64_t *out)
{
    char *end;
    if (sl_ck_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    unsigned long long v = strtoull(n->value, &end, 10);
    if (*end || n->value[0] == '-' || v < min || v > max)
        return sl_ck_fail(ck, n, key,
                          "expected a whole number from %llu to %llu",
                          (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

int sl_ck_duration(sl_ck *ck, const sl_node *n, const char *key, uint64_t *ms)
{
    if (sl_ck_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    if (sl_parse_duration(n->value, ms) < 0 || *ms == 0)
        return sl_ck_fail(ck, n, key,
                          "expected a duration like 250ms, 10s or 2m");
    return 0;
}

int sl_ck_size(sl_ck *ck, const sl_node *n, const char *key, uint64_t *bytes)
{
    if (sl_ck_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    if (sl_parse_size(n->value, bytes) < 0 || *bytes == 0)
        return sl_ck_fail(ck, n, key, "expected a size like 64KiB or 8MiB");
    return 0;
}

int sl_ck_bool(sl_ck *ck, const sl_node *n, const char *key, int *out)
{
    if (sl_ck_scalar(ck, n, key) < 0)
        return SL_ECONFIG;
    if (strcmp(n->value, "true") == 0 || strcmp(n->value, "yes") == 0 ||
        strcmp(n->value, "on") == 0)
        *out = 1;
    else if (strcmp(n->value, "false") == 0 || strcmp(n->value, "no") == 0 ||
             strcmp(n->value, "off") == 0)
        *out = 0;
    else
        return sl_ck_fail(ck, n, key, "expected true or false");
    return 0;
}

/* Resolve `p` against the folder of the config file unless absolute. */
int sl_ck_path(const char *base_file, char **p)
{
    if ((*p)[0] == '/' || strcmp(*p, "stdout") == 0 ||
        strcmp(*p, "stderr") == 0)
        return 0;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", base_file);
    const char *dir = dirname(tmp);
    char full[PATH_MAX];
    if (snprintf(full, sizeof(full), "%s/%s", dir, *p) >= (int)sizeof(full))
        return SL_EINVAL;
    char *s = strdup(full);
    if (!s)
        return SL_ENOMEM;
    free(*p);
    *p = s;
    return 0;
}

int sl_ck_list(sl_ck *ck, const sl_node *n, const char *key, char ***out,
               int *count, int paths)
{
    if (n->type != SL_NODE_SEQ)
        return sl_ck_fail(ck, n, key,
                          paths ? "expected a list of folders"
                                : "expected a list of names");
    char **dirs = calloc((size_t)n->n + 1, sizeof(char *));
    if (!dirs)
        return SL_ENOMEM;
    for (int i = 0; i < *count; i++)
        free((*out)[i]);
    free(*out);
    *out = dirs;
    *count = 0;
    int i = 0;
    for (const sl_node *d = n->child; d; d = d->next, i++) {
        char k[64];
        snprintf(k, sizeof(k), "%s[%d]", key, i);
        if (sl_ck_str(ck, d, k, &dirs[i]) < 0 ||
            (paths && sl_ck_path(ck->file, &dirs[i]) < 0))
            return SL_ECONFIG;
        *count = i + 1;
    }
    return 0;
}
