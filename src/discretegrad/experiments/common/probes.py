"""Probes measured alongside training: the gradient variance (GST Sec. 5.1.3, Figure 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["gradient_variance"]


def gradient_variance(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], repeats: int) -> float:
    """Average over all scalars of ``params`` of the sample variance (ddof = 1) of their gradient
    over ``repeats`` independent evaluations of ``loss_fn()`` (each draws fresh noise).

    This is GST Sec. 5.1.3's measure with the unbiased variance (the authors' script divides by
    ``repeats``: a factor (R-1)/R = 0.99 at R = 100). Sums are kept in float64.
    """
    if repeats < 2:
        raise ValueError(f"Expected grad_variance_repeats to be an int >= 2, but got {repeats!r}")
    s1 = s2 = None
    for _ in range(repeats):
        grads = torch.autograd.grad(loss_fn(), params)
        g = torch.cat([t.reshape(-1) for t in grads]).double()
        s1 = g if s1 is None else s1 + g
        s2 = g * g if s2 is None else s2 + g * g
    var = (s2 - s1 * s1 / repeats) / (repeats - 1)
    return float(var.mean())
