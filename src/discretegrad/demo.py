"""The demo job: exact-gradient diagnostics of every registered estimator on small problems.

Each :class:`DemoProblem` is a small latent-variable problem whose exact gradient is
enumerable. :func:`run_demo` compares every registered estimator of the problem's
distribution against the exact gradient and writes, per problem, a markdown table and a PNG
bar chart under ``out_dir``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch

from discretegrad.diagnostics import GradientReport, compare, format_table, to_markdown
from discretegrad.registry import estimators

__all__ = ["DemoProblem", "problems", "run_demo"]


@dataclasses.dataclass(frozen=True)
class DemoProblem:
    name: str
    distribution: str
    description: str
    params: torch.Tensor
    f: Callable[[torch.Tensor], torch.Tensor]
    hparams: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)
    options: dict[str, object] = dataclasses.field(default_factory=dict)  # family options, e.g. {"k": 3}


def _categorical_problem() -> DemoProblem:
    g = torch.Generator().manual_seed(0)
    v, n = 4, 8
    logits = torch.randn(1, v, n, generator=g, dtype=torch.float64)
    a = torch.randn(v * n, 6, generator=g, dtype=torch.float64) / (v ** 0.5)
    b = torch.randn(6, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        # nonlinear in z and coupling all variables: squared distance of a random projection
        h = z.flatten(-2) @ a
        return ((h - b) ** 2).sum(-1) + torch.sin(3 * h[..., 0])

    return DemoProblem("categorical", "categorical",
                       f"{v} variables x {n} classes, f(z) = ||A vec(z) - b||^2 + sin(3 (A vec(z))_0)", logits, f)


def _bernoulli_problem() -> DemoProblem:
    g = torch.Generator().manual_seed(1)
    v = 8
    logits = torch.randn(1, v, generator=g, dtype=torch.float64)
    a = torch.randn(v, 4, generator=g, dtype=torch.float64) / (v ** 0.5)
    b = torch.randn(4, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        h = z @ a
        return ((h - b) ** 2).sum(-1) + torch.sin(3 * h[..., 0])

    return DemoProblem("bernoulli", "bernoulli",
                       f"{v} binary variables, f(z) = ||A z - b||^2 + sin(3 (A z)_0)", logits, f)


def _poisson_problem() -> DemoProblem:
    g = torch.Generator().manual_seed(2)
    v = 3
    rate = 0.5 + 2.5 * torch.rand(1, v, generator=g, dtype=torch.float64)
    w = torch.randn(v, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z @ w) + 0.1 * (z.sum(-1) - 4.0) ** 2

    return DemoProblem("poisson", "poisson",
                       f"{v} Poisson variables (rates {[round(r, 2) for r in rate[0].tolist()]}), "
                       f"f(z) = sin(w . z) + 0.1 (sum z - 4)^2", rate, f)


def _topk_problem() -> DemoProblem:
    g = torch.Generator().manual_seed(3)
    n, k = 6, 3
    theta = torch.randn(1, n, generator=g, dtype=torch.float64)
    c = torch.randn(n, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return (z @ c - 1.0) ** 2 + torch.sin(2 * z[..., 0] * z[..., 1])

    return DemoProblem("topk", "topk", f"k-subsets, n = {n}, k = {k} (Gumbel-top-k law), "
                       "f(z) = (c . z - 1)^2 + sin(2 z_0 z_1)", theta, f, options={"k": k})


def _spanning_tree_problem() -> DemoProblem:
    g = torch.Generator().manual_seed(4)
    n = 4
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    theta = (w + w.T).unsqueeze(0)
    c = torch.randn(n, n, generator=g, dtype=torch.float64)
    c = c + c.T

    def f(z: torch.Tensor) -> torch.Tensor:
        return ((z * c).sum((-1, -2)) - 1.0) ** 2

    return DemoProblem("spanning_tree", "spanning_tree", f"spanning trees of K_{n} (exact law of the Kruskal "
                       "sample), f(z) = (<C, z> - 1)^2", theta, f)


def problems() -> list[DemoProblem]:
    """The demo problems: one per distribution family whose estimators' law is enumerable."""
    return [_categorical_problem(), _bernoulli_problem(), _poisson_problem(), _topk_problem(),
            _spanning_tree_problem()]


def _plot(reports: list[GradientReport], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = [r.estimator for r in reports]
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.45 * len(names) + 1.6), sharey=True)
    for ax, key, label in zip(axes, ["relative_bias", "variance", "cosine"],
                              ["relative bias ‖E ĝ − g‖/‖g‖", "variance (trace)", "cos(E ĝ, g)"], strict=True):
        ax.barh(names, [getattr(r, key) for r in reports], color="tab:blue")
        ax.set_xlabel(label)
        if key == "variance":
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=4))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out_dir: str | os.PathLike[str] = "results/demo", *, draws: int = 1000, seed: int = 0,
             echo: Callable[[str], None] = print) -> dict[str, list[GradientReport]]:
    """Run the diagnostics on every demo problem; print and write tables and plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead (6x slower on a busy 2-core box)
    try:
        return _run(out, draws, seed, echo)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, draws: int, seed: int, echo: Callable[[str], None]) -> dict[str, list[GradientReport]]:
    results = {}
    for prob in problems():
        gen = torch.Generator().manual_seed(seed)
        reports, multi = [], []
        for s in estimators(prob.distribution):
            n = s.min_samples
            if n > 1:
                multi.append(f"{s.name}: {n}")
            reports += compare(prob.f, prob.params, distribution=prob.distribution,
                               estimators=[(s.name, prob.hparams.get(s.name, {}))], draws=draws, n_samples=n,
                               generator=gen, **prob.options)
        samples = "one sample each" + (f" ({', '.join(multi)} samples)" if multi else "")
        header = f"{prob.name}: {prob.description}; {draws} gradient draws per estimator, {samples}, seed {seed}"
        echo(header)
        echo(format_table(reports))
        echo("")
        (out / f"{prob.name}.md").write_text(
            f"# Gradient diagnostics: {prob.name}\n\n{header}.\n\n"
            f"Command: `discretegrad demo --draws {draws} --seed {seed}`\n\n{to_markdown(reports)}\n")
        _plot(reports, header, out / f"{prob.name}.png")
        results[prob.name] = reports
    return results
