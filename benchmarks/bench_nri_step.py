"""Cost of one nri-graph-layout training step per latent structure and variant, on this machine.

Each variant (structure x estimator) gets its own model, optimiser and batch stream; the
variants run in interleaved rounds of ``--steps`` steps (rotating order, one warm-up round), and
the CPU time of the process (``time.process_time``: what a shared machine does not inflate the way
it inflates wall time) and the wall time per step are recorded; the median over rounds is
reported, with the quick protocol's cost per run (3000 steps) and the full protocol's (50k steps)
extrapolated from the sizes measured.

    OMP_NUM_THREADS=1 python benchmarks/bench_nri_step.py [--size quick|full] [--rounds 3] [--steps 20] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment, write_report  # noqa: E402

from discretegrad._format import markdown_table  # noqa: E402
from discretegrad.experiments import nri_graph_layout as nri  # noqa: E402
from discretegrad.experiments.data.graph_layout import load_graph_layout  # noqa: E402
from discretegrad.harness.contract import EstimatorChoice  # noqa: E402

SIZES = {"quick": {"hidden": 64, "batch_size": 32, "train_steps": 3000},
         "full": {"hidden": 256, "batch_size": 128, "train_steps": 50000}}


def trainer(structure: str, estimator: str, size: dict, x: torch.Tensor):
    p = nri.Settings(structure=structure, search=False, hidden=size["hidden"], batch_size=size["batch_size"])
    gen = torch.Generator().manual_seed(0)
    model = nri.NRIModel(p, gen)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    step = nri.make_step(model, opt, p, EstimatorChoice(estimator), p.tau, torch.Generator().manual_seed(1))
    state = {"i": 0}

    def run(n: int) -> None:
        for _ in range(n):
            idx = torch.randint(0, x.shape[0], (p.batch_size,), generator=gen)
            step(x[idx])
            state["i"] += 1

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=tuple(SIZES), default="quick")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--structures", default=",".join(nri.STRUCTURES))
    ap.add_argument("--estimators", default="entropy_relaxed,entropy")
    ap.add_argument("--out", default="results/nri-graph-layout/step_cost.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = SIZES[args.size]
    x = load_graph_layout("train", 10, size=1000, train_size=1000)[0]
    variants = {(s, e): trainer(s, e, size, x) for s in args.structures.split(",") for e in args.estimators.split(",")}
    cpu: dict = {k: [] for k in variants}
    wall: dict = {k: [] for k in variants}
    names = list(variants)
    for fn in variants.values():
        fn(1)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            variants[k](args.steps)
            cpu[k].append((time.process_time() - c0) / args.steps)
            wall[k].append((time.perf_counter() - w0) / args.steps)
    rows = []
    for k in names:
        c = statistics.median(cpu[k])
        rows.append([k[0], k[1], f"{1000 * c:.0f}", f"{1000 * statistics.median(wall[k]):.0f}",
                     f"{c * size['train_steps'] / 60:.1f}"])
    lines = [f"# nri-graph-layout: cost of a training step ({args.size} size: hidden {size['hidden']}, "
             f"batch {size['batch_size']}, T = 10)", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_nri_step.py --size {args.size} --rounds {args.rounds} "
             f"--steps {args.steps}`", "", f"Environment: {environment('cpu')}", "",
             f"Median over {args.rounds} interleaved rounds of {args.steps} steps. CPU = process CPU time (one "
             f"thread); wall time is inflated by whatever else ran on the machine.", "",
             markdown_table(["structure", "estimator", "CPU ms / step", "wall ms / step",
                              f"CPU minutes per run ({size['train_steps']} steps)"], rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
