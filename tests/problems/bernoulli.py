"""Bernoulli fixtures for the generic suite."""

from __future__ import annotations

import torch
from scipy import stats

from problems import Case, Problem


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(11)
    out = []
    for b, v in [(2, 3), (1, 5)]:
        logits = 1.5 * torch.randn(b, v, generator=g, dtype=torch.float64)
        w = torch.randn(v, generator=g, dtype=torch.float64)
        c = torch.randn(v, generator=g, dtype=torch.float64)

        def f(z, w=w, c=c):
            # nonlinear, couples the variables, accepts relaxed z in [0, 1]
            return (z @ w) ** 2 + torch.cos(2 * (z @ c))

        out.append(Problem(f"bern{b}x{v}", logits, f))
    return out


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    """Frequency test: Σ_j (k_j - M p_j)² / (M p_j (1-p_j)) over coordinates ~ χ²(d) (normal approximation)."""
    p = torch.sigmoid(params.double()).flatten()
    m = samples.shape[0]
    k = samples.reshape(m, -1).double().sum(0)
    stat = float((((k - m * p) ** 2) / (m * p * (1 - p))).sum())
    return float(stats.chi2.sf(stat, p.numel()))


def _is_valid(z: torch.Tensor) -> bool:
    return bool(((z == 0) | (z == 1)).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    return [
        torch.tensor([big, -big, 0.0, 30.0, -30.0, 1e-3], dtype=dtype),
        torch.tensor([[big, big], [-big, 5.0]], dtype=dtype),
    ]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    return [
        (torch.tensor([0.0, float("nan"), 1.0]), ValueError),
        (torch.tensor([0.0, float("inf")]), ValueError),
        (torch.tensor([-float("inf"), 1.0]), ValueError),
        (torch.tensor([0, 1, 2]), TypeError),
        ([0.0, 1.0], TypeError),
    ]


_POSITIVE = [0.0, -1.0, float("nan"), float("inf"), "1", True]

CASE = Case(
    distribution="bernoulli",
    problems=_problems,
    law_params=lambda: torch.tensor([0.3, -1.0, 1.5, 0.0, -2.5, 3.0], dtype=torch.float64),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    bad_hparams={"tau": _POSITIVE,
                 "bandwidth": _POSITIVE,
                 "step": _POSITIVE,
                 "kernel": ["gaussian", None, 1],
                 "baseline": ["b", True, float("nan"), torch.zeros(13, 17)],
                 "control_variate": [1.0, "net"],
                 "eta": [float("nan"), float("inf"), "1", True]},
)
