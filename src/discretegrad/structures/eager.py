"""Batched discrete solvers under ``torch.func.vmap``: run them eagerly on the whole batch.

Kruskal and Chu-Liu/Edmonds loop on data (an early exit, a contraction round per cycle), which
``vmap`` cannot trace, and they already take any leading batch dims. :func:`eager_solver` wraps
one so that under ``vmap`` the vmapped dim is moved in front of the tensor and the solver runs
once, eagerly, on the real batch (an ``autograd.Function`` with a ``vmap`` rule); outside
``vmap`` it is the plain call. Solvers return no gradient (their input is detached).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from discretegrad._autograd import under_func_transform

__all__ = ["eager_solver"]


class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(u: torch.Tensor, solve: Callable[..., torch.Tensor], args: tuple) -> torch.Tensor:  # type: ignore[override]
        return solve(u, *args)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return None, None, None

    @staticmethod
    def vmap(info, in_dims, u, solve, args):  # type: ignore[override]
        u = u.movedim(in_dims[0], 0) if in_dims[0] is not None else u.expand(info.batch_size, *u.shape)
        return _Eager.apply(u, solve, args), 0


def eager_solver(solve: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``solve(u, *args)`` (batched over the leading dims of ``u``, no gradient), usable under ``vmap``."""

    @functools.wraps(solve)
    def wrapped(u: torch.Tensor, *args: object) -> torch.Tensor:
        if under_func_transform():
            return _Eager.apply(u.detach(), solve, args)
        return solve(u, *args)

    return wrapped
