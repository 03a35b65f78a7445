#!/usr/bin/env bash
# bench/audit.sh — what the audit log costs: the same sluice, side by side,
# with the access log off, written to a file, and written to a file and
# POSTed to a collector, on one machine, in one run.
#
# What runs:
#   mock     `sluice mock --workers 1`, the fixed-answer upstream.
#   off      wrk -> sluice -> mock  (log.access: off)
#   file     wrk -> sluice -> mock  (log.access: a file)
#   http     wrk -> sluice -> mock  (a file, and log.audit_http to an nginx
#            that answers 204 to every POST; skipped without nginx)
# Every sluice has one worker and the shipped default policy (key-auth,
# catalog, data-boundary, request-limits, redact through the AI front
# door, as bench/run.sh's sluice_chain), so each record is a full audit
# record (~0.8 KB). Each case is bench/chat.lua's ~1 KB chat POST at $CONNS
# connections for $ROUNDS interleaved rounds (off, file, http, off, ...);
# the median round is reported, with each case's throughput and proxy CPU
# per request as a ratio of "off".
#
# Pinning as bench/run.sh's "split" (PIN=split, the default): the sluice
# under test (every thread: its worker and its sink threads) alone on
# $PROXY_CPU; wrk, the mock and the collector on $LOAD_CPU. The sink
# threads' work is then charged to the proxy's core, where it competes
# with the worker. When wrk and the mock are the bottleneck the rate
# hides part of the cost: the CPU per request column shows all of it.
# PIN=none leaves placement to the scheduler.
#
# Knobs (environment): DURATION (s per run, 8), WARMUP (2), ROUNDS (3),
# CONNS (50), PIN (split|none), PROXY_CPU (1), LOAD_CPU (0), SLUICE_BIN
# (./build/sluice), NGINX_BIN (/usr/sbin/nginx), KEEP_TMP (1 keeps the temp
# dir). Defaults take about 1.5 minutes.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
PIN=${PIN:-split}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
. "$ROOT/bench/lib.sh"

need_wrk
need_curl
TARGETS="off file"
[ -x "$NGINX_BIN" ] && TARGETS="$TARGETS http" ||
    echo "bench: no nginx at $NGINX_BIN: the http case is skipped" >&2
pin_split_or_none
bench_tmp sluice-bench-audit

# ---- processes ---------------------------------------------------------------

start_mock "$pin_load"
COLLECTOR_PORT=$(free_port)

if [ -x "$NGINX_BIN" ]; then
    # The collector: takes every POST and answers 204, as a real one would
    # once the batch is stored.
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<EOF
$(nginx_head "$TMP/nginx" on 1024)
    access_log off;
    client_max_body_size 16m;
    client_body_buffer_size 2m;
    server {
        listen 127.0.0.1:$COLLECTOR_PORT;
        location / { return 204; }
    }
}
EOF
    $pin_load "$NGINX_BIN" -p "$TMP/nginx" -e "$TMP/nginx/error.log" \
        -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/stdout.log" 2>&1 &
    NGINX_PID=$!
    track "$NGINX_PID"
    wait_port "$COLLECTOR_PORT" "$NGINX_PID" nginx
fi

# The shipped default policy with the bench mock as its backend and
# chat.lua's key as the demo consumer's (as bench/run.sh's sluice_chain).
chain_policy "$TMP/policy.yaml"

# start_sluice NAME: a one-worker sluice in $TMP/NAME with NAME's log
# section. Sets STARTED_PORT and STARTED_PID.
start_sluice() {
    local name=$1 dir=$TMP/$1 log
    STARTED_PORT=$(free_port)
    mkdir -p "$dir/policies"
    cp "$TMP/policy.yaml" "$dir/policies/default.yaml"
    case $name in
    off) log="  access: off" ;;
    file) log="  access: $dir/access.log" ;;
    http) log="  access: $dir/access.log
  audit_http:
    url: http://127.0.0.1:$COLLECTOR_PORT/ingest" ;;
    esac
    cat >"$dir/sluice.yaml" <<EOF
workers: 1
listen:
  - address: 127.0.0.1:$STARTED_PORT
policy_dir: $dir/policies
plugin_dirs: [$ROOT/plugins]
upstream:
  max_idle_per_backend: 64
log:
$log
  error: $dir/error.log
  level: warn
EOF
    $pin_proxy "$SLUICE_BIN" run -c "$dir/sluice.yaml" >"$dir/stdout.log" 2>&1 &
    STARTED_PID=$!
    track "$STARTED_PID"
    wait_port "$STARTED_PORT" "$STARTED_PID" "sluice ($name)"
}

declare -A PORT PID
for t in $TARGETS; do
    start_sluice "$t"
    PORT[$t]=$STARTED_PORT
    PID[$t]=$STARTED_PID
    check_chat "$t" "${PORT[$t]}"
done

# ---- rounds --------------------------------------------------------------------

# run_wrk TARGET SECONDS -> wrk's BENCH_RESULT line and the proxy's ticks
run_wrk() {
    local t=$1 d=$2 p0 p1 out
    p0=$(cpu_ticks "${PID[$t]}")
    out=$(wrk_chat "$t" "${PORT[$t]}" "$CONNS" "$d") || exit 1
    p1=$(cpu_ticks "${PID[$t]}")
    echo "$out cpu_ticks=$((p1 - p0)) hz=$HZ"
}

echo "# sluice audit bench: $(nproc) CPUs, PIN=$PIN, rounds=$ROUNDS x ${DURATION}s, conns=$CONNS" >&2
for t in $TARGETS; do run_wrk "$t" "$WARMUP" >/dev/null; done
RAW=$TMP/raw.txt
: >"$RAW"
for r in $(seq 1 "$ROUNDS"); do
    for t in $TARGETS; do
        run_wrk "$t" "$DURATION" | awk -v t="$t" -v r="$r" '{
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            n = v["requests"] ? v["requests"] : 1
            printf "RESULT target=%s round=%d rps=%.0f p50_us=%.0f p99_us=%.0f errors=%d non2xx=%d cpu_us_per_req=%.2f\n",
                t, r, v["rps"], v["p50_us"], v["p99_us"], v["errors"], v["non2xx"],
                1e6 * v["cpu_ticks"] / v["hz"] / n
        }' | tee -a "$RAW" >&2
    done
done

# What the sinks did: records written or posted, and anything they reported.
for t in $TARGETS; do
    [ "$t" = off ] && continue
    lines=$(wc -l <"$TMP/$t/access.log")
    errs=$(grep -c "audit log" "$TMP/$t/error.log" 2>/dev/null || true)
    echo "# $t: $lines records in the file, ${errs:-0} audit log lines in the error log" >&2
done

# ---- the table -------------------------------------------------------------------

awk -v targets="$TARGETS" '
function median(t, key,    n, i, j, tmp, a) {
    n = cnt[t]
    for (i = 1; i <= n; i++) a[i] = val[t, i, key]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
        tmp = a[j]; a[j] = a[j - 1]; a[j - 1] = tmp
    }
    return n ? a[int((n + 1) / 2)] : 0
}
/^RESULT/ {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    t = v["target"]; k = ++cnt[t]
    val[t, k, "rps"] = v["rps"]; val[t, k, "p50"] = v["p50_us"]
    val[t, k, "p99"] = v["p99_us"]; val[t, k, "cpr"] = v["cpu_us_per_req"]
    bad[t] += v["errors"] + v["non2xx"]
}
END {
    nt = split(targets, ts, " ")
    printf "%-6s %9s %8s %9s %9s %11s %9s %7s\n", "log", "req/s", "vs off", "p50 us", "p99 us", "CPU us/req", "vs off", "errors"
    for (i = 1; i <= nt; i++) {
        t = ts[i]
        rps = median(t, "rps"); cpr = median(t, "cpr")
        if (t == "off") { base_rps = rps; base_cpr = cpr }
        printf "%-6s %9.0f %7.1f%% %9.0f %9.0f %11.2f %8.1f%% %7d\n", t, rps,
            base_rps ? 100 * rps / base_rps : 0, median(t, "p50"), median(t, "p99"),
            cpr, base_cpr ? 100 * cpr / base_cpr : 0, bad[t]
    }
}' "$RAW"
