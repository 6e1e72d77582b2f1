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

For a fixed count the recursion over positions is a cumulative sum, ``a_j = r_j ⊙ shift(cumsum(a_{j-1}))``,
so the DP is ``k`` vectorised scans over the items (forward ``a``, and the same from the end, ``d``)
instead of ``n`` sequential steps, and ``μ_t = Σ_j a_j(t) d_j(t) / Z``. The weights are never built as
``k`` full rows: ``r_j`` is the ``[k, k]`` block of the top items (``exp(c_t - c_j)``) and, for the rest,
one row ``ρ = exp(w - c_k)`` times the per-row number ``exp(c_k - c_j)``.

Two implementations of the same scans, in the layout ``[B, L]`` (a row per problem, the positions
along the last dim, where torch's CPU ``cumsum`` is fastest):

* :class:`_ScanMarginals` (the default): the forward and the closed-form SST backward (the
  covariance of the subset indicators times the incoming gradient, the scans again with first
  moments) written with in-place and ``out=`` kernels into two ``[k, B, L]`` buffers, the suffix
  scans run on the reversed sequence, so no full-size temporary is allocated per count;
* :func:`scan_marginals_autograd`: out-of-place, every derivative by autograd (used with
  ``create_graph``, under ``torch.func`` transforms and under ``torch.compile``; the reference for
  the closed-form backward).

Tested against each other, the log-space DP (:func:`discretegrad.structures.topk.topk_marginals_reference`)
and enumeration (``tests/test_topk_scan.py``); timings in ``results/benchmarks/structured.md``.
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


def scan_marginals(w: torch.Tensor, k: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """Marginals of ``p(S) ∝ exp(Σ_{i∈S} w_i)`` over ``|S| = k`` for float ``w [..., n]``, ``1 <= k <= n``,
    in ``w``'s dtype (pick it with :func:`scan_dtype`); differentiable (any order) when ``w`` requires grad.
    ``index [..., k]``: ``w.topk(k).indices`` if the caller has them (not checked), else computed here.

    The first derivative (the SST backward) is the closed-form covariance-vector product of
    :class:`_ScanMarginals`; a derivative taken with ``create_graph`` or under ``torch.func`` goes
    through autograd of the scans (:func:`scan_marginals_autograd`), which is differentiable again."""
    batch, n = w.shape[:-1], w.shape[-1]
    # under torch.compile: autograd through the scans (the Function's in-place kernels and its
    # create_graph branch, which calls torch.autograd.grad, are not traced)
    if torch.compiler.is_compiling() or under_func_transform():
        return scan_marginals_autograd(w, k, index)
    index = None if index is None else index.reshape(-1, k)
    return _ScanMarginals.apply(w.reshape(-1, n), k, index).reshape(*batch, n)


def scan_marginals_autograd(w: torch.Tensor, k: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`scan_marginals` with every derivative by autograd through the scans (the reference for the
    closed-form backward)."""
    batch, n = w.shape[:-1], w.shape[-1]
    index = None if index is None else index.reshape(-1, k)
    return _scans(w.reshape(-1, n), k, index).reshape(*batch, n)


# ----------------------------------------------------------------------------- the weights

def _weights(w: torch.Tensor, k: int, index: torch.Tensor | None):
    """``(head, rho, scale, index)`` for ``w [B, n]``: ``head [B, k, k]``, ``head[:, j - 1, t] = exp(c_{t+1} - c_j)``
    (the top item at position ``t`` taken as the ``j``-th; 0 where ``t < j - 1``, unreachable);
    ``rho [B, n] = exp(w - c_k)``, 0 at the top ``k``; ``scale [B, k] = exp(c_k - c_j)`` (detached), so that the
    rest's weight as the ``j``-th item is ``scale_j ρ``; ``index [B, k]`` the top items, largest first. All in
    ``[0, 1]``. Differentiable in ``w`` through ``head`` and ``rho``. ``index``: the top items if known."""
    if index is None:
        top = w.detach().topk(k, -1)
        index, c = top.indices, top.values  # c_1 >= ... >= c_k: the count centres
    else:
        c = w.detach().gather(-1, index)
    c_k = c[:, k - 1:]
    masked = torch.zeros_like(w, dtype=torch.bool).scatter(-1, index, True)
    rho = torch.exp(w.masked_fill(masked, -math.inf) - c_k)
    position = torch.arange(k, device=w.device)
    unreachable = position.unsqueeze(0) < position.unsqueeze(1)  # [j - 1, t]: t < j - 1
    gap = w.gather(-1, index).unsqueeze(1) - c.unsqueeze(2)  # [B, j, t]: w_t - c_j
    head = torch.exp(gap.masked_fill(unreachable, -math.inf))  # masked before exp: no exp of a positive gap
    return head, rho, torch.exp(c_k - c), index


def _to_items(seq: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, L]`` per position -> ``[B, n]`` per item (the masked copies of the top ``k`` hold zeros)."""
    return seq[:, k:].scatter(-1, index, seq[:, :k])


# ----------------------------------------------------------------------------- out of place (autograd)

def _prefix(x: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum along the last dim: ``out[..., t] = Σ_{t' < t} x[..., t']``."""
    return torch.nn.functional.pad(x[..., :-1].cumsum(-1), (1, 0))


def _suffix(x: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum from the end: ``out[..., t] = Σ_{t' > t} x[..., t']`` (no subtraction)."""
    return _prefix(x.flip(-1)).flip(-1)


def _scans(w: torch.Tensor, k: int, index: torch.Tensor | None) -> torch.Tensor:
    """The marginals ``[B, n]`` for ``w [B, n]`` by out-of-place scans (differentiable by autograd)."""
    head, rho, scale, index = _weights(w, k, index)
    rows = [torch.cat([head[:, j], rho * scale[:, j:j + 1]], -1) for j in range(k)]  # r_{j+1} [B, L]
    taken = [rows[0]]  # a_j: prefixes that take position t as the j-th item
    for j in range(1, k):
        taken.append(rows[j] * _prefix(taken[-1]))
    after = torch.ones_like(rows[0])  # d_k: nothing more to take
    paths = taken[-1]
    for j in range(k - 1, 0, -1):  # d_j = suffix(r_{j+1} ⊙ d_{j+1})
        after = _suffix(rows[j] * after)
        paths = paths + taken[j - 1] * after
    return _to_items(paths / taken[-1].sum(-1, keepdim=True), index, k)


# ----------------------------------------------------------------------------- in place (closed form)

def _times_r(x: torch.Tensor, head: torch.Tensor, rho: torch.Tensor, scale: torch.Tensor, reverse: bool,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """``x ⊙ r_j`` for ``x [B, L]`` and the weights of one count (``head [B, k]``, ``scale [B, 1]``), written
    into ``out`` (default: ``x``, in place). With ``reverse`` the positions are in reversed order (the rest
    first, then the top items), and so are ``head`` and ``rho``."""
    out = x if out is None else out
    k = head.shape[-1]
    top, rest = (slice(-k, None), slice(None, -k)) if reverse else (slice(None, k), slice(k, None))
    torch.mul(x[:, top], head, out=out[:, top])
    torch.mul(x[:, rest], rho, out=out[:, rest]).mul_(scale)
    return out


def _prefix_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The exclusive cumulative sum of ``x [B, L]`` along the last dim, written into ``out``."""
    out[:, 0] = 0
    torch.cumsum(x[:, :-1], -1, out=out[:, 1:])
    return out


def _forward(w: torch.Tensor, k: int, index: torch.Tensor | None):
    """``(μ [B, n], saved)``: the marginals by the scans, in place; ``saved`` holds the weights, the prefix
    states ``a [k, B, L]`` and the suffix states ``d_1 .. d_{k-1}`` in reversed order (``[k - 1, B, L]``)."""
    head, rho, scale, index = _weights(w, k, index)
    b, n = w.shape
    taken = w.new_empty(k, b, k + n)
    taken[0, :, :k] = head[:, 0]
    torch.mul(rho, scale[:, :1], out=taken[0, :, k:])
    for j in range(1, k):
        _times_r(_prefix_into(taken[j - 1], taken[j]), head[:, j], rho, scale[:, j:j + 1], False)
    z = taken[k - 1].sum(-1, keepdim=True)  # the centred partition function, >= 1
    head_back, rho_back = head.flip(-1), rho.flip(-1)
    after_back = w.new_empty(max(k - 1, 1), b, k + n)  # d_j reversed at j - 1; d_k = 1 is not stored
    paths = taken[k - 1].clone()
    step = torch.empty_like(paths)
    for j in range(k - 1, 0, -1):  # d_j = suffix(r_{j+1} ⊙ d_{j+1}), a prefix over the reversed positions
        if j == k - 1:
            step[:, n:] = head_back[:, j]
            torch.mul(rho_back, scale[:, j:j + 1], out=step[:, :n])
        else:
            _times_r(after_back[j], head_back[:, j], rho_back, scale[:, j:j + 1], True, step)
        paths.addcmul_(taken[j - 1], _prefix_into(step, after_back[j - 1]).flip(-1))
    mu = _to_items(paths.div_(z), index, k)
    return mu, (head, rho, scale, index, taken, after_back, z)


def _backward(g: torch.Tensor, mu: torch.Tensor, saved, k: int) -> torch.Tensor:
    """``Cov(X) g = E[X <g, X>] - μ E[<g, X>]`` for the incoming gradient ``g [B, n]``.

    ``Z E[X_t <g, X>] = Σ_j m_j(t) d_j(t) + a_j(t) e_j(t)``: ``m_j`` the prefix weights times the sum of
    ``g`` over their items (``m_j = g ⊙ a_j + r_j ⊙ shift(cumsum(m_{j-1}))``, the expectation semiring),
    ``e_j`` the suffix weights times the same over theirs (``e_j = suffix(r_{j+1} ⊙ (e_{j+1} + g ⊙ d_{j+1}))``).
    Every term is a centred weight times a sum of ``g``'s, so the rounding is relative to ``|g|``."""
    head, rho, scale, index, taken, after_back, z = saved
    head_back, rho_back = head.flip(-1), rho.flip(-1)
    g_seq = torch.cat([g.gather(-1, index), g], -1)  # [B, L], per position
    g_back = g_seq.flip(-1)
    moment = g_seq * taken[0]
    total = moment * after_back[0].flip(-1) if k > 1 else moment.clone()
    spare = torch.empty_like(moment)
    for j in range(1, k):
        _times_r(_prefix_into(moment, spare), head[:, j], rho, scale[:, j:j + 1], False).addcmul_(g_seq, taken[j])
        moment, spare = spare, moment
        if j < k - 1:
            total.addcmul_(moment, after_back[j].flip(-1))
        else:  # d_k = 1
            total.add_(moment)
    reverse = spare  # e_j reversed; e_k = 0
    step = torch.empty_like(moment)
    for j in range(k - 1, 0, -1):
        source = g_back if j == k - 1 else torch.addcmul(reverse, g_back, after_back[j], out=step)
        _times_r(source, head_back[:, j], rho_back, scale[:, j:j + 1], True, step)
        total.addcmul_(taken[j - 1], _prefix_into(step, reverse).flip(-1))
    expect = _to_items(total.div_(z), index, k)  # E[X_i <g, X>]
    return expect - mu * (g * mu).sum(-1, keepdim=True)


class _ScanMarginals(torch.autograd.Function):
    """The marginals of :func:`_forward` with the closed-form backward :func:`_backward`. With
    ``create_graph`` the backward is autograd's through :func:`_scans` instead (differentiable again)."""

    @staticmethod
    def forward(ctx, w, k, index):  # type: ignore[override]
        mu, saved = _forward(w, k, index)
        ctx.k, ctx.saved = k, saved
        ctx.save_for_backward(w, mu)
        return mu

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        w, mu = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a derivative that is differentiable again
            with torch.enable_grad():  # w: the input itself, so the result is a function of it
                (grad,) = torch.autograd.grad(_scans(w, ctx.k, ctx.saved[3]), w, g, create_graph=True)
            return grad, None, None
        return _backward(g.contiguous(), mu, ctx.saved, ctx.k), None, None
