"""Plackett-Luce log-probabilities: of an ordered prefix, and of an unordered set (Gumbel-top-k).

The decreasing order of Gumbel-perturbed scores ``s_e + G_e`` is Plackett-Luce with log-weights
``s``, so both the Gumbel-top-k law (:func:`subset_log_prob`, behind
:func:`discretegrad.subsets.gumbel_topk_log_prob`) and the law of the perturbed Kruskal tree
(:mod:`.kruskal_law`) are sums of :func:`log_prob` over orderings.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

__all__ = ["log_prob", "subset_log_prob"]


def log_prob(scores: torch.Tensor, order: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``log P(the first L draws are order_1..order_L)`` under Plackett-Luce with log-weights ``scores``.

    ``Σ_j [s_{o_j} - log Σ_{e ∉ {o_1..o_{j-1}}} exp(s_e)]`` (drawing without replacement with
    probabilities ``∝ exp(s)``). ``scores [..., n]``, ``order [..., L]`` (distinct item indices),
    batch dims broadcast; ``valid [..., L]`` (bool) marks the real positions of padded orderings
    (padding after the real ones; it contributes nothing). Returns the broadcast batch shape.
    Differentiable with respect to ``scores``.
    """
    n = scores.shape[-1]
    drawn = torch.nn.functional.one_hot(order, n).bool()  # [..., L, n], order's batch dims only
    if valid is not None:
        drawn = drawn & valid.unsqueeze(-1)
    before = (drawn.cumsum(-2) - drawn.long()) > 0  # items drawn before step j
    if valid is not None:  # padded steps draw from the full pool, so it is never empty (finite gradients)
        before = before & valid.unsqueeze(-1)
    pool = torch.where(before, -math.inf, scores.unsqueeze(-2))  # [..., L, n], broadcast batch dims
    batch = pool.shape[:-2]
    chosen = scores.expand(*batch, n).gather(-1, order.expand(*batch, order.shape[-1]))
    steps = chosen - torch.logsumexp(pool, -1)  # [..., L]
    if valid is not None:
        steps = steps.masked_fill(~valid, 0.0)
    return steps.sum(-1)


@functools.lru_cache(maxsize=16)
def _orderings(k: int) -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.permutations(range(k)))


def subset_log_prob(logits: torch.Tensor, z: torch.Tensor, *, max_orderings: int) -> torch.Tensor:
    """``log P(top-k of θ + G = S)`` for k-hot ``z`` (Gumbel-top-k = sampling without replacement).

    ``P(S) = Σ_{orderings σ of S} Π_j exp(θ_{σ_j}) / Σ_{i ∉ {σ_1..σ_{j-1}}} exp(θ_i)`` (Plackett-Luce),
    summed in log space over the ``k!`` orderings (``k! <= max_orderings``, else ``ValueError``).
    Broadcasts ``logits [..., n]`` against ``z [..., n]``; returns ``z``'s shape without the last dim.
    A set with a masked item (``-inf`` logit) has log-probability ``-inf`` and a zero gradient (its
    terms are computed from finite stand-in logits and then replaced, so no ``-inf - -inf`` arises).
    """
    k = int(z.detach().sum(-1).flatten()[0].round()) if z.numel() else 0
    if math.factorial(k) > max_orderings:
        raise ValueError(f"Expected k with k! <= {max_orderings} for the exact Gumbel-top-k law, but got k = {k}")
    logits, z = torch.broadcast_tensors(logits, z)
    impossible = ((z.detach() > 0) & torch.isneginf(logits.detach())).any(-1)  # [...]: draws a masked item
    logits = torch.where(impossible.unsqueeze(-1), torch.zeros_like(logits), logits)
    idx = z.detach().topk(k, -1).indices.sort(-1).values  # [..., k]
    perms = torch.tensor(_orderings(k), dtype=torch.long, device=z.device)  # [P, k]
    return torch.logsumexp(log_prob(logits.unsqueeze(-2), idx[..., perms]), -1).masked_fill(impossible, -math.inf)
