"""How often GST's STGS masking makes a ListOps choice fall to the first candidate, at initialisation.

The authors' STGS (``listops --set masking=authors``, :func:`discretegrad.experiments.listops.post_softmax_masked_stgs`)
takes the tempered softmax over every candidate, padded ones included, and masks afterwards; where a
padded candidate's perturbed score beats every valid one by more than about ``63 tau``, the choice
falls to column 0 with no gradient. This counts, over the training choices with at least two valid
candidates, the fraction that fell, for freshly initialised models (training mode, dropout on) on
length-bucketed batches of 16 (one chunk of 100 batches, as torchtext's BucketIterator) of

* ``quick``: lines drawn with fewer than 30 tokens (the quick protocol's data),
* ``paper``: lines of the original distribution with fewer than 100 tokens (the paper's filter),

per hidden size and temperature, and the mean number of padded positions per line. Forward passes
only. A trained model's rate is the epoch metric ``train_fallback_rate`` of a ``masking=authors`` run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/listops_fallback.py [--batches 30] [--hidden 64 300] \\
        [--out results/listops/fallback.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, write_report  # noqa: E402

from discretegrad.experiments import listops as X  # noqa: E402
from discretegrad.experiments.data import listops as D  # noqa: E402
from discretegrad.experiments.data import listops_gen as G  # noqa: E402
from discretegrad.harness.contract import EstimatorChoice, get_experiment  # noqa: E402
from discretegrad.harness.grid import make_config  # noqa: E402

DATA = {"quick": 30, "paper": 100}


def batches(max_tokens: int, count: int) -> list[D.Batch]:
    lines = [D.encode(t) for t in G.generate_distinct(0, 1600, max_tokens=max_tokens)]
    out = []
    for b in D.bucket_batches(lines, 16, torch.Generator().manual_seed(0)):
        out.append(b)
        if len(out) == count:
            break
    return out


def fallback_rate(data: list[D.Batch], hidden: int, tau: float, seeds: int) -> float:
    fell = choices = 0
    for seed in range(seeds):
        cfg = make_config(get_experiment("listops"), EstimatorChoice("stgs"), seed,
                          {"hidden": hidden, "tau": tau, "masking": "authors"})
        model = X.build_model(cfg.settings, seed)
        model.train()
        select, g_drop = X.sampler(cfg, torch.Generator().manual_seed(seed + 1)), torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for b in data:
                model(b, select, g_drop)
        fell, choices = fell + int(select.fell), choices + int(select.choices)
        select.rate()
    return fell / max(choices, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=2, help="initialisations per cell")
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 300])
    ap.add_argument("--taus", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--out", default="results/listops/fallback.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    rows = ["| data | mean tokens | mean padded positions per line | hidden | " +
            " | ".join(f"fallback rate, tau {t:g}" for t in args.taus) + " |",
            "|---|---|---|---|" + "---|" * len(args.taus)]
    for name, limit in DATA.items():
        data = batches(limit, args.batches)
        lengths = torch.cat([b.lengths for b in data]).double()
        padded = torch.cat([b.lengths.max() - b.lengths for b in data]).double()
        for hidden in args.hidden:
            rates = [fallback_rate(data, hidden, tau, args.seeds) for tau in args.taus]
            rows.append(f"| {name} (< {limit} tokens) | {lengths.mean():.1f} | {padded.mean():.2f} | {hidden} | " +
                        " | ".join(f"{r:.4f}" for r in rates) + " |")
            print(rows[-1], flush=True)
    write_report([
        "# ListOps: choices that GST's STGS masking makes fall to the first candidate, at initialisation", "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/listops_fallback.py --batches {args.batches} "
        f"--seeds {args.seeds} --hidden {' '.join(map(str, args.hidden))} --taus {' '.join(f'{t:g}' for t in args.taus)}`",
        "", f"{args.batches} length-bucketed batches of 16 per data set (one chunk of 100 batches, seed 0), "
        f"{args.seeds} initialisations per cell, training mode; the rate is over the choices with at least two "
        "valid candidates (see the script's docstring).", "", *rows, "", environment()], args.out)


if __name__ == "__main__":
    main()
