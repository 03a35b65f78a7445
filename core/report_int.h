/* report_int.h — what the rooms of `sluice report` share: one audit record
 * as the scanner sees it (report_scan.c), the small hash map and tables the
 * reports aggregate into and print (report_table.c). Not for other rooms. */
#ifndef SL_REPORT_INT_H
#define SL_REPORT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"

/* A string of the record: points into the line or into the scanner's
 * scratch space; valid until the next line. p == NULL when absent. */
typedef struct {
    const char *p;
    size_t n;
} rp_str;

typedef struct {
    rp_str backend, outcome, error;
    int status;
} rp_attempt;

typedef struct {
    rp_str plugin, outcome, reason, code;
} rp_decision;

enum { RP_MAX_ATTEMPTS = 16, RP_MAX_DECISIONS = 32, RP_MAX_EXCEPTIONS = 16 };

/* The fields of one audit record the reports read. */
typedef struct {
    int64_t t_ms; /* record time, ms since the epoch; has_time says if set */
    int has_time;
    int status;
    rp_str backend, provider, upstream_error, error;
    rp_str consumer, app, team;
    rp_str model_requested, model_public;
    int model_deprecated, model_sunset;
    int has_usage;
    double prompt_tokens, completion_tokens, total_tokens;
    int has_cost;
    double cost_usd;       /* top-level cost_usd, else the quota annotation */
    rp_str quota_exceeded; /* annotations.quota.quota_exceeded: the limit */
    int natt, ndec, nexc;
    rp_attempt att[RP_MAX_ATTEMPTS];
    rp_decision dec[RP_MAX_DECISIONS];
    rp_str exc[RP_MAX_EXCEPTIONS];
} rp_record;

/* ---- report_scan.c ---------------------------------------------------- */

typedef struct rp_scanner rp_scanner;

/* Called for each record read; return nonzero to stop reading. */
typedef int (*rp_record_cb)(const rp_record *r, void *data);

typedef struct {
    uint64_t lines;   /* non-empty lines read */
    uint64_t records; /* lines that were audit records */
    uint64_t skipped; /* lines that were not (garbled, truncated, other) */
    uint64_t bytes;   /* uncompressed bytes read */
} rp_counts;

/* Read every line of `path` ("-": stdin; gzip or plain, detected by
 * content) and call cb for each record. Returns 0, or -1 with the reason
 * in err when the file cannot be opened or read. */
int rp_read_file(const char *path, rp_record_cb cb, void *data,
                 rp_counts *counts, char *err, size_t errlen);

/* Parse one line (NUL-terminated at line[n]) into r; 0 or -1 if it is not
 * a JSON object. `scratch` (at least n + 1 bytes) holds unescaped strings.
 * Exposed for the C unit test. */
int rp_parse_line(char *line, size_t n, char *scratch, rp_record *r);

/* "2026-11-25T22:53:23.060Z" (or a date, or +hh:mm offsets) → ms since
 * the epoch; -1 when it is no such time. */
int rp_parse_time(const char *s, size_t n, int64_t *ms);

/* ---- report_table.c --------------------------------------------------- */

/* A map from a byte key to a zeroed value of fixed size, both owned by the
 * map and freed with it. Insertion order is not kept. */
typedef struct rp_map rp_map;

rp_map *rp_map_new(size_t value_size);
void rp_map_free(rp_map *m);
/* The value for key (created zeroed when new), or NULL when out of memory. */
void *rp_map_get(rp_map *m, const char *key, size_t n);
size_t rp_map_count(const rp_map *m);
/* The i-th entry (0 <= i < capacity-ordered walk): call with *it = 0 and
 * repeat until it returns 0. */
int rp_map_next(const rp_map *m, size_t *it, const char **key, size_t *n,
                void **value);

/* Join fields into a key with a separator no field contains. */
size_t rp_key(char *out, size_t cap, const rp_str *fields, int nfields);
/* Split a key made by rp_key into at most max fields. */
int rp_key_split(const char *key, size_t n, rp_str *fields, int max);

enum { RP_TEXT, RP_JSON, RP_CSV };

typedef struct {
    const char *name;
    int numeric;   /* right-aligned in text, a bare number in JSON */
    int text_only; /* shown in the text table only (a bar, a marker) */
} rp_col;

/* A table of formatted cells; every cell is owned by the table. */
typedef struct {
    const rp_col *cols;
    int ncols;
    char **cells; /* nrows * ncols, NULL cell = empty / null */
    int nrows, cap;
} rp_table;

void rp_table_init(rp_table *t, const rp_col *cols, int ncols);
/* Start a row; returns its index or -1 when out of memory. */
int rp_table_row(rp_table *t);
/* Set cell (row, col) to a printf-formatted string. */
void rp_table_set(rp_table *t, int row, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rp_table_setn(rp_table *t, int row, int col, const rp_str *s);
void rp_table_free(rp_table *t);

/* Facts printed around the table (JSON members, a text footer). */
typedef struct {
    const char *report;
    const char *bucket; /* failures only */
    const char *from, *to;
    const rp_counts *counts;
    uint64_t matched; /* records inside --from/--to */
    const char *note; /* one line for the text footer, or NULL */
} rp_meta;

void rp_table_print(FILE *out, const rp_table *t, int format,
                    const rp_meta *meta);

/* ---- report_budgets.c ------------------------------------------------- */

/* A quota limit from the policy, as the quota plugin compiles it. */
typedef struct {
    char *by;       /* the consumer field: "team", "app", "id", … */
    char *metric;   /* "requests", "tokens" or "cost" */
    char *period;   /* "minute", "hour", "day", "month" or "30s", "2h", … */
    char *prefix;   /* the quota plugin's name for it: metric:period:by */
    double max;     /* requests, tokens or dollars per window */
    int64_t len_ms; /* the window's length; 0 for a calendar month */
    int soft;
    char **models; /* only these public models count; NULL: all */
    int nmodels;
    char **override_names; /* per identity value: a different max */
    double *override_max;
    int noverrides;
} rp_limit;

typedef struct {
    char *name, *provider;
} rp_backend;

typedef struct {
    rp_limit *limits;
    int nlimits;
    rp_backend *backends;
    int nbackends;
} rp_policy;

/* Read the quota limits and the backends of a policy directory (or one
 * policy file). 0, or -1 with "file:line: reason" in err. */
int rp_policy_load(const char *path, rp_policy *p, char *err, size_t errlen);
void rp_policy_free(rp_policy *p);
const char *rp_policy_provider(const rp_policy *p, const rp_str *backend);

/* The budgets report: spend by team against the policy's limits. */
typedef struct rp_budgets rp_budgets;
rp_budgets *rp_budgets_new(const rp_policy *p);
int rp_budgets_add(rp_budgets *b, const rp_record *r);
/* Fill t (initialised here) with the report; note for the text footer. */
int rp_budgets_emit(rp_budgets *b, rp_table *t, const char **note);
void rp_budgets_free(rp_budgets *b);

/* ---- shared helpers ------------------------------------------------------ */

/* The first and last time something was seen, and how often. */
typedef struct {
    int64_t first, last;
    uint64_t count;
} rp_span;

void rp_span_add(rp_span *s, int64_t t);
int rp_streq(const rp_str *s, const char *lit);

/* ms since the epoch → "2026-11-25T22:53:23Z" in out (at least 32 bytes). */
void rp_format_time(int64_t ms, char *out);
/* Civil date → days since 1970-01-01. */
int64_t rp_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
