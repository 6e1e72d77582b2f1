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
instead of ``n`` sequential steps, and ``μ_t = Σ_j a_{j-1}(t-1) r_j(t) b_j(t) / Z``. The SST backward (the
covariance of the subset indicators times the incoming gradient) is closed-form, the same scans with
first moments (:class:`_ScanMarginals`); autograd through the scans gives it too, and is used where
the derivative must be differentiable again.
Tested against the log-space DP (:func:`discretegrad.structures.topk.topk_marginals_reference`) and
enumeration; timings in ``results/benchmarks/structured.md``.
"""

from __future__ import annotations

import math

import torch

from discretegrad._autograd import under_func_transform

__all__ = ["LOG_RANGE", "scan_dtype", "scan_marginals", "scan_marginals_autograd"]

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


def _prefix(x: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum along the scan dim (dim 0): ``out[t] = Σ_{t' < t} x[t']``."""
    return torch.nn.functional.pad(x[:-1].cumsum(0), (0, 0, 1, 0))


def _weights(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(r, r_back, top)``: ``r [k, L, B]``, ``r[j - 1, t]`` = the centred weight of taking position ``t`` as
    the ``j``-th item; ``r_back`` the same with the positions reversed; ``top [B, k]`` the indices of the
    ``k`` largest entries (the first ``k`` positions). Built in this layout (scan dim before the batch),
    never transposed or flipped as a whole."""
    top = w.detach().topk(k, -1)
    index = top.indices
    c = top.values.t()  # [k, B]: c_1 >= ... >= c_k, detached: the count centres
    c_k = c[k - 1:]
    masked = torch.zeros_like(w, dtype=torch.bool).scatter(-1, index, True)
    rest = torch.exp(w.masked_fill(masked, -math.inf).t() - c_k)  # [n, B], every entry <= c_k: in [0, 1]
    position = torch.arange(k, device=w.device)
    reachable = (position.unsqueeze(0) >= position.unsqueeze(1)).unsqueeze(-1)  # [j - 1, t, 1]: t >= j - 1
    gap = (w.gather(-1, index).t().unsqueeze(0) - c.unsqueeze(1)).masked_fill(~reachable, 0.0)  # [j, t, B], <= 0
    head = torch.exp(gap).masked_fill(~reachable, 0.0)
    # the rest as the j-th item: exp(w - c_j) = exp(c_k - c_j) exp(w - c_k), both factors <= 1
    scale = torch.exp(c_k - c).unsqueeze(1)  # [k, 1, B]
    return _join(head, scale * rest.unsqueeze(0)), _join(scale * rest.flip(0).unsqueeze(0), head.flip(1)), index


def _join(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``torch.cat([first, second], 1)`` of ``[k, *, B]`` tensors, by copies into slices of one buffer
    (differentiable; measured about 10x faster than ``torch.cat`` along dim 1 here, which copies
    element by element)."""
    out = first.new_empty(first.shape[0], first.shape[1] + second.shape[1], first.shape[2])
    out[:, :first.shape[1]] = first
    out[:, first.shape[1]:] = second
    return out


def scan_marginals(w: torch.Tensor, k: int) -> torch.Tensor:
    """Marginals of ``p(S) ∝ exp(Σ_{i∈S} w_i)`` over ``|S| = k`` for float ``w [..., n]``, ``1 <= k <= n``,
    in ``w``'s dtype (pick it with :func:`scan_dtype`); differentiable (any order) when ``w`` requires grad.

    The first derivative (the SST backward) is the closed-form covariance-vector product of
    :class:`_ScanMarginals` (two more scans, for the first moments); a derivative taken with
    ``create_graph`` or under ``torch.func`` goes through autograd of the scans
    (:func:`scan_marginals_autograd`), which is differentiable again."""
    batch, n = w.shape[:-1], w.shape[-1]
    # under torch.compile: autograd through the scans (the Function's create_graph branch calls
    # torch.autograd.grad, which dynamo cannot trace)
    if torch.compiler.is_compiling() or under_func_transform() or not (torch.is_grad_enabled() and w.requires_grad):
        return scan_marginals_autograd(w, k)
    return _ScanMarginals.apply(w.reshape(-1, n), k).reshape(*batch, n)


def scan_marginals_autograd(w: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`scan_marginals` with every derivative by autograd through the scans (the reference for the
    closed-form backward)."""
    batch, n = w.shape[:-1], w.shape[-1]
    mu, *_ = _scans(w.reshape(-1, n), k)
    return mu.reshape(*batch, n)


def _to_items(seq: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """``[L, B]`` per position -> ``[B, n]`` per item (the masked copies of the top ``k`` hold zeros)."""
    seq = seq.t()
    return seq[:, k:].scatter(-1, index, seq[:, :k])


def _scans(w: torch.Tensor, k: int):
    """``(μ [B, n], rows, backwards, taken, (after, reverse), z, index)`` for ``w [B, n]``: the marginals and
    the scans' pieces (per count, ``[L, B]`` each; ``after`` in forward order, ``reverse`` the same in
    reversed order, count ``j`` at index ``j - 1``)."""
    r, backwards, index = _weights(w, k)
    rows = r.unbind(0)  # k tensors [L, B]
    # taken[j - 1][t]: centred weight of the prefixes that take position t as the j-th item
    # (= r_j(t) times the prefixes before t with j - 1 items chosen)
    taken = [rows[0]]
    for j in range(1, k):
        taken.append(rows[j] * _prefix(taken[-1]))
    z = taken[-1].sum(0)  # [B]: the centred partition function, >= 1
    # after[j - 1][t]: centred weight of the suffixes after position t that bring the count from j to k,
    # run on the reversed sequence (forward cumulative sums) and turned back
    backwards = backwards.unbind(0)
    reverse = [rows[0].new_ones(rows[0].shape)] * k  # count k: nothing more to take
    after = list(reverse)
    paths = taken[-1]
    for j in range(k - 1, 0, -1):
        reverse[j - 1] = _prefix(backwards[j] * reverse[j])
        after[j - 1] = reverse[j - 1].flip(0)
        paths = paths + taken[j - 1] * after[j - 1]
    return _to_items(paths / z, index, k), rows, backwards, taken, (after, reverse), z, index


class _ScanMarginals(torch.autograd.Function):
    """The marginals of :func:`_scans` with the closed-form backward ``Cov(X) g``.

    ``(Cov(X) g)_t = E[X_t <g, X>] - μ_t E[<g, X>]``, and ``E[X_t <g, X>]`` is the scans again with first
    moments (the expectation semiring): ``taken'_j = r_j ⊙ shift(cumsum(taken'_{j-1})) + g ⊙ taken_j``
    (the prefix weight times the sum of ``g`` over its items, ``t`` included) and the same from the end
    for ``after'``; ``Z E[X_t <g, X>] = Σ_j taken'_j(t) after_j(t) + taken_j(t) after'_j(t)``. Every
    term is a centred weight times a sum of ``g``'s, so the rounding is relative to ``|g|``. With
    ``create_graph`` the backward is autograd's through the scans instead (differentiable again).
    """

    @staticmethod
    def forward(ctx, w, k):  # type: ignore[override]
        mu, rows, backwards, taken, after, z, index = _scans(w, k)
        ctx.k, ctx.rows, ctx.backwards, ctx.taken, ctx.after, ctx.z, ctx.index = k, rows, backwards, taken, after, z, index
        ctx.save_for_backward(w, mu)
        return mu

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        w, mu = ctx.saved_tensors
        k = ctx.k
        if torch.is_grad_enabled():  # create_graph: a derivative that is differentiable again
            with torch.enable_grad():  # w: the input itself, so the result is a function of it
                (grad,) = torch.autograd.grad(_scans(w, k)[0], w, g, create_graph=True)
            return grad, None
        rows, backwards, taken, index = ctx.rows, ctx.backwards, ctx.taken, ctx.index
        after, reverse = ctx.after
        g_seq = torch.cat([g.gather(-1, index).t(), g.t()], 0)  # [L, B], per position
        g_back = g_seq.flip(0)
        moment = g_seq * taken[0]  # taken'_1
        total = moment * after[0]
        for j in range(1, k):
            moment = torch.addcmul(g_seq * taken[j], rows[j], _prefix(moment))
            total = torch.addcmul(total, moment, after[j])
        reverse_moment = torch.zeros_like(rows[0])  # count k: nothing more to take
        for j in range(k - 1, 0, -1):
            reverse_moment = _prefix(backwards[j] * torch.addcmul(reverse_moment, g_back, reverse[j]))
            total = torch.addcmul(total, taken[j - 1], reverse_moment.flip(0))
        expect = _to_items(total / ctx.z, index, k)  # E[X_i <g, X>]
        return expect - mu * (g * mu).sum(-1, keepdim=True), None
