#!/usr/bin/env bash
# No failover without a failure: faults of members that do not hold the lease, counted.
#
# For every lease_ttl, a fresh three-node cluster on loopback (embedded Raft), then REPS rounds of
# four faults, each on a member that is not the primary:
#   kill-replica       SIGKILL of a replica, restarted after 2 x ttl
#   stop-replica       SIGSTOP of a replica for 2 x ttl, then SIGCONT
#   kill-old-leader    a switchover to another member, then at once SIGKILL of the old primary,
#                      which led the Raft group (the handoff of the Raft leadership to the new
#                      holder is under way or has barely ended): restarted after 2 x ttl
#   stop-old-leader    the same with SIGSTOP for 2 x ttl
# The primary's GET /primary is sampled every 10 ms during the fault and one ttl after it. A
# round counts as a lease move when the fencing token changed or another node became primary,
# and as a lapse when the primary answered anything but 200 (its lease ran out; a request that
# times out on a busy machine does not count).
# Prints one line per ttl: faults, lease moves, lapses, and how many faults hit a Raft leader
# that was not the lease holder (its store_leader, read just before the fault).
#
# Environment knobs (all optional):
#   REPS=25          rounds per ttl (each round is the four faults)
#   TTLS="1s 300ms"  lease_ttl values
#   TANDEM=...       tandem binary (default: target/release/tandem, built if missing)
#   KEEP=1           keep the work directory (configs, node logs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TANDEM=${TANDEM:-$TARGET_DIR/release/tandem}
export REPS=${REPS:-25} TTLS=${TTLS:-1s 300ms} KEEP=${KEEP:-0}

command -v python3 >/dev/null || { echo "python3 is not installed" >&2; exit 1; }
if [[ ! -x $TANDEM ]]; then
    echo "building tandem (cargo build --release -p tandem)" >&2
    (cd "$ROOT" && cargo build --release -p tandem)
fi
export TANDEM COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
exec python3 - <<'EOF'
import http.client, json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time

TANDEM = os.environ["TANDEM"]
REPS = int(os.environ["REPS"])
TTLS = os.environ["TTLS"].split()
KEEP = os.environ["KEEP"] == "1"

def ms(d):
    return int(float(d[:-2])) if d.endswith("ms") else int(float(d[:-1]) * 1000)

def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports

def req(addr, method, path, body=None, token=None, timeout=0.3):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        h = {"content-type": "application/json"}
        if token:
            h["authorization"] = "Bearer " + token
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, None
    except Exception:
        return None, None
    finally:
        c.close()

def wait(limit, cond):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    return None

class Cluster:
    def __init__(self, work, ttl):
        self.work, self.ttl = work, ttl
        ports = free_ports(6)
        self.peer = ports[:3]
        self.admin = [f"127.0.0.1:{p}" for p in ports[3:]]
        self.token = secrets.token_hex(16)
        secret = os.path.join(work, "secret")
        with open(secret, "w") as f:
            f.write(secrets.token_hex(24))
        os.chmod(secret, 0o600)
        peers = ", ".join(f'n{i+1} = "127.0.0.1:{p}"' for i, p in enumerate(self.peer))
        self.procs, self.cfgs, self.logs = [None] * 3, [], []
        for i in range(3):
            d = os.path.join(work, f"n{i+1}")
            os.makedirs(d)
            tok = os.path.join(d, "token")
            with open(tok, "w") as f:
                f.write(self.token)
            os.chmod(tok, 0o600)
            cfg = os.path.join(d, "tandem.toml")
            with open(cfg, "w") as f:
                f.write(f'[admin]\nlisten = "{self.admin[i]}"\ntoken_file = "{tok}"\n'
                        f'[node]\nname = "n{i+1}"\ndata_dir = "{d}/data"\n'
                        f'[cluster]\nname = "bench"\nlisten = "127.0.0.1:{self.peer[i]}"\n'
                        f'peers = {{ {peers} }}\nlease_ttl = "{ttl}ms"\nsecret_file = "{secret}"\n')
            self.cfgs.append(cfg)
            self.logs.append(open(os.path.join(d, "log"), "ab"))
            self.start(i)

    def start(self, i):
        self.procs[i] = subprocess.Popen([TANDEM, "run", "--config", self.cfgs[i]],
                                         stdout=self.logs[i], stderr=subprocess.STDOUT)

    def signal(self, i, sig):
        self.procs[i].send_signal(sig)

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def stop_all(self):
        for p in self.procs:
            if p and p.poll() is None:
                p.send_signal(signal.SIGCONT); p.terminate()
        for p in self.procs:
            if p:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill(); p.wait()

    def primary(self):
        ok = []
        for i, a in enumerate(self.admin):
            st, body = req(a, "GET", "/primary")
            if st == 200:
                ok.append((i, (body or {}).get("fencing_token")))
        return ok[0] if len(ok) == 1 else None

    def settled(self):
        """One primary that every member follows, leading Raft too, every member alive."""
        views = [req(a, "GET", "/cluster")[1] for a in self.admin]
        if not all(isinstance(v, dict) for v in views):
            return None
        h = {v.get("lease_holder") for v in views}
        leaders = {v.get("store_leader") for v in views}
        alive = all(len(v.get("members") or []) == 3 and all(m.get("alive") for m in v["members"])
                    for v in views)
        if len(h) == 1 and None not in h and leaders == h and alive:
            return self.primary()
        return None

def watch(c, p, token, until):
    """Sample the primary until `until`: (moved, lapsed). A lapse is an answer other than 200
    (the node says it is not primary); a request that times out on a busy machine is not one."""
    moved = lapsed = False
    while time.monotonic() < until:
        st, body = req(c.admin[p], "GET", "/primary")
        if st is not None and st != 200:
            lapsed = True
        elif (body or {}).get("fencing_token") != token:
            moved = True
        for i in range(3):
            if i != p and c.procs[i].poll() is None:
                st, _ = req(c.admin[i], "GET", "/primary", timeout=0.05)
                if st == 200:
                    moved = True
        time.sleep(0.01)
    return moved, lapsed

def run(ttl_s):
    ttl = ms(ttl_s)
    work = tempfile.mkdtemp(prefix="tandem-stable-lease.")
    c = Cluster(work, ttl)
    stats = {"faults": 0, "moved": 0, "lapsed": 0, "leader_not_holder": 0, "unsettled": 0}
    kinds = ["kill-replica", "stop-replica", "kill-old-leader", "stop-old-leader"]
    try:
        for rnd in range(REPS):
            for kind in kinds:
                s = wait(30, c.settled)
                if not s:
                    stats["unsettled"] += 1
                    print(f"  {ttl_s} round {rnd} {kind}: cluster not settled in 30 s", file=sys.stderr)
                    continue
                p, token = s
                if kind.endswith("replica"):
                    victim = [i for i in range(3) if i != p][rnd % 2]
                else:
                    q = [i for i in range(3) if i != p][rnd % 2]
                    st, _ = req(c.admin[p], "POST", "/switchover", json.dumps({"to": f"n{q+1}"}),
                                c.token, timeout=10)
                    if st != 200:
                        stats["unsettled"] += 1
                        continue
                    victim, p = p, q
                    token = (req(c.admin[p], "GET", "/primary")[1] or {}).get("fencing_token")
                    v = req(c.admin[p], "GET", "/cluster")[1] or {}
                    if v.get("store_leader") != f"n{p+1}":
                        stats["leader_not_holder"] += 1
                sig = signal.SIGKILL if kind.startswith("kill") else signal.SIGSTOP
                c.signal(victim, sig)
                stats["faults"] += 1
                moved, lapsed = watch(c, p, token, time.monotonic() + 2 * ttl / 1000)
                if sig == signal.SIGKILL:
                    c.procs[victim].wait()
                    c.start(victim)
                else:
                    c.signal(victim, signal.SIGCONT)
                m2, l2 = watch(c, p, token, time.monotonic() + ttl / 1000)
                moved, lapsed = moved or m2, lapsed or l2
                if moved or lapsed:
                    print(f"  {ttl_s} round {rnd} {kind}: moved={moved} lapsed={lapsed}", file=sys.stderr)
                stats["moved"] += moved
                stats["lapsed"] += lapsed
    finally:
        c.stop_all()
        if KEEP or stats["moved"] or stats["lapsed"]:
            print(f"  work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"lease_ttl={ttl_s} faults={stats['faults']} lease_moves={stats['moved']} "
          f"lapses={stats['lapsed']} raft_leader_not_holder_at_fault={stats['leader_not_holder']} "
          f"unsettled={stats['unsettled']}", flush=True)

print(f"# {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.2f} "
      f"commit {os.environ['COMMIT']} binary {TANDEM}")
for t in TTLS:
    run(t)
EOF
