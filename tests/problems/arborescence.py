"""Arborescence fixtures for the generic suite (registered estimators use root 0).

As for spanning trees, the perturb-and-max (Chu-Liu/Edmonds) law has no closed form: the law test
compares the samples with reference draws of ``argmax_T Σ_{e∈T} (θ_e + G_e)`` computed here by brute
force over the 16 arborescences of K_4 rooted at 0 (two-sample chi-square). ``problems()`` have no
exact expectation; they drive the shape, generator and bad-input tests.
"""

from __future__ import annotations

import dataclasses

import torch

from problems import Case, Problem, Soak
from problems import _trees as T

N = 4


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, N, N, generator=g, dtype=torch.float64)
    w = torch.randn(N, N, generator=g, dtype=torch.float64)

    def f(z, w=w):
        lin = (z * w).sum((-1, -2))
        return lin**2 + torch.cos(z[..., 0, :].sum(-1))

    return [Problem("arb2x4", logits, f)]


ATOMS = T.arborescences(N, 0)


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    return T.law_pvalue(params, samples, ATOMS, ATOMS, symmetric_noise=False)


def _is_valid(z: torch.Tensor, root: int = 0) -> bool:
    binary = bool(((z == 0) | (z == 1)).all())
    indeg = z.sum(-2)
    others = torch.arange(z.shape[-1]) != root
    one_parent = bool((indeg[..., others] == 1).all() and (indeg[..., root] == 0).all())
    diag = bool((torch.diagonal(z, dim1=-2, dim2=-1) == 0).all())
    return binary and one_parent and diag and bool(T.reach_all(z, root).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    a = torch.tensor([[0, big, -big, 1.0], [-big, 0, -big, big], [big, -big, 0, big], [1.0, big, big, 0]])
    return [a.to(dtype), torch.full((N, N), big, dtype=dtype), torch.full((2, 3, 3), -big, dtype=dtype)]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    nan = torch.zeros(3, 3)
    nan[0, 1] = float("nan")
    return [
        (nan, ValueError),
        (torch.zeros(3, 4), ValueError),
        (torch.zeros(1, 1), ValueError),
        (torch.zeros(3), ValueError),
        (torch.zeros(3, 3, dtype=torch.int64), TypeError),
        ([[0.0, 1.0], [1.0, 0.0]], TypeError),
    ]


CASE = Case(
    distribution="arborescence",
    problems=_problems,
    law_params=lambda: torch.tensor([[0.0, 1.2, -0.5, 0.3], [0.4, 0.0, 0.8, -1.0],
                                     [-0.3, 0.9, 0.0, 0.4], [1.0, -0.7, 0.2, 0.0]], dtype=torch.float64) * 1.5,
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    bad_hparams={"tau": [0.0, -1.0, float("nan"), float("inf"), "1", True],
                 "root": [-1, 4, 1.0, True, None]},
)

CASE = dataclasses.replace(CASE, soak=Soak(
    sizes=(2, 7),
    event_shape=lambda n: (n, n),
    options=lambda n: [{"root": r} for r in range(n)],
    in_hull=lambda z, tol, root: T.in_tree_polytope(z, tol, directed=True, root=root),
))

CASE = dataclasses.replace(
    CASE,
    references={"entropy": T.ref_arborescence,
                "entropy_relaxed": lambda *a, **kw: T.ref_arborescence(*a, **kw, hard=False)},
    reference_params=lambda g: torch.randn(3, 4, 4, generator=g, dtype=torch.float64) * 2,
    reference_grid={"tau": [0.3, 1.0, 2.5], "root": [0, 2]},
)
