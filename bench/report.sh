#!/usr/bin/env bash
# bench/report.sh — how fast `sluice report` reads audit logs.
#
# Generates a synthetic audit log of about $SIZE_MB megabytes (records in
# the gateway's access-log shape: consumers, deprecated models, fallbacks,
# upstream errors, quota and catalog denials, exceptions, spread over one
# day), then times each of the five reports over it, best of $ROUNDS runs,
# and prints a table of MB/s. With GZ=1 it also times one report over a
# gzip copy (of a smaller slice: $GZ_MB). Nothing is asserted: this is a
# measurement, to be read next to the machine it ran on.
#
#   sh bench/report.sh                    # 1 GB, 2 rounds
#   SIZE_MB=256 ROUNDS=3 GZ=1 sh bench/report.sh
#   SLUICE=/tmp/build/sluice KEEP=1 sh bench/report.sh
[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/build/sluice}
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-2}
GZ=${GZ:-0}
GZ_MB=${GZ_MB:-128}
DIR=${DIR:-$(mktemp -d /tmp/sluice-report-bench.XXXXXX)}
mkdir -p "$DIR"
LOG=$DIR/audit.log

[ -x "$SLUICE" ] || { echo "no sluice binary at $SLUICE (make, or SLUICE=...)" >&2; exit 1; }
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"; }
trap cleanup EXIT

# One seed file of distinct records (~16 MB), then copies of it up to the
# size: the reader's cost is per byte and per record, not per distinct one.
gen_seed() {
    awk -v n="$1" 'BEGIN {
        srand(42)
        split("search billing support ingest research", apps, " ")
        split("platform finance care data science", teams, " ")
        split("gpt-4o gpt-4o-mini mock-model legacy-chat claude-haiku", models, " ")
        split("azure-eu openai-us anthropic mock", backends, " ")
        split("azure openai anthropic openai", providers, " ")
        for (i = 0; i < n; i++) {
            t = int(i * 86400 / n)
            h = int(t / 3600); m = int(t % 3600 / 60); s = t % 60
            a = int(rand() * 5) + 1; mo = int(rand() * 5) + 1
            b = int(rand() * 4) + 1
            ts = sprintf("2026-11-25T%02d:%02d:%02d.%03dZ", h, m, s, int(rand() * 1000))
            id = sprintf("%08x%08x%08x%08x", i, rand() * 2^31, rand() * 2^31, i * 7)
            r = rand()
            status = 200; extra = ""; dec = ""
            att = sprintf("{\"backend\":\"%s\",\"status\":200,\"error\":null,\"latency_ms\":%.3f,\"outcome\":\"served\"}", backends[b], rand() * 900)
            if (r < 0.03) {
                status = 429
                dec = ",{\"plugin\":\"quota\",\"outcome\":\"deny\",\"reason\":\"quota exceeded: 200000 tokens per minute for each team; retry after 23s\",\"code\":\"tokens_limit_exceeded\"}"
                extra = ",\"annotations\":{\"quota\":{\"quota_exceeded\":\"tokens:minute:team\"}}"
                att = ""
            } else if (r < 0.05) {
                status = 502
                extra = ",\"upstream_error\":\"connect_error\",\"upstream_phase\":\"connect\",\"error\":\"upstream_unavailable\""
                att = sprintf("{\"backend\":\"%s\",\"status\":0,\"error\":\"connect_error\",\"latency_ms\":1.2,\"outcome\":\"failed\"}", backends[b])
            } else if (r < 0.10) {
                att = sprintf("{\"backend\":\"%s\",\"status\":429,\"error\":null,\"latency_ms\":3.1,\"outcome\":\"next\"},%s", backends[(b % 4) + 1], att)
                dec = ",{\"plugin\":\"fallback\",\"outcome\":\"modify\",\"reason\":\"fell back from a to b after 429\"}"
            }
            if (models[mo] == "legacy-chat")
                dec = dec ",{\"plugin\":\"catalog\",\"outcome\":\"warn\",\"reason\":\"the model \\u0027legacy-chat\\u0027 is deprecated and will be retired on 2027-01-31; use \\u0027gpt-4o\\u0027\"}"
            exc = (rand() < 0.02) ? ",\"exceptions\":[\"EXC-2026-0" int(rand() * 9) "\"]" : ""
            pt = int(rand() * 2000); ct = int(rand() * 500)
            printf("{\"v\":1,\"time\":\"%s\",\"request_id\":\"%s\",\"client\":\"10.1.%d.%d:%d\",\"method\":\"POST\",\"path\":\"/v1/chat/completions\",\"status\":%d,\"bytes\":%d,\"duration_ms\":%.3f,\"ttft_ms\":%.3f,\"policy_version\":\"c685a6d7c044d9ea\",\"backend\":\"%s\",\"provider\":\"%s\",\"region\":\"eu-west\",\"upstream_status\":%d,\"upstream_reused\":true,\"upstream_head_ms\":%.3f%s,\"consumer\":{\"id\":\"%s-svc\",\"app\":\"%s\",\"team\":\"%s\",\"source\":\"key-auth\"},\"model\":{\"requested\":\"%s\",\"public\":\"%s\",\"stream\":%s},\"data_class\":\"internal\",\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,\"source\":\"reported\"},\"cost_usd\":%.6f,\"attempts\":[%s],\"decisions\":[{\"plugin\":\"key-auth\",\"outcome\":\"allow\",\"reason\":\"key demo\"}%s],\"annotations\":{\"redact\":{\"redactions\":{\"EMAIL\":%d}}}%s}\n",
                ts, id, int(rand() * 255), int(rand() * 255), 30000 + int(rand() * 30000),
                status, 200 + int(rand() * 4000), rand() * 1500, rand() * 400,
                backends[b], providers[b], status, rand() * 300, extra,
                apps[a], apps[a], teams[a], models[mo], models[mo],
                rand() < 0.3 ? "true" : "false", pt, ct, pt + ct,
                (pt * 2.5 + ct * 10) / 1e6, att, dec, int(rand() * 3), exc)
        }
    }'
}

echo "generating ~${SIZE_MB} MB of audit log in $DIR ..." >&2
gen_seed 20000 >"$DIR/seed.log"
seed_bytes=$(stat -c %s "$DIR/seed.log")
copies=$(( (SIZE_MB * 1048576 + seed_bytes - 1) / seed_bytes ))
: >"$LOG"
for _ in $(seq "$copies"); do cat "$DIR/seed.log"; done >>"$LOG"
bytes=$(stat -c %s "$LOG")
lines=$(( copies * 20000 ))

now() { date +%s.%N; }

# best of $ROUNDS: prints seconds
time_report() {
    local best="" t0 t1 dt
    for _ in $(seq "$ROUNDS"); do
        t0=$(now)
        "$SLUICE" report "$@" >/dev/null || { echo "sluice report $* failed" >&2; exit 1; }
        t1=$(now)
        dt=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$dt < $best" | bc -l)" = 1 ]; then best=$dt; fi
    done
    echo "$best"
}

printf '\nsluice report over %s MB (%s records, %d-byte lines on average)\n\n' \
    "$((bytes / 1048576))" "$lines" "$((bytes / lines))"
printf '| report | seconds | MB/s | records/s |\n|---|---:|---:|---:|\n'
for r in deprecated failures budgets exceptions denials; do
    s=$(time_report "$r" "$LOG")
    printf '| %s | %.2f | %.0f | %.0f |\n' "$r" "$s" \
        "$(echo "$bytes / 1048576 / $s" | bc -l)" "$(echo "$lines / $s" | bc -l)"
done
s=$(time_report failures --bucket 5m --json "$LOG")
printf '| failures --bucket 5m --json | %.2f | %.0f | %.0f |\n' "$s" \
    "$(echo "$bytes / 1048576 / $s" | bc -l)" "$(echo "$lines / $s" | bc -l)"

# the raw read, for the ratio: what the disk cache gives to one reader
t0=$(now); cat "$LOG" >/dev/null; t1=$(now)
s=$(echo "$t1 - $t0" | bc -l)
printf '| (cat, the ceiling) | %.2f | %.0f | |\n' "$s" "$(echo "$bytes / 1048576 / $s" | bc -l)"

if [ "$GZ" = 1 ]; then
    head -c $((GZ_MB * 1048576)) "$LOG" | gzip -1 >"$DIR/audit.log.gz"
    gl=$(head -c $((GZ_MB * 1048576)) "$LOG" | wc -l)
    s=$(time_report denials "$DIR/audit.log.gz")
    printf '| denials, gzip (%s MB uncompressed) | %.2f | %.0f | %.0f |\n' "$GZ_MB" "$s" \
        "$(echo "$GZ_MB / $s" | bc -l)" "$(echo "$gl / $s" | bc -l)"
fi
