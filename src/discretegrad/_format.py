"""Plain formatting helpers shared by the diagnostics, the harness reports and the benchmarks.

One place for each: how an estimator with hyperparameters is named in a table
(:func:`estimator_label`), the sample mean and standard deviation of a list of numbers
(:func:`mean_std`, ddof = 1) and how a markdown table is written (:func:`markdown_table`).
Imports nothing from the package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["estimator_label", "markdown_table", "mean_std", "format_mean_std"]


def estimator_label(name: str, hparams: Mapping[str, Any] | None = None) -> str:
    """``gst(gap=1.2, tau=0.5)``: the name, then the hyperparameters sorted by key (none: the name)."""
    if not hparams:
        return name
    return name + "(" + ", ".join(f"{k}={v}" for k, v in sorted(hparams.items())) + ")"


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Sample mean and standard deviation (ddof = 1); ``None`` where undefined (no value / one value)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_mean_std(mean: float | None, std: float | None) -> str:
    """``"1.234 ± 0.05"`` (4 and 2 significant digits), ``"–"`` when there is no mean."""
    if mean is None:
        return "–"
    return f"{mean:.4g}" + (f" ± {std:.2g}" if std is not None else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (cells are used as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
