"""Log-space primitives shared by the dynamic programs of this package, and "inference is backprop".

Kept apart from the DPs themselves because both the chain DP (:mod:`.semiring`) and the
matrix-tree elimination (:mod:`.matrix_tree`) use them and neither depends on the other:

* :func:`neg_inf`: the finite stand-in for ``-inf`` (``logaddexp(-inf, -inf)`` has a NaN gradient);
* :func:`logaddexp`: ``log(e^a + e^b)`` with bounded derivatives of every order (one fused kernel);
* :func:`gradient`: ``∂ f(x, ...) / ∂ x`` by autograd, differentiable itself when the caller's inputs
  require grad (``create_graph``), and usable under ``torch.no_grad()`` and ``torch.inference_mode()``.
  Marginals are gradients of a log-partition and argmaxes gradients of a max score, as in
  pytorch-struct (Rush 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["neg_inf", "logaddexp", "gradient"]


def neg_inf(dtype: torch.dtype) -> float:
    """A finite stand-in for ``-inf`` in log-space DPs (``logaddexp(-inf, -inf)`` has a NaN gradient)."""
    return -1e30 if dtype == torch.float32 else -1e300


class _LogAddExp(torch.autograd.Function):
    """``torch.logaddexp``'s fused forward; the backward ``(g σ(a-b), g σ(b-a))`` is made of
    differentiable ops on the saved inputs, so it differentiates again (double backward)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.logaddexp(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        a, b = ctx.saved_tensors
        gap = a - b
        return (g * torch.sigmoid(gap)).sum_to_size(a.shape), (g * torch.sigmoid(-gap)).sum_to_size(b.shape)


def logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(e^a + e^b)`` with bounded derivatives of every order (broadcasting like ``torch.logaddexp``).

    ``torch.logaddexp``'s own backward ``1/(1 + e^{b-a})`` gives ``inf/inf`` when differentiated again
    for a large gap (the SST gradient of marginals ``∂ log Z`` is a second derivative of ``log Z``);
    here the derivatives are ``σ(a - b), σ(b - a)`` and their own derivatives ``±σ(1 - σ)``: bounded
    everywhere, exact at ties (unlike ``max(a, b) + log1p(e^{-|a-b|})``, whose second derivative is
    lost at ``a = b`` through ``|a - b|``), and computed from the gap alone, so their rounding does
    not grow with ``|a|`` (as ``e^{a - out}`` would for a large log-partition ``out``). One fused kernel forward, which matters in DPs of many
    small steps (see :mod:`.semiring`).
    """
    return _LogAddExp.apply(a, b)


def gradient(fn: Callable[..., torch.Tensor], x: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
    """``∂ Σ fn(x, *context) / ∂ x`` by autograd.

    When grad mode is on and ``x`` or a ``context`` tensor requires grad, the gradient is taken with
    ``create_graph`` and is itself differentiable (with respect to both), e.g. the Jacobian of
    marginals ``μ = ∂ log Z / ∂ w`` is the covariance of the structure. Otherwise ``x`` is replaced by
    a detached leaf, ``context`` is detached, and the result carries no graph. Works under
    ``torch.no_grad()`` (grad is enabled locally) and ``torch.inference_mode()`` (left for copies of
    the inputs, since autograd cannot run there). Under ``torch.func`` transforms (``vmap``, ``grad``)
    it is ``torch.func.grad``, which those transforms differentiate further.
    """
    if torch._C._functorch.get_interpreter_stack():  # under torch.func transforms: differentiable by them
        return torch.func.grad(lambda leaf, *ctx: fn(leaf, *ctx).sum())(x, *context)
    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False):
            return gradient(fn, x.clone(), *(c.clone() for c in context))
    differentiable = torch.is_grad_enabled() and (x.requires_grad or any(c.requires_grad for c in context))
    with torch.enable_grad():
        if differentiable:
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
        else:
            leaf, context = x.detach().requires_grad_(True), tuple(c.detach() for c in context)
        (grad,) = torch.autograd.grad(fn(leaf, *context).sum(), leaf, create_graph=differentiable)
    return grad
