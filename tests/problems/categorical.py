"""Categorical fixtures for the generic suite."""

from __future__ import annotations

import torch
from scipy import stats

from problems import Case, Problem


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(7)
    out = []
    for b, v, n in [(2, 2, 3), (1, 3, 4)]:
        logits = torch.randn(b, v, n, generator=g, dtype=torch.float64)
        w = torch.randn(v, n, generator=g, dtype=torch.float64)
        c = torch.randn(v * n, generator=g, dtype=torch.float64)

        def f(z, w=w, c=c):
            lin = (z * w).sum((-1, -2))
            return lin**2 + torch.cos(z.flatten(-2) @ c)

        out.append(Problem(f"cat{b}x{v}x{n}", logits, f))
    return out


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    counts = samples.reshape(-1, params.shape[-1]).sum(0).double()
    expected = torch.softmax(params.double(), -1) * counts.sum()
    return float(stats.chisquare(counts.numpy(), expected.numpy()).pvalue)


def _is_valid(z: torch.Tensor) -> bool:
    return bool(((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    return [
        torch.tensor([[big, -big, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [-big, -big, -big, big]], dtype=dtype),
        torch.tensor([[big, big - 1e-3, -big, 3.0]], dtype=dtype),
    ]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    return [
        (torch.tensor([[0.0, float("nan"), 1.0]]), ValueError),
        (torch.tensor([[0.0, float("inf"), 1.0]]), ValueError),
        (torch.tensor([[0, 1, 2]]), TypeError),
        ([[0.0, 1.0]], TypeError),
        (torch.tensor(1.0), ValueError),
    ]


CASE = Case(
    distribution="categorical",
    problems=_problems,
    law_params=lambda: torch.tensor([0.3, -1.0, 1.5, 0.0, -0.2], dtype=torch.float64),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    bad_hparams={"tau": [0.0, -1.0, float("nan"), float("inf"), "1", True],
                 "gap": [-0.5, "p", None, float("nan")],
                 "mc_samples": [0, -3, 2.5, True]},
)
