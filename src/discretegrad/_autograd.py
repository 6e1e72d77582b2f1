"""The straight-through identity and fixed-Jacobian surrogates, in one place.

Every hard estimator in the library returns ``hard + (soft - sg(soft))``: the forward
value is exactly ``hard`` (``x - x`` is exactly zero in every floating dtype, so the sum
is exact even in bfloat16) and the gradient is that of ``soft``.
"""

from __future__ import annotations

import torch

__all__ = ["straight_through", "zero_with_grad", "compute_dtype", "under_func_transform", "softmax", "SHORT_ROWS"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype estimators compute in: float32 for half types, the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def under_func_transform() -> bool:
    """Whether the code runs under a ``torch.func`` transform (``vmap``, ``grad``, ``jvp``) in eager mode.

    ``False`` under ``torch.compile``: dynamo cannot trace the interpreter-stack query (a graph break),
    and the compiled paths are written so that they need no transform-specific branch."""
    return not torch.compiler.is_compiling() and bool(torch._C._functorch.get_interpreter_stack())


def zero_with_grad(x: torch.Tensor) -> torch.Tensor:
    """A tensor of exact zeros whose gradient is the gradient of ``x``."""
    return x - x.detach()


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value ``hard`` (exactly), backward gradient of ``soft``."""
    return hard.detach() + zero_with_grad(soft)


SHORT_ROWS = 16
"""Rows shorter than this take :func:`softmax`'s own max-subtract-exp-divide: on this CPU (torch 2.13,
one thread) ``torch.softmax`` over rows of 8-10 was about 10x slower than it, from 16 on about 1.5x
faster (measured at 200k-500k numbers, ``docs/performance.md``)."""


def softmax(z: torch.Tensor, tau: float = 1.0, top: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(z / tau)`` over the last dim: ``torch.softmax`` for rows of :data:`SHORT_ROWS` or more,
    else max, subtract, exp and divide on one buffer (``top``: ``z``'s row maxima if known)."""
    if z.shape[-1] >= SHORT_ROWS:
        return torch.softmax(z if tau == 1.0 else z / tau, -1)
    y = z - (z.amax(-1, keepdim=True) if top is None else top)
    if tau != 1.0:
        y.div_(tau)
    y.exp_()
    return y.div_(y.sum(-1, keepdim=True))
