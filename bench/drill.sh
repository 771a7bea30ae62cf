#!/usr/bin/env bash
# tandem drill benchmark: what clients writing to an active-passive service see when its
# primary fails, over repeated runs. It starts `tandem demo` (three nodes on the embedded Raft
# with lease_ttl 1s, three services that copy every write to the two others before
# acknowledging it, a load balancer that follows the lease; killed processes are restarted by
# the demo, as a service manager would), then runs the demo's kill-primary scenario REPS times
# with `tandem drill --repeat`, and a hang of the primary (SIGSTOP for 2 s) REPS times.
# Prints the drill summaries: time without service (RTO), failed requests, failover,
# detection and lost acknowledged writes, min/median/max. See bench/README.md.
#
# Environment knobs (all optional):
#   REPS=5          repetitions per fault
#   TANDEM=...      tandem binary (default: target/release/tandem, built if missing)
#   REBUILD=1       run `cargo build --release -p tandem` even if the binary exists
#   KEEP=1          keep the work directory (demo output, reports)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANDEM=${TANDEM:-$ROOT/target/release/tandem}
REPS=${REPS:-5}
KEEP=${KEEP:-0}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive number"

if [[ ${REBUILD:-0} == 1 || ! -x $TANDEM ]]; then
    [[ $TANDEM == "$ROOT/target/release/tandem" ]] || die "$TANDEM is not executable"
    log "building $TANDEM"
    (cd "$ROOT" && cargo build --release -q -p tandem)
fi

WORK=$(mktemp -d /tmp/tandem-drill-bench.XXXXXX)
DEMO_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $DEMO_PID ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -TERM "$DEMO_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DEMO_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    if [[ $KEEP == 1 || $rc != 0 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

log "starting tandem demo"
"$TANDEM" demo --duration 3600 > "$WORK/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 600); do
    grep -q 'the demo keeps running' "$WORK/demo.log" && break
    kill -0 "$DEMO_PID" 2>/dev/null || die "the demo stopped: $(tail -5 "$WORK/demo.log")"
    sleep 0.2
done
grep -q 'the demo keeps running' "$WORK/demo.log" || die "the demo did not come up in 120 s"
DIR=$(sed -n 's/.*files in \(.*\)$/\1/p' "$WORK/demo.log" | head -1)
[[ -f $DIR/kill-primary.toml ]] || die "no scenario in $DIR"

# The same cluster, scenario and objectives as the demo's own drill; then a hang instead.
cp "$DIR/kill-primary.toml" "$WORK/kill.toml"
sed -e 's/^name = "kill-primary"/name = "hang-primary"/' \
    -e 's/^description = .*/description = "SIGSTOP the primary'"'"'s agent for 2 s while clients write to the active-passive service"/' \
    -e 's/^kind = "sigkill"/kind = "sigstop"\nduration = "2s"/' \
    "$DIR/kill-primary.toml" > "$WORK/hang.toml"
for s in kill hang; do
    log "drill $s x $REPS"
    "$TANDEM" drill --scenario "$WORK/$s.toml" --repeat "$REPS" --json "$WORK/$s.json" \
        > "$WORK/$s.txt" 2> "$WORK/$s.err" || log "drill $s: objectives missed (exit $?)"
    echo "== $s: $(grep -m1 '^description' "$WORK/$s.toml" | cut -d'"' -f2)"
    sed -n '1,/^run 1:/p' "$WORK/$s.txt" | grep -v '^run 1:'
    echo
done
