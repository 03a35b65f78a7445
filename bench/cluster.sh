#!/usr/bin/env bash
# bench/cluster.sh — what cluster mode costs: req/s at 50 connections of the
# shipped default chain plus a team quota, in-process (sluice.shared) against
# cluster mode (counters batched to a local Redis), on one machine.
#
# What runs:
#   mock     `sluice mock --workers 1`, the fixed-answer upstream.
#   local    wrk -> sluice -> mock: policies/default.yaml (key-auth, catalog,
#            data-boundary, request-limits, redact) plus the quota plugin
#            with a requests and a tokens limit per team (never reached).
#   cluster  the same policy; sluice.yaml has a `cluster:` section pointing at
#            redis-server (no persistence), flush_interval 5ms, flush_units
#            100: every request counts two cluster counters.
# Both sluices: one worker, pinned to $PROXY_CPU (like bench/run.sh's
# "split" placement); wrk (one thread), the mock and redis-server share
# $LOAD_CPU. Rounds alternate local, cluster, local, ...; the median round
# is reported, with the CPU time each sluice spends per request.
#
# Knobs (environment): DURATION (s per run, 8), WARMUP (2), ROUNDS (3),
# CONNS (50), PIN (split|none), PROXY_CPU (1), LOAD_CPU (0), SLUICE_BIN
# (./build/sluice), REDIS_BIN (/usr/bin/redis-server), KEEP_TMP.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REDIS_BIN=${REDIS_BIN:-/usr/bin/redis-server}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
PIN=${PIN:-split}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
. "$ROOT/bench/lib.sh"

[ -x "$REDIS_BIN" ] || die "no redis-server at $REDIS_BIN (apt-get install redis-server)"
need_wrk
need_curl
pin_split_or_none
bench_tmp sluice-cluster-bench

start_mock "$pin_load"
REDIS_PORT=$(free_port) LOCAL_PORT=$(free_port) CLUSTER_PORT=$(free_port)
$pin_load "$REDIS_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$TMP" >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!; track "$REDIS_PID"
wait_port "$REDIS_PORT" "$REDIS_PID" redis-server

# The default chain (as bench/run.sh's sluice_chain) plus the quota plugin.
mkdir -p "$TMP/policies"
chain_policy "$TMP/policies/bench.yaml"
cat >>"$TMP/policies/bench.yaml" <<EOF

  - name: quota
    config:
      limits:
        - { by: team, requests: 1000000000 }
        - { by: team, tokens: 1000000000000, period: day }
EOF

start_sluice() { # NAME PORT EXTRA_CONFIG
    local dir=$TMP/$1
    mkdir -p "$dir"
    cat >"$dir/sluice.yaml" <<EOF
workers: 1
listen:
  - address: 127.0.0.1:$2
policy_dir: $TMP/policies
plugin_dirs: [$ROOT/plugins]
upstream:
  max_idle_per_backend: 64
log:
  access: $dir/access.log
  error: $dir/error.log
  level: warn
$3
EOF
    $pin_proxy "$SLUICE_BIN" run -c "$dir/sluice.yaml" >"$dir/stdout.log" 2>&1 &
    STARTED_PID=$!; track "$STARTED_PID"
    wait_port "$2" "$STARTED_PID" "$1"
}
start_sluice local "$LOCAL_PORT" ""
LOCAL_PID=$STARTED_PID
start_sluice cluster "$CLUSTER_PORT" "cluster:
  address: redis://127.0.0.1:$REDIS_PORT/0
  instance: bench
  flush_interval: 5ms
  flush_units: 100"
CLUSTER_PID=$STARTED_PID

port_of() { if [ "$1" = local ]; then echo "$LOCAL_PORT"; else echo "$CLUSTER_PORT"; fi; }
pid_of() { if [ "$1" = local ]; then echo "$LOCAL_PID"; else echo "$CLUSTER_PID"; fi; }

for t in local cluster; do check_chat "$t" "$(port_of "$t")"; done

run_wrk() { # TARGET SECONDS -> "rps cpu_us_per_req"
    local p0 p1 out rps n bad
    p0=$(cpu_ticks "$(pid_of "$1")")
    out=$(wrk_chat "$1" "$(port_of "$1")" "$CONNS" "$2") || exit 1
    p1=$(cpu_ticks "$(pid_of "$1")")
    rps=$(echo "$out" | sed -n 's/.* rps=\([0-9.]*\).*/\1/p')
    bad=$(echo "$out" | sed -n 's/.* non2xx=\([0-9]*\).*/\1/p')
    [ "${bad:-0}" = 0 ] || die "$1 answered $bad non-2xx responses (see $TMP/$1, KEEP_TMP=1)"
    n=$(echo "$out" | sed -n 's/.*requests=\([0-9]*\).*/\1/p')
    awk -v r="$rps" -v n="$n" -v t=$((p1 - p0)) -v hz="$HZ" \
        'BEGIN { printf "%s %.1f\n", r, (n > 0 ? t * 1e6 / hz / n : 0) }'
}

for t in local cluster; do run_wrk "$t" "$WARMUP" >/dev/null; done
: >"$TMP/rounds"
for r in $(seq 1 "$ROUNDS"); do
    for t in local cluster; do
        echo "$t $(run_wrk "$t" "$DURATION")" | tee -a "$TMP/rounds" >&2
    done
done

# Redis saw the counts: the team's request counter is what wrk sent to
# the cluster sluice (plus the check and warm-up requests).
counted=$(redis-cli -p "$REDIS_PORT" --scan --pattern 'sluice:c:*requests*' | head -n1 |
    xargs -r -d '\n' redis-cli -p "$REDIS_PORT" GET 2>/dev/null || true)

echo "# cluster mode against in-process counters: $(nproc) CPUs, PIN=$PIN, $ROUNDS rounds x ${DURATION}s, $CONNS connections"
awk -v hz="$HZ" '
    { rps[$1, ++n[$1]] = $2; cpu[$1, n[$1]] = $3 }
    function median(t, what,   i, j, a, k, tmp) {
        k = n[t]
        for (i = 1; i <= k; i++) a[i] = (what == "rps") ? rps[t, i] : cpu[t, i]
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
            if (a[j] < a[i]) { tmp = a[i]; a[i] = a[j]; a[j] = tmp }
        return a[int((k + 1) / 2)]
    }
    END {
        lr = median("local", "rps"); cr = median("cluster", "rps")
        lc = median("local", "cpu"); cc = median("cluster", "cpu")
        printf "| case | req/s | sluice CPU us/req |\n|---|---:|---:|\n"
        printf "| in-process (sluice.shared) | %.0f | %.1f |\n", lr, lc
        printf "| cluster (Redis, 5ms / 100 units) | %.0f | %.1f |\n", cr, cc
        printf "\ncluster / in-process: req/s %.3f, CPU per request %.3f (target: req/s >= 0.90)\n", cr / lr, cc / lc
        printf "BENCH ratio=cluster_over_local_rps conns=50 value=%.3f\n", cr / lr
    }' "$TMP/rounds"
[ -n "$counted" ] && echo "Redis counted $counted requests for the bench team (the cluster sluice's traffic)."
grep -h "cluster:" "$TMP"/cluster/error.log "$TMP"/cluster/stdout.log 2>/dev/null | grep -v "counts with Redis" | head -3 || true
