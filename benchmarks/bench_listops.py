"""ListOps training speed: ms per step, steps and examples per second, per hidden size and estimator.

One training step = forward (leaf LSTM, latent tree, classifier), backward, clipping and the
Adam update, on the same fixed length-bucketed batches of 16 generated training lines for every
variant (timed interleaved, :func:`_env.interleaved`). ``ms / L²`` divides by the batches' mean
squared padded length, the quantity the Tree-LSTM's cost grows with, so a full-protocol epoch
can be extrapolated from it. ``--clock cpu`` times the process's CPU time (``time.process_time``)
instead of the wall clock: on a machine shared with other jobs it measures the cost of a step, not
the share of a core the process got. ``--train-max-tokens N`` draws the batches from the
distribution conditioned on fewer than ``N`` tokens (the quick protocol's 30).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_listops.py [--out results/listops/speed.md] [--device cpu]
        [--clock wall|cpu] [--hidden 64 300] [--train-max-tokens 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, interleaved, write_report  # noqa: E402

from discretegrad.experiments import listops as X  # noqa: E402
from discretegrad.experiments.data import listops as D  # noqa: E402
from discretegrad.harness.contract import EstimatorChoice, get_experiment  # noqa: E402
from discretegrad.harness.grid import make_config  # noqa: E402

VARIANTS = [  # (hidden, estimator, hparams, latent)
    (32, "stgs", {}, "parent"), (32, "gst", {"gap": 1.0}, "parent"), (32, "gumbel_rao", {"mc_samples": 10}, "parent"),
    (32, "gumbel_rao", {"mc_samples": 100}, "parent"), (32, "stgs", {}, "arborescence"),
    (64, "stgs", {}, "parent"), (64, "gst", {"gap": 1.0}, "parent"), (64, "gumbel_rao", {"mc_samples": 10}, "parent"),
    (64, "gumbel_rao", {"mc_samples": 100}, "parent"), (64, "stgs", {}, "arborescence"),
    (300, "stgs", {}, "parent"), (300, "gst", {"gap": 1.0}, "parent"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/listops/speed.md")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--hidden", type=int, nargs="*", default=None, help="only these hidden sizes")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall clock or process CPU time")
    ap.add_argument("--train-max-tokens", type=int, default=None, help="batches of lines with fewer tokens")
    args = ap.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        ap.error(f"Expected --clock wall with --device {args.device}, but got --clock cpu")
    device = torch.device(args.device)
    train, _ = D.generated_splits(0, 4000, 10, draw_max_tokens=args.train_max_tokens)
    g = torch.Generator().manual_seed(0)
    batches = [b for _, b in zip(range(args.batches), D.bucket_batches(train, 16, g, device))]
    mean_l2 = sum(b.tokens.shape[1] ** 2 for b in batches) / len(batches)
    exp = get_experiment("listops")
    rows = []
    for hidden, name, hp, latent in VARIANTS:
        if args.hidden and hidden not in args.hidden:
            continue
        cfg = make_config(exp, EstimatorChoice(name, hp), 0, {"hidden": hidden, "latent": latent, "tau": 0.01})
        model = X.build_model(cfg.settings, 0).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        select = X.sampler(cfg, gen)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def steps(model=model, select=select, opt=opt, gen=gen):
            for b in batches:
                opt.zero_grad(set_to_none=True)
                logits, _ = model(b, select, gen)
                F.cross_entropy(logits, b.labels).backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        median, best = interleaved({"x": steps}, args.reps)["x"] if args.clock == "wall" else _cpu_time(steps, args.reps)
        ms = 1000 * median / len(batches)
        label = cfg.estimator.label + (" (arborescence)" if latent == "arborescence" else "")
        rows.append(f"| {hidden} | {label} | {ms:.0f} | {1000 / ms:.2f} | {16000 / ms:.0f} | {ms / mean_l2:.3f} |")
        print(rows[-1], flush=True)
    command = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_listops.py", *sys.argv[1:]])
    lines = ["# ListOps training speed", "", f"Command: `{command}`", "",
             f"Environment: {environment(args.device)}; load average (1 min) at the end: {os.getloadavg()[0]:.1f}", "",
             f"{len(batches)} fixed length-bucketed batches of 16 generated training lines"
             + (f" of fewer than {args.train_max_tokens} tokens" if args.train_max_tokens else "")
             + f", mean squared padded length L² = {mean_l2:.0f}; one step = forward, backward, clipping, Adam; "
             f"median of {args.reps} rounds after a warm-up, timed by the "
             + ("wall clock." if args.clock == "wall" else "process's CPU time (one thread)."), "",
             "| hidden | estimator | ms / step | steps / s | examples / s | ms / L² |", "|---|---|---|---|---|---|",
             *rows]
    write_report(lines, args.out)


def _cpu_time(steps, reps: int) -> tuple[float, float]:
    """(median, min) CPU seconds of ``steps()`` over ``reps`` rounds after one warm-up."""
    steps()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        steps()
        times.append(time.process_time() - t0)
    return statistics.median(times), min(times)


if __name__ == "__main__":
    main()
