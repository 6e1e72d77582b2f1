"""k-subset solvers and Gibbs marginals: plain top-k and correlated (chain-coupled) top-k.

The plain top-k marginals are the count-centred scans of :mod:`.topk_scan` (the log-space chain DP
of :mod:`.semiring` is kept as :func:`topk_marginals_reference`). Correlated top-k is the chain DP
of :mod:`.semiring` (from both ends, with the closed-form backward of :mod:`.corr_marginals`; by
autograd in :func:`corr_topk_marginals_reference`): the marginals are ``∂ log Z / ∂ u`` by autograd (sum
semiring) and the correlated maximiser is the max-semiring traceback (equal to ``∂ max / ∂ u``). The plain top-k
maximiser is ``torch.topk`` (no DP needed: the best k-subset of a linear score is its k largest
entries).
"""

from __future__ import annotations

import torch

from discretegrad._autograd import compute_dtype, under_func_transform
from discretegrad.structures.corr_marginals import corr_marginals
from discretegrad.structures.logspace import gradient
from discretegrad.structures.semiring import chain_argmax, chain_score
from discretegrad.structures.topk_scan import scan_dtype, scan_marginals

__all__ = ["topk_hard", "k_hot", "topk_marginals", "topk_marginals_reference", "corr_topk_hard", "corr_topk_marginals",
           "corr_topk_marginals_reference"]


def topk_hard(u: torch.Tensor, k: int) -> torch.Tensor:
    """k-hot indicator of the ``k`` largest entries of ``u`` along the last dim (exactly ``k`` ones)."""
    return k_hot(u.topk(k, dim=-1).indices, u)


def k_hot(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The 0/1 tensor of ``like``'s shape and dtype with ones at ``index [..., k]`` along the last dim."""
    return torch.zeros_like(like).scatter(-1, index, 1.0)  # out of place: vmap has a batching rule


def topk_marginals(w: torch.Tensor, k: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """Marginals ``μ_i = P(i ∈ S)`` of ``p(S) ∝ exp(Σ_{i∈S} w_i)`` over ``|S| = k``.

    The count-centred scans of :func:`~discretegrad.structures.topk_scan.scan_marginals` (``k`` vectorised
    scans over the items instead of ``n`` DP steps; float64 when ``log C(n, k)`` is beyond float32's
    :data:`~discretegrad.structures.topk_scan.LOG_RANGE`), or :func:`topk_marginals_reference` when it is
    beyond float64's too. Half inputs are computed in float32; the result has ``w``'s dtype.
    Differentiable when ``w`` requires grad (the Jacobian is the covariance of the subset indicators).

    ``index [..., k]``: the indices of the ``k`` largest entries of ``w``, largest first, as
    ``w.topk(k).indices`` returns them (or those of ``a w + b`` for ``a > 0``, the same order); a caller
    that has them (the hard sample) saves the scan its own ``topk``. Not checked.
    """
    work = scan_dtype(w.shape[-1], k, compute_dtype(w.dtype))
    if work is None:
        return topk_marginals_reference(w, k)
    return scan_marginals(w.to(work), k, index).to(w.dtype)


def topk_marginals_reference(w: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`topk_marginals` the straightforward way (the slow reference the fast path is tested against).

    ``μ = ∂ log Z / ∂ w`` with ``log Z`` the (item, count) chain DP in the log semiring
    (:func:`~discretegrad.structures.semiring.chain_score`, no pair terms, ``n`` sequential steps).
    """
    return gradient(lambda x: chain_score(x, k, semiring="sum"), w)


def corr_topk_marginals(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Marginals ``P(x_i = 1)`` of ``p(x) ∝ exp(Σ u_i x_i + Σ v_i x_i x_{i+1})`` over ``Σx = k``.

    The chain DP from both ends with the closed-form SST backward of
    :func:`~discretegrad.structures.corr_marginals.corr_marginals` (under ``torch.func`` transforms and
    for one item: :func:`corr_topk_marginals_reference`). Differentiable with respect to ``u`` and ``v``
    when they require grad (to any order).
    """
    if under_func_transform() or u.shape[-1] < 2:
        return corr_topk_marginals_reference(u, v, k)
    return corr_marginals(u, v, k, corr_topk_marginals_reference)


def corr_topk_marginals_reference(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`corr_topk_marginals` the straightforward way (the reference the fast path is tested against):
    ``∂ log Z / ∂ u`` with ``log Z`` the (item, count, state) chain DP in the log semiring, by autograd."""
    return gradient(lambda x, pair: chain_score(x, k, pair, semiring="sum"), u, v)


def corr_topk_hard(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Maximiser of ``Σ u_i x_i + Σ v_i x_i x_{i+1}`` over k-hot ``x`` (no gradient).

    The traceback of the max-semiring chain DP (:func:`~discretegrad.structures.semiring.chain_argmax`,
    equal to ``∂ max / ∂ u``); ties go to ``x_i = 0``.
    """
    return chain_argmax(u, k, v)
