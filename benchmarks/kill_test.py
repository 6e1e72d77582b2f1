"""Kill test: a real sweep SIGKILLed at random moments and rerun each time ends with exactly the
store of an uninterrupted run.

    .venv/bin/python benchmarks/kill_test.py            # 20 kills, writes results/reliability/kill_test.md

1. The sweep (a reduced Poisson-GAN protocol: the quick estimators x seeds, few short epochs)
   runs uninterrupted into ``WORK/reference``; this measures the start-up time (until the first
   run is stored) and the mean time per run.
2. The same command runs into ``WORK/killed`` and is sent SIGKILL at a moment drawn from
   ``random.Random(seed)``: one in five during start-up, the others a random fraction of a run
   after the attempt's m-th stored run (m in 0..3), so kills land in start-up, inside runs and
   just after commits whatever the machine's load; then it is started again, ``--kills``
   times, and finally once more to completion.
3. Both stores are compared: the same run ids, statuses, final metrics, per-epoch metrics and
   artifacts run by run, the same ``report --json`` records; in the killed store every run has
   ``attempts == 1`` (no run was stored twice; a killed run left no row), no claim is left, and
   each run's files are exactly its committed row's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

SWEEP = ["run", "poisson-gan", "--quick", "--set", "epochs=4", "--set", "steps_per_epoch=50", "--quiet"]


def _sweep(seeds: str, workers: int) -> list[str]:
    return [*SWEEP, "--seeds", seeds, "--workers", str(workers)]


def _cmd(out: Path, seeds: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "discretegrad.cli", *_sweep(seeds, workers), "--out", str(out)]


def _query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def _counts(out: Path) -> tuple[int, int]:
    """(runs stored, sweeps started) in ``out``'s store."""
    db = out / "store.sqlite"
    runs = _query(db, "SELECT count(*) FROM runs")
    sweeps = _query(db, "SELECT count(*) FROM sweeps")
    return (runs[0][0] if runs else 0), (sweeps[0][0] if sweeps else 0)


def _snapshot(out: Path) -> dict[str, dict]:
    """Per run id: everything that must not depend on interruptions."""
    db = out / "store.sqlite"
    runs = {r[0]: {"status": r[1], "metrics": json.loads(r[2]), "config": json.loads(r[3]), "attempts": r[4]}
            for r in _query(db, "SELECT run_id, status, metrics, config, attempts FROM runs")}
    for run_id, epoch, metrics in _query(db, "SELECT run_id, epoch, metrics FROM epochs ORDER BY run_id, epoch"):
        runs[run_id].setdefault("epochs", []).append((epoch, json.loads(metrics)))
    for run_id, name, data in _query(db, "SELECT run_id, name, data FROM artifacts ORDER BY run_id, name"):
        runs[run_id].setdefault("artifacts", {})[name] = json.loads(data)
    return runs


def _report_json(out: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "discretegrad.cli", "report", str(out), "--json"], capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout)


def _files_match_rows(out: Path) -> bool:
    db = out / "store.sqlite"
    rows = {r[0]: r for r in _query(db, "SELECT run_id, started_at, config FROM runs")}
    dirs = sorted(p.name for p in (out / "runs").iterdir())
    if dirs != sorted(rows):
        return False
    for run_id, started_at, config in rows.values():
        d = out / "runs" / run_id
        if sorted(p.name for p in d.iterdir()) != ["config.json", "env.json", "metrics.json"]:
            return False  # a stray temporary file, or a missing one
        if json.loads((d / "metrics.json").read_text())["started_at"] != started_at:
            return False
        if json.loads((d / "config.json").read_text()) != json.loads(config):
            return False
    return True


def _run_to_end(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times (default: 0)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seeds", default="0-24", help="seeds of the sweep (default: 0-24, 100 runs: 20 killed "
                                                    "attempts, of about 2 stored runs each, leave it unfinished)")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--record", default=str(REPO / "results" / "reliability" / "kill_test.md"))
    args = ap.parse_args()

    from _env import environment, write_report

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="kill_test_"))
    ref, killed = work / "reference", work / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # 1. uninterrupted, measuring start-up (first row stored) and the time per run
    t0 = time.monotonic()
    proc = subprocess.Popen(_cmd(ref, args.seeds, args.workers), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    first = None
    while proc.poll() is None:
        if first is None and _counts(ref)[0] > 0:
            first = time.monotonic() - t0
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"reference sweep failed: {proc.stderr.read().decode()}")
    total = time.monotonic() - t0
    n_runs = _counts(ref)[0]
    first = first if first is not None else total
    per_run = (total - first) / max(1, n_runs - 1)

    # 2. killed at random moments, rerun each time
    rng = random.Random(args.seed)
    kills = []
    for i in range(args.kills):
        # a kill moment: in start-up (1 in 5), or a random fraction of a run after this attempt stored m runs
        if rng.random() < 0.2:
            m, extra = None, rng.uniform(0.1, 0.9) * first
            plan = f"{extra:.2f} s after its start"
        else:
            m, extra = rng.randint(0, 3), rng.random() * per_run
            plan = f"{extra:.2f} s after its run {m} was stored" if m else f"{extra:.2f} s after it opened the store"
        before, sweeps_before = _counts(killed)
        t_start = time.monotonic()
        proc = subprocess.Popen(_cmd(killed, args.seeds, args.workers), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = None if m is not None else t_start + extra
        while proc.poll() is None and (deadline is None or time.monotonic() < deadline):
            if deadline is None:
                stored_now, sweeps_now = _counts(killed)
                if sweeps_now > sweeps_before and stored_now - before >= m:
                    deadline = time.monotonic() + extra
            time.sleep(0.01)
        landed = proc.poll() is None
        if landed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        at = time.monotonic() - t_start
        after, sweeps_after = _counts(killed)
        phase = ("finished before the kill" if not landed else
                 "start-up (store not opened yet)" if sweeps_after == sweeps_before else "sweeping")
        kills.append((i + 1, plan, at, before, after, phase))
        print(f"kill {i + 1}: {plan}, at {at:.2f} s, runs stored {before} -> {after}, {phase}", flush=True)
    final_s = _run_to_end(_cmd(killed, args.seeds, args.workers), env)

    # 3. compare
    a, b = _snapshot(ref), _snapshot(killed)
    same_ids = sorted(a) == sorted(b)
    same_runs = same_ids and all({k: v for k, v in a[i].items() if k != "attempts"} ==
                                 {k: v for k, v in b[i].items() if k != "attempts"} for i in a)
    same_records = _report_json(ref) == _report_json(killed)
    once = all(r["attempts"] == 1 for r in b.values())
    no_claims = not _query(killed / "store.sqlite", "SELECT * FROM claims")
    files = _files_match_rows(killed)
    identical = same_ids and same_runs and same_records and once and no_claims and files
    landed = sum(k[5] != "finished before the kill" for k in kills)

    lines = [
        "# Kill test: a sweep SIGKILLed at random moments, rerun each time",
        "",
        f"Command: `.venv/bin/python benchmarks/kill_test.py --kills {args.kills} --seed {args.seed} "
        f"--seeds {args.seeds} --workers {args.workers}`",
        "",
        f"Sweep (each attempt): `discretegrad {shlex.join(_sweep(args.seeds, args.workers))} --out DIR` "
        f"({n_runs} runs: the quick Poisson-GAN estimators x seeds {args.seeds}, 4 epochs of 50 steps each).",
        "",
        f"Environment: {environment('cpu')}; OMP_NUM_THREADS=1.",
        "",
        f"Uninterrupted reference: {total:.1f} s in all, first run stored after {first:.1f} s (start-up), "
        f"then {per_run:.2f} s per run. Kill moments from `random.Random({args.seed})`: with probability 1/5 "
        f"uniformly in [0.1, 0.9] x the start-up time after the attempt started, else a uniform fraction of a "
        f"run time ({per_run:.2f} s) after the attempt's m-th stored run (m uniform in 0..3; m = 0: after it "
        "opened the store), watched by polling the store every 10 ms. Times are seconds after the attempt "
        "started.",
        "",
        "| kill | planned moment | killed at (s) | runs stored before | after | where it landed |",
        "|---|---|---|---|---|---|",
        *[f"| kill {i} | {pl} | {at:.2f} | {bf} | {af} | {ph} |" for i, pl, at, bf, af, ph in kills],
        "",
        f"{landed} of {len(kills)} kills landed while the sweep ran; the final rerun took {final_s:.1f} s.",
        "",
        "## Result",
        "",
        f"- same run ids as the uninterrupted run: {'yes' if same_ids else 'NO'} ({len(b)} runs)",
        "- every run's status, final metrics, per-epoch metrics and artifacts identical: "
        f"{'yes' if same_runs else 'NO'}",
        f"- `report --json` records identical: {'yes' if same_records else 'NO'}",
        f"- every run stored once (`attempts == 1`): {'yes' if once else 'NO'}",
        f"- no claim left in the store: {'yes' if no_claims else 'NO'}",
        f"- per-run files exactly those of the committed rows (no stray or temporary file): {'yes' if files else 'NO'}",
        "",
        f"identical: {'yes' if identical else 'NO'}",
    ]
    write_report(lines, args.record)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
