"""Edge marginals of spanning trees and arborescences by one matrix inverse (Kirchhoff; Koo et al. 2007).

The fast path of :func:`discretegrad.structures.matrix_tree.tree_marginals`. It subtracts
(``L = D - A``), so it is used only where its measured error bound holds; elsewhere the caller's
subtraction-free elimination (:mod:`.matrix_tree`) takes the batch elements it refuses.

The matrix. ``A_ij = exp(w_ij - c_j)`` (edge ``i → j``; ``c_j`` the largest in-weight of ``j``,
detached; the diagonal and the root's column are zero), ``d_j = Σ_i A_ij``, and
``L' = diag(d + e_r) - A``. Its column ``r`` (the root) is ``e_r``, so ``det L' = det L̂`` (the
Laplacian with the root's row and column removed: the matrix-tree theorem) and the non-root block
of ``M = L'^{-1}`` is ``L̂^{-1}``, while ``M_jr = 0`` for ``j != r``. Then
``∂ log Z / ∂A_ij = M_jj - M_ji`` (Koo et al.; the ``M_jr = 0`` entries give the root's row), so

    μ_ij = A_ij (M_jj - M_ji),

with no index arithmetic for the root. Undirected trees are arborescences of the symmetrised
weights ``(w + wᵀ)/2`` rooted at ``n - 1`` (any root gives the same trees), ``μ + μᵀ``.

The SST backward ``J g`` (``J = ∂μ/∂w``, the covariance of the edge indicators) in closed form:
with ``P_ij = M_jj - M_ji``, ``H = g ⊙ A``, ``h_j = Σ_i H_ij``, ``Q = diag(h) - Hᵀ`` and
``R = Mᵀ Q Mᵀ``, ``∂<g, μ>/∂A_ij = g_ij P_ij + R_ij - R_jj``, times ``A_ij`` for ``w``
(two batched matrix products). With ``create_graph`` the backward is autograd's through the
formula instead, so the marginals are differentiable to any order.

The bound. The computed ``M`` gives ``κ = ||L'||_1 ||M||_1`` (``||L'||_1 = max(2 max_j d_j, 1)``) at
the cost of one reduction. Measured against the log-space elimination in float64
(``benchmarks/tree_marginals_accuracy.py``, ``results/benchmarks/tree_marginals_accuracy.md``: Gumbel
problems at ``τ`` from 1 to 0.01, wide normal weights, weakly joined clusters, a weak vertex or root,
n = 6, 20, 50, both structures), the marginals' absolute error stayed below ``2 ε κ`` and that of
``J g`` below ``2 ε κ max(1, ||J g||_∞)`` (``ε = 2.2e-16``; the committed run: ``1.14 ε κ`` and
``1.33 ε κ``, an earlier sample of the same families ``0.6`` and ``1.96``); the spread of the weights
does not predict it (in that earlier sample: errors of ``1e-2`` at spread 30, ``1e-11`` at spread
140). Low temperatures make undirected problems ill-conditioned first (a weak cut of the heavy
tree): at n = 50 the bound refuses most undirected Gumbel problems from ``τ = 0.3`` on, directed ones
from ``τ = 0.1``. A batch element takes this path when
``κ <= KAPPA_MAX[dtype]`` (float64 for float64 inputs, float32 for float32 and half ones), which keeps both errors
below ``4.4e-10`` in float64 and ``4.4e-8`` for float32 and half inputs (computed in float64 here,
rounded to the input's dtype at the end). A disconnected graph (masked edges) has a singular ``L'``:
``κ`` is infinite or NaN and the element is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["inverse_marginals", "KAPPA_MAX"]

KAPPA_MAX = {torch.float64: 1e6, torch.float32: 1e8}
"""Largest 1-norm condition number ``κ`` of ``L'`` at which a batch element takes the inverse, by the
input's precision (float32 for float32 and half inputs; the inverse is float64 for all): measured
errors ``<= 2 ε κ`` give
``4.4e-10`` (float64) and ``4.4e-8`` (below float32's rounding of values in ``[0, 1]``)."""


def _weights(x: torch.Tensor, root: int) -> torch.Tensor:
    """``A = exp(x - c)`` for log-weights ``x [B, n, n]`` (float64): diagonal and the root's column
    zero, every other column centred by its largest entry (detached; an all-masked column by 0)."""
    n = x.shape[-1]
    invalid = torch.eye(n, dtype=torch.bool, device=x.device)
    invalid[:, root] = True
    x = x.masked_fill(invalid, -torch.inf)
    centre = x.detach().amax(-2, keepdim=True)
    return torch.exp(x - torch.where(torch.isfinite(centre), centre, 0.0))


def _inverse(a: torch.Tensor, root: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Mᵀ, d, info)``: ``M = L'^{-1}`` with ``L' = diag(d + e_r) - A``, ``d`` the column sums.
    ``Mᵀ`` is computed as the inverse of ``L'ᵀ`` (the same cost), so that it is contiguous."""
    d = a.sum(-2)
    at_root = torch.arange(a.shape[-1], device=a.device) == root
    mt, info = torch.linalg.inv_ex((torch.diag_embed(d + at_root.to(a.dtype)) - a).transpose(-1, -2))
    return mt, d, info


def _formula(a: torch.Tensor, mt: torch.Tensor) -> torch.Tensor:
    """``μ_ij = A_ij (M_jj - M_ji)``, from ``Mᵀ``."""
    return a * (torch.diagonal(mt, 0, -2, -1).unsqueeze(-2) - mt)


def _log_weights(w: torch.Tensor, directed: bool) -> torch.Tensor:
    """``w [B, n, n]`` in float64, symmetrised (``(w + wᵀ)/2``) when undirected."""
    x = w.to(torch.float64)
    return x if directed else 0.5 * (x + x.transpose(-1, -2))


def _differentiable(w: torch.Tensor, directed: bool, root: int) -> torch.Tensor:
    """The marginals as autograd-differentiable tensor code (the ``create_graph`` branch)."""
    a = _weights(_log_weights(w, directed), root)
    mu = _formula(a, _inverse(a, root)[0])
    return (mu if directed else mu + mu.transpose(-1, -2)).to(w.dtype)


class _InverseMarginals(torch.autograd.Function):
    """``μ`` of ``w [B, n, n]`` from the precomputed ``A`` and ``Mᵀ`` (float64), in ``w``'s dtype; the
    backward ``J g`` in closed form (the symmetrisation and the casts folded in)."""

    @staticmethod
    def forward(ctx, w, a, mt, directed, root):  # type: ignore[override]
        ctx.directed, ctx.root = directed, root
        ctx.save_for_backward(w, a, mt)
        mu = _formula(a, mt)
        return (mu if directed else mu + mu.transpose(-1, -2)).to(w.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        w, a, mt = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a derivative that is differentiable again
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(_differentiable(w, ctx.directed, ctx.root), w, g, create_graph=True)
            return grad, None, None, None, None
        g = g.to(torch.float64)
        if not ctx.directed:  # μ + μᵀ
            g = g + g.transpose(-1, -2)
        h = g * a
        q = torch.baddbmm(h.sum(-2).unsqueeze(-1) * mt, h.transpose(-1, -2), mt, alpha=-1.0)  # Q Mᵀ
        r = torch.bmm(mt, q)
        diag_m = torch.diagonal(mt, 0, -2, -1).unsqueeze(-2)
        grad = a * (g * (diag_m - mt) + r - torch.diagonal(r, 0, -2, -1).unsqueeze(-2))
        if not ctx.directed:  # x = (w + wᵀ)/2
            grad = 0.5 * (grad + grad.transpose(-1, -2))
        return grad.to(w.dtype), None, None, None, None


def inverse_marginals(w: torch.Tensor, *, directed: bool, root: int,
                      fallback: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Edge marginals of ``w [..., n, n]`` (the convention of ``tree_marginals``), by the inverse for
    the batch elements with ``κ <= KAPPA_MAX`` and by ``fallback`` (called on the others, stacked
    ``[b, n, n]``) for the rest; result in ``w``'s dtype."""
    n = w.shape[-1]
    bound = KAPPA_MAX[torch.float64 if w.dtype == torch.float64 else torch.float32]
    flat = w.reshape(-1, n, n)
    root = root if directed else n - 1  # undirected: any root
    with torch.no_grad():
        a = _weights(_log_weights(flat, directed), root)
        m, d, info = _inverse(a, root)
        kappa = m.abs().sum(-1).amax(-1) * (2 * d.amax(-1)).clamp_min(1.0)  # m holds Mᵀ: its rows
        good = (kappa <= bound) & (info == 0)  # NaN compares False
    if bool(good.all()):
        return _InverseMarginals.apply(flat, a, m, directed, root).reshape(w.shape)
    keep, refuse = good.nonzero().squeeze(-1), (~good).nonzero().squeeze(-1)
    parts = [fallback(flat.index_select(0, refuse))]
    if keep.numel():
        parts.insert(0, _InverseMarginals.apply(flat.index_select(0, keep), a.index_select(0, keep),
                                                m.index_select(0, keep), directed, root))
    order = torch.cat([keep, refuse]).argsort()
    return torch.cat(parts).index_select(0, order).reshape(w.shape)
