# bench/lib.sh — what bench/run.sh, bench/audit.sh and bench/cluster.sh
# share, sourced (bash) after each has set ROOT and its own knobs: the
# checks every bench needs, its temp dir and the processes it started
# (stopped on exit), ports, CPU time, the default-chain policy, and the
# chat POST a target must answer and wrk sends.

BENCH=$ROOT/bench
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
HZ=$(getconf CLK_TCK)

die() { echo "bench: $*" >&2; exit 1; }

case $SLUICE_BIN in /*) ;; *) SLUICE_BIN=$ROOT/$SLUICE_BIN ;; esac
[ -x "$SLUICE_BIN" ] || die "no sluice binary at $SLUICE_BIN (build it, or set SLUICE_BIN)"

# Checks wrk and curl (run.sh checks nginx between the two, as it always did).
need_wrk() { command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"; }
need_curl() { command -v curl >/dev/null || die "curl not found"; }

# pin_split_or_none: PIN=split puts the proxy under test alone on
# $PROXY_CPU and the load on $LOAD_CPU; PIN=none leaves placement to the
# scheduler. Sets pin_proxy and pin_load (command prefixes).
pin_split_or_none() {
    case $PIN in
    split)
        [ "$(nproc)" -ge 2 ] || die "PIN=split needs 2 CPUs; use PIN=none"
        command -v taskset >/dev/null || die "taskset not found (util-linux)"
        pin_proxy="taskset -c $PROXY_CPU" pin_load="taskset -c $LOAD_CPU"
        ;;
    none) pin_proxy="" pin_load="" ;;
    *) die "PIN is split or none" ;;
    esac
}

# ---- temp dir and processes ------------------------------------------------

# bench_tmp NAME: TMP, a fresh temp dir removed on exit (KEEP_TMP=1 keeps
# it), and PIDS, the processes to stop on exit (add with `track PID`).
bench_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=""
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
track() { PIDS="$PIDS $1"; }

# Whether PID runs (a zombie, exited but not yet reaped, does not).
alive() {
    local st
    st=$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# Stop what we started, newest first (proxies before the mock): SIGTERM,
# up to 5 s to exit, then SIGKILL (saying how much CPU it burnt meanwhile:
# a process spinning instead of draining shows ~500 ticks).
cleanup() {
    local p t0 order=""
    for p in $PIDS; do order="$p $order"; done
    for p in $order; do
        t0=$(cpu_ticks "$p")
        kill "$p" 2>/dev/null || true
        for _ in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
        if alive "$p"; then
            echo "bench: pid $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)) still running 5 s after SIGTERM, $(($(cpu_ticks "$p") - t0)) CPU ticks (of $HZ/s) meanwhile; killing it" >&2
            kill -KILL "$p" 2>/dev/null || true
        fi
        wait "$p" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "bench: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}

USED_PORTS=""
# A loopback port nobody listens on (and we have not handed out yet).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        case " $USED_PORTS " in *" $p "*) continue ;; esac
        if ! ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
            USED_PORTS="$USED_PORTS $p"
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Wait until PORT accepts connections and PID is still alive.
wait_port() {
    local port=$1 pid=$2 name=$3
    for _ in $(seq 1 100); do
        alive "$pid" || die "$name exited; see its log in $TMP (KEEP_TMP=1)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "$name did not listen on $port"
}

# Total CPU time (user+system, all threads) of a pid list, in ticks.
cpu_ticks() {
    local t=0 p f
    for p in "$@"; do
        f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
        # fields after "pid (comm)": state is $1, utime $12, stime $13
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    echo "$t"
}

# start_mock PREFIX: `sluice mock --workers 1` on a free port, run under
# PREFIX (a taskset command or ""). Sets MOCK_PORT and MOCK_PID.
start_mock() {
    MOCK_PORT=$(free_port)
    $1 "$SLUICE_BIN" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 \
        >"$TMP/mock.log" 2>&1 &
    MOCK_PID=$!
    track "$MOCK_PID"
    wait_port "$MOCK_PORT" "$MOCK_PID" mock
}

# nginx_head DIR MASTER CONNS: the start of an nginx.conf that keeps
# everything nginx writes in DIR, with master_process MASTER (on|off) and
# CONNS worker connections, up to and into its http block (the caller
# writes the rest and closes it). As root, workers would switch to nobody;
# keep them as the current user, like sluice.
nginx_head() {
    local user=""
    [ "$(id -u)" = 0 ] && user="user root;"
    cat <<EOF
$user
worker_processes 1;
daemon off;
master_process $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $3; }
http {
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

# nginx_access_log DIR: the http-block lines that make nginx log a JSON line
# per request with the fields sluice logs, buffered and flushed like
# sluice's access log (32 KiB or 200 ms), to DIR/access.log.
nginx_access_log() {
    cat <<EOF
    log_format bench escape=json '{"time":"\$time_iso8601",'
        '"request_id":"\$request_id","client":"\$remote_addr:\$remote_port",'
        '"method":"\$request_method","path":"\$uri","status":\$status,'
        '"bytes":\$bytes_sent,"duration_ms":\$request_time,'
        '"backend":"mock","upstream_status":"\$upstream_status",'
        '"upstream_head_ms":"\$upstream_header_time"}';
    access_log $1/access.log bench buffer=32k flush=200ms;
EOF
}

# ---- the default chain and the chat POST -----------------------------------

# chain_policy OUT: the shipped default policy (policies/default.yaml:
# key-auth, catalog, data-boundary, request-limits, redact, through the
# front door) as is, with two edits: the backend is the bench mock, and the
# demo consumer's key hash is that of chat.lua's key ($BENCH_KEY), so every
# request is a consumer's request that runs the whole chain.
BENCH_KEY=sk-bench-0000000000000000
chain_policy() {
    local key_hash demo_hash=1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213
    key_hash=$(printf %s "$BENCH_KEY" | sha256sum | cut -d' ' -f1)
    sed -e "s#url: http://127.0.0.1:8081#url: http://127.0.0.1:$MOCK_PORT#" \
        -e "s#sha256:$demo_hash#sha256:$key_hash#" \
        "$ROOT/policies/default.yaml" >"$1"
    grep -q "127.0.0.1:$MOCK_PORT" "$1" && grep -q "sha256:$key_hash" "$1" ||
        die "policies/default.yaml changed shape (backend url or demo key hash not found); update bench/lib.sh"
}

# check_chat NAME PORT: NAME must answer the chat body with a 200 before
# we time it.
check_chat() {
    local code
    code=$(curl -s -o "$TMP/check-$1.json" -w '%{http_code}' \
        -H 'content-type: application/json' -H "authorization: Bearer $BENCH_KEY" \
        --data '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
        "http://127.0.0.1:$2/v1/chat/completions")
    [ "$code" = 200 ] || die "$1 answered $code: $(head -c 300 "$TMP/check-$1.json")"
}

# wrk_chat NAME PORT CONNS SECONDS: bench/chat.lua's POST against PORT,
# one wrk thread under $pin_load; prints wrk's BENCH_RESULT line.
wrk_chat() {
    $pin_load wrk -t1 -c"$3" -d"${4}s" --timeout 5s -s "$BENCH/chat.lua" \
        "http://127.0.0.1:$2" | grep '^BENCH_RESULT' || die "wrk against $1 failed"
}
