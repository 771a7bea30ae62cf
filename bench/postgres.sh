#!/usr/bin/env bash
# PostgreSQL failover benchmark: tandem and Patroni 4 (with etcd) side by side.
#
# Each system runs three PostgreSQL 15 nodes on loopback. Two writers (bench/postgres/run.py)
# insert one sequence number per transaction: one routed by polling every node's GET /primary,
# one through libpq multi-host `target_session_attrs=read-write`. Per run one fault on the
# primary: host crash (agent and PostgreSQL SIGKILLed at once), agent SIGKILL (PostgreSQL left
# running), agent SIGSTOP past the lease (then SIGCONT), or a planned switchover. Measured per
# writer: the longest time without an acknowledged write, failed writes, and acknowledged writes
# missing on the primary afterwards. REPS runs per case, min/median/max, ratios tandem/Patroni.
# See bench/README.md for how to run it and how to read the output.
#
# Environment knobs (all optional):
#   REPS=5                 runs per (system, settings, sync mode, fault)
#   SYSTEMS="tandem patroni"
#   MODES="off on"         synchronous replication off / on (Patroni's synchronous_mode)
#   FAULTS="crash kill stop switchover"
#   TTL=1s                 tandem's lease_ttl
#   PATRONI_TIMERS="20/1/3 30/10/10"   Patroni ttl/loop_wait/retry_timeout sets (20/1/3 is the
#                          lowest it accepts; 30/10/10 its defaults)
#   DEFAULTS_FAULTS="crash"  faults run with the second and later PATRONI_TIMERS sets
#   DEFAULTS_MODES="off"     sync modes run with the second and later PATRONI_TIMERS sets
#   HOLD=3                 seconds the writers go on after a new primary is named (and how long
#                          past that a stopped agent stays stopped)
#   TANDEM_MAXWIN=15 PATRONI_MAXWIN=90   longest a run waits for a new primary (s)
#   VENV=DIR               a virtualenv that already has patroni[etcd3] and psycopg (otherwise
#                          one is made in the work directory with pip)
#   TANDEM=...             tandem binary (default target/release/tandem, built if missing)
#   ETCD=/usr/bin/etcd     PG_BIN=/usr/lib/postgresql/15/bin
#   FRESH=1                a fresh cluster for every run, the fault about 1 s after it is whole
#                          (labels get " fresh"; see bench/README.md for why this exists)
#   KEEP=1                 keep the work directory (configs, logs, raw JSON results)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANDEM=${TANDEM:-$ROOT/target/release/tandem}
REPS=${REPS:-5}
SYSTEMS=${SYSTEMS:-tandem patroni}
MODES=${MODES:-off on}
FAULTS=${FAULTS:-crash kill stop switchover}
TTL=${TTL:-1s}
PATRONI_TIMERS=${PATRONI_TIMERS:-20/1/3 30/10/10}
DEFAULTS_FAULTS=${DEFAULTS_FAULTS:-crash}
DEFAULTS_MODES=${DEFAULTS_MODES:-off}
HOLD=${HOLD:-3}
TANDEM_MAXWIN=${TANDEM_MAXWIN:-15}
PATRONI_MAXWIN=${PATRONI_MAXWIN:-90}
ETCD=${ETCD:-/usr/bin/etcd}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
KEEP=${KEEP:-0}
FRESH=${FRESH:-0}
VENV=${VENV:-}
VENV_PYTHON=${VENV_PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
# Seconds a cluster may take to be whole again (one primary, two streaming replicas): tandem
# re-clones in a second or two, Patroni rejoins within a few loop_waits.
TANDEM_SETTLE=${TANDEM_SETTLE:-60}
PATRONI_SETTLE=${PATRONI_SETTLE:-180}
SETTLE=$TANDEM_SETTLE

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (PostgreSQL and Patroni run as user postgres)"
for cmd in python3 curl timeout setpriv "$PG_BIN/postgres" "$PG_BIN/psql"; do
    command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
id postgres >/dev/null 2>&1 || die "user postgres is missing (apt-get install postgresql-15)"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive number"

WORK=$(mktemp -d /tmp/tandem-pgbench.XXXXXX)
chmod 755 "$WORK"   # PostgreSQL and Patroni run as postgres: they must reach their directories
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
NOTES=$WORK/notes.txt
: >"$NOTES"

# ---------------------------------------------------------------- process bookkeeping
declare -A PROCS=()   # name -> pid of every process this script started

# Stop the PostgreSQL servers of our data directories that are still running (an agent killed
# with its PostgreSQL left running, a Patroni that did not stop it): fast shutdown, then SIGKILL
# to the postmaster's process group. Only postmasters whose command line names our directory.
stop_postmasters() {
    local f pm i
    while IFS= read -r f; do
        pm=$(head -n1 "$f" 2>/dev/null) || continue
        [[ $pm =~ ^[0-9]+$ ]] || continue
        { tr "\0" " " <"/proc/$pm/cmdline"; } 2>/dev/null | grep -qF "$(dirname "$f")" || continue
        kill -INT "$pm" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pm" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pm" 2>/dev/null || true
    done < <(find "$1" -maxdepth 3 -name postmaster.pid 2>/dev/null)
}

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
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        [[ $name == etcd ]] && { wait "$pid" 2>/dev/null || true; }
    done
    stop_postmasters "$WORK"
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

# stop_procs NAME...: SIGTERM (after SIGCONT) to all at once, wait up to 20 s, then SIGKILL.
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
        for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "  $name ($pid) did not stop within 20 s of SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        unset "PROCS[$name]"
    done
}

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

code() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$1$2" 2>/dev/null || true; }

# ---------------------------------------------------------------- Python: psycopg (+ Patroni)
PATRONI_OK=0
PATRONI_WHY=""
if [[ -n $VENV ]]; then
    [[ -x $VENV/bin/python ]] || die "VENV=$VENV has no bin/python"
else
    VENV=$WORK/venv
    log "making a virtualenv in $VENV (pip install \"patroni[etcd3]\" psycopg2-binary \"psycopg[binary]\")"
    # Patroni runs as postgres and starts PostgreSQL through a fresh interpreter (multiprocessing
    # "spawn"): the venv's interpreter must be one that postgres may execute (not one under /root).
    "$VENV_PYTHON" -m venv "$VENV" || die "$VENV_PYTHON -m venv failed (Debian: apt-get install python3-venv)"
    if ! timeout 600 "$VENV/bin/pip" install -q "psycopg[binary]" >"$WORK/pip.log" 2>&1; then
        die "pip install psycopg failed: $(tail -n 3 "$WORK/pip.log")"
    fi
    if [[ " $SYSTEMS " == *" patroni "* ]] &&
        ! timeout 600 "$VENV/bin/pip" install -q "patroni[etcd3]" psycopg2-binary >>"$WORK/pip.log" 2>&1; then
        PATRONI_WHY="pip install patroni[etcd3] failed: $(tail -n 3 "$WORK/pip.log" | tr '\n' ' ')"
    fi
fi
PY=$VENV/bin/python
"$PY" -c 'import psycopg' 2>/dev/null || die "$PY cannot import psycopg"
if [[ " $SYSTEMS " == *" patroni "* && -z $PATRONI_WHY ]]; then
    if ! "$VENV/bin/patroni" --version >/dev/null 2>&1; then
        PATRONI_WHY="$VENV/bin/patroni does not run"
    elif ! (cd / && setpriv --reuid=postgres --regid=postgres --init-groups "$VENV/bin/python" -c 'import patroni') >/dev/null 2>&1; then
        PATRONI_WHY="user postgres cannot run $VENV/bin/python with patroni (its interpreter must be readable by postgres: make the venv with VENV_PYTHON=/usr/bin/python3)"
    elif [[ ! -x $ETCD ]]; then
        PATRONI_WHY="$ETCD is missing (Debian: apt-get install etcd-server)"
    else
        PATRONI_OK=1
        PATRONI_VERSION=$("$VENV/bin/patroni" --version 2>&1 | awk '{print $2}')
    fi
fi
[[ " $SYSTEMS " == *" patroni "* && $PATRONI_OK == 0 ]] && log "Patroni skipped: $PATRONI_WHY"

if [[ " $SYSTEMS " == *" tandem "* ]]; then
    if [[ ! -x $TANDEM ]]; then
        log "building tandem (cargo build --release -p tandem)"
        (cd "$ROOT" && cargo build --release -p tandem) >&2 || die "cargo build failed"
    fi
fi

# ---------------------------------------------------------------- etcd for Patroni
ETCD_ENDPOINT=""
start_etcd() {
    local ports
    read -r -a ports < <(free_ports 2)
    ETCD_ENDPOINT=127.0.0.1:${ports[0]}
    mkdir -p "$WORK/etcd"
    "$ETCD" --name bench --data-dir "$WORK/etcd/data" \
        --listen-client-urls "http://$ETCD_ENDPOINT" --advertise-client-urls "http://$ETCD_ENDPOINT" \
        --listen-peer-urls "http://127.0.0.1:${ports[1]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ports[1]}" \
        --initial-cluster "bench=http://127.0.0.1:${ports[1]}" >"$WORK/etcd/etcd.log" 2>&1 &
    PROCS[etcd]=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(code "$ETCD_ENDPOINT" /health) == 200 ]] && return 0
        sleep 0.2
    done
    die "etcd did not start: $(tail -n 5 "$WORK/etcd/etcd.log")"
}

# ---------------------------------------------------------------- clusters
# The current cluster: its API and PostgreSQL addresses, data dirs, agent start commands.
C_SYS="" C_DIR="" C_MODE=""
C_NAMES=() C_API=() C_PG=() C_DATA=() C_LOG=()
declare -A C_CMD=()
CLUSTER_NO=0
PG_PARAMS_TOML='shared_buffers = "16MB", max_connections = "40", fsync = "off"'

start_agent() {   # start_agent INDEX
    local i=$1 name=${C_NAMES[$1]}
    # shellcheck disable=SC2086
    eval "${C_CMD[$i]}" >>"${C_LOG[$i]}" 2>&1 &
    PROCS[$name]=$!
    disown "${PROCS[$name]}"
}

new_tandem() {   # new_tandem MODE
    local mode=$1 i ports
    CLUSTER_NO=$((CLUSTER_NO + 1))
    C_SYS=tandem C_MODE=$mode C_DIR=$WORK/tandem-$mode-$CLUSTER_NO
    C_NAMES=(n1 n2 n3) C_API=() C_PG=() C_DATA=() C_LOG=()
    mkdir -p "$C_DIR"
    chmod 755 "$C_DIR"
    python3 -c 'import secrets; print(secrets.token_hex(24))' >"$C_DIR/secret"
    python3 -c 'import secrets; print(secrets.token_hex(24))' >"$C_DIR/token"
    read -r -a ports < <(free_ports 9)
    local peers="n1 = \"127.0.0.1:${ports[0]}\", n2 = \"127.0.0.1:${ports[1]}\", n3 = \"127.0.0.1:${ports[2]}\""
    for i in 0 1 2; do
        local n=${C_NAMES[i]}
        C_API+=("127.0.0.1:${ports[3 + i]}")
        C_PG+=("${ports[6 + i]}")
        C_DATA+=("$C_DIR/pg$((i + 1))")
        C_LOG+=("$C_DIR/$n.log")
        mkdir -p "$C_DIR/$n"
        cat >"$C_DIR/$n/tandem.toml" <<EOF
[admin]
listen = "${C_API[i]}"
token_file = "$C_DIR/token"

[node]
name = "$n"
data_dir = "$C_DIR/$n/data"

[cluster]
name = "pgbench-$CLUSTER_NO"
listen = "127.0.0.1:${ports[i]}"
peers = { $peers }
lease_ttl = "$TTL"
secret_file = "$C_DIR/secret"

[service]
kind = "postgres"
bin_dir = "$PG_BIN"
data_dir = "${C_DATA[i]}"
listen = "127.0.0.1:${C_PG[i]}"
synchronous = "$mode"
maximum_lag_on_failover = "64MB"
parameters = { $PG_PARAMS_TOML }
EOF
        C_CMD[$i]="exec \"$TANDEM\" run --config \"$C_DIR/$n/tandem.toml\""
        start_agent "$i"
    done
}

new_patroni() {   # new_patroni MODE TTL/LOOP/RETRY
    local mode=$1 timers=$2 i ports ttl loop retry sync=false
    IFS=/ read -r ttl loop retry <<<"$timers"
    [[ $mode != off ]] && sync=true
    CLUSTER_NO=$((CLUSTER_NO + 1))
    C_SYS=patroni C_MODE=$mode C_DIR=$WORK/patroni-${ttl}-$mode-$CLUSTER_NO
    C_NAMES=(pg1 pg2 pg3) C_API=() C_PG=() C_DATA=() C_LOG=()
    mkdir -p "$C_DIR"
    read -r -a ports < <(free_ports 6)
    for i in 0 1 2; do
        local n=${C_NAMES[i]}
        C_API+=("127.0.0.1:${ports[i]}")
        C_PG+=("${ports[3 + i]}")
        C_DATA+=("$C_DIR/$n/data")
        C_LOG+=("$C_DIR/$n.log")
        mkdir -p "$C_DIR/$n"
        cat >"$C_DIR/$n/patroni.yml" <<EOF
scope: pgbench-$CLUSTER_NO
name: $n
log:
  level: INFO
restapi:
  listen: ${C_API[i]}
  connect_address: ${C_API[i]}
etcd3:
  hosts: $ETCD_ENDPOINT
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop
    retry_timeout: $retry
    maximum_lag_on_failover: 67108864
    synchronous_mode: $sync
    postgresql:
      use_pg_rewind: true
      remove_data_directory_on_rewind_failure: true
      remove_data_directory_on_diverged_timelines: true
      parameters:
        shared_buffers: 16MB
        max_connections: 40
        fsync: 'off'
        wal_log_hints: 'on'
  initdb:
  - encoding: UTF8
  - auth: trust
postgresql:
  listen: 127.0.0.1:${C_PG[i]}
  connect_address: 127.0.0.1:${C_PG[i]}
  data_dir: ${C_DATA[i]}
  bin_dir: $PG_BIN
  pgpass: $C_DIR/$n/pgpass
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: replicator, password: replicator}
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: '$C_DIR/$n'
EOF
        C_CMD[$i]="cd \"$C_DIR/$n\" && HOME=\"$C_DIR/$n\" exec setpriv --reuid=postgres --regid=postgres --init-groups \"$VENV/bin/patroni\" \"$C_DIR/$n/patroni.yml\""
    done
    chown -R postgres:postgres "$C_DIR"
    for i in 0 1 2; do start_agent "$i"; done
}

stop_cluster() {
    [[ -n $C_DIR ]] || return 0
    stop_procs "${C_NAMES[@]}"
    stop_postmasters "$C_DIR"
    C_DIR=""
}

# healthy: one primary, the two others streaming replicas (and a synchronous standby in
# synchronous mode), within SETTLE seconds.
healthy() {
    local deadline=$((SECONDS + SETTLE)) i prim rep syn
    while ((SECONDS < deadline)); do
        # An agent that exited (a port taken meanwhile, a bad config) will not come back.
        for i in 0 1 2; do
            kill -0 "${PROCS[${C_NAMES[i]}]:-none}" 2>/dev/null || { log "  ${C_NAMES[i]} is not running: $(tail -n 1 "${C_LOG[i]}" 2>/dev/null)"; return 1; }
        done
        prim=() rep=0 syn=0
        for i in 0 1 2; do
            [[ $(code "${C_API[i]}" /primary) == 200 ]] && prim+=("$i")
            [[ $(code "${C_API[i]}" /replica) == 200 ]] && rep=$((rep + 1))
            [[ $C_MODE != off && $(code "${C_API[i]}" /sync) == 200 ]] && syn=$((syn + 1))
        done
        if ((${#prim[@]} == 1 && rep == 2)) && [[ $C_MODE == off || $syn == 1 ]]; then
            # Replicas stream: the primary reports two walsenders.
            local n
            n=$(PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -h 127.0.0.1 -p "${C_PG[prim[0]]}" -U postgres -d postgres -Atc \
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null || true)
            if [[ $n == 2 ]]; then
                HEALTHY_PRIMARY=${prim[0]}
                return 0
            fi
        fi
        sleep 0.5
    done
    return 1
}

make_table() {
    PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -h 127.0.0.1 -p "${C_PG[HEALTHY_PRIMARY]}" -U postgres -d postgres -qAtc \
        "CREATE TABLE IF NOT EXISTS w (seq bigint PRIMARY KEY)" >/dev/null
}

# start_cluster SYSTEM MODE [TIMERS]: a fresh cluster, healthy, with the table.
start_cluster() {
    local t0=$SECONDS try
    for try in 1 2; do
        if [[ $1 == tandem ]]; then new_tandem "$2"; else new_patroni "$2" "$3"; fi
        healthy && break
        log "  the new $1 cluster did not become healthy within ${SETTLE}s (logs in $C_DIR)"
        KEEP=1
        stop_cluster
        ((try == 2)) && return 1
    done
    make_table
    log "  $1 cluster up in $((SECONDS - t0)) s (primary ${C_NAMES[HEALTHY_PRIMARY]})"
}

# ---------------------------------------------------------------- runs
BASE=0
run_case() {   # run_case LABEL SYSTEM MODE FAULT [TIMERS]
    local label=$1$( ((FRESH)) && echo " fresh") sys=$2 mode=$3 fault=$4 timers=${5:-} rep out old i agents=() maxwin=$TANDEM_MAXWIN
    SETTLE=$TANDEM_SETTLE
    [[ $sys == patroni ]] && { maxwin=$PATRONI_MAXWIN; SETTLE=$PATRONI_SETTLE; }
    for ((rep = 1; rep <= REPS; rep++)); do
        if ((FRESH)); then
            stop_cluster
        # Whole, and still whole 2 s later (a replica that just switched upstream has settled).
        elif [[ -n $C_DIR ]] && healthy; then sleep 2; fi
        if [[ -z $C_DIR ]] || ! healthy; then
            ((FRESH)) || log "  $label: the cluster is not whole, starting a new one"
            stop_cluster
            start_cluster "$sys" "$mode" "$timers" || {
                echo "$label sync=$mode: no healthy cluster, its remaining faults skipped" >>"$NOTES"
                stop_cluster
                BROKEN=1
                return
            }
        fi
        agents=()
        for i in 0 1 2; do agents+=("${PROCS[${C_NAMES[i]}]}"); done
        BASE=$((BASE + 1000000000))
        out=$("$PY" "$ROOT/bench/postgres/run.py" --system "$sys" --fault "$fault" \
            --api "${C_API[@]}" --pg "${C_PG[@]}" --data "${C_DATA[@]}" --agent "${agents[@]}" \
            --names "${C_NAMES[@]}" --sync "$mode" --token-file "${C_DIR}/token" --base "$BASE" \
            --hold "$HOLD" --maxwin "$maxwin" 2>>"$WORK/run.log") || out='{"ok": false, "error": "run.py failed"}'
        "$PY" - "$label" "$mode" "$rep" "$out" >>"$RESULTS" <<'EOF'
import json, sys
r = json.loads(sys.argv[4])
r.update(label=sys.argv[1], mode=sys.argv[2], rep=int(sys.argv[3]))
print(json.dumps(r))
EOF
        "$PY" - "$out" "$label" "$mode" "$fault" "$rep" "$REPS" >&2 <<'EOF'
import json, sys, time
r = json.loads(sys.argv[1])
head = f"[{time.strftime('%H:%M:%S')}]   {sys.argv[2]} sync={sys.argv[3]} {sys.argv[4]} {sys.argv[5]}/{sys.argv[6]}:"
if not r.get("ok"):
    print(head, "FAILED:", r.get("error"))
else:
    w = lambda k: f"{k} gap {r[k]['gap_s']}s failed {r[k]['failed']} lost {r[k]['lost']}"
    print(head, f"{r['old']} -> {r['new']} (API after {r['api_new_primary_s']}s);", w("api") + ";", w("libpq"))
EOF
        # Bring the faulted node back: a killed agent is started again (as after a reboot).
        old=$(sed -n 's/.*"old": "\([^"]*\)".*/\1/p' <<<"$out")
        for i in 0 1 2; do
            if [[ ${C_NAMES[i]} == "$old" ]] && ! kill -0 "${PROCS[$old]}" 2>/dev/null; then
                start_agent "$i"
            fi
        done
        # A fresh cluster comes for the next run anyway.
        ((FRESH)) && continue
        if ! healthy; then
            log "  $label: the cluster did not heal within ${SETTLE}s after the run (kept in $C_DIR)"
            echo "$label sync=$mode $fault run $rep: the cluster did not heal within ${SETTLE}s (old primary $old)" >>"$NOTES"
            KEEP=1
            stop_cluster
        fi
    done
}

[[ " $SYSTEMS " == *" patroni "* && $PATRONI_OK == 1 ]] && start_etcd

log "work directory $WORK; REPS=$REPS, faults: $FAULTS, sync modes: $MODES, HOLD=${HOLD}s"
for mode in $MODES; do
    for sys in $SYSTEMS; do
        if [[ $sys == tandem ]]; then
            log "tandem, lease_ttl $TTL, synchronous = $mode"
            BROKEN=0
            for fault in $FAULTS; do ((BROKEN)) || run_case "tandem $TTL" tandem "$mode" "$fault"; done
            stop_cluster
        elif [[ $sys == patroni && $PATRONI_OK == 1 ]]; then
            first=1
            for timers in $PATRONI_TIMERS; do
                faults=$FAULTS
                if ((first == 0)); then
                    [[ " $DEFAULTS_MODES " == *" $mode "* ]] || continue
                    faults=$DEFAULTS_FAULTS
                fi
                first=0
                log "Patroni $PATRONI_VERSION, ttl/loop_wait/retry_timeout $timers, synchronous_mode $mode"
                BROKEN=0
                for fault in $faults; do ((BROKEN)) || run_case "Patroni $timers" patroni "$mode" "$fault" "$timers"; done
                stop_cluster
            done
        fi
    done
done

# ---------------------------------------------------------------- report
echo "PostgreSQL failover: tandem at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) (lease_ttl $TTL) vs Patroni ${PATRONI_VERSION:-(not run)} + etcd $("$ETCD" --version 2>/dev/null | awk 'NR==1 {print $3}'), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); REPS=$REPS, HOLD=${HOLD}s"
[[ " $SYSTEMS " == *" patroni "* && $PATRONI_OK == 0 ]] && echo "Patroni not run: $PATRONI_WHY"
"$PY" "$ROOT/bench/postgres/summary.py" "$RESULTS"
if [[ -s $NOTES ]]; then
    echo
    echo "Odd things:"
    sed 's/^/- /' "$NOTES"
fi
