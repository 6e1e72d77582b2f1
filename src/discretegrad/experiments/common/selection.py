"""Instance-wise subset selection for the L2X experiments: the relaxation by name, the test-time
mask, and the selection metrics.

Relaxations: every estimator registered for ``"topk"`` (``l2x``, ``softsub``, ``entropy``,
``binary_entropy``, ... through :func:`discretegrad.surrogate`) and correlated top-k,
``corr_topk``, which is an op of :mod:`discretegrad.subsets` (``relaxation="corr"``) but not a
registered estimator: its forward sample is the chain-coupled argmax, whose law is not the
Gumbel-top-k law of the ``"topk"`` family. The experiments declare it in
``Experiment.local_estimators`` (:data:`LOCAL_ESTIMATORS`), so ``--estimators corr_topk`` (and
``corr_topk:hard=False``) selects it by name like the registered ones.

At test time every relaxation uses the deterministic selection of its structure, as L2X does:
the top-k of the selector's logits, or for ``corr_topk`` the maximiser of
``<θ, x> + Σ φ_i x_i x_{i+1}`` over k-hot ``x`` (no noise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import discretegrad as dg
from discretegrad import structures
from discretegrad.experiments.common.estimators import estimator_kwargs, samples_for
from discretegrad.harness.contract import RunConfig

__all__ = ["DISTRIBUTION", "LOCAL_ESTIMATORS", "needs_pairs", "relaxed_loss", "test_mask",
           "median_rank", "subset_precision", "segments", "adjacent"]

DISTRIBUTION = "topk"

LOCAL_ESTIMATORS: dict[str, dict[str, Any]] = {"corr_topk": {"hard": True, "tau": 1.0}}
"""Correlated top-k (:func:`discretegrad.subsets.topk` with ``relaxation="corr"``) and its defaults."""


def needs_pairs(config: RunConfig) -> bool:
    """Whether the run's relaxation takes pair logits (the selector then outputs them too)."""
    return config.estimator.name in LOCAL_ESTIMATORS


def relaxed_loss(config: RunConfig, f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor,
                 pair_logits: torch.Tensor | None, *, k: int, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Per-row training cost ``[B]``: ``f`` (``[n, B, d] -> [n, B]``) of the run's relaxed selection.

    Registered estimators go through :func:`discretegrad.surrogate` with the protocol's ``tau``
    unless the run fixes one; ``corr_topk`` calls the op with one sample.
    """
    name = config.estimator.name
    if name in LOCAL_ESTIMATORS:
        hp = {**LOCAL_ESTIMATORS[name], "tau": tau, **config.estimator.hparams}
        z = dg.subsets.topk(logits, k, tau=hp["tau"], relaxation="corr", hard=hp["hard"],
                            pair_logits=pair_logits, generator=generator)
        return f(z.unsqueeze(0)).mean(0)
    kwargs = estimator_kwargs(config, DISTRIBUTION, tau)
    return dg.surrogate(f, logits, distribution=DISTRIBUTION, estimator=name, k=k,
                        n_samples=samples_for(name, DISTRIBUTION, 1), generator=generator, **kwargs)


def test_mask(config: RunConfig, logits: torch.Tensor, pair_logits: torch.Tensor | None, k: int) -> torch.Tensor:
    """The deterministic k-hot selection used for evaluation (no noise, no gradient)."""
    with torch.no_grad():
        if needs_pairs(config):
            return structures.corr_topk_hard(logits, pair_logits, k)
        return structures.topk_hard(logits, k)


def median_rank(scores: torch.Tensor, truth: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per row, the median rank of the true features under ``scores`` (rank 1 = largest score).

    ``scores [B, d]``, ``truth`` bool ``[B, d]`` with at least one true feature per row. Ties are
    broken by a random permutation (drawn from ``generator``); an even number of true features
    gives the mean of the two middle ranks (NumPy's median, as L2X's evaluation). Returns ``[B]``
    float64; the optimum is ``(m + 1) / 2`` for ``m`` true features.
    """
    if scores.shape != truth.shape or scores.dim() != 2:
        raise ValueError(f"Expected scores and truth of one shape [B, d], but got {tuple(scores.shape)} "
                         f"and {tuple(truth.shape)}")
    m = truth.sum(1)
    if bool((m == 0).any()):
        raise ValueError("Expected at least one true feature in every row of truth, but got a row with none")
    b, d = scores.shape
    keys = torch.rand(b, d, generator=generator, device=scores.device).argsort(1)  # a random order per row
    shuffled = scores.gather(1, keys)
    order = keys.gather(1, shuffled.argsort(dim=1, descending=True, stable=True))  # ties: random order
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(1, d + 1, device=scores.device).expand(b, d))
    true_ranks = torch.where(truth, rank, d + 1).to(torch.float64).sort(1).values  # true ranks first
    lo, hi = ((m - 1) // 2).unsqueeze(1), (m // 2).unsqueeze(1)
    return (true_ranks.gather(1, lo) + true_ranks.gather(1, hi)).squeeze(1) / 2


def subset_precision(mask: torch.Tensor, truth: torch.Tensor) -> float:
    """Percentage of all selected positions that are true (pooled over rows): ``100 Σ mask·truth / Σ mask``."""
    selected = float(mask.sum())
    if selected == 0:
        raise ValueError("Expected a selection with at least one selected position, but got none")
    return 100.0 * float((mask * truth).sum()) / selected


def segments(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the number of maximal runs of selected positions (1 = one contiguous phrase)."""
    on = mask > 0.5
    starts = on[..., 1:] & ~on[..., :-1]
    return (on[..., 0].long() + starts.sum(-1)).to(torch.float64)


def adjacent(mask: torch.Tensor) -> float:
    """Percentage of all selected positions (pooled over rows) next to another selected position:
    100 for selections made of runs of two or more, 0 when no two selected positions touch."""
    on = mask > 0.5
    touching = torch.zeros_like(on)
    touching[..., 1:] |= on[..., :-1]
    touching[..., :-1] |= on[..., 1:]
    selected = float(on.sum())
    if selected == 0:
        raise ValueError("Expected a selection with at least one selected position, but got none")
    return 100.0 * float((on & touching).sum()) / selected
