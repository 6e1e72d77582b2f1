"""Score-function estimators: they need the cost ``f``, so they are used through
:func:`discretegrad.surrogate` (or called directly with ``distribution=``).

Every estimator returns a surrogate of shape ``[*batch_shape]`` whose **value** is the Monte
Carlo estimate ``(1/n) Σ_i f(z_i)`` of ``E[f(z)]`` and whose **gradient** is

* with respect to ``params``: the estimator's unbiased estimate of ``∇_θ E[f(z)]``;
* with respect to anything ``f`` depends on (a decoder): the pathwise ``(1/n) Σ_i ∇ f(z_i)``
  (DiCE-style: the samples are constants, the score terms have value zero),

so one ``loss.backward()`` trains an encoder and a decoder together. The pieces they share live
here once: drawing ``n`` samples through the family, evaluating and checking costs
(:func:`discretegrad.surrogate.check_costs`), the log-probability summed to the batch shape,
the zero-valued score term ``sg(w)(log p - sg(log p))`` and the zero-valued parameter term
``sg(ĝ)(θ - sg(θ))``. The same function is registered for several distributions by
:func:`_register_for`; :func:`discretegrad.surrogate` passes the ``distribution``.

``f`` must treat batch elements independently (its output ``[n, *batch]`` for element ``b``
depends only on ``z[:, b]``) for the per-element values to be per-element estimates.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype
from discretegrad.bernoulli import conditional_logistic, logistic
from discretegrad.distributions import Family, get_distribution, one_hot_like
from discretegrad.noise import conditional_gumbel, gumbel_max
from discretegrad.registry import register
from discretegrad.surrogate import check_costs

__all__ = [
    "EMABaseline",
    "EMAState",
    "RelaxEstimate",
    "arm",
    "disarm",
    "ema_baseline",
    "muprop",
    "rebar",
    "reinforce",
    "relax",
    "relax_estimate",
    "rloo",
]

CostFn = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- registration

def _register_for(name: str, distributions: Sequence[str], **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``core(f, params, *, distribution, ...)`` as an unbiased surrogate-kind estimator for
    each of ``distributions`` (``dg.surrogate`` passes ``distribution``)."""

    def deco(core: Callable[..., Any]) -> Callable[..., Any]:
        for dist in distributions:
            register(name, distribution=dist, kind="surrogate", unbiased=True, **kwargs)(core)
        return core

    return deco


# ----------------------------------------------------------------------------- shared pieces

@dataclasses.dataclass(frozen=True)
class _Draw:
    family: Family
    params: torch.Tensor  # as given
    x: torch.Tensor  # params in the compute dtype (differentiable)
    n: int
    generator: torch.Generator | None


def _setup(f: object, params: torch.Tensor, distribution: str, n_samples: int,
           generator: torch.Generator | None, min_samples: int = 1) -> _Draw:
    family = get_distribution(distribution)
    if not callable(f):
        raise TypeError(f"Expected f to be callable, but got {type(f).__name__}")
    family.check(params)
    n = V.positive_int("n_samples", n_samples, minimum=min_samples)
    generator = V.generator_for("generator", generator, params)
    return _Draw(family, params, params.to(compute_dtype(params.dtype)), n, generator)


def _expand(d: _Draw, k: int = 1) -> torch.Tensor:
    return d.x.expand(k * d.n, *d.x.shape)


def _costs(f: CostFn, z: torch.Tensor, d: _Draw, k: int = 1) -> torch.Tensor:
    """``f(z)`` checked to be ``[k n, *batch]`` (``z`` is passed in the params' dtype)."""
    return check_costs(f(z.to(d.params.dtype)), k * d.n, d.params, d.family)


def _sum_to_batch(t: torch.Tensor, batch_ndim: int, lead: int) -> torch.Tensor:
    """Sum every dim after the ``lead`` leading dims and ``batch_ndim`` batch dims."""
    dims = tuple(range(lead + batch_ndim, t.dim()))
    return t.sum(dims) if dims else t


def _log_prob(d: _Draw, x: torch.Tensor, z: torch.Tensor, batch_ndim: int) -> torch.Tensor:
    """``log p(z_i)`` summed over the non-batch variables: ``[n, *batch]``."""
    return _sum_to_batch(d.family.log_prob(x, z), batch_ndim, 1)


def _unsqueeze_to(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(*t.shape, *([1] * (like.dim() - t.dim())))


def _score_term(weights: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Value 0, gradient ``(1/n) Σ_i sg(w_i) ∇ log p(z_i)``: ``[*batch]``."""
    return (weights.detach() * (logp - logp.detach())).mean(0)


def _param_term(coef: torch.Tensor, x: torch.Tensor, batch_ndim: int) -> torch.Tensor:
    """Value 0, gradient ``coef`` with respect to ``x``: ``[*batch]``."""
    return _sum_to_batch(coef.detach() * (x - x.detach()), batch_ndim, 0)


def _finish(value: torch.Tensor, *zero_terms: torch.Tensor) -> torch.Tensor:
    for t in zero_terms:
        value = value + t.to(value.dtype)
    return value


def _needs_param_grad(d: _Draw) -> bool:
    return torch.is_grad_enabled() and d.params.requires_grad


# ----------------------------------------------------------------------------- baselines

@dataclasses.dataclass(frozen=True)
class EMAState:
    """State of an exponential-moving-average baseline (immutable; ``update`` returns a new one).

    ``value`` is the bias-corrected average ``average / (1 - decay**count)`` (zero before the
    first update), as in Adam.
    """

    average: torch.Tensor
    count: int
    decay: float

    @property
    def value(self) -> torch.Tensor:
        if self.count == 0:
            return torch.zeros_like(self.average)
        return self.average / (1 - self.decay**self.count)


class EMABaseline(NamedTuple):
    """A pair of pure functions, optax-style: ``state = init()``; ``state = update(state, costs)``."""

    init: Callable[[], EMAState]
    update: Callable[[EMAState, torch.Tensor], EMAState]


def ema_baseline(decay: float = 0.9) -> EMABaseline:
    """Exponential-moving-average baseline for :func:`reinforce`, with explicit state.

    ``update`` folds in the (detached) costs, e.g. the value of the previous surrogate; the
    state takes the shape of what it is fed (feed ``loss.mean()`` for a scalar baseline).
    Pass ``baseline=state`` to :func:`reinforce`: it only uses costs of *earlier* steps, so the
    estimator stays unbiased.

    Example:
        >>> ema = ema_baseline(0.9)
        >>> state = ema.init()
        >>> for _ in range(steps):
        ...     loss = dg.surrogate(f, logits, distribution="bernoulli", estimator="reinforce",
        ...                         baseline=state).mean()
        ...     state = ema.update(state, loss)
    """
    if not isinstance(decay, numbers.Real) or isinstance(decay, bool) or not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"Expected decay to be a float in [0, 1), but got {decay!r}")
    decay = float(decay)

    def init() -> EMAState:
        return EMAState(torch.zeros(()), 0, decay)

    def update(state: EMAState, costs: torch.Tensor) -> EMAState:
        if not isinstance(state, EMAState):
            raise TypeError(f"Expected state to be an EMAState, but got {type(state).__name__}")
        if not isinstance(costs, torch.Tensor):
            raise TypeError(f"Expected costs to be a torch.Tensor, but got {type(costs).__name__}")
        costs = costs.detach()
        average = decay * state.average.to(costs) + (1 - decay) * costs
        return EMAState(average, state.count + 1, decay)

    return EMABaseline(init, update)


def _baseline(baseline: object, costs: torch.Tensor) -> torch.Tensor | float:
    """A baseline value broadcastable to ``costs`` ``[n, *batch]`` (detached)."""
    if baseline is None:
        return 0.0
    if isinstance(baseline, EMAState):
        baseline = baseline.value
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point():
            raise TypeError(f"Expected baseline to be a floating-point tensor, but got dtype {baseline.dtype}")
        batch = tuple(costs.shape[1:])
        if baseline.dim() > len(batch) or any(b not in (1, c) for b, c in zip(reversed(baseline.shape), reversed(batch))):
            raise ValueError(f"Expected baseline to broadcast to the batch shape {batch}, "
                             f"but got shape {tuple(baseline.shape)}")
        V.finite("baseline", baseline)
        return baseline.detach().to(costs)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if math.isfinite(float(baseline)):
            return float(baseline)
        raise ValueError(f"Expected baseline to be finite, but got {baseline!r}")
    raise TypeError(f"Expected baseline to be None, a float, a tensor or an EMAState, but got {baseline!r}")


# ----------------------------------------------------------------------------- estimators

_ALL = ("bernoulli", "categorical", "poisson")


@_register_for("reinforce", _ALL, reference="Williams 1992, Simple statistical gradient-following algorithms")
def reinforce(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 1,
              generator: torch.Generator | None = None, baseline: object = None) -> torch.Tensor:
    """REINFORCE (score function, likelihood ratio): ``(1/n) Σ_i (f(z_i) - b) ∇ log p(z_i)``.

    ``baseline`` ``b``: ``None`` (0), a float, a tensor broadcastable to the batch shape, or an
    :class:`EMAState` from :func:`ema_baseline`. Unbiased for any ``b`` that does not depend on
    the current samples; variance grows with ``|f - b|`` and the number of variables.
    """
    d = _setup(f, params, distribution, n_samples, generator)
    z = d.family.sample(_expand(d), d.generator)
    costs = _costs(f, z, d)
    b = _baseline(baseline, costs)
    logp = _log_prob(d, _expand(d), z, costs.dim() - 1)
    return _finish(costs.mean(0), _score_term(costs - b, logp))


@_register_for("rloo", _ALL, min_samples=2,
               reference="Kool et al. 2019, Buy 4 REINFORCE samples, get a baseline for free!")
def rloo(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 2,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """REINFORCE with the leave-one-out baseline ``b_i = mean_{j≠i} f(z_j)`` (``n_samples >= 2``).

    ``(1/n) Σ_i (f(z_i) - b_i) ∇ log p(z_i)``; unbiased because ``b_i`` is independent of ``z_i``.
    """
    d = _setup(f, params, distribution, n_samples, generator, min_samples=2)
    z = d.family.sample(_expand(d), d.generator)
    costs = _costs(f, z, d)
    loo = (costs.sum(0, keepdim=True) - costs) / (d.n - 1)
    logp = _log_prob(d, _expand(d), z, costs.dim() - 1)
    return _finish(costs.mean(0), _score_term(costs - loo, logp))


def _slope_at(f: CostFn, point: torch.Tensor, d: _Draw) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(μ̄)`` ``[1, *batch]`` and ``∂f/∂z`` at ``μ̄`` ``[1, *params.shape]``, both detached."""
    point = point.detach().unsqueeze(0).requires_grad_(True)
    with torch.enable_grad():
        value = check_costs(f(point.to(d.params.dtype)), 1, d.params, d.family)
        if value.requires_grad:
            (slope,) = torch.autograd.grad(value.sum(), point, allow_unused=True)
        else:
            slope = None
    return value.detach(), (torch.zeros_like(point) if slope is None else slope).detach()


@_register_for("muprop", _ALL, reference="Gu et al. 2016, MuProp: unbiased backpropagation for stochastic neural networks")
def muprop(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 1,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """MuProp: REINFORCE with the first-order Taylor expansion of ``f`` at the mean as control variate.

    With ``μ̄ = sg(E_θ[z])`` and ``h(z) = f(μ̄) + f'(μ̄)·(z - μ̄)``::

        ĝ = (1/n) Σ_i (f(z_i) - h(z_i)) ∇ log p(z_i) + f'(μ̄)·∇_θ E_θ[z].

    Unbiased (``E[h]`` is linear in ``E[z]``, so its gradient is exact). ``f`` must be
    differentiable in ``z`` and accept the real-valued mean (categorical: probabilities; Poisson:
    the rate). Costs one extra forward and backward of ``f``. Low variance when ``f`` is close to
    linear over the support.
    """
    d = _setup(f, params, distribution, n_samples, generator)
    z = d.family.sample(_expand(d), d.generator)
    costs = _costs(f, z, d)
    batch_ndim = costs.dim() - 1
    mean = d.family.mean(d.x)
    f_bar, slope = _slope_at(f, mean, d)
    taylor = f_bar + _sum_to_batch(slope * (z - mean.detach()), batch_ndim, 1)
    logp = _log_prob(d, _expand(d), z, batch_ndim)
    return _finish(costs.mean(0), _score_term(costs - taylor, logp), _param_term(slope[0], mean, batch_ndim))


def _antithetic(f: CostFn, params: torch.Tensor, n_samples: int, generator: torch.Generator | None):
    """Antithetic pair ``b = 1[θ + L > 0]``, ``b̃ = 1[θ - L > 0]`` and their costs."""
    d = _setup(f, params, "bernoulli", n_samples, generator)
    x = d.x.detach()
    noise = logistic((d.n, *x.shape), dtype=x.dtype, device=x.device, generator=d.generator)
    b, b_anti = (x + noise > 0).to(x.dtype), (x - noise > 0).to(x.dtype)
    costs = _costs(f, torch.cat([b, b_anti]), d, k=2)
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
    coef = (_unsqueeze_to(f_anti - f_b, b) * (torch.sigmoid(-noise) - 0.5)).mean(0)
    return _finish(0.5 * (f_b + f_anti).mean(0), _param_term(coef, d.x, batch_ndim))


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
    coef = (0.5 * _unsqueeze_to(f_b - f_anti, b) * sign * (b != b_anti).to(b.dtype)).mean(0)
    coef = coef * torch.sigmoid(d.x.detach().abs())
    return _finish(0.5 * (f_b + f_anti).mean(0), _param_term(coef, d.x, batch_ndim))


# ----------------------------------------------------------------------------- REBAR / RELAX

def _relaxed_bernoulli(x: torch.Tensor, generator: torch.Generator | None):
    z = x + logistic(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    hard = (z.detach() > 0).to(x.dtype)
    return z, conditional_logistic(x, hard, generator=generator), hard


def _relaxed_categorical(x: torch.Tensor, generator: torch.Generator | None):
    perturbed, index = gumbel_max(x, generator=generator)
    tilde = conditional_gumbel(x, index, 1, generator=generator, reparameterized=True)[0]
    return perturbed, tilde, one_hot_like(index, x.detach())


# distribution -> (draw (z, z̃, b) reparameterised in the logits, relaxation of z at temperature τ)
_RELAXATIONS: dict[str, tuple[Callable[..., Any], Callable[[torch.Tensor, float], torch.Tensor]]] = {
    "bernoulli": (_relaxed_bernoulli, lambda z, tau: torch.sigmoid(z / tau)),
    "categorical": (_relaxed_categorical, lambda z, tau: torch.softmax(z / tau, -1)),
}


class RelaxEstimate(NamedTuple):
    """``surrogate``: as every estimator returns (value = mean of ``f``); ``grad``: the RELAX
    estimate of ``∇_θ Σ_batch E[f]`` (shape of ``params``; ``None`` when ``params`` needs no
    gradient), differentiable in the control variate's parameters when ``create_graph=True``."""

    surrogate: torch.Tensor
    grad: torch.Tensor | None


def _check_control_variate(control_variate: object) -> None:
    if control_variate is not None and not callable(control_variate):
        raise TypeError(f"Expected control_variate to be callable or None, but got {type(control_variate).__name__}")


def relax_estimate(
    f: CostFn,
    params: torch.Tensor,
    *,
    distribution: str,
    control_variate: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    tau: float = 0.5,
    eta: float = 1.0,
    create_graph: bool = False,
) -> RelaxEstimate:
    """RELAX (Grathwohl et al. 2018, Alg. 1) for Bernoulli and categorical variables.

    With the relaxed variable ``z = θ + noise`` (logistic / Gumbel), ``b = H(z)`` (the hard
    sample) and ``z̃ ~ p(z | b)`` (reparameterised, conditional), for a control variate ``c``::

        ĝ = (1/n) Σ_i [f(b_i) - c(z̃_i)] ∇_θ log p(b_i) + ∇_θ c(z_i) - ∇_θ c(z̃_i).

    Unbiased for every ``c`` (``E[c(z)] = E[c(z̃)]``, both terms reparameterised). ``c`` maps a
    relaxed variable ``[k, *params.shape]`` to ``[k, *batch_shape]``; ``None`` means REBAR's
    ``η f(σ(z/τ))`` (categorical: ``softmax(z/τ)``), so ``f`` must accept relaxed inputs.

    Training the control variate (Grathwohl et al. 2018, Alg. 2): since ``ĝ`` is unbiased for
    every ``c``, ``∇_φ Var(ĝ) = ∇_φ E[ĝ²]``. With ``create_graph=True`` the returned ``grad``
    keeps its graph to ``c``'s parameters φ, so ``(grad ** 2).sum()`` is the variance loss::

        est = relax_estimate(f, logits, distribution="bernoulli", control_variate=cv, create_graph=True)
        grads_phi = torch.autograd.grad((est.grad ** 2).sum(), cv.parameters(), retain_graph=True)
        est.surrogate.mean().backward()   # encoder and decoder, as with any estimator

    (this minimises the variance of the gradient with respect to ``params``; to target the
    encoder's weights instead, push ``est.grad`` through the encoder with
    ``torch.autograd.grad(logits, enc_params, est.grad, create_graph=True)``). ``surrogate``
    sends gradient to ``params`` (``sg(ĝ)``) and pathwise to ``f``'s parameters through
    ``f(b)`` only, never to φ.
    """
    if distribution not in _RELAXATIONS:
        raise ValueError(f"Expected distribution to be one of {sorted(_RELAXATIONS)}, but got {distribution!r}")
    d = _setup(f, params, distribution, n_samples, generator)
    tau = V.positive_float("tau", tau)
    if not isinstance(eta, numbers.Real) or isinstance(eta, bool) or not math.isfinite(float(eta)):
        raise ValueError(f"Expected eta to be a finite float, but got {eta!r}")
    _check_control_variate(control_variate)
    draw, relax_fn = _RELAXATIONS[distribution]
    xs = _expand(d)
    z, z_tilde, hard = draw(xs, d.generator)
    costs = _costs(f, hard, d)
    if not _needs_param_grad(d):
        return RelaxEstimate(costs.mean(0), None)
    batch_ndim = costs.dim() - 1
    if control_variate is None:
        def control_variate(u: torch.Tensor) -> torch.Tensor:
            return float(eta) * f(relax_fn(u, tau).to(d.params.dtype))
    c = check_costs(control_variate(torch.cat([z, z_tilde])), 2 * d.n, d.params, d.family)
    c_z, c_tilde = c[: d.n], c[d.n:]
    logp = _log_prob(d, xs, hard, batch_ndim)
    (score,) = torch.autograd.grad(logp.sum(), xs, retain_graph=True)
    diff = (c_z - c_tilde).sum()
    dc = None
    if diff.requires_grad:
        (dc,) = torch.autograd.grad(diff, xs, create_graph=create_graph, retain_graph=True, allow_unused=True)
    weights = costs.detach() - c_tilde
    if not create_graph:
        weights = weights.detach()
    per_sample = _unsqueeze_to(weights, score) * score.detach()
    if dc is not None:
        per_sample = per_sample + dc
    grad = per_sample.mean(0)
    surrogate = _finish(costs.mean(0), _param_term(grad, d.x, batch_ndim))
    return RelaxEstimate(surrogate, grad if create_graph else grad.detach())


_RELAX_REF = "Grathwohl et al. 2018, Backpropagation through the void"
_REBAR_REF = "Tucker et al. 2017, REBAR: low-variance, unbiased gradient estimates for discrete latent variable models"


@_register_for("rebar", ("bernoulli", "categorical"), reference=_REBAR_REF)
def rebar(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 1,
          generator: torch.Generator | None = None, tau: float = 0.5, eta: float = 1.0) -> torch.Tensor:
    """REBAR: RELAX with the control variate ``η f(σ(z/τ))`` (categorical: ``softmax(z/τ)``).

    Unbiased for every ``τ > 0`` and ``η``; ``f`` must accept relaxed inputs. Tucker et al. also
    tune ``τ`` and ``η`` by minimising the variance; here they are fixed hyperparameters (tune
    them with :func:`relax_estimate` and a control variate that owns them).
    """
    return relax_estimate(f, params, distribution=distribution, n_samples=n_samples, generator=generator,
                          tau=tau, eta=eta).surrogate


@_register_for("relax", ("bernoulli", "categorical"), reference=_RELAX_REF)
def relax(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 1,
          generator: torch.Generator | None = None, control_variate: Callable[[torch.Tensor], torch.Tensor] | None = None,
          tau: float = 0.5) -> torch.Tensor:
    """RELAX with a given control variate ``c(z)`` (default: REBAR's ``f(σ(z/τ))``, η = 1).

    Unbiased for every ``c``. To *learn* ``c`` by minimising the estimator's variance, use
    :func:`relax_estimate` with ``create_graph=True`` (see ``examples/relax_training.py``).
    ``tau`` is used by the default control variate only.
    """
    return relax_estimate(f, params, distribution=distribution, control_variate=control_variate,
                          n_samples=n_samples, generator=generator, tau=tau).surrogate
