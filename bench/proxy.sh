#!/usr/bin/env bash
# tandem vs HAProxy 2.6, side by side, in one run on this machine.
#
# Two nginx backends on loopback, each proxy in front of them in turn (same core, one thread),
# wrk on the other core. Measures throughput, latency and CPU cost, then three failure cases
# (SIGKILL of a backend, SIGSTOP of a backend for 5 s, three reloads) under load.
# See bench/README.md for how to run it and how to read the output.
#
# Environment knobs (all optional):
#   DURATION=10     seconds of each throughput run (wrk -d)
#   CONNS=50        wrk connections
#   ROUNDS=1        throughput rounds per proxy, interleaved; the median is reported
#   PROXY_CPU=0     core both proxies are pinned to
#   LOAD_CPU=1      core wrk (and the nginx backends) are pinned to
#   TANDEM=...      tandem binary (default: target/release/tandem, built if missing)
#   REBUILD=1       run `cargo build --release -p tandem` even if the binary exists
#   KEEP=1          keep the work directory (configs, logs, raw wrk output)
#   SKIP_FAILURES=1 throughput only

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANDEM=${TANDEM:-$ROOT/target/release/tandem}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
ROUNDS=${ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
KEEP=${KEEP:-0}
SKIP_FAILURES=${SKIP_FAILURES:-0}
CLK_TCK=$(getconf CLK_TCK)
WRK_TIMEOUT=10s   # wrk's own per-request timeout: long enough to see a 5 s stall as latency

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for cmd in nginx haproxy wrk taskset curl python3 timeout getconf; do
    command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
NCPU=$(nproc)
if (( NCPU < 2 )); then
    log "only $NCPU CPU: proxies and wrk will share it (numbers will be meaningless for CPU split)"
    PROXY_CPU=0 LOAD_CPU=0
fi
TWO_CPUS="$PROXY_CPU,$LOAD_CPU"

WORK=$(mktemp -d /tmp/tandem-bench.XXXXXX)

# ---------------------------------------------------------------- process bookkeeping
declare -A PROCS=()   # name -> pid of every process this script started

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local name pid
    for name in "${!PROCS[@]}"; do
        pid=${PROCS[$name]}
        if kill -0 "$pid" 2>/dev/null; then
            # Children first (HAProxy master-worker workers), found by parent PID.
            for child in $(pgrep -P "$pid" 2>/dev/null || true); do
                kill -CONT "$child" 2>/dev/null || true
                kill -TERM "$child" 2>/dev/null || true
            done
            kill -CONT "$pid" 2>/dev/null || true
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    local i
    for name in "${!PROCS[@]}"; do
        pid=${PROCS[$name]}
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Stop one of our processes (and its children) and wait for it, bounded.
stop_proc() {
    local name=$1 sig=${2:-TERM} pid i
    pid=${PROCS[$name]:-}
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -CONT "$pid" 2>/dev/null || true
        kill "-$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) did not stop in 10 s: SIGKILL"
            for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$child" 2>/dev/null || true; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "PROCS[$name]"
}

# ---------------------------------------------------------------- ports (free, loopback)
read -r P_NGX_A P_NGX_B P_T_FE P_T_ADMIN P_H_FE P_H_STATS < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
declare -A NGX_PORT=([a]=$P_NGX_A [b]=$P_NGX_B)

# ---------------------------------------------------------------- helpers written to $WORK
# Poll a proxy's view of one server until it reaches a state; print seconds since T0.
cat >"$WORK/poll.py" <<'EOF'
import json, sys, time, urllib.request
kind, url, server, want, t0, limit = sys.argv[1:7]
t0, limit = float(t0), float(limit)

def state():
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            body = r.read().decode()
    except Exception:
        return None
    if kind == "tandem":
        for b in json.loads(body)["proxy"]["backends"]:
            for s in b["servers"]:
                if s["name"] == server:
                    return str(s["state"]).lower()
        return None
    # HAProxy CSV stats: pxname,svname,...; status is column 18 ("UP", "DOWN", "UP 1/2", ...)
    for line in body.splitlines():
        f = line.split(",")
        if len(f) > 17 and f[0] == "app" and f[1] == server:
            st = f[17]
            if st.startswith("DOWN"):
                return "down"
            if st.startswith("UP"):
                return "up"
            return st.lower()
    return None

deadline = time.time() + limit
while time.time() < deadline:
    if state() == want:
        print(f"{time.time() - t0:.3f}")
        sys.exit(0)
    time.sleep(0.01)
print("timeout")
sys.exit(1)
EOF

# ---------------------------------------------------------------- nginx backends
start_nginx() {
    local name=$1 port=${NGX_PORT[$1]} dir="$WORK/nginx-$1"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$port;
        location = /healthz { return 200 'ok'; }
        location = /nginx_status { stub_status; }
        location / { return 200 'ok'; }
    }
}
EOF
    taskset -c "$LOAD_CPU" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >>"$dir/stdout.log" 2>&1 &
    PROCS[nginx-$name]=$!
    # Not a job of this shell any more: no "Killed" notice when the SIGKILL case kills it.
    # It stays our child, is reaped automatically, and is stopped by PID like the rest.
    disown "${PROCS[nginx-$name]}"
    wait_http "http://127.0.0.1:$port/healthz" 10 || die "nginx $name did not start (see $dir/error.log)"
}

# Wait until URL answers 2xx; bounded by SECS.
wait_http() {
    local url=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        curl -fs -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- proxy configs
# tandem_conf THREADS WEIGHT_A
tandem_conf() {
    cat >"$WORK/tandem.toml" <<EOF
# generated by bench/proxy.sh
[admin]
listen = "127.0.0.1:$P_T_ADMIN"

[runtime]
threads = $1

[[frontend]]
name = "web"
listen = "127.0.0.1:$P_T_FE"
mode = "http"
backend = "app"
access_log = false

[[backend]]
name = "app"
balance = "round-robin"
retries = 3
connect_timeout = "1s"
try_timeout = "5s"

[backend.health]
check = "http"
path = "/healthz"
expect = "200-399"
interval = "500ms"
timeout = "500ms"
rise = 2
fall = 2

[[backend.server]]
name = "a"
address = "127.0.0.1:$P_NGX_A"
weight = $2

[[backend.server]]
name = "b"
address = "127.0.0.1:$P_NGX_B"
weight = 1
EOF
}

# haproxy_conf WEIGHT_A [RETRY_ON(1|0)]
haproxy_conf() {
    local retry_on="    retry-on all-retryable-errors"
    [[ ${2:-1} == 1 ]] || retry_on="    # retry-on disabled for the comparison run"
    cat >"$WORK/haproxy.cfg" <<EOF
# generated by bench/proxy.sh
global
    nbthread 1
    maxconn 4000

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 5s
    retries 3
    option redispatch
$retry_on
    http-reuse safe

frontend web
    bind 127.0.0.1:$P_H_FE
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /healthz
    default-server check inter 500 fall 2 rise 2
    server a 127.0.0.1:$P_NGX_A weight $1
    server b 127.0.0.1:$P_NGX_B weight 1

listen stats
    bind 127.0.0.1:$P_H_STATS
    stats enable
    stats uri /stats
EOF
}

TANDEM_STATUS="http://127.0.0.1:$P_T_ADMIN/status"
HAPROXY_STATS="http://127.0.0.1:$P_H_STATS/stats;csv"

# state_url PROXY
state_url() { [[ $1 == tandem ]] && echo "$TANDEM_STATUS" || echo "$HAPROXY_STATS"; }
fe_url() { [[ $1 == tandem ]] && echo "http://127.0.0.1:$P_T_FE/" || echo "http://127.0.0.1:$P_H_FE/"; }

# wait_state PROXY SERVER STATE SECS -> prints seconds waited or "timeout"
wait_state() {
    local now
    now=$(date +%s.%N)
    python3 "$WORK/poll.py" "$1" "$(state_url "$1")" "$2" "$3" "$now" "$4" || true
}

wait_both_up() {
    local p=$1 s r
    for s in a b; do
        r=$(wait_state "$p" "$s" up 20)
        [[ $r != timeout ]] || die "$p never marked server $s up"
    done
}

# start_tandem THREADS CPUS
start_tandem() {
    tandem_conf "$1" 1
    taskset -c "$2" "$TANDEM" run --config "$WORK/tandem.toml" >>"$WORK/tandem.log" 2>&1 &
    PROCS[proxy]=$!
    wait_http "http://127.0.0.1:$P_T_ADMIN/health" 10 || die "tandem did not start (see $WORK/tandem.log)"
    wait_both_up tandem
}

# start_haproxy MASTER_WORKER(0|1) [RETRY_ON(1|0)]
start_haproxy() {
    haproxy_conf 1 "${2:-1}"
    haproxy -c -q -f "$WORK/haproxy.cfg" || die "HAProxy rejects $WORK/haproxy.cfg"
    if [[ $1 == 1 ]]; then
        taskset -c "$PROXY_CPU" haproxy -W -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 &
    else
        taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 &
    fi
    PROCS[proxy]=$!
    wait_http "http://127.0.0.1:$P_H_STATS/stats" 10 || die "HAProxy did not start (see $WORK/haproxy.log)"
    wait_both_up haproxy
}

# ---------------------------------------------------------------- wrk and its output
# run_wrk OUT URL SECS [background(0|1)]
run_wrk() {
    local out=$1 url=$2 secs=$3 bg=${4:-0}
    local cmd=(timeout -s KILL $((secs + 30)) taskset -c "$LOAD_CPU"
        wrk -t1 -c"$CONNS" -d"${secs}s" --latency --timeout "$WRK_TIMEOUT" "$url")
    if [[ $bg == 1 ]]; then
        "${cmd[@]}" >"$out" 2>&1 &
        PROCS[wrk]=$!
    else
        "${cmd[@]}" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    fi
}

wait_wrk() {
    local pid=${PROCS[wrk]}
    wait "$pid" || die "wrk failed: $(cat "$1")"
    unset "PROCS[wrk]"
}

# to_ms VALUE_WITH_UNIT (wrk prints 689.00us, 1.10ms, 2.00s, 1.00m)
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

# parse_wrk FILE -> sets W_REQS W_RPS W_P50 W_P99 W_MAX W_NON2XX W_SOCKERR W_SOCKDETAIL W_FAILED
parse_wrk() {
    local f=$1
    W_REQS=$(awk '/requests in/ {print $1; exit}' "$f")
    W_RPS=$(awk '/^Requests\/sec:/ {printf "%.0f", $2; exit}' "$f")
    W_P50=$(to_ms "$(awk '$1 == "50%" {print $2; exit}' "$f")")
    W_P99=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' "$f")")
    W_MAX=$(to_ms "$(awk '$1 == "Latency" && NF >= 4 {print $4; exit}' "$f")")
    W_NON2XX=$(awk -F: '/Non-2xx or 3xx responses/ {gsub(/ /, "", $2); print $2; exit}' "$f")
    W_NON2XX=${W_NON2XX:-0}
    # "Socket errors: connect 0, read 12, write 0, timeout 0"
    W_SOCKDETAIL=$(awk '/Socket errors:/ {sub(/.*Socket errors: /, ""); print; exit}' "$f")
    W_SOCKERR=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10; exit}' "$f")
    W_SOCKERR=${W_SOCKERR:-0}
    W_SOCKDETAIL=${W_SOCKDETAIL:-none}
    W_FAILED=$((W_NON2XX + W_SOCKERR))
    [[ -n $W_REQS && -n $W_RPS ]] || die "cannot parse wrk output $f: $(cat "$f")"
}

# Connections accepted by both nginx backends so far (stub_status "accepts").
nginx_accepts() {
    local total=0 n p
    for p in "$P_NGX_A" "$P_NGX_B"; do
        n=$(curl -fs --max-time 1 "http://127.0.0.1:$p/nginx_status" | awk 'NR == 3 {print $1}')
        total=$((total + ${n:-0}))
    done
    echo "$total"
}

# utime+stime of a process and its live threads, in clock ticks
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

declare -A R=()   # results: "<proxy>.<metric>" -> value

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}'; }

# ---------------------------------------------------------------- throughput
# bench_throughput KEY PID URL: warm up, then DURATION s of wrk with CPU accounting
declare -A ACC=()
bench_throughput() {
    local key=$1 pid=$2 url=$3 out="$WORK/wrk-$1-round$4.txt" t0 t1 a0 a1 cpu rpc cpk
    run_wrk "$WORK/warmup.txt" "$url" 2
    a0=$(nginx_accepts)
    t0=$(cpu_ticks "$pid")
    run_wrk "$out" "$url" "$DURATION"
    t1=$(cpu_ticks "$pid")
    a1=$(nginx_accepts)
    parse_wrk "$out"
    # New connections the proxy opened to the backends per 1000 requests (health checks included)
    cpk=$(awk -v a="$a0" -v b="$a1" -v r="$W_REQS" 'BEGIN {if (r > 0) printf "%.1f", (b - a) * 1000 / r; else print "n/a"}')
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')
    rpc=$(awk -v r="$W_REQS" -v c="$cpu" 'BEGIN {if (c > 0) printf "%.0f", r / c; else print "n/a"}')
    log "  $key: $W_RPS req/s, p50 ${W_P50} ms, p99 ${W_P99} ms, max ${W_MAX} ms, $W_REQS requests in ${DURATION}s, proxy CPU ${cpu}s -> $rpc req/CPU-s, failed $W_FAILED, upstream connections opened per 1000 requests: $cpk"
    ACC[$key.cpk]+=" $cpk"
    ACC[$key.rps]+=" $W_RPS"
    ACC[$key.p50]+=" $W_P50"
    ACC[$key.p99]+=" $W_P99"
    ACC[$key.rpc]+=" $rpc"
    ACC[$key.cpu]+=" $cpu"
    ACC[$key.failed]+=" $W_FAILED"
}

throughput_phase() {
    local round
    for ((round = 1; round <= ROUNDS; round++)); do
        log "throughput round $round/$ROUNDS: wrk -t1 -c$CONNS -d${DURATION}s on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU"
        start_haproxy 0 1
        bench_throughput haproxy "${PROCS[proxy]}" "$(fe_url haproxy)" "$round"
        stop_proc proxy

        start_tandem 1 "$PROXY_CPU"
        bench_throughput tandem "${PROCS[proxy]}" "$(fe_url tandem)" "$round"
        stop_proc proxy
    done
    log "extra: tandem with threads = 2 on CPUs $TWO_CPUS (shared with wrk and nginx)"
    start_tandem 2 "$TWO_CPUS"
    bench_throughput tandem2 "${PROCS[proxy]}" "$(fe_url tandem)" 1
    stop_proc proxy
    log "extra: HAProxy without retry-on (for the cost of its retry buffer)"
    start_haproxy 0 0
    bench_throughput haproxy_noretry "${PROCS[proxy]}" "$(fe_url haproxy)" 1
    stop_proc proxy
    local k m
    for k in haproxy tandem tandem2 haproxy_noretry; do
        for m in rps p50 p99 rpc cpu failed cpk; do
            R[$k.$m]=$(echo "${ACC[$k.$m]:-}" | median)
        done
    done
}

# ---------------------------------------------------------------- failure cases
restore_b() {
    local p=$1 r
    if ! kill -0 "${PROCS[nginx-b]:-0}" 2>/dev/null; then
        wait "${PROCS[nginx-b]}" 2>/dev/null || true
        start_nginx b
    fi
    r=$(wait_state "$p" b up 20)
    [[ $r != timeout ]] || die "$p did not mark server b up again"
    log "  $p marked b up again ${r}s after it was restored"
}

# (1) SIGKILL one of two servers under load
fail_kill() {
    local p=$1 out="$WORK/wrk-$1-kill.txt" t0 down
    log "$p: SIGKILL nginx b 3 s into a 10 s wrk run"
    run_wrk "$out" "$(fe_url "$p")" 10 1
    sleep 3
    t0=$(date +%s.%N)
    kill -KILL "${PROCS[nginx-b]}"
    down=$(python3 "$WORK/poll.py" "$p" "$(state_url "$p")" b down "$t0" 10 || true)
    wait_wrk "$out"
    wait "${PROCS[nginx-b]}" 2>/dev/null || true
    parse_wrk "$out"
    log "  $p: $W_REQS requests, failed $W_FAILED (non-2xx $W_NON2XX; socket errors: $W_SOCKDETAIL), marked down after ${down}s"
    R[$p.kill_failed]=$W_FAILED
    R[$p.kill_down]=$down
    R[$p.kill_rps]=$W_RPS
    restore_b "$p"
}

# (2) SIGSTOP one server for 5 s under load, then SIGCONT
fail_hang() {
    local p=$1 out="$WORK/wrk-$1-hang.txt" t0 down poller
    log "$p: SIGSTOP nginx b for 5 s, 3 s into a 15 s wrk run"
    run_wrk "$out" "$(fe_url "$p")" 15 1
    sleep 3
    t0=$(date +%s.%N)
    kill -STOP "${PROCS[nginx-b]}"
    python3 "$WORK/poll.py" "$p" "$(state_url "$p")" b down "$t0" 5 >"$WORK/hang-down-$p.txt" 2>/dev/null &
    PROCS[poller]=$!
    sleep 5
    kill -CONT "${PROCS[nginx-b]}"
    wait "${PROCS[poller]}" 2>/dev/null || true
    unset "PROCS[poller]"
    down=$(cat "$WORK/hang-down-$p.txt")
    [[ $down == timeout || -z $down ]] && down="never"
    wait_wrk "$out"
    parse_wrk "$out"
    log "  $p: $W_REQS requests, failed $W_FAILED (non-2xx $W_NON2XX; socket errors: $W_SOCKDETAIL), p99 ${W_P99} ms, max ${W_MAX} ms, marked down after ${down}s"
    R[$p.hang_failed]=$W_FAILED
    R[$p.hang_p99]=$W_P99
    R[$p.hang_max]=$W_MAX
    R[$p.hang_down]=$down
    restore_b "$p"
}

# (3) three reloads under keep-alive load; each reload changes server a's weight (1 <-> 2)
fail_reload() {
    local p=$1 out="$WORK/wrk-$1-reload.txt" i w before after
    log "$p: three reloads (weight of a toggled 1/2) at 2.5, 5.5 and 8.5 s of a 12 s wrk run"
    if [[ $p == tandem ]]; then
        before=$(grep -c 'config_reloaded' "$WORK/tandem.log" || true)
    else
        before=$(grep -ci 'loading success' "$WORK/haproxy.log" || true)
    fi
    run_wrk "$out" "$(fe_url "$p")" 12 1
    sleep 2.5
    for i in 1 2 3; do
        w=$(( i % 2 == 1 ? 2 : 1 ))
        if [[ $p == tandem ]]; then
            tandem_conf 1 "$w"
            kill -HUP "${PROCS[proxy]}"
        else
            haproxy_conf "$w" 1
            kill -USR2 "${PROCS[proxy]}"
        fi
        sleep 3
    done
    wait_wrk "$out"
    if [[ $p == tandem ]]; then
        after=$(grep -c 'config_reloaded' "$WORK/tandem.log" || true)
    else
        after=$(grep -ci 'loading success' "$WORK/haproxy.log" || true)
    fi
    parse_wrk "$out"
    log "  $p: $W_REQS requests, failed $W_FAILED (non-2xx $W_NON2XX; socket errors: $W_SOCKDETAIL), p99 ${W_P99} ms, reloads confirmed in the log: $((after - before))"
    R[$p.reload_failed]=$W_FAILED
    R[$p.reload_ok]=$((after - before))
}

failure_phase() {
    log "failure cases (proxy on CPU $PROXY_CPU, one thread; wrk --timeout $WRK_TIMEOUT)"
    start_haproxy 1 1          # master-worker mode, so that SIGUSR2 reloads it
    fail_kill haproxy
    fail_hang haproxy
    fail_reload haproxy
    stop_proc proxy

    start_tandem 1 "$PROXY_CPU"
    fail_kill tandem
    fail_hang tandem
    fail_reload tandem
    stop_proc proxy
}

# ---------------------------------------------------------------- report
ratio() {
    awk -v h="$1" -v t="$2" 'BEGIN {
        if (h !~ /^[0-9.]+$/ || t !~ /^[0-9.]+$/) { print "-"; exit }
        if (h + 0 == 0) { print (t + 0 == 0 ? "=" : "n/a"); exit }
        printf "%.2f", t / h }'
}

row() { printf '| %-40s | %12s | %12s | %8s |\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }

report() {
    echo
    echo "== tandem vs HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo "   $(date -u +%Y-%m-%dT%H:%M:%SZ), $NCPU CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "   wrk -t1 -c$CONNS -d${DURATION}s, proxies pinned to CPU $PROXY_CPU with one thread, wrk + nginx on CPU $LOAD_CPU; median of $ROUNDS round(s)"
    echo
    printf '| %-40s | %12s | %12s | %8s |\n' metric HAProxy tandem ratio
    printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..42})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..10})"
    row "requests/s" "${R[haproxy.rps]}" "${R[tandem.rps]}"
    row "p50 latency (ms)" "${R[haproxy.p50]}" "${R[tandem.p50]}"
    row "p99 latency (ms)" "${R[haproxy.p99]}" "${R[tandem.p99]}"
    row "requests per CPU-second of the proxy" "${R[haproxy.rpc]}" "${R[tandem.rpc]}"
    row "failed requests (steady load)" "${R[haproxy.failed]}" "${R[tandem.failed]}"
    row "upstream connects per 1000 requests" "${R[haproxy.cpk]}" "${R[tandem.cpk]}"
    if [[ $SKIP_FAILURES != 1 ]]; then
        row "SIGKILL b: failed requests" "${R[haproxy.kill_failed]}" "${R[tandem.kill_failed]}"
        row "SIGKILL b: time to marked down (s)" "${R[haproxy.kill_down]}" "${R[tandem.kill_down]}"
        row "SIGSTOP b 5 s: failed requests" "${R[haproxy.hang_failed]}" "${R[tandem.hang_failed]}"
        row "SIGSTOP b 5 s: p99 latency (ms)" "${R[haproxy.hang_p99]}" "${R[tandem.hang_p99]}"
        row "SIGSTOP b 5 s: max latency (ms)" "${R[haproxy.hang_max]}" "${R[tandem.hang_max]}"
        row "SIGSTOP b 5 s: time to marked down (s)" "${R[haproxy.hang_down]}" "${R[tandem.hang_down]}"
        row "3 reloads: failed requests" "${R[haproxy.reload_failed]}" "${R[tandem.reload_failed]}"
        row "3 reloads: reloads confirmed in log" "${R[haproxy.reload_ok]}" "${R[tandem.reload_ok]}"
    fi
    echo
    echo "Extra runs (one round each):"
    echo "  tandem threads = 2, pinned to CPUs $TWO_CPUS (shares them with wrk and nginx):"
    echo "    ${R[tandem2.rps]} req/s, p50 ${R[tandem2.p50]} ms, p99 ${R[tandem2.p99]} ms, ${R[tandem2.rpc]} req/CPU-s, failed ${R[tandem2.failed]}, upstream connects/1000 req ${R[tandem2.cpk]}"
    echo "    vs tandem threads = 1: req/s x$(ratio "${R[tandem.rps]}" "${R[tandem2.rps]}"), req/CPU-s x$(ratio "${R[tandem.rpc]}" "${R[tandem2.rpc]}")"
    echo "  HAProxy without retry-on:"
    echo "    ${R[haproxy_noretry.rps]} req/s, p50 ${R[haproxy_noretry.p50]} ms, p99 ${R[haproxy_noretry.p99]} ms, ${R[haproxy_noretry.rpc]} req/CPU-s"
    echo
    local problems
    problems=$(grep -aE 'panick|ERROR|WARN' "$WORK/tandem.log" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' || true)
    if [[ -n $problems ]]; then
        echo "tandem logged $(wc -l <<<"$problems") warning/error line(s); the first ones:"
        head -5 <<<"$problems" | sed 's/^/    /'
    else
        echo "tandem logged no warning, error or panic."
    fi
    echo
    echo "ratio = tandem / HAProxy; '=' means both 0, 'n/a' means HAProxy 0 and tandem not."
    echo "Failed = wrk 'Non-2xx or 3xx responses' + socket errors (connect, read, write, timeout)."
}

# ---------------------------------------------------------------- main
if [[ ! -x $TANDEM || ${REBUILD:-0} == 1 ]]; then
    log "building tandem (cargo build --release -p tandem)"
    (cd "$ROOT" && cargo build --release -p tandem) || die "build failed"
fi
[[ -x $TANDEM ]] || die "no tandem binary at $TANDEM"

log "work directory $WORK; ports: nginx $P_NGX_A $P_NGX_B, tandem $P_T_FE (admin $P_T_ADMIN), HAProxy $P_H_FE (stats $P_H_STATS)"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
start_nginx a
start_nginx b
throughput_phase
[[ $SKIP_FAILURES == 1 ]] || failure_phase
report
