"""PNG plots of stored per-epoch metrics: learning curves (mean ± std band over seeds, one line
per estimator, one panel per metric) and, when runs logged ``grad_variance``, the
gradient-variance curve on a log axis (like GST Figure 3). Figures are drawn on their own Agg
canvas (:func:`discretegrad._extras.agg_figure`): no ``matplotlib.use``, no ``pyplot``."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from discretegrad._extras import agg_figure
from discretegrad._format import mean_std
from discretegrad.harness.files import atomic_write_text

__all__ = ["curve_stats", "plot_setting", "GRAD_VARIANCE", "PURPOSE"]

PURPOSE = "the report's plots (discretegrad report)"

GRAD_VARIANCE = "grad_variance"

Curves = Mapping[str, Sequence[Sequence[tuple[int, Mapping[str, float | None]]]]]  # label -> runs -> epochs


def curve_stats(runs: Sequence[Sequence[tuple[int, Mapping[str, float | None]]]], metric: str
                ) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: mean and sample std (ddof=1, as in the tables; 0 for a single run) of ``metric``
    over the runs that logged a finite value at that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for epoch, m in run:
            v = m.get(metric)
            if v is not None and math.isfinite(v):
                by_epoch.setdefault(epoch, []).append(float(v))
    epochs = sorted(by_epoch)
    means, stds = [], []
    for e in epochs:
        mu, sd = mean_std(by_epoch[e])
        means.append(mu)
        stds.append(sd if sd is not None else 0.0)
    return epochs, means, stds


def _metrics(curves: Curves) -> list[str]:
    names: dict[str, None] = {}
    for runs in curves.values():
        for run in runs:
            for _, m in run:
                names.update(dict.fromkeys(m))
    return list(names)


def _panel(ax, curves: Curves, metric: str, log: bool) -> None:
    for label, runs in curves.items():
        epochs, mean, std = curve_stats(runs, metric)
        if not epochs:
            continue
        line, = ax.plot(epochs, mean, label=label, marker="o" if len(epochs) < 15 else None, ms=3)
        lo = [m - s for m, s in zip(mean, std)]
        hi = [m + s for m, s in zip(mean, std)]
        if log:
            lo = [max(v, m * 1e-3) for v, m in zip(lo, mean)]
        ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def _save(fig, prefix: Path, suffix: str) -> Path:
    fig.tight_layout()
    path = prefix.with_name(prefix.name + suffix)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_text(path, buf.getvalue())  # replaces a link at path rather than writing through it
    return path


def plot_setting(curves: Curves, title: str, prefix: Path) -> list[Path]:
    """Write ``<prefix>_curves.png`` (and ``<prefix>_grad_variance.png``); return the paths."""
    written = []
    metrics = _metrics(curves)
    plain = [m for m in metrics if m != GRAD_VARIANCE]
    if plain:
        cols = min(3, len(plain))
        rows = math.ceil(len(plain) / cols)
        fig = agg_figure(PURPOSE, figsize=(4.2 * cols, 3.2 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, metric in zip(axes.flat, plain):
            _panel(ax, curves, metric, log=False)
        for ax in list(axes.flat)[len(plain):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"{title} (mean ± std over seeds)", fontsize=10)
        written.append(_save(fig, prefix, "_curves.png"))
    if GRAD_VARIANCE in metrics:
        fig = agg_figure(PURPOSE, figsize=(5.5, 3.8))
        ax = fig.subplots()
        _panel(ax, curves, GRAD_VARIANCE, log=True)
        ax.legend(fontsize=7)
        ax.set_title(f"{title}: gradient variance", fontsize=10)
        written.append(_save(fig, prefix, "_grad_variance.png"))
    return written
