#!/usr/bin/env bash
# tandem failover benchmark: how long a three-node cluster is without a primary when the
# primary's tandem process is SIGKILLed, and how a planned switchover goes.
#
# For every backend (embedded Raft; etcd when available) and every lease_ttl, REPS times: three
# fresh nodes on loopback, wait for one primary and a formed cluster, a planned switchover (timed,
# watched for two primaries), then SIGKILL of the primary and the time until another node answers
# 200 on GET /primary. Prints min/median/max per (backend, ttl).
# See bench/README.md for how to run it and how to read the output.
#
# Environment knobs (all optional):
#   REPS=20          repetitions per (backend, lease_ttl)
#   TTLS="1s 3s"     lease_ttl values (any tandem duration: 500ms, 2s, ...)
#   DCS="raft etcd"  backends; etcd runs only if $ETCD exists and the binary has the etcd feature
#   ETCD=/usr/bin/etcd
#   SWITCHOVER=1     0 skips the planned switchover step
#   POLL_MS=10       polling interval of the watchers (each HTTP request times out after 200 ms)
#   TANDEM=...       tandem binary (default: target/release/tandem, built if missing)
#   REBUILD=1        run `cargo build --release -p tandem` even if the binary exists
#   KEEP=1           keep the work directory (configs, node logs)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_TANDEM=$ROOT/target/release/tandem
TANDEM=${TANDEM:-$DEFAULT_TANDEM}
REPS=${REPS:-20}
TTLS=${TTLS:-1s 3s}
DCS=${DCS:-raft etcd}
ETCD=${ETCD:-/usr/bin/etcd}
SWITCHOVER=${SWITCHOVER:-1}
POLL_MS=${POLL_MS:-10}
KEEP=${KEEP:-0}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for cmd in python3 curl timeout; do
    command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive number"

WORK=$(mktemp -d /tmp/tandem-failover.XXXXXX)
FAILED_RUNS=0   # runs that timed out or saw two primaries: the work directory is then kept

# ---------------------------------------------------------------- process bookkeeping
declare -A PROCS=()   # name -> pid of every process this script started

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local name pid i
    for name in "${!PROCS[@]}"; do
        pid=${PROCS[$name]}
        kill -0 "$pid" 2>/dev/null && { kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; }
    done
    for name in "${!PROCS[@]}"; do
        pid=${PROCS[$name]}
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 || $rc != 0 || $FAILED_RUNS != 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Stop some of our processes: SIGTERM to all of them at once, then wait (bounded, 10 s) and
# SIGKILL what is left. Logs which ones needed the SIGKILL.
stop_procs() {
    local name pid i
    for name in "$@"; do
        pid=${PROCS[$name]:-}
        [[ -n $pid ]] || continue
        kill -0 "$pid" 2>/dev/null && { kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; }
    done
    for name in "$@"; do
        pid=${PROCS[$name]:-}
        [[ -n $pid ]] || continue
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "  $name ($pid) did not stop within 10 s of SIGTERM: SIGKILL"
            STOP_KILLED=$((STOP_KILLED + 1))
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        unset "PROCS[$name]"
    done
}
STOP_KILLED=0

# free_ports N: N distinct free loopback ports (bound to port 0 together, then released)
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# ---------------------------------------------------------------- the watcher, written to $WORK
# All timing is done here, with the monotonic clock: the SIGKILL itself is sent by this helper,
# right after its watcher threads are ready, so t0 is the moment of the kill.
cat >"$WORK/probe.py" <<'EOF'
import http.client, json, os, signal, subprocess, sys, threading, time

POLL = float(os.environ.get("POLL_MS", "10")) / 1000
HTTP_TIMEOUT = 0.2

def get(addr, path):
    """(status, parsed JSON or None); (None, None) when the node does not answer."""
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, None
    except Exception:
        return None, None
    finally:
        c.close()

def ticks(stop):
    """Yield every POLL seconds (fixed schedule, no drift) until stop is set."""
    nxt = time.monotonic()
    while not stop.is_set():
        yield
        nxt += POLL
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()

class PrimaryWatch(threading.Thread):
    """Samples GET /primary on every node in rounds; counts rounds with two or more 200s."""
    def __init__(self, admins, go, t0):
        super().__init__(daemon=True)
        self.admins, self.go, self.t0 = admins, go, t0
        self.stop = threading.Event()
        self.samples = self.double = 0
        self.first = {}        # node index -> seconds after t0 of its first 200
        self.last_200 = {}     # node index -> seconds after t0 of its last 200
        self.tokens = {}       # node index -> fencing token of its first 200
        self.double_detail = []
    def run(self):
        self.go.wait()
        for _ in ticks(self.stop):
            ok = []
            for i, a in enumerate(self.admins):
                st, body = get(a, "/primary")
                if st == 200:
                    t = time.monotonic() - self.t0[0]
                    ok.append(i)
                    self.first.setdefault(i, t)
                    self.last_200[i] = t
                    if isinstance(body, dict):
                        self.tokens.setdefault(i, body.get("fencing_token"))
            self.samples += 1
            if len(ok) > 1:
                self.double += 1
                if len(self.double_detail) < 5:
                    self.double_detail.append((round(time.monotonic() - self.t0[0], 3), ok))

class HolderWatch(threading.Thread):
    """Polls GET /cluster on some nodes until each shows a lease holder other than `old`."""
    def __init__(self, admins, idx, old, go, t0):
        super().__init__(daemon=True)
        self.admins, self.idx, self.old, self.go, self.t0 = admins, idx, old, go, t0
        self.stop = threading.Event()
        self.seen = {}         # node index -> seconds after t0
    def run(self):
        self.go.wait()
        for _ in ticks(self.stop):
            for i in self.idx:
                if i in self.seen:
                    continue
                st, body = get(self.admins[i], "/cluster")
                if st == 200 and isinstance(body, dict):
                    h = body.get("lease_holder")
                    if h is not None and h != self.old:
                        self.seen[i] = time.monotonic() - self.t0[0]
            if len(self.seen) == len(self.idx):
                return

def fmt(v):
    return "none" if v is None else f"{v:.3f}"

def wait_primary(limit, admins):
    """Exactly one node answers 200 on /primary: print its index and token."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ok = []
        for i, a in enumerate(admins):
            st, body = get(a, "/primary")
            if st == 200:
                ok.append((i, (body or {}).get("fencing_token")))
        if len(ok) == 1:
            print(ok[0][0], ok[0][1])
            return 0
        time.sleep(0.05)
    return 1

def wait_formed(limit, admins):
    """Every node sees every member alive and the same lease holder: print the holder."""
    n = len(admins)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        views = [get(a, "/cluster")[1] for a in admins]
        if all(isinstance(v, dict) for v in views):
            holders = {v.get("lease_holder") for v in views}
            members_ok = all(
                isinstance(v.get("members"), list) and len(v["members"]) == n
                and all(m.get("alive") is True for m in v["members"]) for v in views)
            if members_ok and len(holders) == 1 and None not in holders:
                print(holders.pop())
                return 0
        time.sleep(0.05)
    return 1

def failover(limit, pid, killed, killed_name, admins):
    """SIGKILL pid (node `killed`), then time the first 200 on /primary from another node and
    the moment every survivor's /cluster shows a new lease holder."""
    go, t0 = threading.Event(), [0.0]
    survivors = [i for i in range(len(admins)) if i != killed]
    pw = PrimaryWatch(admins, go, t0)
    hw = HolderWatch(admins, survivors, killed_name, go, t0)
    pw.start(); hw.start()
    t0[0] = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    go.set()
    deadline = t0[0] + limit
    tail = None
    while time.monotonic() < deadline:
        done = any(i != killed for i in pw.first) and len(hw.seen) == len(survivors)
        if done:
            # keep watching a little longer for two primaries
            tail = tail or time.monotonic() + 0.3
            if time.monotonic() >= tail:
                break
        time.sleep(0.01)
    pw.stop.set(); hw.stop.set(); pw.join(2); hw.join(2)
    new = min((t, i) for i, t in pw.first.items() if i != killed) if any(i != killed for i in pw.first) else None
    holder = max(hw.seen.values()) if len(hw.seen) == len(survivors) else None
    print(f"primary={fmt(new[0] if new else None)} holder={fmt(holder)} "
          f"new={new[1] if new else 'none'} token={pw.tokens.get(new[1]) if new else 'none'} "
          f"double={pw.double} samples={pw.samples} detail={json.dumps(pw.double_detail).replace(' ', '')}")
    return 0

def switchover(limit, old, target, admins, ctl):
    """Run `tandem ctl ... switchover --to TARGET` and time it: the old primary's last 200, the
    target's first 200, the ctl command's exit; count rounds with two 200s."""
    go, t0 = threading.Event(), [0.0]
    pw = PrimaryWatch(admins, go, t0)
    pw.start()
    go.set()
    time.sleep(3 * POLL)   # a few samples before the request
    t0[0] = time.monotonic()
    pw.last_200.clear(); pw.first.clear()
    proc = subprocess.Popen(ctl, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = t0[0] + limit
    ctl_s = rc = None
    tail = None
    while time.monotonic() < deadline:
        if rc is None and proc.poll() is not None:
            rc, ctl_s = proc.returncode, time.monotonic() - t0[0]
        if rc is not None and target in pw.first:
            tail = tail or time.monotonic() + 0.3
            if time.monotonic() >= tail:
                break
        time.sleep(0.005)
    if rc is None:
        proc.kill()
        proc.wait()
        rc = "timeout"
    err = proc.stderr.read().decode(errors="replace").strip().replace("\n", " | ")
    pw.stop.set(); pw.join(2)
    print(f"target={fmt(pw.first.get(target))} old_last={fmt(pw.last_200.get(old))} ctl={fmt(ctl_s)} "
          f"rc={rc} double={pw.double} samples={pw.samples} "
          f"detail={json.dumps(pw.double_detail).replace(' ', '')} err={err[:300] or '-'}")
    return 0

def wait_http(limit, url):
    host_port = url.split("/")[2]
    path = "/" + url.split("/", 3)[3]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        st, _ = get(host_port, path)
        if st is not None and 200 <= st < 400:
            return 0
        time.sleep(0.05)
    return 1

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "wait-http":
    sys.exit(wait_http(float(args[0]), args[1]))
if cmd == "wait-primary":
    sys.exit(wait_primary(float(args[0]), args[1:]))
if cmd == "wait-formed":
    sys.exit(wait_formed(float(args[0]), args[1:]))
if cmd == "failover":
    sys.exit(failover(float(args[0]), int(args[1]), int(args[2]), args[3], args[4:]))
if cmd == "switchover":
    # switchover LIMIT OLD TARGET ADMIN1 ADMIN2 ADMIN3 -- CTL...
    sep = args.index("--")
    sys.exit(switchover(float(args[0]), int(args[1]), int(args[2]), args[3:sep], args[sep + 1:]))
sys.exit(f"unknown command {cmd}")
EOF

probe() { POLL_MS=$POLL_MS python3 "$WORK/probe.py" "$@"; }

# secs DURATION -> seconds as a decimal ("1s" -> 1, "500ms" -> 0.5, "1m" -> 60)
secs() {
    awk -v d="$1" 'BEGIN {
        n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
        if (u == "ms") n /= 1000; else if (u == "m") n *= 60; else if (u == "h") n *= 3600
        print n }'
}

# ---------------------------------------------------------------- the binary
want_etcd=0
[[ " $DCS " == *" etcd "* ]] && want_etcd=1

build_tandem() {
    local args=(build --release -p tandem)
    if [[ $want_etcd == 1 ]]; then
        if command -v protoc >/dev/null; then
            args+=(--features etcd)
        else
            log "protoc is missing: building without the etcd backend (apt-get install -y protobuf-compiler)"
        fi
    fi
    log "building tandem (cargo ${args[*]})"
    (cd "$ROOT" && cargo "${args[@]}") || die "build failed"
}

if [[ ! -x $TANDEM || ${REBUILD:-0} == 1 ]]; then
    # Only the default binary is built; TANDEM=... must point at an existing one.
    [[ $TANDEM == "$DEFAULT_TANDEM" ]] || die "no tandem binary at $TANDEM (REBUILD=1 only builds $DEFAULT_TANDEM)"
    build_tandem
fi
[[ -x $TANDEM ]] || die "no tandem binary at $TANDEM"
has_switchover() { local h; h=$("$TANDEM" ctl --help 2>/dev/null || true); [[ $h == *switchover* ]]; }
# A binary older than the cluster agent has no `ctl switchover`: rebuild the default one.
if ! has_switchover; then
    [[ $TANDEM == "$DEFAULT_TANDEM" ]] || die "$TANDEM has no cluster support (no 'ctl switchover'): too old"
    log "$TANDEM predates the cluster agent (no 'ctl switchover'): rebuilding"
    build_tandem
    has_switchover || die "the rebuilt binary still has no 'ctl switchover'"
fi

SECRET=$WORK/cluster.secret
python3 -c 'import secrets; print(secrets.token_hex(24))' >"$SECRET"
TOKEN_FILE=$WORK/admin.token
python3 -c 'import secrets; print(secrets.token_hex(24))' >"$TOKEN_FILE"
chmod 600 "$SECRET" "$TOKEN_FILE"

# Does the binary have the etcd backend? `tandem check` refuses dcs = "etcd" without it.
binary_has_etcd() {
    local f=$WORK/check-etcd.toml
    cat >"$f" <<EOF
[admin]
listen = "127.0.0.1:1"

[node]
name = "n1"
data_dir = "$WORK/check-data"

[cluster]
name = "check"
listen = "127.0.0.1:1"
peers = { n1 = "127.0.0.1:1", n2 = "127.0.0.1:2", n3 = "127.0.0.1:3" }
dcs = "etcd"
etcd_endpoints = ["http://127.0.0.1:2379"]
lease_ttl = "8s"
secret_file = "$SECRET"
EOF
    "$TANDEM" check --config "$f" >"$WORK/check-etcd.out" 2>&1
}

BACKENDS=()
for d in $DCS; do
    case $d in
        raft) BACKENDS+=(raft) ;;
        etcd)
            if [[ ! -x $ETCD ]]; then
                log "SKIP etcd: $ETCD is not installed (apt-get install -y etcd-server)"
            elif ! binary_has_etcd; then
                log "SKIP etcd: $TANDEM has no etcd backend ($(tr '\n' ' ' <"$WORK/check-etcd.out" | cut -c1-160)); REBUILD=1 builds it with --features etcd (needs protoc)"
            else
                BACKENDS+=(etcd)
            fi ;;
        *) die "unknown backend in DCS: $d (raft or etcd)" ;;
    esac
done
(( ${#BACKENDS[@]} > 0 )) || die "no backend to measure"

# ---------------------------------------------------------------- etcd (one member, loopback)
# Short etcd timings, stated in every node's config: a lease_ttl of 1s must outlast an etcd
# leader election (docs/cluster.md, "Choosing lease_ttl with etcd").
ETCD_ELECTION_MS=100
ETCD_ENDPOINT=
start_etcd() {
    local cport pport
    read -r cport pport < <(free_ports 2)
    ETCD_ENDPOINT=http://127.0.0.1:$cport
    mkdir -p "$WORK/etcd"
    "$ETCD" --name=bench --data-dir="$WORK/etcd/data" \
        --listen-client-urls="$ETCD_ENDPOINT" --advertise-client-urls="$ETCD_ENDPOINT" \
        --listen-peer-urls="http://127.0.0.1:$pport" --initial-advertise-peer-urls="http://127.0.0.1:$pport" \
        --initial-cluster="bench=http://127.0.0.1:$pport" \
        --heartbeat-interval=$((ETCD_ELECTION_MS / 10)) --election-timeout=$ETCD_ELECTION_MS \
        >"$WORK/etcd/etcd.log" 2>&1 &
    PROCS[etcd]=$!
    disown "${PROCS[etcd]}"
    probe wait-http 20 "$ETCD_ENDPOINT/health" || die "etcd did not start (see $WORK/etcd/etcd.log)"
    log "etcd $("$ETCD" --version | awk 'NR == 1 {print $3}') on $ETCD_ENDPOINT (data in $WORK/etcd)"
}

# ---------------------------------------------------------------- one repetition
declare -A R=()   # "<backend>.<ttl>.<metric>" -> space-separated samples
declare -A N=()   # "<backend>.<ttl>.<counter>" -> count

add() { R[$1]+=" $2"; }
inc() { N[$1]=$(( ${N[$1]:-0} + ${2:-1} )); }

# field NAME LINE: the value of NAME=... in a probe output line
# (err=..., always last, may contain spaces)
field() {
    if [[ $1 == err ]]; then sed -n 's/.* err=//p' <<<"$2"; return; fi
    tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {sub(/^[^=]*=/, ""); print; exit}'
}

run_rep() {
    local dcs=$1 ttl=$2 rep=$3 key="$1.$2"
    local dir=$WORK/$dcs-$ttl-$rep ttl_s limit i
    ttl_s=$(secs "$ttl")
    limit=$(awk -v t="$ttl_s" 'BEGIN {print (10 * t > 15 ? 10 * t : 15)}')
    local ports pp=() ap=() admins=() names=(n1 n2 n3)
    read -r -a ports < <(free_ports 6)
    pp=("${ports[@]:0:3}")
    ap=("${ports[@]:3:3}")
    local peers="n1 = \"127.0.0.1:${pp[0]}\", n2 = \"127.0.0.1:${pp[1]}\", n3 = \"127.0.0.1:${pp[2]}\""
    local store=""
    [[ $dcs == etcd ]] && store="dcs = \"etcd\"
etcd_endpoints = [\"$ETCD_ENDPOINT\"]
etcd_election_timeout = \"${ETCD_ELECTION_MS}ms\""
    # The cluster name is unique per run: on etcd every run gets its own key prefix.
    local cname="bench-$dcs-${ttl}-$rep-$RANDOM"
    for i in 0 1 2; do
        mkdir -p "$dir/${names[i]}"
        admins+=("127.0.0.1:${ap[i]}")
        cat >"$dir/${names[i]}/tandem.toml" <<EOF
[admin]
listen = "127.0.0.1:${ap[i]}"
token_file = "$TOKEN_FILE"

[node]
name = "${names[i]}"
data_dir = "$dir/${names[i]}/data"

[cluster]
name = "$cname"
listen = "127.0.0.1:${pp[i]}"
peers = { $peers }
lease_ttl = "$ttl"
secret_file = "$SECRET"
$store
EOF
    done
    for i in 0 1 2; do
        "$TANDEM" run --config "$dir/${names[i]}/tandem.toml" >>"$dir/${names[i]}/tandem.log" 2>&1 &
        PROCS[${names[i]}]=$!
        # Not a job of this shell: no "Killed" notice after the SIGKILL; reaped automatically.
        disown "${PROCS[${names[i]}]}"
    done
    for i in 0 1 2; do
        probe wait-http 20 "http://${admins[i]}/health" || { fail_rep "$key" "$dir" "${names[i]} did not start"; return; }
    done
    local out p tok holder
    out=$(probe wait-primary "$((30 + 10 * ${ttl_s%.*}))" "${admins[@]}") || { fail_rep "$key" "$dir" "no single primary"; return; }
    read -r p tok <<<"$out"
    holder=$(probe wait-formed 30 "${admins[@]}") || { fail_rep "$key" "$dir" "the cluster did not form (all members alive, one holder)"; return; }
    local msg="primary ${names[p]} (token $tok)"

    if [[ $SWITCHOVER == 1 ]]; then
        local target=$(( (p + 1 + RANDOM % 2) % 3 )) tgt old_last ctl_s rc dbl
        out=$(probe switchover "$limit" "$p" "$target" "${admins[@]}" -- \
            "$TANDEM" ctl --admin "${admins[p]}" --token-file "$TOKEN_FILE" switchover --to "${names[target]}")
        tgt=$(field target "$out"); old_last=$(field old_last "$out"); ctl_s=$(field ctl "$out")
        rc=$(field rc "$out"); dbl=$(field double "$out")
        inc "$key.so_runs"
        inc "$key.so_double" "$dbl"
        inc "$key.so_samples" "$(field samples "$out")"
        [[ $rc == 0 ]] || { inc "$key.so_ctl_failed"; log "  switchover: ctl exit $rc: $(field err "$out")"; }
        if [[ $dbl != 0 ]]; then
            log "  TWO PRIMARIES during the switchover: $(field detail "$out") (seconds after the request, node indexes)"
            FAILED_RUNS=$((FAILED_RUNS + 1))
        fi
        if [[ $tgt == none ]]; then
            inc "$key.so_timeout"
            fail_rep "$key" "$dir" "switchover: ${names[target]} never answered 200 on /primary ($out)"
            return
        fi
        add "$key.so" "$tgt"
        [[ $ctl_s != none ]] && add "$key.so_ctl" "$ctl_s"
        # The time with no primary at all: old primary's last 200 -> target's first 200.
        [[ $old_last != none ]] && add "$key.so_gap" "$(awk -v a="$old_last" -v b="$tgt" 'BEGIN {printf "%.3f", b - a}')"
        msg+="; switchover to ${names[target]}: 200 after ${tgt}s (ctl returned after ${ctl_s}s)"
        out=$(probe wait-primary 30 "${admins[@]}") || { fail_rep "$key" "$dir" "no single primary after the switchover"; return; }
        read -r p tok <<<"$out"
        [[ $p == "$target" ]] || log "  odd: after the switchover to ${names[target]} the primary is ${names[p]}"
        holder=$(probe wait-formed 30 "${admins[@]}") || { fail_rep "$key" "$dir" "the cluster did not settle after the switchover"; return; }
    fi

    # SIGKILL of the primary's tandem process, sent by the watcher itself.
    local pid=${PROCS[${names[p]}]} t_p t_h new newtok dbl
    out=$(probe failover "$limit" "$pid" "$p" "${names[p]}" "${admins[@]}")
    unset "PROCS[${names[p]}]"
    t_p=$(field primary "$out"); t_h=$(field holder "$out"); new=$(field new "$out")
    newtok=$(field token "$out"); dbl=$(field double "$out")
    inc "$key.runs"
    inc "$key.double" "$dbl"
    inc "$key.samples" "$(field samples "$out")"
    if [[ $dbl != 0 ]]; then
        log "  TWO PRIMARIES after the SIGKILL: $(field detail "$out")"
        FAILED_RUNS=$((FAILED_RUNS + 1))
    fi
    if [[ $t_p == none ]]; then
        inc "$key.timeout"
        fail_rep "$key" "$dir" "no new primary within ${limit}s of the SIGKILL of ${names[p]} ($out)"
        return
    fi
    add "$key.fo" "$t_p"
    [[ $t_h != none ]] && add "$key.holder" "$t_h" || inc "$key.holder_timeout"
    if [[ $newtok =~ ^[0-9]+$ && $tok =~ ^[0-9]+$ ]] && (( newtok <= tok )); then
        log "  odd: the new fencing token $newtok is not above the old one $tok"
        inc "$key.token_not_increased"
    fi
    log "  $dcs ttl=$ttl run $rep/$REPS: $msg; SIGKILL ${names[p]}: ${names[new]} answers 200 after ${t_p}s (token $newtok), the others see it as holder after ${t_h}s"
    stop_procs n1 n2 n3
    check_logs "$key" "$dir"
    [[ $KEEP == 1 ]] || rm -rf "$dir"/n?/data
}

# A run that could not be measured: log it, keep its directory, stop its nodes.
fail_rep() {
    local key=$1 dir=$2 why=$3
    log "  FAILED ($key): $why; logs in $dir"
    inc "$key.failed"
    FAILED_RUNS=$((FAILED_RUNS + 1))
    stop_procs n1 n2 n3
    check_logs "$key" "$dir"
}

# Panics and errors in the node logs of one run.
check_logs() {
    local key=$1 dir=$2 n
    n=$(cat "$dir"/n?/tandem.log | grep -ac 'panicked' || true)
    (( n == 0 )) || { inc "$key.panics" "$n"; log "  PANIC in $dir: $(grep -ah -m1 'panicked' "$dir"/n?/tandem.log)"; FAILED_RUNS=$((FAILED_RUNS + 1)); }
    n=$(sed 's/\x1b\[[0-9;]*m//g' "$dir"/n?/tandem.log | grep -ac ' ERROR ' || true)
    inc "$key.errors" "$n"
    sed 's/\x1b\[[0-9;]*m//g' "$dir"/n?/tandem.log | grep -a ' ERROR ' >>"$WORK/errors.txt" || true
}

# ---------------------------------------------------------------- report
# stats SAMPLES -> "min median max" (median: mean of the two middle values for an even count)
stats() {
    tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR] = $1}
        END {
            if (!NR) { print "- - -"; exit }
            m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            printf "%.3f %.3f %.3f\n", a[1], m, a[NR] }'
}

report() {
    local b t key mn md mx hmn hmd hmx ok
    echo
    echo "== tandem failover: SIGKILL of the primary's tandem process, three nodes on loopback"
    echo "   $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average at start: $LOAD_START, now: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "   $REPS run(s) per line; /primary polled on every node every ${POLL_MS} ms (HTTP timeout 200 ms); times in seconds from the kill"
    echo
    printf '| %-7s | %-9s | %-7s | %-24s | %-22s | %-14s |\n' backend lease_ttl "ok/runs" "new primary: min/med/max" "others see holder: med/max" "2 primaries"
    printf '|---------|-----------|---------|--------------------------|----------------------------|----------------|\n'
    for b in "${BACKENDS[@]}"; do
        for t in $TTLS; do
            key=$b.$t
            read -r mn md mx <<<"$(stats "${R[$key.fo]:-}")"
            read -r hmn hmd hmx <<<"$(stats "${R[$key.holder]:-}")"
            ok=$(tr ' ' '\n' <<<"${R[$key.fo]:-}" | grep -vc '^$' || true)
            printf '| %-7s | %-9s | %7s | %24s | %26s | %14s |\n' "$b" "$t" "$ok/$REPS" \
                "$mn / $md / $mx" "$hmd / $hmx" "${N[$key.double]:-0} of ${N[$key.samples]:-0}"
        done
    done
    if [[ $SWITCHOVER == 1 ]]; then
        echo
        echo "== planned switchover (tandem ctl switchover --to NODE, sent to the primary), same clusters, before the kill"
        echo "   times in seconds from the request"
        echo
        printf '| %-7s | %-9s | %-7s | %-24s | %-20s | %-18s | %-14s |\n' backend lease_ttl "ok/runs" "target 200: min/med/max" "ctl returns: median" "no primary: med/max" "2 primaries"
        printf '|---------|-----------|---------|--------------------------|----------------------|--------------------|----------------|\n'
        local cmd gmn gmd gmx
        for b in "${BACKENDS[@]}"; do
            for t in $TTLS; do
                key=$b.$t
                read -r mn md mx <<<"$(stats "${R[$key.so]:-}")"
                read -r _ cmd _ <<<"$(stats "${R[$key.so_ctl]:-}")"
                read -r gmn gmd gmx <<<"$(stats "${R[$key.so_gap]:-}")"
                ok=$(tr ' ' '\n' <<<"${R[$key.so]:-}" | grep -vc '^$' || true)
                printf '| %-7s | %-9s | %7s | %24s | %20s | %18s | %14s |\n' "$b" "$t" "$ok/${N[$key.so_runs]:-0}" \
                    "$mn / $md / $mx" "$cmd" "$gmd / $gmx" "${N[$key.so_double]:-0} of ${N[$key.so_samples]:-0}"
            done
        done
    fi
    echo
    local goal_ttl=1s
    for b in "${BACKENDS[@]}"; do
        [[ -n ${R[$b.$goal_ttl.fo]:-} ]] || continue
        read -r mn md mx <<<"$(stats "${R[$b.$goal_ttl.fo]}")"
        echo "goal (issue 3): lease_ttl = 1s, median failover under 1.5 s: $b ${md} s -> $(awk -v m="$md" 'BEGIN {print (m < 1.5 ? "met" : "NOT met")}')"
    done
    echo
    echo "reference (measured elsewhere, not in this run; they time a different end point, see bench/README.md):"
    echo "  Keepalived 2.2.7, VRRP v2, advert_int 1s, SIGKILL of the master's keepalived -> VIP on the backup: 2.75 / 3.13 / 3.37 s (min/median/max)"
    echo "  Patroni 4.1.5 + etcd 3.4, defaults (ttl 30, loop_wait 10), host crash -> writes again: 25.5 / 25.9 / 29.2 s; at its minimum settings (ttl 20, loop_wait 2): 18.5 / 19.1 / 19.3 s"
    echo "  Patroni planned switchover -> writes again: 2.42 / 2.47 / 2.52 s"
    echo
    local odd=()
    for b in "${BACKENDS[@]}"; do
        for t in $TTLS; do
            key=$b.$t
            (( ${N[$key.failed]:-0} == 0 )) || odd+=("$key: ${N[$key.failed]} run(s) could not be measured (timeouts: failover ${N[$key.timeout]:-0}, switchover ${N[$key.so_timeout]:-0})")
            (( ${N[$key.double]:-0} + ${N[$key.so_double]:-0} == 0 )) || odd+=("$key: samples with two nodes answering 200 on /primary: ${N[$key.double]:-0} after SIGKILL, ${N[$key.so_double]:-0} in switchovers")
            (( ${N[$key.so_ctl_failed]:-0} == 0 )) || odd+=("$key: tandem ctl switchover failed ${N[$key.so_ctl_failed]} time(s)")
            (( ${N[$key.holder_timeout]:-0} == 0 )) || odd+=("$key: ${N[$key.holder_timeout]} run(s) where a survivor never showed the new lease holder in time")
            (( ${N[$key.token_not_increased]:-0} == 0 )) || odd+=("$key: fencing token did not increase ${N[$key.token_not_increased]} time(s)")
            (( ${N[$key.panics]:-0} == 0 )) || odd+=("$key: ${N[$key.panics]} panic(s) in node logs")
        done
    done
    (( STOP_KILLED == 0 )) || odd+=("$STOP_KILLED node(s) needed SIGKILL after SIGTERM at the end of a run")
    if (( ${#odd[@]} )); then
        echo "Odd things:"
        printf '  %s\n' "${odd[@]}"
    else
        echo "Nothing odd: every run measured, no two primaries, tokens increased, no panic."
    fi
    if [[ -s $WORK/errors.txt ]]; then
        echo "tandem logged $(wc -l <"$WORK/errors.txt") ERROR line(s) in all runs; by message (addresses and numbers as N):"
        sed -E 's/^[^ ]+ +//; s/127\.0\.0\.1:[0-9]+/ADDR/g; s/[0-9]+/N/g' "$WORK/errors.txt" | cut -c1-150 |
            sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
    fi
}

# ---------------------------------------------------------------- main
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "work directory $WORK; backends: ${BACKENDS[*]}; lease_ttl: $TTLS; $REPS run(s) each; load average: $LOAD_START"
for b in "${BACKENDS[@]}"; do
    [[ $b == etcd ]] && start_etcd
    for t in $TTLS; do
        log "$b, lease_ttl = $t"
        for ((rep = 1; rep <= REPS; rep++)); do
            run_rep "$b" "$t" "$rep"
        done
    done
    [[ $b == etcd ]] && stop_procs etcd
done
report
