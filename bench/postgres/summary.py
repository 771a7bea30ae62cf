"""Tables of bench/postgres.sh from its JSON lines (one per run): min/median/max per case and
writer, ratios of the medians tandem / Patroni. Usage: summary.py RESULTS.jsonl...
(several files: their runs are put side by side, e.g. a FRESH=1 tandem run next to a full one)"""

import json
import statistics
import sys

FAULTS = [("crash", "host crash (agent + PostgreSQL SIGKILL)"),
          ("kill", "agent SIGKILL, PostgreSQL left running"),
          ("stop", "agent SIGSTOP past the lease, then SIGCONT"),
          ("switchover", "planned switchover")]
WRITERS = [("api", "API"), ("libpq", "libpq")]


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def mmm(vals, fmt):
    if not vals:
        return "-"
    return " / ".join(fmt(v) for v in (min(vals), statistics.median(vals), max(vals)))


def sep(head):
    """The |---|---| line under a header line."""
    return "|" + "|".join("-" * len(x) for x in head.strip().strip("|").split("|")) + "|"


def ratio(t, p):
    if t is None or p is None:
        return "-"
    if p == 0:
        return "=" if t == 0 else "n/a"
    return f"{t / p:.2f}"


def main():
    rows = [r for path in sys.argv[1:] for r in load(path)]
    labels = []
    for r in rows:
        if r.get("label") and r["label"] not in labels:
            labels.append(r["label"])
    tandem = [lb for lb in labels if lb.startswith("tandem")]
    patroni = [lb for lb in labels if lb.startswith("Patroni")]
    ref = patroni[0] if patroni else None   # ratios against Patroni's first (fastest) timers
    modes = []
    for r in rows:
        if r.get("mode") not in modes:
            modes.append(r.get("mode"))

    def runs(label, mode, fault):
        return [r for r in rows if r.get("label") == label and r.get("mode") == mode
                and r.get("fault") == fault]

    def ok(rs):
        return [r for r in rs if r.get("ok")]

    cols = tandem + patroni
    metrics = [
        ("seconds without an acknowledged write (longest gap): min / median / max",
         lambda r, w: r[w]["gap_s"], lambda v: f"{v:.2f}"),
        ("failed writes (error or no answer in 5 s): min / median / max",
         lambda r, w: r[w]["failed"], lambda v: f"{v:g}"),
        ("acknowledged writes lost (missing on the primary afterwards): min / median / max",
         lambda r, w: r[w]["lost"], lambda v: f"{v:g}"),
    ]
    width = 34
    for title, get, fmt in metrics:
        print()
        print(f"## {title}")
        print()
        head = f"| {'fault':<11} | sync | writer | " + " | ".join(f"{c:>{width}}" for c in cols)
        rnames = [("ratio" if len(tandem) == 1 else f"ratio {t[len('tandem '):]}") for t in tandem]
        head += (" | " + " | ".join(rnames) + " |") if ref and tandem else " |"
        print(head)
        print(sep(head))
        for fault, _ in FAULTS:
            for mode in modes:
                if not any(runs(c, mode, fault) for c in cols):
                    continue
                for w, wname in WRITERS:
                    cells, meds = [], {}
                    for c in cols:
                        rs = runs(c, mode, fault)
                        vals = [get(r, w) for r in ok(rs) if get(r, w) is not None]
                        cell = mmm(vals, fmt) if rs else "not run"
                        bad = len(rs) - len(vals)
                        if rs and bad:
                            cell += f" ({bad} of {len(rs)} failed)"
                        cells.append(cell)
                        meds[c] = statistics.median(vals) if vals else None
                    line = f"| {fault:<11} | {mode:<4} | {wname:<6} | " + " | ".join(
                        f"{c:>{width}}" for c in cells)
                    if ref and tandem:
                        line += " | " + " | ".join(f"{ratio(meds.get(t), meds.get(ref)):>{len(n)}}"
                                                   for t, n in zip(tandem, rnames)) + " |"
                    else:
                        line += " |"
                    print(line)

    print()
    print("## the API names a new primary after (s): min / median / max")
    print()
    head = f"| {'fault':<11} | sync | " + " | ".join(f"{c:>{width}}" for c in cols) + " |"
    print(head)
    print(sep(head))
    for fault, _ in FAULTS:
        for mode in modes:
            if not any(runs(c, mode, fault) for c in cols):
                continue
            cells = []
            for c in cols:
                rs = runs(c, mode, fault)
                vals = [r["api_new_primary_s"] for r in ok(rs) if r.get("api_new_primary_s") is not None]
                cells.append(mmm(vals, lambda v: f"{v:.2f}") if rs else "not run")
            print(f"| {fault:<11} | {mode:<4} | " + " | ".join(f"{c:>{width}}" for c in cells) + " |")

    print()
    print("ratio: tandem median / median of " + (ref or "Patroni") +
          " (lower is better; '=' both 0, 'n/a' Patroni 0 and tandem not).")
    print("Faults: " + "; ".join(f"{k} = {v}" for k, v in FAULTS) + ".")
    failed = [r for r in rows if not r.get("ok")]
    for r in failed:
        print(f"failed run: {r.get('label')} sync={r.get('mode')} {r.get('fault')} "
              f"run {r.get('rep')}: {r.get('error')}")


if __name__ == "__main__":
    main()
