"""Why STGS is fragile at tau = 0.01 on ListOps: the distribution of the parser's gradient.

For a fixed model (the quick protocol's, at initialisation) and fixed batches, the gradient of the
cross-entropy with respect to the parser's query vector ``q`` (which only the estimator's
surrogate reaches) is drawn ``--draws`` times with fresh estimator noise (dropout off) for each
estimator; the table gives quantiles of its norm. A straight-through Gumbel-softmax gradient at
a low temperature is almost always near zero and occasionally of order ``1/tau``: a heavy tail
(large max / median), which is what Adam and clipping then see.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/listops_grad_spikes.py [--out results/listops/grad_spikes.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, write_report  # noqa: E402

from discretegrad.experiments import listops as X  # noqa: E402
from discretegrad.experiments.data import listops as D  # noqa: E402
from discretegrad.harness.contract import EstimatorChoice, get_experiment  # noqa: E402
from discretegrad.harness.grid import make_config  # noqa: E402

CHOICES = [("stgs", {}), ("gst", {"gap": 1.0}), ("gumbel_rao", {"mc_samples": 10}), ("gumbel_rao", {"mc_samples": 100}),
           ("reinmax", {})]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/listops/grad_spikes.md")
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--max-tokens", type=int, default=30)
    args = ap.parse_args()
    train, _ = D.generated_splits(0, 2000, 10, max_tokens=args.max_tokens)
    batch = D.collate(train[:16])
    exp = get_experiment("listops")
    rows = []
    for name, hp in CHOICES:
        cfg = make_config(exp, EstimatorChoice(name, hp), 0, {**exp.quick, "tau": args.tau, "dropout": 0.0})
        model = X.build_model(cfg.settings, 0)
        gen = torch.Generator().manual_seed(0)
        select = X.sampler(cfg, gen)
        norms = []
        for _ in range(args.draws):
            model.zero_grad(set_to_none=True)
            logits, _ = model(batch, select, gen)
            F.cross_entropy(logits, batch.labels).backward()
            norms.append(float(model.encoder.query.grad.norm()))
        t = torch.tensor(norms, dtype=torch.float64)
        q = torch.quantile(t, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
        ratio = float(t.max() / q[0]) if q[0] > 0 else float("inf")
        rows.append(f"| {cfg.estimator.label} | {float(t.mean()):.3g} | {q[0]:.3g} | {q[1]:.3g} | {q[2]:.3g} | "
                    f"{float(t.max()):.3g} | {ratio:.3g} |")
        print(rows[-1], flush=True)
    lines = ["# ListOps: the parser's gradient at tau = %g" % args.tau, "",
             f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/listops_grad_spikes.py --draws {args.draws} "
             f"--tau {args.tau} --max-tokens {args.max_tokens}`", "",
             f"Environment: {environment('cpu')}", "",
             f"Model: the quick protocol's (hidden {exp.quick['hidden']}) at initialisation (seed 0), dropout off; one "
             f"batch of 16 generated training lines with fewer than {args.max_tokens} tokens; {args.draws} draws of "
             "the estimator noise; the norm of the cross-entropy's gradient with respect to the parser's query q.", "",
             "| estimator | mean | median | 90 % | 99 % | max | max / median |", "|---|---|---|---|---|---|---|", *rows]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
