/* versions.c — policy versions on disk (see versions.h). */
#include "versions.h"
#include "buf.h"
#include "spec_runner.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* A path built from another path plus a name. */
#define SUBPATH (PATH_MAX + 320)

struct sl_ver_store {
    char *dir;
};

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return SL_EINVAL;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return SL_EIO;
        *p = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return SL_EIO;
    return 0;
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0)
        return SL_EIO;
    int rc = fsync(fd) < 0 ? SL_EIO : 0;
    close(fd);
    return rc;
}

static int fsync_parent(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    char *slash = strrchr(tmp, '/');
    if (!slash)
        return fsync_path(".", 1);
    if (slash == tmp)
        slash[1] = '\0';
    else
        *slash = '\0';
    return fsync_path(tmp, 1);
}

static int unlink_cb(const char *path, const struct stat *st, int flag,
                     struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write a file whole and fsync it (no rename: inside a tmp/ folder). */
static int write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return SL_EIO;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return SL_EIO;
        }
        off += (size_t)n;
    }
    int rc = fsync(fd) < 0 ? SL_EIO : 0;
    if (close(fd) < 0)
        rc = SL_EIO;
    return rc;
}

int sl_ver_write_atomic(const char *path, const char *data, size_t len)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof(tmp))
        return SL_EINVAL;
    int rc = write_file(tmp, data, len);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = SL_EIO;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    return fsync_parent(path);
}

int sl_ver_open(const char *dir, sl_ver_store **out, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (mkdir_p(dir) < 0) {
        snprintf(err, errlen, "%s: cannot create the state directory: %s", dir,
                 strerror(errno));
        return SL_EIO;
    }
    /* A crash mid-write leaves only tmp/ half done: nothing in it counts. */
    snprintf(path, sizeof(path), "%s/tmp", dir);
    rm_rf(path);
    static const char *const subs[] = {"tmp", "versions"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, subs[i]);
        if (mkdir_p(path) < 0) {
            snprintf(err, errlen, "%s: cannot create: %s", path,
                     strerror(errno));
            return SL_EIO;
        }
    }
    sl_ver_store *s = calloc(1, sizeof(*s));
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    *out = s;
    return 0;
}

void sl_ver_close(sl_ver_store *s)
{
    if (!s)
        return;
    free(s->dir);
    free(s);
}

int sl_ver_exists(sl_ver_store *s, const char *id)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof(path), "%s/versions/%s", s->dir, id);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static int fill_bundle(const char *dir, const sl_policy *p)
{
    char path[PATH_MAX];
    int rc = 0;
    for (int i = 0; rc == 0 && i < p->nfiles; i++) {
        char *data;
        size_t len;
        if ((rc = sl_read_file(p->files[i].path, &data, &len)) < 0)
            break;
        if (snprintf(path, sizeof(path), "%s/policies/%s", dir,
                     base_name(p->files[i].path)) >= (int)sizeof(path))
            rc = SL_EINVAL; /* a path this long cannot be stored */
        else
            rc = write_file(path, data, len);
        free(data);
    }
    for (int i = 0; rc == 0 && i < p->nplugins; i++) {
        if (snprintf(path, sizeof(path), "%s/plugins/%s.lua", dir,
                     p->plugins[i].name) >= (int)sizeof(path))
            rc = SL_EINVAL;
        else
            rc = write_file(path, p->plugins[i].code, p->plugins[i].len);
    }
    static const char *const subs[] = {"policies", "plugins", ""};
    for (int i = 0; rc == 0 && i < 3; i++) {
        if (snprintf(path, sizeof(path), "%s/%s", dir, subs[i]) >=
            (int)sizeof(path))
            rc = SL_EINVAL;
        else
            rc = fsync_path(path, 1);
    }
    return rc;
}

/* The policies/ and plugins/ folders of a new bundle in dir. */
static int make_bundle_dirs(const char *dir)
{
    char sub[SUBPATH];
    snprintf(sub, sizeof(sub), "%s/policies", dir);
    if (mkdir(sub, 0700) < 0)
        return SL_EIO;
    snprintf(sub, sizeof(sub), "%s/plugins", dir);
    if (mkdir(sub, 0700) < 0)
        return SL_EIO;
    return 0;
}

int sl_ver_save(sl_ver_store *s, const sl_policy *p, char *err, size_t errlen)
{
    if (sl_ver_exists(s, p->version))
        return 0;
    char tmp[PATH_MAX], final[SUBPATH];
    snprintf(tmp, sizeof(tmp), "%s/tmp/ver-XXXXXX", s->dir);
    if (!mkdtemp(tmp)) {
        snprintf(err, errlen, "%s/tmp: cannot create a folder: %s", s->dir,
                 strerror(errno));
        return SL_EIO;
    }
    int rc = make_bundle_dirs(tmp);
    if (rc == 0)
        rc = fill_bundle(tmp, p);
    snprintf(final, sizeof(final), "%s/versions/%s", s->dir, p->version);
    if (rc == 0 && rename(tmp, final) < 0)
        rc = errno == EEXIST || errno == ENOTEMPTY ? 0 : SL_EIO;
    if (rc == 0)
        rc = fsync_parent(final);
    if (rc < 0)
        snprintf(err, errlen, "cannot store version %s in %s: %s", p->version,
                 s->dir, strerror(errno));
    rm_rf(tmp);
    return rc;
}

static int load_with_plugins(const char *policies, char **dirs, int ndirs,
                             const sl_config *cfg, sl_policy **out, char *err,
                             size_t errlen)
{
    sl_config c = *cfg; /* shallow: only the plugin search path differs */
    c.plugin_dirs = dirs;
    c.nplugin_dirs = ndirs;
    return sl_policy_load(policies, &c, out, err, errlen);
}

int sl_ver_load(sl_ver_store *s, const char *id, const sl_config *cfg,
                sl_policy **out, char *err, size_t errlen)
{
    char pol[PATH_MAX], plug[PATH_MAX];
    if (!sl_ver_exists(s, id)) {
        snprintf(err, errlen, "no stored version %s", id);
        return SL_EINVAL;
    }
    snprintf(pol, sizeof(pol), "%s/versions/%s/policies", s->dir, id);
    snprintf(plug, sizeof(plug), "%s/versions/%s/plugins", s->dir, id);
    char *dirs[] = {plug};
    int rc = load_with_plugins(pol, dirs, 1, cfg, out, err, errlen);
    if (rc == 0 && strcmp((*out)->version, id) != 0) {
        snprintf(err, errlen,
                 "stored version %s does not hash to its id (got %s)", id,
                 (*out)->version);
        sl_policy_unref(*out);
        return SL_ECONFIG;
    }
    return rc;
}

static int is_hex_id(const char *s, size_t n)
{
    if (n != 16)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int sl_ver_history(sl_ver_store *s, sl_ver_id **ids, int *n)
{
    char path[PATH_MAX];
    char *data;
    size_t len;
    *ids = NULL;
    *n = 0;
    snprintf(path, sizeof(path), "%s/published", s->dir);
    if (sl_read_file(path, &data, &len) < 0)
        return errno == ENOENT ? 0 : SL_EIO;
    int cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += data[i] == '\n';
    sl_ver_id *list = calloc((size_t)cap, sizeof(*list));
    if (!list) {
        free(data);
        return SL_ENOMEM;
    }
    int count = 0;
    for (char *line = data; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        if (is_hex_id(line, l)) {
            memcpy(list[count], line, 16);
            list[count][16] = '\0';
            /* a history line always names a whole version; skip any other */
            if (sl_ver_exists(s, list[count]))
                count++;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(data);
    *ids = list;
    *n = count;
    return 0;
}

int sl_ver_set_history(sl_ver_store *s, const sl_ver_id *ids, int n, char *err,
                       size_t errlen)
{
    char path[PATH_MAX];
    sl_buf b;
    sl_buf_init(&b, NULL);
    for (int i = 0; i < n; i++)
        if (sl_buf_printf(&b, "%s\n", ids[i]) < 0) {
            sl_buf_release(&b);
            snprintf(err, errlen, "out of memory");
            return SL_ENOMEM;
        }
    snprintf(path, sizeof(path), "%s/published", s->dir);
    int rc = sl_ver_write_atomic(path, b.data ? b.data : "", b.len);
    sl_buf_release(&b);
    if (rc < 0)
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    return rc;
}

void sl_ver_prune(sl_ver_store *s, int keep, const sl_ver_id *pinned,
                  int npinned)
{
    sl_ver_id *hist;
    int n;
    char path[PATH_MAX];
    if (sl_ver_history(s, &hist, &n) < 0)
        return;
    /* the first `keep` distinct versions of the history stay */
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < distinct && !seen; j++)
            seen = strcmp(hist[j], hist[i]) == 0;
        if (!seen && distinct < keep)
            memcpy(hist[distinct++], hist[i], sizeof(sl_ver_id));
    }
    snprintf(path, sizeof(path), "%s/versions", s->dir);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!is_hex_id(e->d_name, strlen(e->d_name)))
            continue;
        int used = 0;
        for (int i = 0; i < distinct && !used; i++)
            used = strcmp(hist[i], e->d_name) == 0;
        for (int i = 0; i < npinned && !used; i++)
            used = strcmp(pinned[i], e->d_name) == 0;
        if (used)
            continue;
        char victim[SUBPATH];
        snprintf(victim, sizeof(victim), "%s/%s", path, e->d_name);
        rm_rf(victim);
    }
    if (d)
        closedir(d);
    free(hist);
}

static int allowed_name(const char *name)
{
    const char *file;
    const char *const *exts;
    static const char *const pol_exts[] = {".yaml", ".yml", ".json", NULL};
    static const char *const lua_exts[] = {".lua", NULL};
    if (strncmp(name, "policies/", 9) == 0) {
        file = name + 9;
        exts = pol_exts;
    } else if (strncmp(name, "plugins/", 8) == 0) {
        file = name + 8;
        exts = lua_exts;
    } else {
        return 0;
    }
    if (!*file || file[0] == '.' || strlen(file) > 128)
        return 0;
    for (const char *c = file; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.'))
            return 0;
    const char *dot = strrchr(file, '.');
    for (int i = 0; dot && exts[i]; i++)
        if (strcmp(dot, exts[i]) == 0)
            return 1;
    return 0;
}

int sl_ver_stage(sl_ver_store *s, const char *const *names,
                 const char *const *data, const size_t *lens, int n, char **dir,
                 char *err, size_t errlen)
{
    for (int i = 0; i < n; i++)
        if (!allowed_name(names[i])) {
            snprintf(err, errlen,
                     "files: '%.200s' is not a policy or plugin file "
                     "(policies/NAME.yaml, policies/NAME.json or "
                     "plugins/NAME.lua)",
                     names[i]);
            return SL_EINVAL;
        }
    char tmp[PATH_MAX], path[SUBPATH];
    snprintf(tmp, sizeof(tmp), "%s/tmp/stage-XXXXXX", s->dir);
    if (!mkdtemp(tmp)) {
        snprintf(err, errlen, "cannot create a staging folder: %s",
                 strerror(errno));
        return SL_EIO;
    }
    int rc = make_bundle_dirs(tmp);
    for (int i = 0; rc == 0 && i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", tmp, names[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, data[i], lens[i]) != (ssize_t)lens[i])
            rc = SL_EIO;
        if (fd >= 0)
            close(fd);
    }
    if (rc < 0 || !(*dir = strdup(tmp))) {
        snprintf(err, errlen, "cannot write the staging folder: %s",
                 strerror(errno));
        rm_rf(tmp);
        return rc < 0 ? rc : SL_ENOMEM;
    }
    return 0;
}

int sl_ver_load_staged(const char *dir, const sl_config *cfg, sl_policy **out,
                       char *err, size_t errlen)
{
    char pol[SUBPATH], plug[SUBPATH], home[SUBPATH];
    snprintf(pol, sizeof(pol), "%s/policies", dir);
    snprintf(plug, sizeof(plug), "%s/plugins", dir);
    snprintf(home, sizeof(home), "%s/plugins", sl_home());
    int n = cfg->nplugin_dirs ? cfg->nplugin_dirs : 1;
    char **dirs = calloc((size_t)n + 1, sizeof(char *));
    if (!dirs)
        return SL_ENOMEM;
    dirs[0] = plug;
    for (int i = 0; i < cfg->nplugin_dirs; i++)
        dirs[i + 1] = cfg->plugin_dirs[i];
    if (!cfg->nplugin_dirs)
        dirs[1] = home;
    int rc = load_with_plugins(pol, dirs, n + 1, cfg, out, err, errlen);
    free(dirs);
    return rc;
}

void sl_ver_unstage(const char *dir)
{
    if (dir)
        rm_rf(dir);
}
