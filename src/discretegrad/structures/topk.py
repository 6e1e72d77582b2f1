"""k-subset solvers and Gibbs marginals: plain top-k and correlated (chain-coupled) top-k.

Both are the chain DP of :mod:`.semiring`: the marginals are ``∂ log Z / ∂ u`` by autograd (sum
semiring) and the correlated maximiser is the max-semiring traceback (equal to ``∂ max / ∂ u``). The plain top-k
maximiser is ``torch.topk`` (no DP needed: the best k-subset of a linear score is its k largest
entries).
"""

from __future__ import annotations

import torch

from discretegrad.structures.logspace import gradient
from discretegrad.structures.semiring import chain_argmax, chain_score

__all__ = ["topk_hard", "topk_marginals", "corr_topk_hard", "corr_topk_marginals"]


def topk_hard(u: torch.Tensor, k: int) -> torch.Tensor:
    """k-hot indicator of the ``k`` largest entries of ``u`` along the last dim (exactly ``k`` ones)."""
    index = u.topk(k, dim=-1).indices
    return torch.zeros_like(u).scatter(-1, index, 1.0)  # out of place: vmap has a batching rule


def topk_marginals(w: torch.Tensor, k: int) -> torch.Tensor:
    """Marginals ``μ_i = P(i ∈ S)`` of ``p(S) ∝ exp(Σ_{i∈S} w_i)`` over ``|S| = k``.

    ``μ = ∂ log Z / ∂ w`` with ``log Z`` the (item, count) chain DP in the log semiring
    (:func:`~discretegrad.structures.semiring.chain_score`, no pair terms). Differentiable when ``w``
    requires grad (the Jacobian is the covariance of the subset indicators).
    """
    return gradient(lambda x: chain_score(x, k, semiring="sum"), w)


def corr_topk_marginals(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Marginals ``P(x_i = 1)`` of ``p(x) ∝ exp(Σ u_i x_i + Σ v_i x_i x_{i+1})`` over ``Σx = k``.

    ``∂ log Z / ∂ u`` with ``log Z`` the (item, count, state) chain DP in the log semiring.
    Differentiable with respect to ``u`` and ``v`` when they require grad.
    """
    return gradient(lambda x, pair: chain_score(x, k, pair, semiring="sum"), u, v)


def corr_topk_hard(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Maximiser of ``Σ u_i x_i + Σ v_i x_i x_{i+1}`` over k-hot ``x`` (no gradient).

    The traceback of the max-semiring chain DP (:func:`~discretegrad.structures.semiring.chain_argmax`,
    equal to ``∂ max / ∂ u``); ties go to ``x_i = 0``.
    """
    return chain_argmax(u, k, v)
