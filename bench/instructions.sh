#!/usr/bin/env bash
# bench/instructions.sh — user-space instructions per request, counted by
# valgrind (callgrind), for nginx proxy_pass (as bench/run.sh runs it), the
# proxy alone, the AI front door, the shipped default chain, and the
# default chain with each of its plugins left out.
#
# Why: on a shared 2-core VM the wall-clock numbers of bench/run.sh move by
# 20-30 % from run to run; the instructions one request costs sluice move by
# about 1 %. This is the number to drive down and to compare two builds
# with; bench/run.sh stays the one that says what a client sees. Kernel
# time (the four socket calls a proxied request needs) is not counted.
#
# Each case: the mock, sluice under callgrind with instrumentation off,
# WARM requests to warm up (the JIT included), then instrumentation on for
# REQUESTS requests sent one after another on one keep-alive connection
# (bench/chat.lua's body), then the total divided by REQUESTS. The
# per-plugin rows say what leaving that plugin out saves.
#
# Knobs (environment): REQUESTS (2000), WARM (1000), CASES (all: nginx
# plain ai chain and one "no-<plugin>" per plugin of the default policy;
# nginx only when NGINX_BIN, /usr/sbin/nginx, is there), SLUICE_BIN
# (./build/sluice), KEEP_TMP (1 keeps the temp dir and callgrind's output,
# for callgrind_annotate). Needs valgrind and python3. About 20 s a case.
# With the chain case, a second table says where its instructions go.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=${REQUESTS:-2000}
WARM=${WARM:-1000}
. "$ROOT/bench/lib.sh"
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
command -v callgrind_control >/dev/null || die "callgrind_control not found (valgrind)"
command -v python3 >/dev/null || die "python3 not found"
bench_tmp sluice-instructions
start_mock ""

# The chat body bench/chat.lua sends, and a client that sends it N times.
cat >"$TMP/client.py" <<'EOF'
import http.client, sys
port, n, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
prompt = "Summarise the quarterly report for the board. " * 16
body = ('{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,'
        '"user":"bench","messages":['
        '{"role":"system","content":"You are a concise assistant for the '
        'finance team. Answer in plain English, no more than five bullet '
        'points, and never include account numbers."},'
        '{"role":"user","content":"' + prompt + '"}]}').encode()
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", "/v1/chat/completions", body,
              {"content-type": "application/json", "authorization": "Bearer " + key})
    r = c.getresponse()
    answer = r.read()
    if r.status != 200:
        sys.exit("answered %d: %s" % (r.status, answer[:200]))
EOF
grep -q 'string.rep("Summarise the quarterly report for the board. ", 16)' "$BENCH/chat.lua" ||
    die "bench/chat.lua's body changed; update the client in bench/instructions.sh"

# Policies: the proxy, the front door, the default chain and the chain
# without each plugin (the policy's plugin blocks start at "  - name: ").
chain_policy "$TMP/chain.yaml"
printf 'backends:\n  mock:\n    provider: openai\n    url: http://127.0.0.1:%s\n    region: local\ndefault_backend: mock\n' \
    "$MOCK_PORT" >"$TMP/plain.yaml"
cp "$TMP/plain.yaml" "$TMP/ai.yaml"
printf 'models:\n  gpt-4o-mini:\n    targets: [ { backend: mock, model: mock-model } ]\n' >>"$TMP/ai.yaml"
PLUGINS=$(sed -n 's/^  - name: \([a-z0-9-]*\).*/\1/p' "$TMP/chain.yaml")
for p in $PLUGINS; do
    awk -v p="$p" '
        /^  - name: / { skip = ($3 == p) }
        /^[^ #]/ && !/^plugins:/ { skip = 0 }
        !skip' "$TMP/chain.yaml" >"$TMP/no-$p.yaml"
done
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
NGINX_CASE=""
[ -x "$NGINX_BIN" ] && NGINX_CASE=nginx
CASES=${CASES:-"$NGINX_CASE plain ai chain $(for p in $PLUGINS; do printf 'no-%s ' "$p"; done)"}

# start_nginx DIR PORT: bench/run.sh's nginx (one process here, so that
# callgrind sees the worker) under callgrind. Sets STARTED.
start_nginx() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
$(nginx_head "$dir" off 4096)
$(nginx_access_log "$dir")
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
        "$NGINX_BIN" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    STARTED=$!
}

# start_sluice_case NAME DIR PORT: sluice on policy $TMP/NAME.yaml under
# callgrind. Sets STARTED.
start_sluice_case() {
    local dir=$2 port=$3
    mkdir -p "$dir/policies"
    cp "$TMP/$1.yaml" "$dir/policies/bench.yaml"
    cat >"$dir/sluice.yaml" <<EOF
workers: 1
listen:
  - address: 127.0.0.1:$port
policy_dir: $dir/policies
plugin_dirs: [$ROOT/plugins]
upstream:
  max_idle_per_backend: 64
lua:
  time_budget: 10s # under valgrind a plugin's init runs ~50x slower
log:
  access: $dir/access.log
  error: $dir/error.log
  level: warn
EOF
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
        "$SLUICE_BIN" run -c "$dir/sluice.yaml" >"$dir/stdout.log" 2>&1 &
    STARTED=$!
}

# count NAME: instructions per request of case NAME
count() {
    local dir=$TMP/$1 port pid
    port=$(free_port)
    if [ "$1" = nginx ]; then
        start_nginx "$dir" "$port"
    else
        start_sluice_case "$1" "$dir" "$port"
    fi
    pid=$STARTED
    track "$pid"
    wait_port "$port" "$pid" "$1"
    python3 "$TMP/client.py" "$port" "$WARM" "$BENCH_KEY" || die "$1: warm-up failed"
    callgrind_control -i on "$pid" >/dev/null
    python3 "$TMP/client.py" "$port" "$REQUESTS" "$BENCH_KEY" || die "$1: requests failed"
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    local f total=""
    for _ in $(seq 50); do
        f=$(ls "$dir"/callgrind.out* 2>/dev/null | tail -n1)
        [ -n "$f" ] && total=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$f" | tail -n1)
        [ -n "$total" ] && break
        sleep 0.2
    done
    [ -n "$total" ] || die "$1: no callgrind totals"
    kill "$pid" 2>/dev/null || true
    echo $((total / REQUESTS))
}

printf '| case | instructions/request | vs chain |\n|---|---:|---:|\n'
declare -A IR
for c in $CASES; do IR[$c]=$(count "$c"); done
for c in $CASES; do
    if [ -n "${IR[chain]:-}" ]; then
        printf '| %s | %d | %+d |\n' "$c" "${IR[$c]}" $((IR[$c] - IR[chain]))
    else
        printf '| %s | %d | |\n' "$c" "${IR[$c]}"
    fi
done
for c in $CASES; do echo "INSTR case=$c per_request=${IR[$c]}"; done

# Where the default chain's instructions go: callgrind's inclusive count of
# a few functions, per request. Parts nest (plugin code includes the regex
# searches it makes), so they do not add up to the total.
if [ -n "${IR[chain]:-}" ]; then
    f=$(ls "$TMP/chain"/callgrind.out* | tail -n1)
    printf '\n| chain: part (inclusive) | instructions/request |\n|---|---:|\n'
    callgrind_annotate --inclusive=yes --auto=no "$f" 2>/dev/null | awk -v n="$REQUESTS" '
        BEGIN {
            part["sl_lua_core_call_plugin"] = "plugin code, every phase (with what it calls)"
            part["pcre2_match_8"] = "regex searches (sluice.re, PCRE2)"
            part["json_decode"] = "JSON decode (request body, answer)"
            part["json_locate"] = "json.locate (splices)"
            part["json_encode"] = "JSON encode (audit record, splices)"
            part["llhttp_execute"] = "HTTP parsing, both sides (llhttp)"
            part["lua_alloc"] = "Lua allocations"
            part["req_headers"] = "request headers into Lua"
            part["sl_proxy__access_log"] = "the access/audit line"
            part["sl_metrics_lua"] = "policy metrics"
        }
        /^ *[0-9,]+ / {
            fn = $0; sub(/ \[.*/, "", fn); sub(/.*:/, "", fn)
            if ((fn in part) && !(fn in seen)) {
                seen[fn] = 1; v = $1; gsub(",", "", v)
                printf "| %s | %d |\n", part[fn], v / n
            }
        }'
fi
