"""Run the property-based soak (``tests/test_soak.py``) with a large budget and write its record.

    python benchmarks/run_soak.py [--cases 10000] [--workers 2] [--out results/reliability/soak.md]

Runs ``DISCRETEGRAD_SOAK_CASES=<cases> python -m pytest -q -n <workers> -m slow tests/test_soak.py``
in a subprocess with ``DISCRETEGRAD_SOAK_LOG`` pointing at a temporary file, then writes the
command, the environment, the pytest result line, the wall time, and the cases per estimator
(refusals at documented limits, half-precision overflows confirmed in float32, dtypes, patterns)
to ``--out``. The soak is deterministic (hypothesis derandomised), so a rerun draws the same cases.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["cases", "refused", "half_overflow", "float16", "bfloat16", "float32", "float64",
           "random", "offset", "ties", "all_equal", "one_huge", "extreme", "seconds"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="results/reliability/soak.md")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "soak.jsonl"
        env = {**os.environ, "DISCRETEGRAD_SOAK_CASES": str(args.cases), "DISCRETEGRAD_SOAK_LOG": str(log)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-n", str(args.workers), "-m", "slow", "-p", "no:cacheprovider",
               "tests/test_soak.py"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    out_lines = proc.stdout.strip().splitlines() or ["(no output)"]
    summary = next((line for line in reversed(out_lines) if " in " in line and ("passed" in line or "failed" in line)),
                   out_lines[-1])
    totals = {c: sum(r.get(c, 0) for r in records) for c in COLUMNS}
    lines = [
        "# Property-based soak of every registered estimator\n",
        f"Command: `DISCRETEGRAD_SOAK_CASES={args.cases} .venv/bin/python -m pytest -q -n {args.workers} -m slow "
        "tests/test_soak.py` (run and recorded by `python benchmarks/run_soak.py "
        f"--cases {args.cases} --workers {args.workers}`)\n",
        f"Environment: {environment('cpu')}\n",
        f"Result: `{summary}` (pytest exit status {proc.returncode}); wall time {wall:.0f} s for "
        f"{totals['cases']} cases over {len(records)} estimators.\n",
        "What each case draws and checks: `tests/test_soak.py` (module docstring). `refused`: cases at a "
        "documented limit, which must raise a ValueError (the Gumbel-top-k law's k! <= 5040); "
        "`half_overflow`: non-finite half-precision results whose float32 recomputation exceeds the half "
        "dtype's range (allowed, counted). Hypothesis is derandomised, so a rerun draws the same cases.\n",
        "| estimator | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for r in sorted(records, key=lambda r: r["estimator"]):
        cells = [f"{r.get(c, 0):.1f}" if c == "seconds" else str(r.get(c, 0)) for c in COLUMNS]
        lines.append(f"| {r['estimator']} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"{totals[c]:.1f}" if c == "seconds" else str(totals[c])
                                               for c in COLUMNS) + " |")
    if proc.returncode != 0:
        lines += ["\n## Failures (pytest output, last 200 lines)\n", "```",
                  *proc.stdout.splitlines()[-200:], "```"]
    write_report(lines, str(ROOT / args.out) if not Path(args.out).is_absolute() else args.out)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
