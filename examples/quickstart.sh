#!/usr/bin/env bash
# Quick start: two demo HTTP servers behind tandem's load balancer, one of them killed while
# traffic flows, and not one request lost. Needs only Rust (and curl). Stops by itself after
# --duration seconds (default 60) or on Ctrl-C, and removes everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=60
[ "${1:-}" = "--duration" ] && duration="${2:-60}"

cargo build --release -q -p tandem
bin=target/release/tandem
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin" demo-backend --listen 127.0.0.1:9001 --name a >/dev/null & pids+=($!)
"$bin" demo-backend --listen 127.0.0.1:9002 --name b >/dev/null & pids+=($!)
"$bin" run --config examples/lb-two-backends.toml 2>tandem-quickstart.log & pids+=($!)
backend_a=${pids[0]}

up() { curl -s 127.0.0.1:9000/status | grep -o '"state":"up"' | wc -l; }
for _ in $(seq 1 100); do [ "$(up)" = 2 ] && break; sleep 0.1; done
echo "tandem listens on http://127.0.0.1:8080 (admin API: http://127.0.0.1:9000/status)"
echo -n "answers: "; for _ in 1 2 3 4; do curl -s 127.0.0.1:8080/ | tr '\n' ' '; done; echo

echo "killing server a (SIGKILL) while 400 requests are sent..."
failed=0
for i in $(seq 1 400); do
  [ "$i" = 100 ] && kill -9 "$backend_a"
  code=$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:8080/) || code=000
  [ "$code" = 200 ] || failed=$((failed + 1))
done
echo "failed requests: $failed of 400"
sleep 2
curl -s 127.0.0.1:9000/status | python3 -m json.tool 2>/dev/null | grep -E '"(name|state)"' || true
echo "running for ${duration}s more (Ctrl-C to stop); log in tandem-quickstart.log"
sleep "$duration"
