"""The unbiased Poisson forward difference against pWGF-MMD, ST, MuProp, REINFORCE and RLOO.

Two measurements, both against the exact gradient (``dg.exact``):

1. ``dg.diagnostics.compare`` (bias, its standard error, variance = trace of the covariance,
   MSE, cosine, time per draw) of every estimator, ``DRAWS`` independent gradient draws each, on
   the demo's Poisson problem (the family's example: 3 variables, ``f(z) = sin(w·z) + 0.1(Σz - 4)²``)
   and on ``f(z) = (z - 7)²`` at ``λ ∈ {3, 6.5, 10}`` (``E f = λ + (λ - 7)²``, optimum 6.5, exact
   gradient ``2λ - 13``). One sample per draw (RLOO: 2); REINFORCE and RLOO also with as many
   evaluations of ``f`` as the forward difference spends (``V + 1`` per sample), because it
   evaluates ``f`` ``V`` more times.
2. Where stochastic gradient descent on ``λ`` settles for ``E[(z - 7)²]``: ``STEPS`` steps of SGD
   (``λ ← max(λ - lr ĝ, 0.05)``, one sample per step) from ``λ = 3``, the mean of ``λ`` over the
   last half, for ``SEEDS`` seeds.

    python benchmarks/poisson_unbiased.py        # writes results/poisson-unbiased/table.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment, write_report  # noqa: E402

DRAWS = 10000
STEPS, LR, SEEDS = 4000, 0.01, 5
OUT = "results/poisson-unbiased/table.md"
BASE = ["forward_difference", "forward_difference_shared", "pwgf_mmd", "st", "muprop", "reinforce", "rloo"]


def quadratic(z: torch.Tensor) -> torch.Tensor:
    return ((z - 7.0) ** 2).sum(-1)


def problems():
    ex = dg.get_family("poisson").example()
    yield "demo: " + ex.description, ex.params, ex.f
    for lam in (3.0, 6.5, 10.0):
        yield f"f(z) = (z - 7)^2 at λ = {lam} (exact gradient {2 * lam - 13:g})", \
            torch.tensor([[lam]], dtype=torch.float64), quadratic


def evaluations(name: str, n: int, v: int) -> int:
    return n * (v + 1) if name.startswith("forward_difference") else (n + 1 if name == "muprop" else n)


def diagnostics_rows(lines: list[str]) -> None:
    for title, rate, f in problems():
        v = rate.shape[-1]
        entries = [(name, 2 if name == "rloo" else 1) for name in BASE]
        entries += [e for e in [("reinforce", v + 1), ("rloo", v + 1)] if e not in entries]
        head = ["estimator", "n_samples", "f evals / draw", "bias", "bias SE", "variance", "MSE", "cos(mean, exact)",
                "ms / draw"]
        rows = []
        for name, n in entries:
            (r,) = dg.diagnostics.compare(f, rate, distribution="poisson", estimators=[name], draws=DRAWS,
                                          n_samples=n, generator=torch.Generator().manual_seed(0))
            rows.append([name, str(n), str(evaluations(name, n, v)), f"{r.bias:.4g}", f"{r.bias_se:.2g}",
                         f"{r.variance:.4g}", f"{r.mse:.4g}", f"{r.cosine:.4f}", f"{1e3 * r.seconds_per_draw:.3f}"])
        exact = dg.exact.gradient(f, rate, distribution="poisson")
        lines += [f"### {title}", "", f"rates {[round(x, 3) for x in rate.flatten().tolist()]}, exact gradient "
                  f"{[round(x, 4) for x in exact.flatten().tolist()]}, {DRAWS} draws per row", "",
                  markdown_table(head, rows), ""]


def settle(name: str, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    lam = torch.tensor([3.0], dtype=torch.float64)
    tail = []
    n = 2 if name == "rloo" else 1
    for step in range(STEPS):
        leaf = lam.clone().requires_grad_(True)
        value = dg.surrogate(quadratic, leaf.unsqueeze(0), distribution="poisson", estimator=name, n_samples=n,
                             generator=gen)
        (g,) = torch.autograd.grad(value.sum(), leaf)
        lam = (lam - LR * g).clamp_min(0.05)
        if step >= STEPS // 2:
            tail.append(float(lam))
    return sum(tail) / len(tail)


def settle_rows(lines: list[str]) -> None:
    rows = []
    for name in [b for b in BASE if b != "forward_difference_shared"]:
        vals = torch.tensor([settle(name, s) for s in range(SEEDS)], dtype=torch.float64)
        rows.append([name, f"{float(vals.mean()):.3f}", f"{float(vals.std()):.3f}",
                     ", ".join(f"{x:.3f}" for x in vals.tolist())])
    lines += [f"### SGD on λ for E[(z - 7)^2] (optimum 6.5): {STEPS} steps, lr {LR}, from λ = 3, one sample per "
              f"step (RLOO 2); mean of λ over the last {STEPS // 2} steps", "",
              markdown_table(["estimator", f"mean over {SEEDS} seeds", "std", "per seed"], rows), ""]


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    lines = ["# Poisson: the unbiased forward difference against pWGF-MMD, ST, MuProp, REINFORCE, RLOO", "",
             "Command: `python benchmarks/poisson_unbiased.py`", "", f"Environment: {environment('cpu')}", ""]
    diagnostics_rows(lines)
    settle_rows(lines)
    lines += [f"Total time: {time.perf_counter() - t0:.0f} s (one thread)."]
    write_report(lines, OUT)


if __name__ == "__main__":
    main()
