"""One measured run of bench/postgres.sh: two writers, one fault, the numbers.

Two writers insert one sequence number per transaction (autocommit INSERTs into table `w`) and
record the moment every acknowledged one came back:
- `api`: routed by polling every node's HTTP `GET /primary` every 200 ms (tandem's admin API or
  Patroni's REST API); it writes to the PostgreSQL of the node that answers 200 and moves when
  that changes (as a load balancer checking `/primary` would);
- `libpq`: one multi-host connection string listing every node with
  `target_session_attrs=read-write`, asking nobody.

A write that raises, or has no answer within 5 s (the connection is then shut down under it, as
a client timeout would), is a failed write. The fault is applied once both writers are going;
the run ends HOLD seconds after another node is named primary (a hung agent is continued at that
point and the run lasts HOLD more), and never later than MAXWIN seconds after the fault. Then
every acknowledged number is looked up on the primary: the missing ones are lost writes.

Prints one JSON object on stdout. Exit status 0 also when the fault went badly (the JSON says so).
Usage: run.py --help
"""

import argparse
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

import psycopg

WRITE_TIMEOUT = 5.0
POLL = 0.2
HTTP_TIMEOUT = 0.3


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}]     {msg}", file=sys.stderr, flush=True)


def http_req(addr, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
    """(status, body bytes); (None, b"") when the node does not answer."""
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        c.close()


def primaries(apis, among=None):
    idx = range(len(apis)) if among is None else among
    return [i for i in idx if http_req(apis[i], "GET", "/primary")[0] == 200]


class Writer(threading.Thread):
    def __init__(self, name, args, base, router=None):
        super().__init__(daemon=True)
        self.name_, self.args, self.base, self.router = name, args, base, router
        self.stop = threading.Event()
        self.acks = []          # (monotonic time, seq, port of the server)
        self.failed = 0         # INSERTs that raised or timed out
        self.fail_times = []
        self.conn = None
        self.conn_port = None
        self.lock = threading.Lock()

    def connect(self):
        ports = self.args.pg
        if self.router is None:
            hosts = ",".join("127.0.0.1" for _ in ports)
            dsn = (f"host={hosts} port={','.join(map(str, ports))} user=postgres dbname=postgres "
                   f"target_session_attrs=read-write connect_timeout=2")
        else:
            i = self.router.target
            if i is None:
                return None
            dsn = f"host=127.0.0.1 port={ports[i]} user=postgres dbname=postgres connect_timeout=2"
        try:
            c = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error:
            return None
        return c

    def close(self):
        c, self.conn = self.conn, None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def run(self):
        seq = self.base
        started = time.monotonic()
        while not self.stop.is_set() and seq < self.base + 10_000_000 \
                and time.monotonic() - started < self.args.maxwin + 120:
            if self.router is not None and self.conn is not None \
                    and self.router.target is not None and self.args.pg[self.router.target] != self.conn_port:
                self.close()
            if self.router is not None and self.conn is not None and self.router.target is None:
                self.close()
            if self.conn is None or self.conn.closed:
                self.conn = self.connect()
                if self.conn is None:
                    time.sleep(0.02)
                    continue
                self.conn_port = self.conn.info.port
            seq += 1
            done = threading.Event()
            conn = self.conn

            def cut():
                # No answer in time: shut the socket down under libpq (the client gives up).
                if not done.wait(WRITE_TIMEOUT):
                    try:
                        s = socket.socket(fileno=os.dup(conn.fileno()))
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    except Exception:
                        pass
            t = threading.Thread(target=cut, daemon=True)
            t.start()
            try:
                conn.execute("INSERT INTO w (seq) VALUES (%s)", (seq,))
                ok = True
            except Exception:
                ok = False
            done.set()
            now = time.monotonic()
            if ok:
                self.acks.append((now, seq, self.conn_port))
            else:
                self.failed += 1
                self.fail_times.append(now)
                self.close()
        self.close()


class Router(threading.Thread):
    """Polls /primary on every node every 200 ms; `target` is the single node answering 200."""
    def __init__(self, apis):
        super().__init__(daemon=True)
        self.apis = apis
        self.target = None
        self.stop = threading.Event()

    def run(self):
        started = time.monotonic()
        while not self.stop.is_set() and time.monotonic() - started < 900:
            t = time.monotonic()
            found = [None] * len(self.apis)

            def one(i):
                found[i] = http_req(self.apis[i], "GET", "/primary")[0] == 200
            ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(self.apis))]
            for th in ths:
                th.start()
            for th in ths:
                th.join(1)
            ok = [i for i, f in enumerate(found) if f]
            self.target = ok[0] if len(ok) == 1 else None
            d = POLL - (time.monotonic() - t)
            if d > 0:
                time.sleep(d)


def descendants(pid):
    """Every process below pid (from /proc)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rfind(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


def postmaster_pid(data_dir):
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def pgrp(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        return int(st[st.rfind(")") + 2:].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def sig(pid, s):
    try:
        os.kill(pid, s)
        return True
    except OSError:
        return False


def gap_of(acks, t0, end):
    """Longest time between two successive acknowledged writes from the last one before t0 on,
    counting the end of the run if the writer had not resumed."""
    times = [t for t, _, _ in acks]
    before = [t for t in times if t <= t0]
    after = [t for t in times if t > t0]
    pts = ([before[-1]] if before else [t0]) + after
    g = 0.0
    for a, b in zip(pts, pts[1:]):
        g = max(g, b - a)
    return max(g, end - pts[-1]) if not after else g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", required=True)
    ap.add_argument("--fault", required=True, choices=["crash", "kill", "stop", "switchover"])
    ap.add_argument("--api", nargs=3, required=True, help="host:port of each node's HTTP API")
    ap.add_argument("--pg", nargs=3, type=int, required=True, help="PostgreSQL port of each node")
    ap.add_argument("--data", nargs=3, required=True, help="PostgreSQL data dir of each node")
    ap.add_argument("--agent", nargs=3, type=int, required=True, help="agent pid of each node")
    ap.add_argument("--names", nargs=3, required=True)
    ap.add_argument("--sync", default="off")
    ap.add_argument("--token-file", default="")
    ap.add_argument("--base", type=int, required=True)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--maxwin", type=float, default=120.0)
    args = ap.parse_args()

    res = {"system": args.system, "fault": args.fault, "ok": False}
    p_list = primaries(args.api)
    if len(p_list) != 1:
        res["error"] = f"not exactly one primary before the fault: {p_list}"
        print(json.dumps(res))
        return
    p = p_list[0]
    res["old"] = args.names[p]

    router = Router(args.api)
    router.start()
    writers = {"api": Writer("api", args, args.base, router),
               "libpq": Writer("libpq", args, args.base + 100_000_000)}
    for w in writers.values():
        w.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(len(w.acks) < 50 for w in writers.values()):
        time.sleep(0.05)
    if any(len(w.acks) < 50 for w in writers.values()):
        res["error"] = "the writers did not get going: " + ", ".join(
            f"{k} {len(w.acks)} acked {w.failed} failed" for k, w in writers.items())
        for w in writers.values():
            w.stop.set()
        print(json.dumps(res))
        return
    warm_failed = {k: w.failed for k, w in writers.items()}

    others = [i for i in range(3) if i != p]
    target = None
    stopped = None
    t0 = time.monotonic()
    if args.fault == "crash":
        pm = postmaster_pid(args.data[p])
        victims = {args.agent[p]} | set(descendants(args.agent[p]))
        if pm:
            victims |= {pm} | set(descendants(pm))
        t0 = time.monotonic()
        if pm and pgrp(pm) == pm:
            sig(-pm, signal.SIGKILL)
        for v in victims:
            sig(v, signal.SIGKILL)
        res["killed"] = len(victims)
    elif args.fault == "kill":
        t0 = time.monotonic()
        sig(args.agent[p], signal.SIGKILL)
    elif args.fault == "stop":
        t0 = time.monotonic()
        sig(args.agent[p], signal.SIGSTOP)
        stopped = args.agent[p]
    else:
        # In synchronous mode only the synchronous standby may take over (both systems).
        if args.sync != "off":
            s = [i for i in others if http_req(args.api[i], "GET", "/sync")[0] == 200]
            target = s[0] if s else others[0]
        else:
            target = others[0]
        res["target"] = args.names[target]
        t0 = time.monotonic()
        end_try = t0 + 30
        st, body = None, b""
        while time.monotonic() < end_try:
            if args.system == "tandem":
                tok = open(args.token_file).read().strip() if args.token_file else ""
                hdr = {"Content-Type": "application/json"}
                if tok:
                    hdr["Authorization"] = f"Bearer {tok}"
                st, body = http_req(args.api[p], "POST", "/switchover",
                                    json.dumps({"to": args.names[target]}), hdr, timeout=30)
            else:
                st, body = http_req(args.api[p], "POST", "/switchover",
                                    json.dumps({"leader": args.names[p],
                                                "candidate": args.names[target]}),
                                    {"Content-Type": "application/json"}, timeout=60)
            if st == 200:
                break
            time.sleep(0.2)
        res["switchover_answer"] = f"{st} {body[:200].decode(errors='replace')}"
        res["switchover_returned_s"] = round(time.monotonic() - t0, 3)

    # Wait for another node to be named primary (the target of a switchover).
    t_new = None
    new = None
    limit = t0 + args.maxwin
    while time.monotonic() < limit:
        cand = [target] if target is not None else others
        ok = primaries(args.api, cand)
        if len(ok) == 1:
            t_new, new = time.monotonic(), ok[0]
            break
        time.sleep(0.05)
    res["new"] = args.names[new] if new is not None else None
    res["api_new_primary_s"] = round(t_new - t0, 3) if t_new else None

    # Hold: keep writing; continue a stopped agent; bounded by maxwin.
    end = min((t_new or limit) + args.hold, t0 + args.maxwin)
    if stopped is not None:
        while time.monotonic() < end:
            time.sleep(0.05)
        sig(stopped, signal.SIGCONT)
        res["stopped_for_s"] = round(time.monotonic() - t0, 3)
        end = min(time.monotonic() + args.hold, t0 + args.maxwin + args.hold)
    while time.monotonic() < end:
        time.sleep(0.05)
    # Each writer should be writing again (at most HOLD more).
    more = time.monotonic() + args.hold
    while time.monotonic() < more and any(
            not w.acks or w.acks[-1][0] < end - 0.5 for w in writers.values()):
        time.sleep(0.05)
    end = time.monotonic()
    for w in writers.values():
        w.stop.set()
    router.stop.set()
    for w in writers.values():
        w.join(WRITE_TIMEOUT + 5)
    if stopped is not None:
        sig(stopped, signal.SIGCONT)

    # Read back from the primary: every acknowledged number must be there.
    rows = None
    prim = None
    # Without a new primary there is little to wait for: a short look (the old one may be back).
    rb_deadline = time.monotonic() + (60 if t_new is not None else 5)
    while time.monotonic() < rb_deadline and rows is None:
        ok = primaries(args.api)
        if len(ok) == 1:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={args.pg[ok[0]]} user=postgres "
                                     f"dbname=postgres connect_timeout=2", autocommit=True) as c:
                    rows = {r[0] for r in c.execute(
                        "SELECT seq FROM w WHERE seq > %s AND seq <= %s",
                        (args.base, args.base + 200_000_000))}
                    prim = ok[0]
            except psycopg.Error:
                rows = None
        if rows is None:
            time.sleep(0.2)
    res["read_back_from"] = args.names[prim] if prim is not None else None
    for k, w in writers.items():
        acked = [s for _, s, _ in w.acks]
        after = [a for a in w.acks if a[0] > t0]
        d = {
            "acked": len(acked),
            "failed": w.failed - warm_failed[k],
            "gap_s": round(gap_of(w.acks, t0, end), 3),
            "resumed": bool(after) and after[-1][0] > end - 1.0,
            "lost": None if rows is None else sum(1 for s in acked if s not in rows),
        }
        # Acknowledged writes after the fault that went to the old primary's server.
        if new is not None:
            d["acked_on_old_after_fault"] = sum(1 for t, _, port in after if port == args.pg[p])
        res[k] = d
    res["ok"] = t_new is not None and rows is not None
    if not res["ok"]:
        if t_new is None:
            now = primaries(args.api)
            res["error"] = (f"{'the target' if target is not None else 'no other node'} was not "
                            f"primary within {args.maxwin:g}s; primary now: "
                            f"{', '.join(args.names[i] for i in now) or 'none'}")
        else:
            res["error"] = "could not read back"
    print(json.dumps(res))


if __name__ == "__main__":
    main()
