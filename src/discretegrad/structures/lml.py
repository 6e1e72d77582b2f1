"""The limited multilabel projection (LML, Amos et al. 2019): ``σ(w + ν)`` with ``Σ = k``.

Its own module: a bisection plus an implicit-function backward (a custom autograd Function),
unrelated to the log-space DPs of :mod:`.semiring`.
"""

from __future__ import annotations

import torch

__all__ = ["lml"]


class _LML(torch.autograd.Function):
    """``y = σ(w + ν)`` with the scalar ``ν`` such that ``Σ y = k`` (per batch element).

    Forward: bisection on ``ν`` (the sum is increasing in ``ν``). Backward (implicit function
    theorem): with ``h = y(1-y)``, ``∂ν/∂w = -h/Σh`` and ``grad_w = h ⊙ (g - <h, g>/Σh)``.
    """

    generate_vmap_rule = True  # forward and backward are plain batched tensor code (a fixed-length bisection)

    @staticmethod
    def forward(w: torch.Tensor, k: int, iters: int) -> torch.Tensor:  # type: ignore[override]
        lo = -w.amax(-1, keepdim=True) - 40.0
        hi = -w.amin(-1, keepdim=True) + 40.0
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            too_big = torch.sigmoid(w + mid).sum(-1, keepdim=True) > k
            hi = torch.where(too_big, mid, hi)
            lo = torch.where(too_big, lo, mid)
        return torch.sigmoid(w + 0.5 * (lo + hi))

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
    """Limited multilabel projection ``σ(w + ν)``, ``Σ = k`` (Amos et al. 2019), batched."""
    n = w.shape[-1]
    if k == n:
        return torch.ones_like(w) + 0.0 * w
    iters = 60 if w.dtype == torch.float64 else 40
    return _LML.apply(w, k, iters)
