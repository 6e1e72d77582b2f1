"""Do a table's cells agree with the paper's as a whole? Per cell, z of our mean against the paper's
(``discretegrad.harness.paper.agreement_z``); over the cells, Σ z² against χ² and the count of
|z| > 2 against its binomial expectation (``table_agreement``).

Runs of the same estimator choice at the same protocol settings are pooled across the stores given
(settings declared ``protocol=False``, e.g. a gradient-variance probe, do not split a cell; a seed
stored twice counts once, from the first store). A cell enters when the paper gives a mean and a
standard deviation for it. Where the runs log the metric per epoch, the column "epoch noise" is
the standard deviation of its last ``--noise-epochs`` values around a straight line, averaged over
the seeds: how much the final epoch's number would move had training stopped an epoch earlier or
later (part of the seed spread the paper's standard deviation measures). Markdown on standard output:

    .venv/bin/python tools/paper_agreement.py --metric test_neg_elbo --paper-seeds 10 \\
        results/categorical-vae-full results/categorical-vae-table2 results/categorical-vae-table3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from discretegrad.harness.grid import setting_name
from discretegrad.harness.paper import agreement_z, json_key, paper_number, protocol_of, table_agreement
from discretegrad.harness.report import load_groups
from discretegrad.harness.store import Store


def epoch_noise(values: list[float], last: int) -> float | None:
    """Standard deviation of the last ``last`` values around their least-squares line (``ddof=2``)."""
    y = np.asarray(values[-last:], dtype=float)
    if len(y) < 4:
        return None
    t = np.arange(len(y))
    return float(np.std(y - np.polyval(np.polyfit(t, y, 1), t), ddof=2))


def cells(stores: list[Path], metric: str, last: int) -> list[dict]:
    pooled: dict[tuple, dict] = {}
    for path in stores:
        with Store(path) as st:
            groups, info = load_groups(st)
            for g in groups:
                protocol = protocol_of(g.experiment, info.get(g.experiment, {})) or g.params
                setting = {k: v for k, v in g.params.items() if k in protocol}
                label = g.choice_label or g.estimator
                cell = pooled.setdefault((g.experiment, label, json_key(setting)), {
                    "estimator": label, "point": g.point, "params": g.params, "info": info.get(g.experiment, {}),
                    "seeds": {}, "noise": {}})
                for r in g.finished:
                    if metric in r["metrics"] and r["seed"] not in cell["seeds"]:
                        cell["seeds"][r["seed"]] = float(r["metrics"][metric])
                        series = [m[metric] for _, m in st.epochs(r["run_id"]) if m.get(metric) is not None]
                        cell["noise"][r["seed"]] = epoch_noise(series, last)
    return [c for c in pooled.values() if c["seeds"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", type=Path, help="result directories holding store.sqlite")
    ap.add_argument("--metric", required=True, help="the metric the paper's table reports")
    ap.add_argument("--paper-seeds", type=int, required=True, help="seeds behind each of the paper's means")
    ap.add_argument("--noise-epochs", type=int, default=10, help="last epochs the epoch noise is measured on")
    args = ap.parse_args(argv)
    if args.paper_seeds < 1:
        ap.error(f"Expected --paper-seeds to be at least 1, but got {args.paper_seeds}")
    if args.noise_epochs < 4:
        ap.error(f"Expected --noise-epochs to be at least 4, but got {args.noise_epochs}")
    for path in args.stores:
        if not (path / "store.sqlite").is_file():
            ap.error(f"Expected a result directory holding store.sqlite, but got {str(path)!r}")
    rows, zs = [], []
    for c in cells(args.stores, args.metric, args.noise_epochs):
        mean_p, std_p, _ = paper_number(c["info"], c["estimator"], c["params"], args.metric)
        if mean_p is None or not std_p:
            continue
        values = list(c["seeds"].values())
        mean = statistics.fmean(values)
        z = agreement_z(mean, len(values), mean_p, std_p, args.paper_seeds)
        zs.append(z)
        noise = [x for x in c["noise"].values() if x is not None]
        noise_text = f"{statistics.fmean(noise):.2f}" if noise else "–"
        rows.append(f"| {setting_name(c['point'])} | {c['estimator']} | {len(values)} | {mean:.2f} | "
                    f"{mean_p:.2f} ± {std_p:.2f} | {z:+.2f} | {noise_text} |")
    if not zs:
        print(f"no cell of {args.metric!r} has a paper mean and standard deviation", file=sys.stderr)
        return 1
    a = table_agreement(zs)
    print(f"`{args.metric}`, our mean over the seeds against the paper's over {args.paper_seeds} "
          "(z with the paper's standard deviation as the seed spread of both):\n")
    print("| setting | estimator | seeds | ours | paper | z | epoch noise |\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{a['cells']} cells: Σ z² = {a['chi2']:.2f} on {a['cells']} degrees of freedom, p = {a['p_chi2']:.3f}; "
          f"|z| > 2 in {a['beyond']} cells, {a['expected_beyond']:.2f} expected, "
          f"P(at least {a['beyond']}) = {a['p_beyond']:.3f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
