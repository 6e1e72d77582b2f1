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

from torch.distributions import constraints

from discretegrad import _pwgf, relax, score_function
from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad.family import Example, Family, Param, Relaxation
from discretegrad.noise import conditional_logistic, logistic
from discretegrad.registry import register, register_family
from discretegrad.score_function import CostFn, finish, param_term, setup, unsqueeze_to

__all__ = ["arm", "check_logits", "disarm", "family", "gumbel_softmax", "pwgf_mmd", "st", "stgs"]

_PWGF = "Cheng et al. 2019, Straight-through estimator as projected Wasserstein gradient flow"


def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Bernoulli log-odds: a float tensor of any shape, finite when validating."""
    return V.finite_float_tensor(name, logits)


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


def _relaxed(x: torch.Tensor, generator: torch.Generator | None):
    """REBAR/RELAX draws: ``z = θ + L``, ``z̃ ~ p(z | b)`` (both reparameterised) and ``b = 1[z > 0]``."""
    z = x + _noise_like(x, generator)
    hard = (z.detach() > 0).to(x.dtype)
    return z, conditional_logistic(x, hard, generator=generator), hard


def _example() -> Example:
    g = torch.Generator().manual_seed(1)
    v = 8
    logits = torch.randn(1, v, generator=g, dtype=torch.float64)
    a = torch.randn(v, 4, generator=g, dtype=torch.float64) / (v ** 0.5)
    b = torch.randn(4, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        h = z @ a
        return ((h - b) ** 2).sum(-1) + torch.sin(3 * h[..., 0])

    return Example(f"{v} binary variables, f(z) = ||A z - b||^2 + sin(3 (A z)_0)", logits, f)


family = register_family(
    Family(
        name="bernoulli",
        params=(Param("logits", constraints.real, check_logits),),
        event_ndim=0,
        sample_fn=_sample,
        log_prob_fn=_log_prob,
        support_fn=_support,
        mean_fn=torch.sigmoid,
        relaxation=Relaxation(_relaxed, lambda z, tau: torch.sigmoid(z / tau)),
        example=_example,
    )
)
score_function.register_for("bernoulli")
relax.register_for("bernoulli")


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


def _pmf_derivative(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Atoms ``[0, 1]`` and ``∂p(s)/∂θ = (-p(1-p), p(1-p))`` with ``p(1-p)`` in log space."""
    pq = torch.exp(F.logsigmoid(logits) + F.logsigmoid(-logits))
    atoms = torch.tensor([0.0, 1.0], dtype=logits.dtype, device=logits.device)
    return atoms, torch.stack([-pq, pq], -1)


def _pwgf_draw(logits: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, generator = _prepare(logits, generator)
    return x, _hard(x, _noise_like(x, generator))


pwgf_mmd = register("pwgf_mmd", distribution="bernoulli", reference=_PWGF + ", Sec. 2.2 and App. D")(
    _pwgf.make_pwgf_mmd(_pwgf_draw, _pmf_derivative, module=__name__, doc="""pWGF with the MMD projection: forward z, backward the derivative of the squared MMD.

    With upstream gradient ``g`` at the sample ``z``, moved particle ``z̃ = z - ε g``
    (``ε = step``), ``p = σ(θ)`` and the control variate of Sec. 2.1 (see
    :mod:`discretegrad._pwgf` for the derivation)::

        ĝ_θ = -(p(1-p)/ε) [K(1, z̃) - K(0, z̃) - K(1, z) + K(0, z)].

    Without the control variate, ``∂Δ²/∂p = -2(1-2p)(1-K(0,1)) - 2[K(1,z̃) - K(0,z̃)]``; the
    paper's App. D prints the first term with a ``+`` sign, which does not vanish at the
    minimiser (a typo; the control variate removes that term anyway). ``kernel="rbf"`` is
    ``h² exp(-(s-y)²/(2h²))`` with ``h = bandwidth`` (tends to ST as ``h → ∞``);
    ``kernel="linear"`` (``K = s y``, bandwidth unused) is exactly ST. Biased (it keeps ST's bias
    and adds the finite-ε one). ``mean_over = M``: the loss averages ``M`` per-sample costs, and ε
    is applied to the per-sample gradient ``M g`` (:mod:`discretegrad._pwgf`). Defaults: see
    ``results/pwgf_defaults/``.
    """))


# ----------------------------------------------------------------------------- antithetic score-function estimators


def _antithetic(f: CostFn, params: torch.Tensor, n_samples: int, generator: torch.Generator | None):
    """Antithetic pair ``b = 1[θ + L > 0]``, ``b̃ = 1[θ - L > 0]`` and their costs."""
    d = setup(f, params, "bernoulli", n_samples, generator, {})
    x = d.x.detach()
    noise = logistic((d.n, *x.shape), dtype=x.dtype, device=x.device, generator=d.generator)
    b, b_anti = (x + noise > 0).to(x.dtype), (x - noise > 0).to(x.dtype)
    costs = d.costs(f, torch.cat([b, b_anti]), k=2)
    return d, noise, b, b_anti, costs[: d.n], costs[d.n:]


@register("arm", distribution="bernoulli", kind="surrogate", unbiased=True,
          reference="Yin and Zhou 2019, ARM: augment-REINFORCE-merge gradient for stochastic binary networks")
def arm(f: CostFn, params: torch.Tensor, *, distribution: str = "bernoulli", n_samples: int = 1,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """ARM: ``(f(1[u > σ(-θ)]) - f(1[u < σ(θ)])) (u - 1/2)`` per coordinate, one shared ``u``.

    Two evaluations of ``f`` per sample on an antithetic pair; here ``u = σ(-L)`` with logistic
    ``L``. The value is the mean of ``f`` over both members of the pair. Unbiased; the coefficient
    is not zero when the pair agrees, which DisARM fixes.
    """
    V.choice("distribution", distribution, ("bernoulli",))
    d, noise, b, _b_anti, f_b, f_anti = _antithetic(f, params, n_samples, generator)
    batch_ndim = f_b.dim() - 1
    coef = (unsqueeze_to(f_anti - f_b, b) * (torch.sigmoid(-noise) - 0.5)).mean(0)
    return finish(0.5 * (f_b + f_anti).mean(0), param_term(coef, d.x, batch_ndim))


@register("disarm", distribution="bernoulli", kind="surrogate", unbiased=True,
          reference="Dong, Mnih and Tucker 2020, DisARM: an antithetic gradient estimator for binary latent variables")
def disarm(f: CostFn, params: torch.Tensor, *, distribution: str = "bernoulli", n_samples: int = 1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """DisARM: ARM with the augmentation integrated out.

    On the antithetic pair ``b = 1[u < σ(θ)]``, ``b̃ = 1[1 - u < σ(θ)]``::

        ĝ_k = ½ (f(b) - f(b̃)) (-1)^{b̃_k} 1[b_k ≠ b̃_k] σ(|θ_k|).

    Unbiased; never worse than ARM in variance (Dong et al. 2020, Thm. 1), zero on coordinates
    where the pair agrees.
    """
    V.choice("distribution", distribution, ("bernoulli",))
    d, _, b, b_anti, f_b, f_anti = _antithetic(f, params, n_samples, generator)
    batch_ndim = f_b.dim() - 1
    sign = 1.0 - 2.0 * b_anti
    coef = (0.5 * unsqueeze_to(f_b - f_anti, b) * sign * (b != b_anti).to(b.dtype)).mean(0)
    coef = coef * torch.sigmoid(d.x.detach().abs())
    return finish(0.5 * (f_b + f_anti).mean(0), param_term(coef, d.x, batch_ndim))
