"""The limited multilabel projection (LML, Amos et al. 2019): ``σ(w + ν)`` with ``Σ = k``.

Its own module: a bisection plus an implicit-function backward (a custom autograd Function),
unrelated to the log-space DPs of :mod:`.semiring`.
"""

from __future__ import annotations

import math

import torch

from discretegrad._autograd import compute_dtype

__all__ = ["lml"]


def _bracket(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c, lo, hi)``: a centre ``c`` (the k-th largest entry) and a bracket ``lo <= ν' <= hi`` of the
    root of ``Σ σ(w - c + ν') = k``, ``1 <= k < n``.

    With ``s_k >= s_{k+1}`` the k-th and (k+1)-th largest of ``w' = w - c`` (so ``s_k = 0``): at
    ``ν' = -log(n - k + 1) - 1`` the ``n - k + 1`` entries from the k-th down sum to less than
    ``(n - k + 1) e^{ν'} < 1`` and the other ``k - 1`` to less than ``k - 1``, so the sum is ``< k``; at
    ``ν' = -s_{k+1} + log k + 1`` the ``k + 1`` largest are each above ``σ(log k + 1) > k / (k + 1)``, so
    the sum is ``> k``. The bracket's width is the gap ``s_k - s_{k+1}`` plus a few units, whatever
    the scale of ``w``. A row with only ``k`` unmasked (finite) entries has no root (its sum tends to
    ``k`` as ``ν → ∞``); its ``hi`` is set finite here and :meth:`_LML.forward` returns the limit.
    """
    n = w.shape[-1]
    top = w.topk(k + 1, dim=-1).values
    c = top[..., k - 1: k]
    lo = torch.full_like(c, -math.log(n - k + 1) - 1.0)
    gap = c - top[..., k: k + 1]
    hi = torch.where(torch.isfinite(gap), gap, 0.0) + (math.log(k) + 1.0)
    return c, lo, hi


class _LML(torch.autograd.Function):
    """``y = σ(w + ν)`` with the scalar ``ν`` such that ``Σ y = k`` (per batch element).

    Forward: bisection on ``ν`` (the sum is increasing in ``ν``) for the centred ``w - c``, ``c`` the
    k-th largest entry (``y`` does not depend on ``c``: ``ν`` absorbs it), so the entries that decide
    the sum, those near the threshold, are exact differences however large ``w`` is. ``-inf`` entries
    (masked) get ``y = 0``; a row with only ``k`` finite entries gets its ``ν → ∞`` limit, 1 on them (a
    constant: zero gradient). Backward (implicit function theorem): with ``h = y(1-y)``,
    ``∂ν/∂w = -h/Σh`` and ``grad_w = h ⊙ (g - <h, g>/Σh)``.
    """

    generate_vmap_rule = True  # forward and backward are plain batched tensor code (a fixed-length bisection)

    @staticmethod
    def forward(w: torch.Tensor, k: int, iters: int) -> torch.Tensor:  # type: ignore[override]
        c, lo, hi = _bracket(w, k)
        limit = torch.isneginf(w).sum(-1, keepdim=True) >= w.shape[-1] - k  # only k unmasked: y = 1 on them
        w = w - c
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            too_big = torch.sigmoid(w + mid).sum(-1, keepdim=True) > k
            hi = torch.where(too_big, mid, hi)
            lo = torch.where(too_big, lo, mid)
        return torch.where(limit, torch.isfinite(w).to(w.dtype), torch.sigmoid(w + 0.5 * (lo + hi)))

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        h = y * (1 - y)
        total = h.sum(-1, keepdim=True)
        coef = torch.where(total > 0, (h * g).sum(-1, keepdim=True) / total.clamp_min(torch.finfo(h.dtype).tiny),
                           torch.zeros_like(total))
        return h * (g - coef), None, None


def lml(w: torch.Tensor, k: int) -> torch.Tensor:
    """Limited multilabel projection ``σ(w + ν)``, ``Σ = k`` (Amos et al. 2019), batched.

    Half precision is computed in float32 and cast back. The bisection runs 30 steps in float32 (60 in
    float64) on a bracket a few units wider than the gap ``g`` between the k-th and (k+1)-th largest
    entries: where the root is not on a plateau of the sum (``g`` below about 40), the bracket
    (under 50 wide) shrinks below the float32 spacing of ``ν`` (``2.4e-7`` for ``|ν| < 4``) within
    ``log2(50 / 2.4e-7) < 28`` steps; on a plateau every point of it gives the same ``y`` to rounding.
    """
    n = w.shape[-1]
    if k == n:
        return torch.ones_like(w) + 0.0 * w
    work = compute_dtype(w.dtype)
    iters = 60 if work == torch.float64 else 30
    return _LML.apply(w.to(work), k, iters).to(w.dtype)
