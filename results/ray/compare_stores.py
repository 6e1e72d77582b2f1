"""Compare two sweep stores run for run: the same run ids, the same status and final metrics.

    python results/ray/compare_stores.py STORE_DIR_A STORE_DIR_B [--rel 1e-9]

Prints a markdown table (run id, estimator, seed, status, each metric of A, the largest relative
difference to B) and exits 1 when the run ids differ or a metric differs by more than --rel.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys


def runs(path: str) -> dict[str, tuple[str, int, str, dict, float]]:
    db = sqlite3.connect(f"file:{path}/store.sqlite?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT run_id, estimator, seed, status, metrics, duration_s FROM runs").fetchall()
    finally:
        db.close()
    return {r[0]: (r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rel", type=float, default=1e-9)
    args = p.parse_args()
    a, b = runs(args.a), runs(args.b)
    ok = sorted(a) == sorted(b)
    print(f"run ids: {len(a)} in A, {len(b)} in B, identical sets: {ok}\n")
    names = sorted({k for v in a.values() for k in v[3]})
    print("| run id | estimator | seed | status A / B | " + " | ".join(names) + " | max rel. diff | s A / s B |")
    print("|---" * (len(names) + 6) + "|")
    for run_id in sorted(a, key=lambda r: (a[r][0], a[r][1])):
        est, seed, status, ma, dur = a[run_id]
        if run_id not in b:
            print(f"| {run_id} | {est} | {seed} | {status} / missing |" + " |" * (len(names) + 2))
            continue
        mb = b[run_id][3]
        diffs = [abs(ma[k] - mb[k]) / max(abs(mb[k]), 1e-300) for k in ma if ma[k] is not None and mb.get(k) is not None]
        worst = max(diffs, default=0.0)
        same = status == b[run_id][2] and set(ma) == set(mb) and worst <= args.rel
        ok = ok and same
        vals = " | ".join(f"{ma[k]:.10g}" if ma.get(k) is not None else "null" for k in names)
        print(f"| {run_id} | {est} | {seed} | {status} / {b[run_id][2]} | {vals} | {worst:.1e} | "
              f"{dur:.0f} / {b[run_id][4]:.0f} |")
    print(f"\nsame run ids, statuses and metrics (rel. tolerance {args.rel:g}): {ok}")
    return 0 if ok and math.isfinite(args.rel) else 1


if __name__ == "__main__":
    sys.exit(main())
