"""Spanning-tree fixtures for the generic suite.

The law test compares the samples with reference draws of ``argmax_T Σ_{e∈T} (θ_e + G_e)``
computed here by brute force over the 16 spanning trees of K_4 (two-sample chi-square), independently
of the library's exact law (``structures.kruskal_law``, checked against sample frequencies in
``test_exact_structures.py``). ``problems()`` use n = 4, where ``dg.exact.expectation`` is exact.
"""

from __future__ import annotations

import dataclasses

import torch

from problems import Case, Problem, Soak
from problems import _trees as T

N = 4


def _sym(x: torch.Tensor) -> torch.Tensor:
    return (x + x.transpose(-1, -2)) / 2


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(7)
    logits = _sym(torch.randn(2, N, N, generator=g, dtype=torch.float64))
    w = _sym(torch.randn(N, N, generator=g, dtype=torch.float64))

    def f(z, w=w):
        lin = (z * w).sum((-1, -2))
        return lin**2 + torch.cos(z[..., 0, :].sum(-1))

    return [Problem("tree2x4", logits, f)]


ATOMS = T.undirected_trees(N)


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    return T.law_pvalue(params, samples, ATOMS, torch.triu(ATOMS, 1), symmetric_noise=True)


def _is_valid(z: torch.Tensor) -> bool:
    n = z.shape[-1]
    binary = bool(((z == 0) | (z == 1)).all())
    sym = bool((z == z.transpose(-1, -2)).all())
    diag = bool((torch.diagonal(z, dim1=-2, dim2=-1) == 0).all())
    count = bool((z.sum((-1, -2)) == 2 * (n - 1)).all())
    return binary and sym and diag and count and bool(T.reach_all(z, 0).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    a = torch.tensor([[0, big, -big, 1.0], [big, 0, -big, -big], [-big, -big, 0, big], [1.0, -big, big, 0]])
    return [a.to(dtype), torch.full((N, N), big, dtype=dtype), torch.full((2, 3, 3), -big, dtype=dtype)]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    nan = torch.zeros(3, 3)
    nan[0, 1] = nan[1, 0] = float("nan")
    asym = torch.zeros(3, 3)
    asym[0, 1] = 1.0
    return [
        (nan, ValueError),
        (torch.zeros(3, 4), ValueError),  # not square
        (asym, ValueError),  # not symmetric
        (torch.zeros(1, 1), ValueError),  # n < 2
        (torch.zeros(3), ValueError),  # not a matrix
        (torch.zeros(3, 3, dtype=torch.int64), TypeError),
        ([[0.0, 1.0], [1.0, 0.0]], TypeError),
    ]


CASE = Case(
    distribution="spanning_tree",
    problems=_problems,
    law_params=lambda: _sym(torch.tensor([[0.0, 1.2, -0.5, 0.3], [0.0, 0.0, 0.8, -1.0],
                                          [0.0, 0.0, 0.0, 0.4], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64) * 2),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    bad_hparams={"tau": [0.0, -1.0, float("nan"), float("inf"), "1", True]},
)

CASE = dataclasses.replace(CASE, soak=Soak(
    sizes=(2, 7),
    event_shape=lambda n: (n, n),
    to_params=_sym,
    in_hull=lambda z, tol: T.in_tree_polytope(z, tol, directed=False),
))

CASE = dataclasses.replace(
    CASE,
    references={"entropy": T.ref_spanning_tree,
                "entropy_relaxed": lambda *a, **kw: T.ref_spanning_tree(*a, **kw, hard=False)},
    reference_params=lambda g: _sym(torch.randn(3, 4, 4, generator=g, dtype=torch.float64) * 2),
    reference_grid={"tau": [0.3, 1.0, 2.5]},
    # the marginals' matrix inverse (structures/kirchhoff.py) is accurate to 2 eps kappa |J v| (measured),
    # kept where kappa <= 1e6: here kappa reaches 1.5e4 at tau = 0.3 and the error 2e-12
    reference_atol=1e-10,
)
