"""Probes measured alongside training: the gradient variance (GST Sec. 5.1.3, Figure 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["gradient_variance"]


def gradient_variance(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], repeats: int,
                      ddof: int = 1) -> float:
    """Average over all scalars of ``params`` of the variance of their gradient over ``repeats``
    independent evaluations of ``loss_fn()`` (each draws fresh noise), the sum of squared
    deviations divided by ``repeats - ddof``.

    This is GST Sec. 5.1.3's measure; ``ddof=0`` is the authors' script (divides by ``repeats``),
    ``ddof=1`` the unbiased variance (a factor R/(R-1), 1.01 at R = 100). Sums are kept in float64.
    """
    if repeats < 2:
        raise ValueError(f"Expected grad_variance_repeats to be an int >= 2, but got {repeats!r}")
    if ddof not in (0, 1):
        raise ValueError(f"Expected ddof to be 0 or 1, but got {ddof!r}")
    s1 = s2 = None
    for _ in range(repeats):
        grads = torch.autograd.grad(loss_fn(), params)
        g = torch.cat([t.reshape(-1) for t in grads]).double()
        s1 = g if s1 is None else s1 + g
        s2 = g * g if s2 is None else s2 + g * g
    var = (s2 - s1 * s1 / repeats) / (repeats - ddof)
    return float(var.mean())
