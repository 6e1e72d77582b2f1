"""Binomial fixtures for the generic suite: ``total_count`` is a required option (``test_hparams``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import stats

from problems import Case, Problem, Soak

N = 3  # trials


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(17)
    out = []
    for b, v in [(2, 2), (1, 3)]:
        logits = 1.5 * torch.randn(b, v, generator=g, dtype=torch.float64)
        w = torch.randn(v, generator=g, dtype=torch.float64)

        def f(z, w=w):
            # nonlinear in z and coupling the variables; defined for real z (MuProp)
            return torch.sin(z @ w) + 0.1 * z.sum(-1) ** 2

        out.append(Problem(f"binom{b}x{v}_n{N}", logits, f))
    return out


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    """χ² over the N + 1 counts per coordinate against scipy's Binomial pmf (statistics and
    degrees of freedom summed over coordinates; every expected count is large at the law params)."""
    p = torch.sigmoid(params.double()).flatten().numpy()
    m = samples.shape[0]
    z = samples.reshape(m, -1).double().numpy()
    stat, dof = 0.0, 0
    for j, pj in enumerate(p):
        expected = m * stats.binom.pmf(np.arange(N + 1), N, pj)
        observed = np.bincount(z[:, j].astype(np.int64), minlength=N + 1)
        stat += float(((observed - expected) ** 2 / expected).sum())
        dof += N
    return float(stats.chi2.sf(stat, dof))


def _is_valid(z: torch.Tensor, total_count: int = N) -> bool:
    return bool(((z >= 0) & (z <= total_count) & (z == torch.round(z))).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    return [torch.tensor([big, -big, 0.0, 30.0, -30.0], dtype=dtype),
            torch.tensor([[big, big], [-big, 5.0]], dtype=dtype)]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    return [
        (torch.tensor([0.0, float("nan")]), ValueError),
        (torch.tensor([float("inf"), 1.0]), ValueError),
        (torch.tensor([0, 1]), TypeError),
        ([0.0, 1.0], TypeError),
    ]


def _ref_st(theta, out, v, generator, total_count=N):
    p = torch.sigmoid(theta)
    expected = torch.binomial(torch.full_like(theta, float(total_count)), p, generator=generator)
    assert torch.equal(out.detach(), expected)  # forward: the Binomial draw
    return v * total_count * p * (1 - p)  # d/dθ of the mean n σ(θ)


CASE = Case(
    distribution="binomial",
    problems=_problems,
    law_params=lambda: torch.tensor([0.3, -1.0, 1.5, 0.0], dtype=torch.float64),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    bad_hparams={"total_count": [0, -1, 2.5, True, "3", None],
                 "baseline": ["b", True, float("nan"), torch.zeros(13, 17)]},
    test_hparams={"total_count": N},
    references={"st": _ref_st},
    reference_params=lambda g: torch.randn(6, 4, generator=g, dtype=torch.float64) * 2,
    reference_grid={"total_count": [1, 3, 10]},
)

CASE = dataclasses.replace(CASE, soak=Soak(sizes=(1, 1), event_shape=lambda n: (),
                                           options=lambda n: [{"total_count": t} for t in (1, 2, 7, 100, 10_000)]))
