#!/usr/bin/env bash
# Chaos benchmark: long randomized fault schedules on a three-node PostgreSQL cluster with
# synchronous replication, with the invariants checked from outside all along. It starts
# `tandem demo --postgres` (pg1..pg3 on the embedded Raft, lease_ttl 1s, synchronous = "on",
# a load balancer whose TCP frontend leads to the primary; the demo restarts any of its
# processes that exits, after 1 s, as a service manager would), then runs `tandem drill` with
# a [chaos] section again and again until DURATION is spent: kill, stop and restart of the
# agents (by default), one fault at a time, rows inserted through the load balancer, every
# PostgreSQL server asked every 150 ms whether it is in recovery and whether it takes a write.
# Prints runs, faults injected, invariant violations and convergence failures; exit status 1
# when any run saw a violation or did not converge. See bench/README.md.
#
# Environment knobs (all optional):
#   DURATION=1800     seconds of chaos in all (at 6 s per fault on average: 300 faults)
#   RUN=300           seconds per drill run (each run has its own seed, printed)
#   INTERVAL=6s FAULT_DURATION=2s SETTLE=3s   the [chaos] timing
#   FAULTS='"kill", "stop", "restart"'        the [chaos] fault kinds
#   NODES=any         any | primary | replicas
#   SEED=N            the first run's seed (the next runs use N+1, N+2, ...); random if unset
#   TANDEM=...        tandem binary (default: target/release/tandem, built if missing)
#   KEEP=1            keep the work directory (demo files, scenarios, JSON reports)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANDEM=${TANDEM:-$ROOT/target/release/tandem}
DURATION=${DURATION:-1800}
RUN=${RUN:-300}
INTERVAL=${INTERVAL:-6s}
FAULT_DURATION=${FAULT_DURATION:-2s}
SETTLE=${SETTLE:-3s}
FAULTS=${FAULTS:-'"kill", "stop", "restart"'}
NODES=${NODES:-any}
SEED=${SEED:-$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')}
KEEP=${KEEP:-0}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds"
[[ $RUN =~ ^[1-9][0-9]*$ ]] || die "RUN must be a positive number of seconds"
[[ $SEED =~ ^[0-9]+$ ]] || die "SEED must be a number"
(( RUN <= DURATION )) || RUN=$DURATION
command -v python3 >/dev/null || die "python3 is needed to read the JSON reports"

if [[ ${REBUILD:-0} == 1 || ! -x $TANDEM ]]; then
    [[ $TANDEM == "$ROOT/target/release/tandem" ]] || die "$TANDEM is not executable"
    log "building $TANDEM"
    (cd "$ROOT" && cargo build --release -q -p tandem)
fi

WORK=$(mktemp -d /tmp/tandem-chaos-bench.XXXXXX)
DEMO_PID=
DRILL_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    # Only the processes this script started, by pid: the drill (it undoes its fault under
    # way when interrupted), then the demo (it stops everything it runs and its PostgreSQL).
    for pid in $DRILL_PID $DEMO_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    if [[ $KEEP == 1 || $rc != 0 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting tandem demo --postgres"
"$TANDEM" demo --postgres --duration $((DURATION + 900)) > "$WORK/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 900); do
    grep -q 'the demo keeps running' "$WORK/demo.log" && break
    kill -0 "$DEMO_PID" 2>/dev/null || die "the demo stopped: $(tail -5 "$WORK/demo.log")"
    sleep 0.2
done
grep -q 'the demo keeps running' "$WORK/demo.log" || die "the demo did not come up in 180 s"
DIR=$(sed -n 's/.*files in \(.*\)$/\1/p' "$WORK/demo.log" | head -1)
BASE=$DIR/kill-postgres-primary.toml
[[ -f $BASE ]] || die "no PostgreSQL scenario in $DIR"
TARGET=$(sed -n 's/^postgres = "\(.*\)"$/\1/p' "$BASE")
WATCH=$(sed -n 's/^nodes = \(.*\)$/\1/p' "$BASE")
read -r -a PG_PORTS < <(sed -n 's/.*synchronous), servers on ports \([0-9 ]*\), admin.*/\1/p' "$WORK/demo.log")
(( ${#PG_PORTS[@]} == 3 )) || die "cannot find the PostgreSQL ports in $WORK/demo.log"
PG=""
for i in 1 2 3; do
    PG+="${PG:+, }pg$i = \"host=127.0.0.1 port=${PG_PORTS[$((i - 1))]} user=postgres dbname=postgres\""
done

runs=0 faults=0 violations=0 unconverged=0 errors=0 failed_runs=0
left=$DURATION
while (( left > 0 )); do
    run_s=$(( left < RUN ? left : RUN ))
    (( run_s >= 15 )) || break
    seed=$((SEED + runs))
    s=$WORK/chaos-$runs.toml
    # The demo is the service manager: it starts a killed or stopped agent again after 1 s,
    # so the drill's restart argv has nothing left to do ("true").
    cat > "$s" <<TOML
name = "chaos-postgres"
description = "randomized kill, stop and restart of the PostgreSQL cluster's agents under inserts"

[target]
postgres = "$TARGET"

[workload]
kind = "writes"
concurrency = 2
rate = 100
timeout = "3s"
read_back_timeout = "30s"

[chaos]
seed = $seed
duration = "${run_s}s"
interval = "$INTERVAL"
fault_duration = "$FAULT_DURATION"
settle = "$SETTLE"
faults = [$FAULTS]
nodes = "$NODES"
restart = { pg1 = ["true"], pg2 = ["true"], pg3 = ["true"] }
converge_timeout = "10s"

[watch]
nodes = $WATCH
postgres = { $PG }
TOML
    log "run $((runs + 1)): seed $seed, ${run_s}s"
    rc=0
    "$TANDEM" drill --scenario "$s" --json "$WORK/chaos-$runs.json" \
        > "$WORK/chaos-$runs.txt" 2> "$WORK/chaos-$runs.err" &
    DRILL_PID=$!
    wait "$DRILL_PID" || rc=$?
    DRILL_PID=
    (( rc == 2 )) && die "the drill could not run: $(tail -3 "$WORK/chaos-$runs.err")"
    read -r f v u e < <(python3 - "$WORK/chaos-$runs.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
c = r.get("chaos") or {}
v = sum(len(i["violations"]) for i in c.get("invariants", [])) + len(r.get("split_brain", []))
e = sum(1 for f in c.get("schedule", []) if f.get("error"))
print(c.get("injected", 0), v, 0 if c.get("convergence", {}).get("converged") else 1, e)
PY
)
    sed -n '/^  chaos seed/,/^  objective/p' "$WORK/chaos-$runs.txt" | grep -v '^  objective' >&2 || true
    runs=$((runs + 1)) faults=$((faults + f)) violations=$((violations + v))
    unconverged=$((unconverged + u)) errors=$((errors + e))
    (( rc == 0 )) || failed_runs=$((failed_runs + 1))
    left=$((left - run_s))
done

echo "chaos on tandem demo --postgres (synchronous = on): $runs runs, $faults faults injected," \
     "$errors faults not made, $violations invariant violations, $unconverged runs not converged," \
     "$failed_runs runs failed; first seed $SEED"
(( violations == 0 && unconverged == 0 && failed_runs == 0 ))
