/* secret.h — secrets by reference, never inline: "env:NAME" or
 * "file:/path". Backends' credentials (policy) and plugins'
 * sluice.secret() both resolve through here, under rules that say which
 * folders and variables may be read. */
#ifndef SL_SECRET_H
#define SL_SECRET_H

#include "common.h"

typedef struct sl_secret_rules {
    char *const *dirs; /* file: only below these folders */
    int ndirs;
    char *const *env; /* env: only these names ... */
    int nenv;         /* ... or any name when nenv < 0 */
} sl_secret_rules;

/* Resolve ref: 0 with the value in *out (NUL-terminated, trailing newlines
 * removed; free with sl_secret_free, which wipes it), or SL_EINVAL with a
 * static reason in *why ("variable not set", "not in an allowed secret
 * directory", …). */
int sl_secret_resolve(const char *ref, const sl_secret_rules *rules, char **out,
                      size_t *len, const char **why);
void sl_secret_free(char *s);

#endif
