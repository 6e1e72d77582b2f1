"""ListOps training with subnormal floats flushed to zero or kept: CPU time and whether the run changes.

The same ``--steps`` training steps (forward, backward, clipping, Adam) on the same length-bucketed
batches of generated lines (fewer than ``--train-max-tokens`` tokens, the quick protocol's data),
from the same initialisation and noise, once with ``torch.set_flush_denormal(False)`` and once with
``True`` (the harness's default, :class:`discretegrad.harness.execute.Task`), per hidden size and
estimator. Reported: process CPU time of each (one thread), the ratio, and whether the losses and
the final parameters are bit-identical.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/listops_denormals.py [--hidden 64 300] [--steps 60] \\
        [--out results/listops/denormals.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, write_report  # noqa: E402

from discretegrad.experiments import listops as X  # noqa: E402
from discretegrad.experiments.data import listops as D  # noqa: E402
from discretegrad.harness.contract import EstimatorChoice, get_experiment  # noqa: E402
from discretegrad.harness.grid import make_config  # noqa: E402

VARIANTS = [("stgs", {}, 0.01), ("stgs", {}, 1.0), ("gst", {"gap": 1.0}, 0.01), ("gumbel_rao", {"mc_samples": 10}, 0.01)]


def train(batches, hidden: int, name: str, hparams: dict, tau: float, flush: bool):
    torch.set_flush_denormal(flush)
    try:
        cfg = make_config(get_experiment("listops"), EstimatorChoice(name, hparams), 0, {"hidden": hidden, "tau": tau})
        model = X.build_model(cfg.settings, 0)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        select, g_drop = X.sampler(cfg, torch.Generator().manual_seed(1)), torch.Generator().manual_seed(2)
        losses, t0 = [], time.process_time()
        for b in batches:
            opt.zero_grad(set_to_none=True)
            logits, _ = model(b, select, g_drop)
            loss = F.cross_entropy(logits, b.labels)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
        seconds = time.process_time() - t0
        return seconds, losses, torch.cat([p.detach().flatten() for p in model.parameters()])
    finally:
        torch.set_flush_denormal(False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 300])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--train-max-tokens", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.set_flush_denormal(False):
        raise SystemExit("this CPU cannot flush denormals (torch.set_flush_denormal returned False)")
    torch.set_num_threads(1)
    train_ex, _ = D.generated_splits(0, 4000, 10, draw_max_tokens=args.train_max_tokens)
    g = torch.Generator().manual_seed(0)
    batches = [b for _, b in zip(range(args.steps), D.bucket_batches(train_ex, 16, g, torch.device("cpu")))]
    mean_l2 = sum(b.tokens.shape[1] ** 2 for b in batches) / len(batches)
    rows = []
    for hidden in args.hidden:
        for name, hp, tau in VARIANTS:
            train(batches[:2], hidden, name, hp, tau, False)  # warm-up
            kept, loss_k, par_k = train(batches, hidden, name, hp, tau, False)
            flushed, loss_f, par_f = train(batches, hidden, name, hp, tau, True)
            same = "yes" if loss_k == loss_f and torch.equal(par_k, par_f) else \
                f"no (max parameter difference {float((par_k - par_f).abs().max()):.1e})"
            label = EstimatorChoice(name, hp).label
            rows.append(f"| {hidden} | {label} | {tau} | {1000 * kept / len(batches):.0f} | "
                        f"{1000 * flushed / len(batches):.0f} | {kept / flushed:.2f} | {same} |")
            print(rows[-1], flush=True)
    command = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/listops_denormals.py", *sys.argv[1:]])
    write_report(["# ListOps: subnormal floats flushed to zero or kept", "", f"Command: `{command}`", "",
                  f"Environment: {environment('cpu')}; load average (1 min) at the end: {os.getloadavg()[0]:.1f}", "",
                  f"{len(batches)} training steps (batch 16, generated lines of fewer than {args.train_max_tokens} "
                  f"tokens, mean squared padded length L² = {mean_l2:.0f}) from the same initialisation and noise, "
                  "timed by the process's CPU time (one thread).", "",
                  "| hidden | estimator | tau | ms / step, kept | ms / step, flushed | speed-up | same losses and "
                  "parameters |", "|---|---|---|---|---|---|---|", *rows], args.out)


if __name__ == "__main__":
    main()
