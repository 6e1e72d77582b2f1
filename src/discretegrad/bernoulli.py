"""Bernoulli variables: the distribution family and the straight-through family of drop-in ops.

Every op takes ``logits`` (log-odds ``θ``, any shape, float) and returns a tensor of the same
shape and dtype. Hard estimators return an exact sample ``z = 1[θ + L > 0] ~ Bernoulli(σ(θ))``
with logistic noise ``L = log E₁ - log E₂`` (``E ~ Exp(1)``, log space, always finite), drawn
with the given ``generator``: for one generator state every hard op, and the family's
``sample``, draw the same ``z``. ``tau`` only shapes the backward pass. Half-precision inputs
are computed in float32 and cast back. Notation: ``p = σ(θ)``, ``sg`` = stop-gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from discretegrad import _pwgf
from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad.distributions import Family, register_distribution
from discretegrad.noise import exponential
from discretegrad.registry import register

__all__ = ["check_logits", "conditional_logistic", "family", "gumbel_softmax", "logistic", "pwgf_mmd", "st", "stgs"]

_PWGF = "Cheng et al. 2019, Straight-through estimator as projected Wasserstein gradient flow"


def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Bernoulli log-odds: a float tensor of any shape, finite when validating."""
    t = V.float_tensor(name, logits)
    V.finite(name, t)
    return t


def logistic(shape: torch.Size | tuple[int, ...], *, dtype: torch.dtype, device: torch.device,
             generator: torch.Generator | None) -> torch.Tensor:
    """Standard logistic draws ``log E₁ - log E₂`` (difference of two Gumbels), always finite."""
    log_e = exponential((2, *shape), dtype=dtype, device=device, generator=generator).log_()
    return log_e[0] - log_e[1]


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return logistic(x.shape, dtype=x.dtype, device=x.device, generator=generator)


def _hard(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return (x.detach() + noise > 0).to(x.dtype)


def _sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    x = logits.detach().to(compute_dtype(logits.dtype))
    return _hard(x, _noise_like(x, generator)).to(logits.dtype)


def _log_prob(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return z * F.logsigmoid(logits) + (1 - z) * F.logsigmoid(-logits)


def _support(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    atoms = torch.tensor([0.0, 1.0], dtype=logits.dtype, device=logits.device)
    return atoms, torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], -1)


family = register_distribution(
    Family(
        name="bernoulli",
        param_name="logits",
        event_ndim=0,
        check=check_logits,
        sample=_sample,
        log_prob=_log_prob,
        support=_support,
        mean=torch.sigmoid,
    )
)


def _prepare(logits: torch.Tensor, generator: torch.Generator | None):
    check_logits(logits)
    generator = V.generator_for("generator", generator, logits)
    return logits.to(compute_dtype(logits.dtype)), generator


@register("st", distribution="bernoulli", reference="Bengio et al. 2013; " + _PWGF + ", Sec. 2.1")
def st(logits: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through: forward z, backward through p = σ(θ).

    ``z + p - sg(p)``. Biased (the gradient of ``E f`` is ``p(1-p)(f(1) - f(0))``, ST uses
    ``p(1-p) f'(z)``). It is pWGF's expectation-difference projection (Cheng et al. 2019,
    Sec. 2.1); with ``n_samples > 1`` in :func:`discretegrad.surrogate` it is their multi-sample
    pWGF-ST.
    """
    x, generator = _prepare(logits, generator)
    hard = _hard(x, _noise_like(x, generator))
    return straight_through(hard, torch.sigmoid(x)).to(logits.dtype)


@register("gumbel_softmax", distribution="bernoulli", relaxed=True,
          reference="Maddison et al. 2017 (binary concrete); Jang et al. 2017")
def gumbel_softmax(logits: torch.Tensor, *, tau: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed binary concrete sample σ((θ + L)/τ) in (0, 1) (not discrete).

    Reparameterised and exact for the relaxed objective, biased for the discrete one; its
    rounding ``1[θ + L > 0]`` is an exact Bernoulli sample; as τ → 0 it approaches it.
    """
    x, generator = _prepare(logits, generator)
    tau = V.positive_float("tau", tau)
    return torch.sigmoid((x + _noise_like(x, generator)) / tau).to(logits.dtype)


@register("stgs", distribution="bernoulli", reference="Jang et al. 2017; Bengio et al. 2013")
def stgs(logits: torch.Tensor, *, tau: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through binary concrete: forward 1[θ + L > 0], backward through σ((θ + L)/τ).

    Biased; the noise ``L`` is shared by the forward sample and the backward relaxation.
    """
    x, generator = _prepare(logits, generator)
    tau = V.positive_float("tau", tau)
    noise = _noise_like(x, generator)
    return straight_through(_hard(x, noise), torch.sigmoid((x + noise) / tau)).to(logits.dtype)


def conditional_logistic(logits: torch.Tensor, hard: torch.Tensor, *,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """``θ + L`` drawn conditionally on ``1[θ + L > 0] = hard``, differentiable in ``θ`` (REBAR).

    With ``θ + L = logit(u) + θ`` and ``v ~ U(0, 1)``: ``u = 1 - p + v p`` when ``hard = 1`` and
    ``u = v (1 - p)`` when ``hard = 0`` (``p = σ(θ)``). In log space, with
    ``log p = -softplus(-θ)`` and ``log(1-p) = -softplus(θ)``::

        hard = 1:  softplus(θ) - log(1-v) + logaddexp(log(1-p), log p + log v)   (> 0)
        hard = 0:  log v - softplus(-θ) - logaddexp(log p, log(1-p) + log(1-v))  (< 0)

    ``v = E₁/(E₁+E₂)`` from exponential draws, so no ``log 0``.
    """
    log_e = exponential((2, *logits.shape), dtype=logits.dtype, device=logits.device,
                        generator=generator).log_()
    log_norm = torch.logaddexp(log_e[0], log_e[1])
    log_v, log_1mv = log_e[0] - log_norm, log_e[1] - log_norm
    log_p, log_q = -F.softplus(-logits), -F.softplus(logits)
    one = -log_q - log_1mv + torch.logaddexp(log_q, log_p + log_v)
    zero = log_v + log_p - torch.logaddexp(log_p, log_q + log_1mv)
    return torch.where(hard.bool(), one, zero)


def _pmf_derivative(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Atoms ``[0, 1]`` and ``∂p(s)/∂θ = (-p(1-p), p(1-p))`` with ``p(1-p)`` in log space."""
    pq = torch.exp(F.logsigmoid(logits) + F.logsigmoid(-logits))
    atoms = torch.tensor([0.0, 1.0], dtype=logits.dtype, device=logits.device)
    return atoms, torch.stack([-pq, pq], -1)


@register("pwgf_mmd", distribution="bernoulli", reference=_PWGF + ", Sec. 2.2 and App. D")
def pwgf_mmd(
    logits: torch.Tensor,
    *,
    bandwidth: float = 2.0,
    step: float = 0.1,
    kernel: str = "rbf",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """pWGF with the MMD projection: forward z, backward the derivative of the squared MMD.

    With upstream gradient ``g`` at the sample ``z``, moved particle ``z̃ = z - ε g``
    (``ε = step``), ``p = σ(θ)`` and the control variate of Sec. 2.1 (see
    :mod:`discretegrad._pwgf` for the derivation)::

        ĝ_θ = -(p(1-p)/ε) [K(1, z̃) - K(0, z̃) - K(1, z) + K(0, z)].

    Without the control variate, ``∂Δ²/∂p = -2(1-2p)(1-K(0,1)) - 2[K(1,z̃) - K(0,z̃)]``; the
    paper's App. D prints the first term with a ``+`` sign, which does not vanish at the
    minimiser (a typo; the control variate removes that term anyway). ``kernel="rbf"`` is
    ``h² exp(-(s-y)²/(2h²))`` with ``h = bandwidth`` (tends to ST as ``h → ∞``);
    ``kernel="linear"`` (``K = s y``, bandwidth unused) is exactly ST. Biased (it keeps ST's bias
    and adds the finite-ε one). Defaults: see ``results/pwgf_defaults/``.
    """
    x, generator = _prepare(logits, generator)
    bandwidth, step, kernel = _pwgf.check_hparams(bandwidth, step, kernel)
    hard = _hard(x, _noise_like(x, generator))
    out = _pwgf.pwgf_sample(x, hard, _pmf_derivative, step=step, kind=kernel, bandwidth=bandwidth)
    return out.to(logits.dtype)
