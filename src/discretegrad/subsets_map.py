"""k-subset estimators built on the exact solvers rather than on a relaxation: I-MLE
(perturb-and-MAP, Niepert et al. 2021) and SIMPLE (exact marginals, Ahmed et al. 2023).

Both are drop-in ops of the ``"topk"`` distribution, ``op(logits [..., n], k=..., generator=...)``
returning a k-hot tensor of ``logits``' shape and dtype, next to the SST relaxations of
:mod:`discretegrad.subsets`. Half precision is computed in float32 and cast back.
"""

from __future__ import annotations

import torch

from discretegrad import structures as S
from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad.noise import gumbel_like, sum_of_gamma
from discretegrad.registry import register
from discretegrad.subsets import check_k, check_logits

__all__ = ["imle", "simple", "NOISES"]

NOISES = ("sum_of_gamma", "gumbel")


def _prepare(logits: object, k: object, generator: object):
    t = check_logits(logits)
    k = check_k(k, t.shape[-1], t)
    generator = V.generator_for("generator", generator, t)
    return t.to(compute_dtype(t.dtype)), k, generator


class _PerturbAndMAP(torch.autograd.Function):
    """Forward ``z = MAP(θ + ε)``; backward ``z - MAP(θ - λ g + ε)`` with the same noise ``ε``."""

    generate_vmap_rule = True  # forward and backward are plain batched tensor code (top-k)

    @staticmethod
    def forward(x: torch.Tensor, noise: torch.Tensor, k: int, lam: float) -> torch.Tensor:  # type: ignore[override]
        return S.topk_hard(x + noise, k)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, noise, k, lam = inputs
        ctx.save_for_backward(x, noise, output)
        ctx.k, ctx.lam = k, lam

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, noise, z = ctx.saved_tensors
        target = S.topk_hard(x - ctx.lam * grad.to(x.dtype) + noise, ctx.k)
        return z - target, None, None, None


@register("imle", distribution="topk",
          reference="Niepert, Minervini and Franceschi 2021, Implicit MLE: backpropagating through discrete "
                    "exponential family distributions, NeurIPS (Alg. 1-2, sum-of-Gamma noise Sec. 5)")
def imle(logits: torch.Tensor, *, k: int, lam: float = 10.0, noise: str = "sum_of_gamma", noise_terms: int = 10,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """I-MLE: perturb-and-MAP forward, the difference of two MAP states as the gradient.

    Forward ``z = topk(θ + ε)`` (the MAP state of the perturbed k-subset problem). Backward, with
    the upstream gradient ``g = ∂L/∂z``, the target parameters ``θ' = θ - λ g`` and the *same*
    noise::

        ∇_θ L ≈ z - topk(θ' + ε)      (I-MLE's μ(θ) - μ(θ'), one perturbation per sample)

    ``noise="sum_of_gamma"`` (the paper's choice for k-subsets,
    :func:`discretegrad.noise.sum_of_gamma` with ``noise_terms`` = s terms): the sum of the noise of
    any ``k`` items is a (truncated) Gumbel, so the forward sample approximates the Gibbs k-subset
    distribution; it is *not* an exact sample of the ``"topk"`` family's Gumbel-top-k law (it
    differs at every ``k``, including ``k = 1`` through the truncation at ``s`` terms).
    ``noise="gumbel"``: i.i.d. Gumbel noise, for which the forward sample is exactly
    Gumbel-top-k. Biased: the gradient does not scale with ``|g|`` (its entries are in
    ``{-1, 0, 1}``; ``λ`` sets how large a change of the loss it reacts to) and it is zero when the
    target state equals ``z``; lower variance than score-function estimators, no relaxation.
    Divide by ``λ`` for a finite-difference reading (``λ → 0``: a directional derivative of MAP).
    """
    x, k, generator = _prepare(logits, k, generator)
    lam = V.positive_float("lam", lam)
    noise = V.choice("noise", noise, NOISES)
    noise_terms = V.positive_int("noise_terms", noise_terms)
    if noise == "gumbel":
        eps = gumbel_like(x.detach(), generator=generator)
    else:
        eps = sum_of_gamma(k, x.shape, terms=noise_terms, dtype=x.dtype, device=x.device, generator=generator)
    return _PerturbAndMAP.apply(x, eps, k, lam).to(logits.dtype)


@register("simple", distribution="topk",
          reference="Ahmed, Zeng, Niepert and Van den Broeck 2023, SIMPLE: a gradient estimator for k-subset "
                    "sampling, ICLR")
def simple(logits: torch.Tensor, *, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SIMPLE: an exact sample forward, the exact k-subset marginals backward.

    ``z + μ(θ) - sg(μ(θ))`` with ``μ_i(θ) = P(i ∈ S)`` under ``p(S) ∝ exp(Σ_{i∈S} θ_i)``, ``|S| = k``,
    computed exactly by the (item, count) log-space dynamic program
    (:func:`discretegrad.structures.topk_marginals`); its Jacobian is the covariance of the
    subset indicators, so ``∇_θ ≈ Cov_θ(z) g``. The forward ``z`` is the ``"topk"`` family's
    exact sample (top-k of ``θ + G``, the Gumbel-top-k law); the paper samples from the Gibbs
    distribution ``p`` itself, whose marginals these are; the two laws agree for ``k = 1``
    (there SIMPLE is the softmax straight-through estimator) and differ otherwise. Biased (the
    straight-through bias: ``f`` is linearised around the marginals); no temperature, no noise in
    the backward pass, so its variance is that of ``g`` at the sample only. Cost: one DP of
    ``O(n k)`` and its backward.
    """
    x, k, generator = _prepare(logits, k, generator)
    hard = S.topk_hard(x.detach() + gumbel_like(x.detach(), generator=generator), k)
    if not (torch.is_grad_enabled() and x.requires_grad):  # evaluation: the marginals would be discarded
        return hard.to(logits.dtype)
    return straight_through(hard, S.topk_marginals(x, k)).to(logits.dtype)
