/* report_scan.c — audit logs read for `sluice report`: files (plain or
 * gzip, through zlib) cut into lines, and each line scanned into the few
 * fields the reports need.
 *
 * The scanner is a small JSON walker rather than cJSON: it builds no tree,
 * allocates nothing per line, and copies a string only when it holds an
 * escape, which is what lets a gigabyte of log be read in seconds. It
 * still checks the whole line is one well-formed object, so a torn or
 * garbled line is counted as skipped instead of half-read. */
#include "report_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* ---- the JSON walker ---------------------------------------------------- */

typedef struct {
    char *p, *end; /* *end is NUL */
    char *scratch; /* where the next unescaped string goes */
    int depth;
} js;

enum { MAX_DEPTH = 64 };

static void ws(js *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' || *s->p == '\n'))
        s->p++;
}

static int hex4(const char *c, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char h = c[i];
        unsigned d;
        if (h >= '0' && h <= '9')
            d = (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f')
            d = (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F')
            d = (unsigned)(h - 'A' + 10);
        else
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

static char *put_utf8(char *w, unsigned cp)
{
    if (cp < 0x80) {
        *w++ = (char)cp;
    } else if (cp < 0x800) {
        *w++ = (char)(0xC0 | cp >> 6);
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xE0 | cp >> 12);
        *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *w++ = (char)(0xF0 | cp >> 18);
        *w++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    }
    return w;
}

/* A string with escapes, from `c` (just after the quote), decoded into the
 * scratch space. Decoded text is never longer than its escaped form, so
 * scratch the size of the line always suffices. */
static int str_slow(js *s, char *c, rp_str *out)
{
    char *w = s->scratch;
    out->p = w;
    while (c < s->end) {
        char ch = *c++;
        if (ch == '"') {
            out->n = (size_t)(w - out->p);
            s->scratch = w;
            s->p = c;
            return 0;
        }
        if (ch != '\\') {
            *w++ = ch;
            continue;
        }
        if (c >= s->end)
            return -1;
        switch (ch = *c++) {
        case '"':
        case '\\':
        case '/':
            *w++ = ch;
            break;
        case 'b':
            *w++ = '\b';
            break;
        case 'f':
            *w++ = '\f';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 'r':
            *w++ = '\r';
            break;
        case 't':
            *w++ = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (s->end - c < 4 || hex4(c, &cp) < 0)
                return -1;
            c += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s->end - c >= 6 &&
                c[0] == '\\' && c[1] == 'u' && hex4(c + 2, &lo) == 0 &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                c += 6;
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD; /* a lone surrogate */
            }
            w = put_utf8(w, cp);
            break;
        }
        default:
            return -1;
        }
    }
    return -1;
}

/* A string at s->p: points into the line unless it holds an escape. */
static int str(js *s, rp_str *out)
{
    if (s->p >= s->end || *s->p != '"')
        return -1;
    char *start = s->p + 1;
    char *q = memchr(start, '"', (size_t)(s->end - start));
    if (!q)
        return -1;
    if (memchr(start, '\\', (size_t)(q - start)))
        return str_slow(s, start, out);
    out->p = start;
    out->n = (size_t)(q - start);
    s->p = q + 1;
    return 0;
}

static int skip_string(js *s)
{
    char *c = s->p + 1;
    for (;;) {
        char *q = memchr(c, '"', (size_t)(s->end - c));
        if (!q)
            return -1;
        size_t bs = 0; /* an odd run of backslashes escapes the quote */
        while (q - bs > c && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        c = q + 1;
        if (bs % 2 == 0)
            break;
    }
    s->p = c;
    return 0;
}

static int literal(js *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int skip_number(js *s)
{
    char *c = s->p;
    while (c < s->end && ((*c >= '0' && *c <= '9') || *c == '-' || *c == '+' ||
                          *c == '.' || *c == 'e' || *c == 'E'))
        c++;
    if (c == s->p)
        return -1;
    s->p = c;
    return 0;
}

typedef int (*member_fn)(js *s, const char *key, size_t n, void *ud);
typedef int (*element_fn)(js *s, void *ud);

static int skip(js *s);

/* Walk an object's members; fn consumes each value (fn NULL: skip all). */
static int each_member(js *s, member_fn fn, void *ud)
{
    if (s->p >= s->end || *s->p != '{' || ++s->depth > MAX_DEPTH)
        return -1;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        rp_str key;
        char *mark = s->scratch;
        if (str(s, &key) < 0)
            return -1;
        ws(s);
        if (s->p >= s->end || *s->p != ':')
            return -1;
        s->p++;
        ws(s);
        if (key.p != mark)
            s->scratch = mark; /* an unescaped key is not kept */
        if ((fn ? fn(s, key.p, key.n, ud) : skip(s)) < 0)
            return -1;
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            s->depth--;
            return 0;
        }
        return -1;
    }
}

static int each_element(js *s, element_fn fn, void *ud)
{
    if (s->p >= s->end || *s->p != '[' || ++s->depth > MAX_DEPTH)
        return -1;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        if ((fn ? fn(s, ud) : skip(s)) < 0)
            return -1;
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            s->depth--;
            return 0;
        }
        return -1;
    }
}

static int skip(js *s)
{
    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '"':
        return skip_string(s);
    case '{':
        return each_member(s, NULL, NULL);
    case '[':
        return each_element(s, NULL, NULL);
    case 't':
        return literal(s, "true", 4);
    case 'f':
        return literal(s, "false", 5);
    case 'n':
        return literal(s, "null", 4);
    default:
        return skip_number(s);
    }
}

/* A string value into out; any other value is skipped and out stays unset. */
static int get_str(js *s, rp_str *out)
{
    if (s->p < s->end && *s->p == '"')
        return str(s, out);
    return skip(s);
}

static int get_num(js *s, double *out, int *has)
{
    char *c = s->p;
    if (c >= s->end || !((*c >= '0' && *c <= '9') || *c == '-'))
        return skip(s);
    int neg = *c == '-';
    if (neg)
        c++;
    double v = 0;
    char *digits = c;
    while (c < s->end && *c >= '0' && *c <= '9')
        v = v * 10 + (*c++ - '0');
    if (c == digits)
        return -1;
    if (c < s->end && (*c == '.' || *c == 'e' || *c == 'E')) {
        char *e;
        v = strtod(s->p, &e);
        if (e == s->p)
            return -1;
        s->p = e;
    } else {
        s->p = c;
        if (neg)
            v = -v;
    }
    *out = v;
    if (has)
        *has = 1;
    return 0;
}

/* A number kept as an int (an HTTP status). */
static int get_int(js *s, int *out)
{
    double v = 0;
    int rc = get_num(s, &v, NULL);
    *out = (int)v;
    return rc;
}

static int get_true(js *s, int *out)
{
    if (s->p < s->end && *s->p == 't') {
        *out = 1;
        return literal(s, "true", 4);
    }
    return skip(s);
}

#define KEY(lit) (n == sizeof(lit) - 1 && memcmp(key, lit, n) == 0)

/* ---- the record's parts ---------------------------------------------------
 */

static int on_object(js *s, void *ud, member_fn fn)
{
    if (s->p < s->end && *s->p == '{')
        return each_member(s, fn, ud);
    return skip(s);
}

static int on_array(js *s, void *ud, element_fn fn)
{
    if (s->p < s->end && *s->p == '[')
        return each_element(s, fn, ud);
    return skip(s);
}

static int on_consumer(js *s, const char *key, size_t n, void *ud)
{
    rp_record *r = ud;
    if (KEY("id"))
        return get_str(s, &r->consumer);
    if (KEY("app"))
        return get_str(s, &r->app);
    if (KEY("team"))
        return get_str(s, &r->team);
    return skip(s);
}

static int on_model(js *s, const char *key, size_t n, void *ud)
{
    rp_record *r = ud;
    if (KEY("requested"))
        return get_str(s, &r->model_requested);
    if (KEY("public"))
        return get_str(s, &r->model_public);
    if (KEY("deprecated"))
        return get_true(s, &r->model_deprecated);
    if (KEY("sunset"))
        return get_true(s, &r->model_sunset);
    return skip(s);
}

static int on_usage(js *s, const char *key, size_t n, void *ud)
{
    rp_record *r = ud;
    if (KEY("prompt_tokens"))
        return get_num(s, &r->prompt_tokens, &r->has_usage);
    if (KEY("completion_tokens"))
        return get_num(s, &r->completion_tokens, &r->has_usage);
    if (KEY("total_tokens"))
        return get_num(s, &r->total_tokens, &r->has_usage);
    return skip(s);
}

static int on_attempt_member(js *s, const char *key, size_t n, void *ud)
{
    rp_attempt *a = ud;
    if (KEY("backend"))
        return get_str(s, &a->backend);
    if (KEY("outcome"))
        return get_str(s, &a->outcome);
    if (KEY("error"))
        return get_str(s, &a->error);
    if (KEY("status"))
        return get_int(s, &a->status);
    return skip(s);
}

static int on_attempt(js *s, void *ud)
{
    rp_record *r = ud;
    if (s->p >= s->end || *s->p != '{' || r->natt == RP_MAX_ATTEMPTS)
        return skip(s);
    rp_attempt *a = &r->att[r->natt++];
    memset(a, 0, sizeof(*a));
    return each_member(s, on_attempt_member, a);
}

static int on_decision_member(js *s, const char *key, size_t n, void *ud)
{
    rp_decision *d = ud;
    if (KEY("plugin"))
        return get_str(s, &d->plugin);
    if (KEY("outcome"))
        return get_str(s, &d->outcome);
    if (KEY("reason"))
        return get_str(s, &d->reason);
    if (KEY("code"))
        return get_str(s, &d->code);
    return skip(s);
}

static int on_decision(js *s, void *ud)
{
    rp_record *r = ud;
    if (s->p >= s->end || *s->p != '{' || r->ndec == RP_MAX_DECISIONS)
        return skip(s);
    rp_decision *d = &r->dec[r->ndec++];
    memset(d, 0, sizeof(*d));
    return each_member(s, on_decision_member, d);
}

static int on_exception(js *s, void *ud)
{
    rp_record *r = ud;
    rp_str e = {0};
    if (get_str(s, &e) < 0)
        return -1;
    if (e.p && r->nexc < RP_MAX_EXCEPTIONS)
        r->exc[r->nexc++] = e;
    return 0;
}

static int on_quota_note(js *s, const char *key, size_t n, void *ud)
{
    rp_record *r = ud;
    if (KEY("quota_exceeded"))
        return get_str(s, &r->quota_exceeded);
    if (KEY("quota_cost_usd") && !r->has_cost)
        return get_num(s, &r->cost_usd, NULL);
    return skip(s);
}

static int on_annotations(js *s, const char *key, size_t n, void *ud)
{
    if (KEY("quota"))
        return on_object(s, ud, on_quota_note);
    return skip(s);
}

static int on_top(js *s, const char *key, size_t n, void *ud)
{
    rp_record *r = ud;
    switch (n) {
    case 4:
        if (KEY("time")) {
            rp_str t = {0};
            if (get_str(s, &t) < 0)
                return -1;
            if (t.p && rp_parse_time(t.p, t.n, &r->t_ms) == 0)
                r->has_time = 1;
            return 0;
        }
        break;
    case 5:
        if (KEY("model"))
            return on_object(s, r, on_model);
        if (KEY("usage"))
            return on_object(s, r, on_usage);
        if (KEY("error"))
            return get_str(s, &r->error);
        break;
    case 6:
        if (KEY("status"))
            return get_int(s, &r->status);
        break;
    default:
        if (KEY("backend"))
            return get_str(s, &r->backend);
        if (KEY("provider"))
            return get_str(s, &r->provider);
        if (KEY("consumer"))
            return on_object(s, r, on_consumer);
        if (KEY("attempts"))
            return on_array(s, r, on_attempt);
        if (KEY("decisions"))
            return on_array(s, r, on_decision);
        if (KEY("exceptions"))
            return on_array(s, r, on_exception);
        if (KEY("annotations"))
            return on_object(s, r, on_annotations);
        if (KEY("cost_usd")) {
            r->has_cost = 1;
            return get_num(s, &r->cost_usd, NULL);
        }
        if (KEY("upstream_error"))
            return get_str(s, &r->upstream_error);
        break;
    }
    return skip(s);
}

int rp_parse_line(char *line, size_t n, char *scratch, rp_record *r)
{
    memset(r, 0, offsetof(rp_record, att));
    js s = {.p = line, .end = line + n, .scratch = scratch};
    ws(&s);
    if (each_member(&s, on_top, r) < 0)
        return -1;
    ws(&s);
    return s.p == s.end ? 0 : -1;
}

/* ---- time ---------------------------------------------------------------- */

int64_t rp_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's days_from_civil */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, size_t n, size_t at, size_t count, int *v)
{
    if (at + count > n)
        return -1;
    *v = 0;
    for (size_t i = at; i < at + count; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

int rp_parse_time(const char *s, size_t n, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, se = 0, frac = 0;
    if (digits(s, n, 0, 4, &y) < 0 || n < 10 || s[4] != '-' ||
        digits(s, n, 5, 2, &mo) < 0 || s[7] != '-' ||
        digits(s, n, 8, 2, &d) < 0 || mo < 1 || mo > 12 || d < 1 || d > 31)
        return -1;
    size_t i = 10;
    if (i < n && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
        if (digits(s, n, i + 1, 2, &h) < 0 || i + 3 >= n || s[i + 3] != ':' ||
            digits(s, n, i + 4, 2, &mi) < 0)
            return -1;
        i += 6;
        if (i < n && s[i] == ':') {
            if (digits(s, n, i + 1, 2, &se) < 0)
                return -1;
            i += 3;
            if (i < n && s[i] == '.') {
                int scale = 100;
                for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
                    frac += (s[i] - '0') * scale;
                    scale /= 10;
                }
            }
        }
    }
    int64_t off = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (digits(s, n, i + 1, 2, &oh) < 0 || i + 3 >= n || s[i + 3] != ':' ||
            digits(s, n, i + 4, 2, &om) < 0)
            return -1;
        off = (int64_t)(oh * 60 + om) * 60000 * (s[i] == '+' ? 1 : -1);
        i += 6;
    }
    if (i != n || h > 23 || mi > 59 || se > 60)
        return -1;
    int64_t days = rp_days_from_civil(y, (unsigned)mo, (unsigned)d);
    *ms = ((days * 24 + h) * 60 + mi) * 60000 + (int64_t)se * 1000 + frac - off;
    return 0;
}

/* ---- files --------------------------------------------------------------- */

enum { CHUNK = 4 << 20, MAX_LINE = 64 << 20 };

typedef struct {
    char *buf, *scratch;
    size_t cap;
} line_bufs;

static int grow(line_bufs *b, size_t cap)
{
    char *nb = realloc(b->buf, cap + 1);
    if (!nb)
        return -1;
    b->buf = nb;
    char *ns = realloc(b->scratch, cap + 1);
    if (!ns)
        return -1;
    b->scratch = ns;
    b->cap = cap;
    return 0;
}

/* One line, NUL-terminated at line[n]: a record, or a skipped line. */
static int one_line(char *line, size_t n, char *scratch, rp_record *r,
                    rp_record_cb cb, void *data, rp_counts *c)
{
    while (n > 0 &&
           (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = '\0';
    if (n == 0)
        return 0;
    c->lines++;
    if (rp_parse_line(line, n, scratch, r) < 0 || !r->has_time) {
        c->skipped++;
        return 0;
    }
    c->records++;
    return cb(r, data);
}

int rp_read_file(const char *path, rp_record_cb cb, void *data,
                 rp_counts *counts, char *err, size_t errlen)
{
    gzFile gz;
    if (strcmp(path, "-") == 0) {
        int fd = dup(0);
        gz = fd < 0 ? NULL : gzdopen(fd, "rb");
    } else {
        gz = gzopen(path, "rb");
    }
    if (!gz) {
        snprintf(err, errlen, "%s: %s", path,
                 errno ? strerror(errno) : "cannot open");
        return -1;
    }
    gzbuffer(gz, 1 << 18);
    line_bufs b = {0};
    rp_record *r = malloc(sizeof(*r));
    int rc = 0, eof = 0, discarding = 0;
    if (!r || grow(&b, CHUNK) < 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
        eof = 1;
    }
    size_t len = 0;
    while (!eof) {
        if (len == b.cap) {
            if (b.cap >= MAX_LINE) { /* a line this long is no record */
                counts->lines++;
                counts->skipped++;
                discarding = 1;
                len = 0;
            } else if (grow(&b, b.cap * 2) < 0) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = -1;
                break;
            }
        }
        int got = gzread(gz, b.buf + len, (unsigned)(b.cap - len));
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            if (zerr == Z_ERRNO)
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
            else /* zlib's message names the file */
                snprintf(err, errlen, "%s", msg);
            rc = -1;
            got = 0; /* what was read is still reported */
        }
        if (got == 0)
            eof = 1;
        counts->bytes += (uint64_t)got;
        len += (size_t)got;
        char *p = b.buf, *e = b.buf + len;
        while (p < e) {
            char *nl = memchr(p, '\n', (size_t)(e - p));
            if (!nl && !eof)
                break;
            if (!nl)
                nl = e;
            *nl = '\0';
            if (discarding)
                discarding = 0; /* the tail of the overlong line */
            else if (one_line(p, (size_t)(nl - p), b.scratch, r, cb, data,
                              counts)) {
                eof = 1;
                break;
            }
            p = nl + 1;
        }
        if (p < e) {
            memmove(b.buf, p, (size_t)(e - p));
            len = (size_t)(e - p);
        } else {
            len = 0;
        }
    }
    if (rc == 0) {
        int zerr;
        const char *msg = gzerror(gz, &zerr);
        if (zerr != Z_OK) { /* Z_BUF_ERROR: a gzip file cut short */
            snprintf(err, errlen, "%s", msg);
            rc = -1;
        }
    }
    gzclose(gz);
    free(r);
    free(b.buf);
    free(b.scratch);
    return rc;
}
