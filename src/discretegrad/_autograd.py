"""The straight-through identity and fixed-Jacobian surrogates, in one place.

Every hard estimator in the library returns ``hard + (soft - sg(soft))``: the forward
value is exactly ``hard`` (``x - x`` is exactly zero in every floating dtype, so the sum
is exact even in bfloat16) and the gradient is that of ``soft``.
"""

from __future__ import annotations

import torch

__all__ = ["straight_through", "zero_with_grad", "compute_dtype", "under_func_transform"]


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
