/* util.c — request ids, duration/size parsing, time, JSON escaping, files. */
#include "util.h"
#include "buf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

const char *sl_strerror(int err)
{
    switch (err) {
    case SL_OK:
        return "ok";
    case SL_ENOMEM:
        return "out of memory";
    case SL_EINVAL:
        return "invalid argument";
    case SL_EIO:
        return "i/o error";
    case SL_ETIMEDOUT:
        return "timed out";
    case SL_ECONNREFUSED:
        return "connection refused";
    case SL_ECONNRESET:
        return "connection reset by peer";
    case SL_EDNS:
        return "name resolution failed";
    case SL_ETLS:
        return "tls error";
    case SL_EPROTO:
        return "protocol error";
    case SL_ETOOLARGE:
        return "limit exceeded";
    case SL_EAGAIN:
        return "try again";
    case SL_EEOF:
        return "end of stream";
    case SL_ECONFIG:
        return "configuration error";
    case SL_ECANCELED:
        return "canceled";
    case SL_ECONNECT:
        return "connect failed";
    case SL_ETOOMANY:
        return "too many items";
    }
    return "unknown error";
}

int sl_ieq(const char *s, size_t n, const char *lower)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (lower[i] == '\0' || (char)tolower((unsigned char)s[i]) != lower[i])
            return 0;
    }
    return lower[i] == '\0';
}

void sl_rand_seed(sl_rand *r)
{
    if (getrandom(r->s, sizeof(r->s), 0) != (ssize_t)sizeof(r->s)) {
        r->s[0] = sl_now_ns() ^ (uint64_t)(uintptr_t)r;
        r->s[1] = 0x9e3779b97f4a7c15ULL;
    }
    if ((r->s[0] | r->s[1]) == 0)
        r->s[1] = 1;
}

uint64_t sl_rand_next(sl_rand *r)
{
    /* xorshift128+: fast, and ids need uniqueness, not secrecy. */
    uint64_t s1 = r->s[0];
    const uint64_t s0 = r->s[1];
    r->s[0] = s0;
    s1 ^= s1 << 23;
    r->s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return r->s[1] + s0;
}

void sl_request_id(sl_rand *r, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = sl_rand_next(r), b = sl_rand_next(r);
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(a >> (i * 4)) & 15];
        out[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    out[32] = '\0';
}

static int parse_number_unit(const char *s, uint64_t *num, const char **unit)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return SL_EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    while (*end == ' ')
        end++;
    *num = v;
    *unit = end;
    return 0;
}

int sl_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t v;
    const char *u;
    if (parse_number_unit(s, &v, &u) < 0)
        return SL_EINVAL;
    if (*u == '\0' || strcmp(u, "ms") == 0)
        *ms = v;
    else if (strcmp(u, "s") == 0)
        *ms = v * 1000;
    else if (strcmp(u, "m") == 0)
        *ms = v * 60000;
    else if (strcmp(u, "h") == 0)
        *ms = v * 3600000;
    else
        return SL_EINVAL;
    return 0;
}

int sl_parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v;
    const char *u;
    if (parse_number_unit(s, &v, &u) < 0)
        return SL_EINVAL;
    if (*u == '\0' || strcmp(u, "B") == 0)
        *bytes = v;
    else if (strcmp(u, "KiB") == 0 || strcmp(u, "KB") == 0 ||
             strcmp(u, "k") == 0)
        *bytes = v << 10;
    else if (strcmp(u, "MiB") == 0 || strcmp(u, "MB") == 0 ||
             strcmp(u, "m") == 0)
        *bytes = v << 20;
    else if (strcmp(u, "GiB") == 0 || strcmp(u, "GB") == 0)
        *bytes = v << 30;
    else
        return SL_EINVAL;
    return 0;
}

int sl_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return SL_EINVAL;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return SL_EINVAL;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen)
        return SL_EINVAL;
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || p == 0 || p > 65535)
        return SL_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

uint64_t sl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

double sl_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

size_t sl_time_rfc3339(char out[32])
{
    /* a log line per request: the date and time change once a second */
    static __thread time_t sec = -1;
    static __thread char head[24];
    static __thread size_t hn;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        hn = strftime(head, sizeof(head), "%Y-%m-%dT%H:%M:%S", &tm);
        sec = ts.tv_sec;
    }
    long ms = ts.tv_nsec / 1000000;
    memcpy(out, head, hn);
    out[hn] = '.';
    out[hn + 1] = (char)('0' + ms / 100);
    out[hn + 2] = (char)('0' + ms / 10 % 10);
    out[hn + 3] = (char)('0' + ms % 10);
    out[hn + 4] = 'Z';
    out[hn + 5] = 0;
    return hn + 5;
}

size_t sl_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            if (o + 2 > cap)
                break;
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            if (o + 6 > cap)
                break;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            if (o + 1 > cap)
                break;
            out[o++] = (char)c;
        }
    }
    return o;
}

int sl_read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return SL_EIO;
    sl_buf b;
    sl_buf_init(&b, NULL);
    char tmp[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        if ((rc = sl_buf_append(&b, tmp, n)) < 0)
            break;
    if (rc == 0 && ferror(f))
        rc = SL_EIO;
    fclose(f);
    if (rc == 0)
        rc = sl_buf_append(&b, "", 1);
    if (rc < 0) {
        sl_buf_release(&b);
        return rc;
    }
    *out = b.data;
    *len = b.len - 1;
    return 0;
}
