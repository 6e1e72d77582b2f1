"""Noise primitives: exponential, Gumbel and conditional (truncated) Gumbel noise.

All noise is drawn with an explicit ``generator`` (``None`` uses torch's default), created
directly on the requested device and dtype, and computed in log space: no ``log(0)``
(exponential draws are clamped at the dtype's smallest normal number), so Gumbel noise is
always finite.
"""

from __future__ import annotations

import torch

from discretegrad._validation import positive_int

__all__ = ["exponential", "gumbel", "gumbel_max", "conditional_gumbel"]


def exponential(
    shape: torch.Size | tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Exp(1) draws ``-log1p(-U)``, ``U ~ U[0, 1)``, strictly positive (clamped at ``finfo.tiny``).

    Inversion of uniform draws (several times faster than ``Tensor.exponential_`` on CPU);
    ``1 - U`` is in ``(0, 1]``, so the log is finite.
    """
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return torch.log1p(u.neg_()).neg_().clamp_min_(torch.finfo(dtype).tiny)


def gumbel(
    shape: torch.Size | tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard Gumbel draws ``-log E`` with ``E ~ Exp(1)``; always finite."""
    return exponential(shape, dtype=dtype, device=device, generator=generator).log_().neg_()


def gumbel_max(logits: torch.Tensor, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturbed logits ``logits + G`` and the exact categorical sample ``argmax(logits + G)``.

    ``argmax`` of Gumbel-perturbed logits has law ``Categorical(softmax(logits))`` (the
    Gumbel-max trick). Returns ``(perturbed, index)``; ``perturbed`` is differentiable in
    ``logits``, ``index`` has the batch shape (last dim removed).
    """
    g = gumbel(logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)
    perturbed = logits + g
    return perturbed, perturbed.detach().argmax(-1)


def conditional_gumbel(
    logits: torch.Tensor,
    index: torch.Tensor,
    mc_samples: int,
    *,
    generator: torch.Generator | None = None,
    reparameterized: bool = False,
) -> torch.Tensor:
    """Perturbed logits ``logits + G`` drawn conditionally on ``argmax(logits + G) == index``.

    Returns ``mc_samples`` draws of shape ``[mc_samples, *logits.shape]``: no gradient, or, with
    ``reparameterized=True``, differentiable in ``logits`` for fixed noise (REBAR/RELAX).
    Log-space construction (Maddison et al. 2014, "A* sampling"): the maximum is
    ``T = logsumexp(logits) - log E_0`` and every other coordinate is a Gumbel with location
    ``logits_k`` truncated below ``T``: ``-logaddexp(-T, log E_k - logits_k)``.
    Stable for ``|logits|`` up to ``1e4`` in float32.
    """
    mc_samples = positive_int("mc_samples", mc_samples)
    if not reparameterized:
        logits = logits.detach()
    shape = (mc_samples, *logits.shape)
    log_e_top = exponential((*shape[:-1], 1), dtype=logits.dtype, device=logits.device, generator=generator).log_()
    log_e = exponential(shape, dtype=logits.dtype, device=logits.device, generator=generator).log_()
    top = torch.logsumexp(logits, -1, keepdim=True) - log_e_top  # [K, ..., 1]
    others = -torch.logaddexp(-top, log_e - logits)
    is_top = torch.nn.functional.one_hot(index, logits.shape[-1]).bool()
    return torch.where(is_top, top, others)
