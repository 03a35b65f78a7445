/* report_table.c — what `sluice report` aggregates into and prints: a
 * small open-addressing hash map keyed by joined fields, and tables of
 * formatted cells printed as aligned text, one JSON object, or CSV. */
#include "report_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- the map ---------------------------------------------------------------
 */

typedef struct {
    uint64_t hash;
    char *mem; /* the value (value_size bytes, aligned) then the key */
    size_t n;
} slot;

struct rp_map {
    slot *slots;
    size_t cap, count, value_size;
};

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h | 1; /* 0 marks an empty slot */
}

rp_map *rp_map_new(size_t value_size)
{
    rp_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cap = 64;
    m->value_size = (value_size + 15) & ~(size_t)15;
    if (!(m->slots = calloc(m->cap, sizeof(slot)))) {
        free(m);
        return NULL;
    }
    return m;
}

void rp_map_free(rp_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].mem);
    free(m->slots);
    free(m);
}

static int rehash(rp_map *m)
{
    size_t cap = m->cap * 2;
    slot *ns = calloc(cap, sizeof(slot));
    if (!ns)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].hash)
            continue;
        size_t j = m->slots[i].hash & (cap - 1);
        while (ns[j].hash)
            j = (j + 1) & (cap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = cap;
    return 0;
}

void *rp_map_get(rp_map *m, const char *key, size_t n)
{
    uint64_t h = hash_bytes(key, n);
    size_t i = h & (m->cap - 1);
    while (m->slots[i].hash) {
        slot *s = &m->slots[i];
        if (s->hash == h && s->n == n &&
            memcmp(s->mem + m->value_size, key, n) == 0)
            return s->mem;
        i = (i + 1) & (m->cap - 1);
    }
    if ((m->count + 1) * 2 > m->cap) {
        if (rehash(m) < 0)
            return NULL;
        return rp_map_get(m, key, n);
    }
    char *mem = calloc(1, m->value_size + n + 1);
    if (!mem)
        return NULL;
    memcpy(mem + m->value_size, key, n);
    m->slots[i] = (slot){.hash = h, .mem = mem, .n = n};
    m->count++;
    return mem;
}

size_t rp_map_count(const rp_map *m)
{
    return m->count;
}

int rp_map_next(const rp_map *m, size_t *it, const char **key, size_t *n,
                void **value)
{
    while (*it < m->cap) {
        const slot *s = &m->slots[(*it)++];
        if (s->hash) {
            *key = s->mem + m->value_size;
            *n = s->n;
            *value = s->mem;
            return 1;
        }
    }
    return 0;
}

/* Fields are joined by 0x1F (unit separator), which no name in a record
 * carries; longer keys are cut (each field is bounded by the caller). */
size_t rp_key(char *out, size_t cap, const rp_str *fields, int nfields)
{
    size_t len = 0;
    for (int i = 0; i < nfields; i++) {
        size_t n = fields[i].p ? fields[i].n : 0;
        if (i > 0 && len < cap)
            out[len++] = '\x1f';
        if (n > cap - len)
            n = cap - len;
        if (n)
            memcpy(out + len, fields[i].p, n);
        len += n;
    }
    return len;
}

int rp_key_split(const char *key, size_t n, rp_str *fields, int max)
{
    int k = 0;
    const char *p = key, *end = key + n;
    while (k < max) {
        const char *sep = memchr(p, '\x1f', (size_t)(end - p));
        fields[k].p = p;
        fields[k].n = (size_t)((sep ? sep : end) - p);
        k++;
        if (!sep)
            break;
        p = sep + 1;
    }
    return k;
}

/* ---- time ------------------------------------------------------------------
 */

void rp_format_time(int64_t ms, char *out)
{
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int64_t z = (secs >= 0 ? secs : secs - 86399) / 86400;
    int64_t sod = secs - z * 86400;
    /* Howard Hinnant's civil_from_days */
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    char buf[96];
    snprintf(buf, sizeof(buf), "%04lld-%02u-%02uT%02d:%02d:%02dZ", (long long)y,
             m, d, (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60));
    size_t n = strlen(buf) < 31 ? strlen(buf) : 31;
    memcpy(out, buf, n);
    out[n] = '\0';
}

/* ---- tables ----------------------------------------------------------------
 */

void rp_table_init(rp_table *t, const rp_col *cols, int ncols)
{
    memset(t, 0, sizeof(*t));
    t->cols = cols;
    t->ncols = ncols;
}

int rp_table_row(rp_table *t)
{
    if (t->nrows == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        char **nc =
            realloc(t->cells, (size_t)cap * (size_t)t->ncols * sizeof(char *));
        if (!nc)
            return -1;
        t->cells = nc;
        t->cap = cap;
    }
    memset(t->cells + (size_t)t->nrows * (size_t)t->ncols, 0,
           (size_t)t->ncols * sizeof(char *));
    return t->nrows++;
}

void rp_table_set(rp_table *t, int row, int col, const char *fmt, ...)
{
    if (row < 0)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char **cell = &t->cells[(size_t)row * (size_t)t->ncols + (size_t)col];
    free(*cell);
    *cell = strdup(buf);
}

void rp_table_setn(rp_table *t, int row, int col, const rp_str *s)
{
    if (s && s->p)
        rp_table_set(t, row, col, "%.*s", (int)(s->n > 1000 ? 1000 : s->n),
                     s->p);
}

void rp_table_free(rp_table *t)
{
    for (size_t i = 0; i < (size_t)t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

static const char *cell(const rp_table *t, int row, int col)
{
    return t->cells[(size_t)row * (size_t)t->ncols + (size_t)col];
}

/* Display width of UTF-8 text: its code points. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/* Control characters would break a table's lines: shown as spaces. */
static void put_text(FILE *out, const char *s)
{
    for (; *s; s++)
        fputc((unsigned char)*s < 0x20 ? ' ' : *s, out);
}

static void pad(FILE *out, size_t n)
{
    while (n--)
        fputc(' ', out);
}

static void print_text(FILE *out, const rp_table *t)
{
    size_t w[32] = {0};
    int nc = t->ncols < 32 ? t->ncols : 32;
    for (int c = 0; c < nc; c++) {
        w[c] = width(t->cols[c].name);
        for (int r = 0; r < t->nrows; r++) {
            const char *v = cell(t, r, c);
            size_t cw = v ? width(v) : 1;
            if (cw > w[c])
                w[c] = cw;
        }
    }
    for (int r = -1; r < t->nrows; r++) {
        for (int c = 0; c < nc; c++) {
            const char *v = r < 0 ? t->cols[c].name : cell(t, r, c);
            if (!v)
                v = "-";
            size_t fill = w[c] - width(v);
            int last = c == nc - 1;
            if (t->cols[c].numeric && r >= 0)
                pad(out, fill);
            put_text(out, v);
            if (!last && !(t->cols[c].numeric && r >= 0))
                pad(out, fill);
            if (!last)
                fputs("  ", out);
        }
        fputc('\n', out);
    }
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", out);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

static void json_member(FILE *out, const char *key, const char *value)
{
    if (!value)
        return;
    fputc(',', out);
    json_string(out, key);
    fputc(':', out);
    json_string(out, value);
}

static void print_json(FILE *out, const rp_table *t, const rp_meta *m)
{
    fputs("{\"report\":", out);
    json_string(out, m->report);
    json_member(out, "bucket", m->bucket);
    json_member(out, "from", m->from);
    json_member(out, "to", m->to);
    fprintf(out,
            ",\"lines\":%llu,\"records\":%llu,\"matched\":%llu,"
            "\"skipped\":%llu,\"bytes\":%llu,\"rows\":[",
            (unsigned long long)m->counts->lines,
            (unsigned long long)m->counts->records,
            (unsigned long long)m->matched,
            (unsigned long long)m->counts->skipped,
            (unsigned long long)m->counts->bytes);
    for (int r = 0; r < t->nrows; r++) {
        fputs(r ? ",{" : "{", out);
        int first = 1;
        for (int c = 0; c < t->ncols; c++) {
            if (t->cols[c].text_only)
                continue;
            if (!first)
                fputc(',', out);
            first = 0;
            json_string(out, t->cols[c].name);
            fputc(':', out);
            const char *v = cell(t, r, c);
            if (!v)
                fputs("null", out);
            else if (t->cols[c].numeric)
                fputs(v, out);
            else
                json_string(out, v);
        }
        fputc('}', out);
    }
    fputs("]}\n", out);
}

static void csv_field(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void print_csv(FILE *out, const rp_table *t)
{
    for (int r = -1; r < t->nrows; r++) {
        int first = 1;
        for (int c = 0; c < t->ncols; c++) {
            if (t->cols[c].text_only)
                continue;
            if (!first)
                fputc(',', out);
            first = 0;
            const char *v = r < 0 ? t->cols[c].name : cell(t, r, c);
            csv_field(out, v ? v : "");
        }
        fputs("\r\n", out);
    }
}

void rp_table_print(FILE *out, const rp_table *t, int format, const rp_meta *m)
{
    if (format == RP_JSON) {
        print_json(out, t, m);
        return;
    }
    if (format == RP_CSV) {
        print_csv(out, t);
        if (m->counts->skipped)
            fprintf(stderr, "sluice report: %llu unreadable line%s skipped\n",
                    (unsigned long long)m->counts->skipped,
                    m->counts->skipped == 1 ? "" : "s");
        return;
    }
    if (t->nrows == 0)
        fprintf(out, "(no %s in these records)\n", m->report);
    else
        print_text(out, t);
    fputc('\n', out);
    if (m->note)
        fprintf(out, "%s\n", m->note);
    fprintf(out, "%llu record%s from %llu line%s (%.1f MB)",
            (unsigned long long)m->counts->records,
            m->counts->records == 1 ? "" : "s",
            (unsigned long long)m->counts->lines,
            m->counts->lines == 1 ? "" : "s", (double)m->counts->bytes / 1e6);
    if (m->counts->skipped)
        fprintf(out, "; %llu unreadable line%s skipped",
                (unsigned long long)m->counts->skipped,
                m->counts->skipped == 1 ? "" : "s");
    if (m->from || m->to)
        fprintf(out, "; %llu from %s to %s", (unsigned long long)m->matched,
                m->from ? m->from : "the start", m->to ? m->to : "the end");
    fputc('\n', out);
}

/* ---- small helpers ----------------------------------------------------------
 */

void rp_span_add(rp_span *s, int64_t t)
{
    if (!s->count || t < s->first)
        s->first = t;
    if (!s->count || t > s->last)
        s->last = t;
    s->count++;
}

int rp_streq(const rp_str *s, const char *lit)
{
    size_t n = strlen(lit);
    return s->p && s->n == n && memcmp(s->p, lit, n) == 0;
}
