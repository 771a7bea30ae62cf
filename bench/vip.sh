#!/usr/bin/env bash
# Virtual IP failover benchmark: tandem against Keepalived 2.2, in network namespaces.
#
# Hosts are network namespaces on one bridge: routers r0, r1 (and r2 for leader mode) and a
# client c. Each router runs `tandem demo-backend` on port 8080, answering its name. For every
# setup, REPS times: fresh routers, r0 the master and the client answered by r0, then, at a
# random moment within one advertisement interval (leader mode: one lease_ttl), SIGKILL of
# the master's VRRP process (Keepalived: its VRRP child; tandem: the daemon) and the time until
# the client, probing the VIP over TCP every ~2 ms, is answered by the new master. Nothing is
# cleaned up on the killed router: its address stays, as after a crash; the client moves when
# the new master's gratuitous ARPs reach it.
#
# Setups: VRRPv2 with advert_int 1 s (tandem and Keepalived), VRRPv3 at the smallest interval
# each accepts (10 ms for both), and tandem `leader` mode with three nodes (the VIP follows the
# cluster lease; lease_ttl as LEASE_TTLS says). Prints min/median/max per setup and the
# tandem/Keepalived ratios of the medians. See bench/README.md.
#
# Environment knobs (all optional):
#   REPS=10              repetitions per setup
#   SETUPS="..."         subset of: tandem-v2-1s keepalived-v2-1s tandem-v3-10ms
#                        keepalived-v3-10ms leader
#   LEASE_TTLS="500ms 1s" lease_ttl values for leader mode
#   TANDEM=...           tandem binary (default: target/release/tandem, built if missing)
#   SEED=1               seed of the random kill moments (each run draws its own from it)
#   KEEP=1               keep the work directory (configs and logs)
# Needs root (namespaces), iproute2, python3 and keepalived (apt-get install -y keepalived).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANDEM=${TANDEM:-$ROOT/target/release/tandem}
REPS=${REPS:-10}
SETUPS=${SETUPS:-tandem-v2-1s keepalived-v2-1s tandem-v3-10ms keepalived-v3-10ms leader}
LEASE_TTLS=${LEASE_TTLS:-500ms 1s}
KEEP=${KEEP:-0}
SEED=${SEED:-1}
KEEPALIVED=${KEEPALIVED:-/usr/sbin/keepalived}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (network namespaces)"
for cmd in ip python3 timeout; do
    command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
[[ -x $KEEPALIVED ]] || die "keepalived is not installed: apt-get install -y keepalived"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive number"
if [[ ! -x $TANDEM ]]; then
    log "building tandem (release)"
    (cd "$ROOT" && cargo build --release -p tandem >&2)
fi

WORK=$(mktemp -d /tmp/tandem-vip-bench.XXXXXX)
P="tvb$$"                      # namespace prefix, unique per run
NET="10.215.$(( $$ % 200 + 20 ))"
VIP="$NET.100"
declare -A PROCS=()            # name -> pid of every process this script started

ns_up() { ip netns list | grep -q "^$1\b"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local name
    for name in "${!PROCS[@]}"; do
        kill -KILL "${PROCS[$name]}" 2>/dev/null || true
        wait "${PROCS[$name]}" 2>/dev/null || true
    done
    for n in r0 r1 r2 c sw; do
        ns_up "$P$n" && ip netns del "$P$n" 2>/dev/null || true
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

# ---------------------------------------------------------------- the lab
ip netns add "${P}sw"
ip -n "${P}sw" link set lo up
ip -n "${P}sw" link add br0 type bridge
ip -n "${P}sw" link set br0 up
i=1
for n in r0 r1 r2 c; do
    ip netns add "$P$n"
    ip -n "$P$n" link set lo up
    ip link add "${P}x$n" type veth peer name "${P}y$n"
    ip link set "${P}x$n" netns "$P$n" name eth0
    ip link set "${P}y$n" netns "${P}sw"
    ip -n "${P}sw" link set "${P}y$n" master br0 up
    ip -n "$P$n" addr add "$NET.$i/24" dev eth0
    ip -n "$P$n" link set eth0 up
    i=$((i + 1))
done
ip_of() { case $1 in r0) echo "$NET.1" ;; r1) echo "$NET.2" ;; r2) echo "$NET.3" ;; c) echo "$NET.4" ;; esac; }

start() { # start NAME NS CMD... : background process in a namespace, output to $WORK/NAME.log
    local name=$1 ns=$2
    shift 2
    ip netns exec "$P$ns" "$@" >"$WORK/$name.log" 2>&1 &
    PROCS[$name]=$!
}
stop() { # stop NAME...: SIGTERM, wait up to 5 s, then SIGKILL
    local name pid i
    for name in "$@"; do
        pid=${PROCS[$name]:-}
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        unset "PROCS[$name]"
    done
}

for r in r0 r1 r2; do
    start "backend-$r" "$r" "$TANDEM" demo-backend --name "$r" --listen 0.0.0.0:8080
done

holds() { ip -n "$P$1" -o -4 addr show dev eth0 | grep -q "inet $VIP/"; }
clear_vip() { local r; for r in r0 r1 r2; do ip -n "$P$r" addr del "$VIP/24" dev eth0 2>/dev/null || true; done; }

# The client's prober: waits until the VIP answers FIRST, SIGKILLs PID (t0), prints the
# milliseconds until it answers anything else (the new master).
cat >"$WORK/probe.py" <<'EOF'
import os, random, signal, socket, sys, time
vip, first, pids, limit = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")], float(sys.argv[4])
jitter, seed = float(sys.argv[5]), sys.argv[6]
def probe():
    try:
        s = socket.create_connection((vip, 8080), timeout=0.05)
        s.settimeout(0.1)
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            data += c
        s.close()
        return data.split(b"\r\n\r\n", 1)[1].decode().strip()
    except Exception:
        return None
end = time.monotonic() + 30
while probe() != first:
    if time.monotonic() > end:
        print("never-answered-by-" + first)
        sys.exit(1)
    time.sleep(0.01)
# Kill at a random moment of the advertisement (or lease renewal) cycle, seeded per run.
time.sleep(random.Random(seed).uniform(0, jitter))
t0 = time.monotonic()
for p in pids:
    os.kill(p, signal.SIGKILL)
while time.monotonic() - t0 < limit:
    who = probe()
    if who and who != first:
        print("%.1f" % ((time.monotonic() - t0) * 1000))
        sys.exit(0)
    time.sleep(0.002)
print("timeout")
sys.exit(1)
EOF

RUN_SEED=""   # set per run by run_setup
JITTER=0      # seconds: the kill comes at a random moment within this after the first answer
measure() { # measure FIRST PIDS: run the prober in the client namespace
    ip netns exec "${P}c" python3 "$WORK/probe.py" "$VIP" "$1" "$2" 20 "$JITTER" "$RUN_SEED"
}

wait_holder() { # wait_holder R: until R holds the VIP (30 s at most)
    local i
    for ((i = 0; i < 300; i++)); do holds "$1" && return 0; sleep 0.1; done
    die "$1 never took the VIP"
}

# ---------------------------------------------------------------- the routers
tandem_vrrp() { # tandem_vrrp NAME R PRIORITY VERSION INTERVAL
    local cfg=$WORK/$1.toml
    cat >"$cfg" <<EOF
[[vip]]
interface = "eth0"
address = "$VIP/24"
vrid = 51
priority = $3
version = $4
advert_int = "$5"
EOF
    start "$1" "$2" "$TANDEM" run --config "$cfg"
}

keepalived() { # keepalived NAME R PRIORITY VERSION INTERVAL(seconds)
    local d=$WORK/$1
    mkdir -p "$d"
    cat >"$d/keepalived.conf" <<EOF
global_defs {
  router_id $1
  vrrp_version $4
}
vrrp_instance VI_1 {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority $3
  advert_int $5
  virtual_ipaddress {
    $VIP/24
  }
}
EOF
    rm -f "$d/vrrp.pid"
    start "$1" "$2" "$KEEPALIVED" -n -l -D -P -R -f "$d/keepalived.conf" -p "$d/keepalived.pid" -r "$d/vrrp.pid"
}

vrrp_pid() { # the process that does VRRP for NAME
    case $1 in
        ka*) local i; for ((i = 0; i < 100; i++)); do [[ -s $WORK/$1/vrrp.pid ]] && break; sleep 0.05; done
             cat "$WORK/$1/vrrp.pid" ;;
        *) echo "${PROCS[$1]}" ;;
    esac
}

declare -A RESULTS=()

one_vrrp_run() { # one_vrrp_run KIND VERSION INTERVAL_TANDEM INTERVAL_KEEPALIVED
    clear_vip
    if [[ $1 == tandem ]]; then
        tandem_vrrp t0 r0 150 "$2" "$3"; wait_holder r0
        tandem_vrrp t1 r1 100 "$2" "$3"
        local a=t0 b=t1
    else
        keepalived ka0 r0 150 "$2" "$4"; wait_holder r0
        keepalived ka1 r1 100 "$2" "$4"
        local a=ka0 b=ka1
    fi
    sleep 1.5   # the backup has heard the master
    local pids parent=${PROCS[$a]}
    pids=$(vrrp_pid "$a")
    [[ $a == ka0 ]] && pids="$pids,$parent"
    LAST_MS=$(measure r0 "$pids") || log "  run failed: $LAST_MS"
    stop "$a" "$b"
}

one_leader_run() { # one_leader_run TTL
    clear_vip
    local secret=$WORK/secret
    echo "cluster-secret-for-the-bench-0123" >"$secret"
    local peers="n0 = \"$(ip_of r0):7100\", n1 = \"$(ip_of r1):7100\", n2 = \"$(ip_of r2):7100\""
    local r
    for r in r0 r1 r2; do
        local n=${r/r/n} d=$WORK/leader-$r
        rm -rf "$d"; mkdir -p "$d"
        cat >"$d/tandem.toml" <<EOF
[node]
name = "$n"
data_dir = "$d/data"

[cluster]
name = "bench"
listen = "$(ip_of $r):7100"
peers = { $peers }
lease_ttl = "$1"
secret_file = "$secret"

[[vip]]
mode = "leader"
interface = "eth0"
address = "$VIP/24"
EOF
        start "lt-$r" "$r" "$TANDEM" run --config "$d/tandem.toml"
    done
    local holder="" i
    for ((i = 0; i < 300; i++)); do
        for r in r0 r1 r2; do holds "$r" && holder=$r; done
        [[ -n $holder ]] && break
        sleep 0.1
    done
    [[ -n $holder ]] || die "no leader took the VIP"
    # The first lease can move once while the members join: settle, then look again.
    sleep 2
    holder=""
    for r in r0 r1 r2; do holds "$r" && holder=$r; done
    if [[ -z $holder ]]; then
        log "  no holder after settling"
        stop lt-r0 lt-r1 lt-r2
        return 0
    fi
    LAST_MS=$(measure "$holder" "${PROCS[lt-$holder]}") || log "  run failed: $LAST_MS"
    stop lt-r0 lt-r1 lt-r2
}

LAST_MS=""
run_setup() { # run_setup LABEL COMMAND...: COMMAND leaves its time in LAST_MS
    local label=$1 k all=()
    shift
    log "$label: $REPS runs"
    for ((k = 1; k <= REPS; k++)); do
        LAST_MS=""
        RUN_SEED="$SEED-$label-$k"
        "$@"
        if [[ $LAST_MS =~ ^[0-9.]+$ ]]; then all+=("$LAST_MS"); log "  run $k: $LAST_MS ms"; fi
    done
    RESULTS[$label]="${all[*]:-}"
}

for s in $SETUPS; do
    case $s in
        tandem-v2-1s) JITTER=1 run_setup "$s" one_vrrp_run tandem 2 1s 1 ;;
        keepalived-v2-1s) JITTER=1 run_setup "$s" one_vrrp_run keepalived 2 1s 1 ;;
        tandem-v3-10ms) JITTER=0.01 run_setup "$s" one_vrrp_run tandem 3 10ms 0.01 ;;
        keepalived-v3-10ms) JITTER=0.01 run_setup "$s" one_vrrp_run keepalived 3 10ms 0.01 ;;
        leader) for ttl in $LEASE_TTLS; do
                    JITTER=$(python3 -c "import sys; print(float(sys.argv[1].rstrip('ms')) / (1000 if sys.argv[1].endswith('ms') else 1))" "$ttl")
                    run_setup "leader-ttl-$ttl" one_leader_run "$ttl"
                done ;;
        *) die "unknown setup $s" ;;
    esac
done

# ---------------------------------------------------------------- the table
{
    for label in "${!RESULTS[@]}"; do echo "$label ${RESULTS[$label]}"; done
} | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    parts = line.split()
    rows[parts[0]] = [float(x) for x in parts[1:]]
order = ["tandem-v2-1s", "keepalived-v2-1s", "tandem-v3-10ms", "keepalived-v3-10ms"]
order += sorted(k for k in rows if k.startswith("leader"))
print("VIP failover: SIGKILL of the master -> client answered by the new master (ms)")
print("%-22s %5s %9s %9s %9s" % ("setup", "runs", "min", "median", "max"))
med = {}
for k in order:
    v = rows.get(k)
    if not v:
        if k in rows:
            print("%-22s %5d %9s %9s %9s" % (k, 0, "-", "-", "-"))
        continue
    med[k] = statistics.median(v)
    print("%-22s %5d %9.1f %9.1f %9.1f" % (k, len(v), min(v), med[k], max(v)))
print()
for t, ka in [("tandem-v2-1s", "keepalived-v2-1s"), ("tandem-v3-10ms", "keepalived-v3-10ms")]:
    if t in med and ka in med:
        print("ratio %s / %s (median): %.2f" % (t, ka, med[t] / med[ka]))
for k in med:
    if k.startswith("leader") and "keepalived-v2-1s" in med:
        print("ratio %s / keepalived-v2-1s (median): %.2f" % (k, med[k] / med["keepalived-v2-1s"]))
'
