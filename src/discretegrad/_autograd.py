"""The straight-through identity and fixed-Jacobian surrogates, in one place.

Every hard estimator in the library returns ``hard + (soft - sg(soft))``: the forward
value is exactly ``hard`` (``x - x`` is exactly zero in every floating dtype, so the sum
is exact even in bfloat16) and the gradient is that of ``soft``.
"""

from __future__ import annotations

import torch

__all__ = ["straight_through", "zero_with_grad", "softmax_jacobian_surrogate", "compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype estimators compute in: float32 for half types, the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def zero_with_grad(x: torch.Tensor) -> torch.Tensor:
    """A tensor of exact zeros whose gradient is the gradient of ``x``."""
    return x - x.detach()


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value ``hard`` (exactly), backward gradient of ``soft``."""
    return hard.detach() + zero_with_grad(soft)


def softmax_jacobian_surrogate(
    logits: torch.Tensor, p: torch.Tensor, second: torch.Tensor | None = None
) -> torch.Tensor:
    """A linear function of ``logits`` whose Jacobian is ``diag(p) - second``.

    With ``second = p pᵀ`` (the default) this is the Jacobian of softmax evaluated at a point
    whose value is ``p``, without forming a softmax (so no log of a vanishing probability).
    ``p`` and ``second`` are detached; the Jacobian is symmetric, so the returned tensor's
    vector-Jacobian product is ``(diag(p) - second) v``. Only ``p`` (and ``second`` when given,
    shape ``[..., N, N]``) are saved for backward.
    """
    p = p.detach()
    if second is None:
        return p * logits - p * (p * logits).sum(-1, keepdim=True)
    return p * logits - (second.detach() @ logits.unsqueeze(-1)).squeeze(-1)
