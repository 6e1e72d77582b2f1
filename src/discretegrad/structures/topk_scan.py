"""Top-k Gibbs marginals by scans over items, one per count: the fast path of :func:`.topk.topk_marginals`.

The marginals ``μ_i = P(i ∈ S)`` of ``p(S) ∝ exp(Σ_{i∈S} w_i)``, ``|S| = k``, do not depend on the order
of the items, so the chain DP of :mod:`.semiring` may visit them in any order. This module visits the
``k`` largest first, in decreasing order, then all ``n`` items with those ``k`` masked out (a sequence of
``L = k + n`` positions; the masked copies carry zero weight), and *centres each count* instead of
each item: the state "``j`` items chosen" is divided by ``exp(c_1 + ... + c_j)``, ``c_j`` the ``j``-th
largest entry (detached). Taking the item at position ``t`` as the ``j``-th then multiplies the state by
``r_j(t) = exp(w_t - c_j) <= 1`` (the order makes every reachable ``(t, j)`` have ``w_t <= c_j``), and
every centred state is a sum of at most ``C(n, k)`` terms in ``[0, 1]``, among them the exact ``1`` of the
best subset. So the DP runs in linear space with no overflow, no ``log(0)`` and no subtraction: its
rounding is relative, like the log-space DP's, and a term that underflows is below ``1e-38`` of a sum
that is at least 1. :data:`LOG_RANGE` bounds ``log C(n, k)`` (products of two states, in the
backward, must stay finite); beyond it :func:`scan_dtype` says to run in float64, or to use the
log-space reference.

For a fixed count the recursion over positions is a cumulative sum, ``a_j = cumsum(r_j ⊙ shift(a_{j-1}))``,
so the DP is ``k`` vectorised scans over the items (forward ``a``, and the same from the end, ``b``)
instead of ``n`` sequential steps, and ``μ_t = Σ_j a_{j-1}(t-1) r_j(t) b_j(t) / Z``. Autograd through these
scans gives the Jacobian (the covariance of the subset indicators), itself differentiable.
Tested against the log-space DP (:func:`discretegrad.structures.topk.topk_marginals_reference`) and
enumeration; timings in ``results/benchmarks/structured.md``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["LOG_RANGE", "scan_dtype", "scan_marginals"]

LOG_RANGE = {torch.float32: 34.0, torch.float64: 340.0}
"""Largest ``log C(n, k)`` per dtype: centred states are at most ``C(n, k)`` and the backward multiplies
two of them, so ``C(n, k)^2`` must be finite (float32 ``3.4e38``: ``e^{2·34} = 3.4e29``; float64 ``1.8e308``)."""


def scan_dtype(n: int, k: int, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype the scan runs in for ``k`` of ``n`` items and a float32/float64 input: the input's when
    ``log C(n, k)`` fits :data:`LOG_RANGE` there, float64 when it fits there, else ``None``."""
    log_count = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    for candidate in ((dtype, torch.float64) if dtype == torch.float32 else (torch.float64,)):
        if log_count <= LOG_RANGE[candidate]:
            return candidate
    return None


def _shift(x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """``x`` moved one position down the scan dim (dim 0), ``value`` in front: ``out[t] = x[t - 1]``."""
    return torch.nn.functional.pad(x[:-1], (0, 0, 1, 0), value=value)


def _weights(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r [k, L, B], top [B, k])``: ``r[j - 1, t]`` = the centred weight of taking position ``t`` as the
    ``j``-th item, and the indices of the ``k`` largest entries (the first ``k`` positions)."""
    top = w.detach().topk(k, -1)
    c, index = top.values, top.indices  # c_1 >= ... >= c_k, detached: the count centres
    c_k = c[:, k - 1:]
    masked = torch.zeros_like(w, dtype=torch.bool).scatter(-1, index, True)
    rest = torch.exp(w.masked_fill(masked, -math.inf) - c_k)  # [B, n], every entry <= c_k: in [0, 1]
    position = torch.arange(k, device=w.device)
    reachable = position.unsqueeze(0) >= position.unsqueeze(1)  # [j - 1, t]: the j-th item needs t >= j - 1
    gap = (w.gather(-1, index).unsqueeze(-2) - c.unsqueeze(-1)).masked_fill(~reachable, 0.0)  # [B, j, t], <= 0
    head = torch.exp(gap).masked_fill(~reachable, 0.0)
    # the rest as the j-th item: exp(w - c_j) = exp(w - c_k) exp(c_k - c_j), both factors <= 1
    tail = torch.exp(c_k - c).unsqueeze(-1) * rest.unsqueeze(-2)  # [B, j, n]
    return torch.cat([head, tail], -1).permute(1, 2, 0).contiguous(), index


def scan_marginals(w: torch.Tensor, k: int) -> torch.Tensor:
    """Marginals of ``p(S) ∝ exp(Σ_{i∈S} w_i)`` over ``|S| = k`` for float ``w [..., n]``, ``1 <= k <= n``,
    in ``w``'s dtype (pick it with :func:`scan_dtype`); differentiable (any order) when ``w`` requires grad."""
    batch, n = w.shape[:-1], w.shape[-1]
    r, index = _weights(w.reshape(-1, n), k)
    rows = r.unbind(0)  # k tensors [L, B]
    ones = torch.ones_like(rows[0])
    # before[j][t]: centred weight of the prefixes before position t with j items chosen (j = 0 .. k-1)
    before = [ones]
    for j in range(1, k):
        before.append(_shift((rows[j - 1] * before[j - 1]).cumsum(0)))
    z = (rows[k - 1] * before[k - 1]).sum(0)  # [B]: the centred partition function, >= 1
    # after[j][t]: the same for the suffixes after position t that bring the count from j to k, run on
    # the reversed sequence (a forward cumulative sum) and turned back once
    backwards = r.flip(1).unbind(0)
    after = [ones]  # count k
    for j in range(k - 1, 0, -1):
        after.append(_shift((backwards[j] * after[-1]).cumsum(0)))
    paths = torch.stack(before, 0) * r * torch.stack(after[::-1], 0).flip(1)  # [k, L, B]
    mu = (paths.sum(0) / z).t()  # [B, L]
    return mu[:, k:].scatter(-1, index, mu[:, :k]).reshape(*batch, n)
