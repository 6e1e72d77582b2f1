"""The demo job: exact-gradient diagnostics of every registered estimator on small problems.

Each :class:`DemoProblem` is a small latent-variable problem whose exact gradient is
enumerable: the ``example`` a family declares (:class:`discretegrad.family.Example`), so a new
family with an example is in the demo without editing this module. :func:`run_demo` compares every registered estimator of the problem's
distribution against the exact gradient and writes, per problem, a markdown table and a PNG
bar chart under ``out_dir``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch

from discretegrad._extras import agg_figure, require
from discretegrad.diagnostics import GradientReport, compare, format_table, to_markdown
from discretegrad.registry import estimators, families, get_family

__all__ = ["DemoProblem", "problems", "run_demo"]

_PLOTS = "the demo's plots (discretegrad demo)"


@dataclasses.dataclass(frozen=True)
class DemoProblem:
    name: str
    distribution: str
    description: str
    params: torch.Tensor
    f: Callable[[torch.Tensor], torch.Tensor]
    hparams: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)
    options: dict[str, object] = dataclasses.field(default_factory=dict)  # family options, e.g. {"k": 3}


def problems() -> list[DemoProblem]:
    """One problem per registered family that has an ``example`` (an enumerable exact gradient)."""
    out = []
    for name in families():
        example = get_family(name).example
        if example is not None:
            ex = example()
            out.append(DemoProblem(name, name, ex.description, ex.params, ex.f, options=dict(ex.options)))
    return out


def _plot(reports: list[GradientReport], title: str, path: Path) -> None:
    ticker = require("matplotlib.ticker", _PLOTS)
    names = [r.estimator for r in reports]
    fig = agg_figure(_PLOTS, figsize=(12, 0.45 * len(names) + 1.6))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, key, label in zip(axes, ["relative_bias", "variance", "cosine"],
                              ["relative bias ‖E ĝ − g‖/‖g‖", "variance (trace)", "cos(E ĝ, g)"], strict=True):
        ax.barh(names, [getattr(r, key) for r in reports], color="tab:blue")
        ax.set_xlabel(label)
        if key == "variance":
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(numticks=4))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_demo(out_dir: str | os.PathLike[str] = "results/demo", *, draws: int = 1000, seed: int = 0,
             echo: Callable[[str], None] = print) -> dict[str, list[GradientReport]]:
    """Run the diagnostics on every demo problem; print and write tables and plots."""
    require("matplotlib", _PLOTS)  # before any work: one message if the extra is missing
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
