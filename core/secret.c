/* secret.c — resolving secret references (see secret.h). */
#include "secret.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#define SECRET_MAX (64 * 1024)

static int fail(const char **why, const char *reason)
{
    *why = reason;
    return SL_EINVAL;
}

/* realpath() first: symlinks and ".." must not lead out of the folder. */
static int allowed_file(const char *path, const sl_secret_rules *r,
                        char real[PATH_MAX])
{
    if (path[0] != '/' || !realpath(path, real))
        return 0;
    for (int i = 0; i < r->ndirs; i++) {
        size_t dl = strlen(r->dirs[i]);
        if (strncmp(real, r->dirs[i], dl) == 0 &&
            (real[dl] == '/' || real[dl] == '\0'))
            return 1;
    }
    return 0;
}

int sl_secret_resolve(const char *ref, const sl_secret_rules *r, char **out,
                      size_t *len, const char **why)
{
    char *v = NULL;
    size_t n = 0;
    if (strncmp(ref, "env:", 4) == 0) {
        int listed = r->nenv < 0;
        for (int i = 0; i < r->nenv; i++)
            listed |= strcmp(r->env[i], ref + 4) == 0;
        if (!listed)
            return fail(why, "not listed in secret_env");
        const char *e = getenv(ref + 4);
        if (!e || !*e)
            return fail(why, "variable not set");
        n = strlen(e);
        v = strdup(e);
    } else if (strncmp(ref, "file:", 5) == 0) {
        char real[PATH_MAX];
        if (!allowed_file(ref + 5, r, real))
            return fail(why, "not in an allowed secret directory");
        FILE *f = fopen(real, "rb");
        if (!f)
            return fail(why, "cannot read the file");
        v = malloc(SECRET_MAX + 1);
        n = v ? fread(v, 1, SECRET_MAX, f) : 0;
        fclose(f);
    } else {
        return fail(why, "not a reference (env:NAME or file:/path)");
    }
    if (!v)
        return fail(why, "out of memory");
    while (n > 0 && (v[n - 1] == '\n' || v[n - 1] == '\r'))
        n--;
    v[n] = '\0';
    if (n == 0) {
        sl_secret_free(v);
        return fail(why, "empty");
    }
    *out = v;
    if (len)
        *len = n;
    return 0;
}

void sl_secret_free(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}
