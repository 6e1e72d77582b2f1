"""Gradient diagnostics against the exact gradient: bias, variance, MSE, cosine.

``compare`` draws ``draws`` independent gradient estimates of ``sum(E[f(z)])`` with respect to
``params`` per estimator and summarises them against :func:`discretegrad.exact.gradient`.
The result is a list of plain :class:`GradientReport` records; :func:`format_table` and
:func:`to_markdown` print them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import torch

from discretegrad import _validation as V
from discretegrad._format import estimator_label, markdown_table
from discretegrad.exact import DEFAULT_MAX_CONFIGS
from discretegrad.exact import gradient as exact_gradient
from discretegrad.registry import estimators as registered
from discretegrad.family import Params
from discretegrad.registry import get, get_family
from discretegrad.surrogate import surrogate

__all__ = ["GradientReport", "compare", "format_table", "to_markdown", "gradient_draws"]

EstimatorArg = Union[str, tuple[str, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class GradientReport:
    """Summary of ``draws`` gradient estimates ``ĝ`` against the exact gradient ``g``.

    ``bias = ‖mean ĝ - g‖`` with its Monte Carlo standard error ``bias_se = sqrt(variance/draws)``
    (a bias well below ``bias_se`` is indistinguishable from zero); ``variance = Σ_i Var(ĝ_i)``
    (trace of the covariance); ``mse = mean ‖ĝ - g‖²``; ``cosine = cos(mean ĝ, g)``;
    ``mean_cosine = mean cos(ĝ, g)`` over single draws.
    """

    estimator: str
    name: str
    hparams: dict[str, Any]
    unbiased: bool
    draws: int
    n_samples: int
    exact_norm: float
    bias: float
    relative_bias: float
    bias_se: float
    variance: float
    mse: float
    cosine: float
    mean_cosine: float
    seconds_per_draw: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _normalise(entries: Iterable[EstimatorArg] | None, distribution: str) -> list[tuple[str, dict[str, Any]]]:
    if entries is None:
        return [(s.name, {}) for s in registered(distribution)]
    if isinstance(entries, str):
        entries = [entries]
    out: list[tuple[str, dict[str, Any]]] = []
    for e in entries:
        if isinstance(e, str):
            out.append((e, {}))
        elif isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], dict):
            out.append((e[0], dict(e[1])))
        else:
            raise TypeError(f"Expected each entry of estimators to be a name or a (name, hparams) tuple, but got {e!r}")
    return out


def gradient_draws(
    f: Callable[[torch.Tensor], torch.Tensor],
    params: Params,
    *,
    distribution: str,
    estimator: str,
    draws: int,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    **hparams: Any,
) -> torch.Tensor:
    """``draws`` independent estimates of the gradient of ``sum(E[f])``: ``[draws, *params.shape]``
    (a family with several parameters: ``[draws, total number of parameter entries]``, concatenated
    in declaration order)."""
    family = get_family(distribution)
    leaf = family.map(lambda t: t.detach().requires_grad_(True), params)
    parts = family.split(leaf)
    out: list[torch.Tensor] = []
    for _ in range(draws):
        value = surrogate(f, leaf, distribution=distribution, estimator=estimator, n_samples=n_samples,
                          generator=generator, **hparams)
        grads = torch.autograd.grad(value.sum(), parts)
        out.append(grads[0] if len(grads) == 1 else torch.cat([g.flatten() for g in grads]))
    return torch.stack(out)


def _flat(grad: Params) -> torch.Tensor:
    """One flat float64 vector of a gradient (concatenating the parts of a tuple)."""
    parts = grad if isinstance(grad, tuple) else (grad,)
    return torch.cat([g.flatten() for g in parts]).double()


def compare(
    f: Callable[[torch.Tensor], torch.Tensor],
    params: Params,
    *,
    distribution: str,
    estimators: Iterable[EstimatorArg] | None = None,
    draws: int = 1000,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    batch_ndim: int | None = None,
    max_configs: int = DEFAULT_MAX_CONFIGS,
    exact: Params | None = None,
    **options: Any,
) -> list[GradientReport]:
    """Bias, variance, MSE and cosine of each estimator's gradient against the exact gradient.

    Args:
        f: the cost, as in :func:`discretegrad.surrogate`; it must accept relaxed samples if a
            relaxed estimator is compared.
        params: the distribution's parameters, as in :func:`discretegrad.surrogate`.
        distribution: the family's name, as in :func:`discretegrad.surrogate`.
        estimators: names or ``(name, hparams)`` tuples; ``None`` = all registered for ``distribution``.
        draws: independent gradient estimates per estimator (each from ``n_samples`` samples).
        generator: ``torch.Generator`` for every draw (reproducible tables).
        exact: the exact gradient of ``sum(E[f])`` if already computed (shaped as ``params``, as
            :func:`discretegrad.exact.gradient` returns it); ``None`` enumerates it here.
        **options: the distribution's options (``k=3`` for ``"topk"``), given to the exact oracle
            and to every estimator.

    Returns:
        One :class:`GradientReport` per estimator, in the given order.
    """
    draws = V.positive_int("draws", draws, minimum=2)
    entries = _normalise(estimators, distribution)
    entries = [(name, {**options, **hp}) for name, hp in entries]
    for name, hp in entries:
        get(name, distribution=distribution).check_hparam_names(hp)
    if exact is None:
        exact = exact_gradient(f, params, distribution=distribution, batch_ndim=batch_ndim,
                               max_configs=max_configs, **options)
    exact = _flat(exact)
    n_entries = sum(t.numel() for t in get_family(distribution).split(params))
    if exact.numel() != n_entries:
        raise ValueError(f"Expected exact to have {n_entries} entries (those of params), but got {exact.numel()}")
    exact_norm = float(exact.norm())
    reports = []
    for name, hp in entries:
        spec = get(name, distribution=distribution)
        t0 = time.perf_counter()
        g = gradient_draws(f, params, distribution=distribution, estimator=name, draws=draws,
                           n_samples=n_samples, generator=generator, **hp).flatten(1).double()
        seconds = (time.perf_counter() - t0) / draws
        mean = g.mean(0)
        variance = float(g.var(0).sum())
        bias = float((mean - exact).norm())
        cos_each = torch.nn.functional.cosine_similarity(g, exact.expand_as(g), dim=1, eps=1e-300)
        shown = {key: val for key, val in hp.items() if key not in options}
        reports.append(GradientReport(
            estimator=estimator_label(name, shown), name=name, hparams=shown, unbiased=spec.unbiased, draws=draws,
            n_samples=n_samples, exact_norm=exact_norm, bias=bias,
            relative_bias=bias / exact_norm if exact_norm > 0 else math.inf,
            bias_se=math.sqrt(variance / draws), variance=variance,
            mse=float(((g - exact) ** 2).sum(1).mean()),
            cosine=float(torch.nn.functional.cosine_similarity(mean, exact, dim=0, eps=1e-300)),
            mean_cosine=float(cos_each.mean()), seconds_per_draw=seconds,
        ))
    return reports


_COLUMNS = [("estimator", "estimator", "{}"), ("unbiased", "unbiased", "{}"), ("bias", "bias", "{:.4g}"),
            ("bias_se", "bias SE", "{:.2g}"), ("relative_bias", "rel. bias", "{:.3f}"),
            ("variance", "variance", "{:.4g}"), ("mse", "MSE", "{:.4g}"), ("cosine", "cos(mean, exact)", "{:.4f}"),
            ("mean_cosine", "mean cos", "{:.4f}"), ("seconds_per_draw", "ms/draw", "{:.3f}")]


def _rows(reports: Sequence[GradientReport]) -> tuple[list[str], list[list[str]]]:
    head = [h for _, h, _ in _COLUMNS]
    rows = []
    for r in reports:
        d = r.as_dict()
        d["seconds_per_draw"] *= 1e3
        d["unbiased"] = "yes" if r.unbiased else "no"
        rows.append([fmt.format(d[k]) for k, _, fmt in _COLUMNS])
    return head, rows


def format_table(reports: Sequence[GradientReport]) -> str:
    """Aligned plain-text table of reports."""
    head, rows = _rows(reports)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def to_markdown(reports: Sequence[GradientReport]) -> str:
    """Markdown table of reports."""
    return markdown_table(*_rows(reports))
