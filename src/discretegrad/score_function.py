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
``sg(ĝ)(θ - sg(θ))``. The same function serves every family whose ``log_prob`` is tractable: the family's module
registers it with :func:`register_for` (``register_for("binomial", "reinforce", "rloo", "muprop")``),
and :func:`discretegrad.surrogate` passes the ``distribution`` and the family's options (``k``,
``total_count``), which reach the family's ``sample``/``log_prob``/``mean`` through ``**options``.
Estimators specific to one family (ARM/DisARM for Bernoulli) and REBAR/RELAX
(:mod:`discretegrad.relax`) use the shared pieces here.

``f`` must treat batch elements independently (its output ``[n, *batch]`` for element ``b``
depends only on ``z[:, b]``) for the per-element values to be per-element estimates.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype
from discretegrad.family import Family, Params
from discretegrad.registry import get_family, register

__all__ = [
    "EMABaseline",
    "EMAState",
    "GENERIC",
    "Draw",
    "ema_baseline",
    "muprop",
    "per_variable_costs",
    "register_for",
    "reinforce",
    "rloo",
]

CostFn = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- shared pieces

@dataclasses.dataclass(frozen=True)
class Draw:
    """What every score-function estimator starts from: the family, its options, the checked
    parameters as given and in the compute dtype (differentiable), ``n`` and the generator."""

    family: Family
    options: dict[str, Any]
    params: Params  # as given
    x: Params  # params in the compute dtype (differentiable)
    n: int
    generator: torch.Generator | None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype ``f`` sees: that of the (first) parameter as given."""
        return self.family.split(self.params)[0].dtype

    def expand(self, k: int = 1) -> Params:
        """``x`` with a new leading dim of ``k n`` samples."""
        return self.family.expand(self.x, k * self.n)

    def sample(self, k: int = 1) -> torch.Tensor:
        """``k n`` exact samples ``[k n, *params.shape]`` from the family (no gradient)."""
        return self.family.sample(self.expand(k), self.generator, **self.options)

    def costs(self, f: CostFn, z: torch.Tensor, k: int = 1) -> torch.Tensor:
        """``f(z)`` checked to be ``[k n, *batch]`` (``z`` is passed in the params' dtype)."""
        return self.family.check_costs(f(z.to(self.dtype)), k * self.n, self.params)

    def log_prob(self, z: torch.Tensor, batch_ndim: int, x: Params | None = None) -> torch.Tensor:
        """``log p(z_i)`` summed over the non-batch variables: ``[n, *batch]`` (``x``: the parameters
        the score is taken with respect to; default the expanded ``x``)."""
        x = self.expand() if x is None else x
        return sum_to_batch(self.family.log_prob(x, z, **self.options), batch_ndim, 1)


def setup(f: object, params: Params, distribution: str, n_samples: int,
          generator: torch.Generator | None, options: dict[str, Any], min_samples: int = 1) -> Draw:
    """Check ``f``, ``params``, the options, ``n_samples`` and the generator once."""
    family = get_family(distribution)
    if not callable(f):
        raise TypeError(f"Expected f to be callable, but got {type(f).__name__}")
    family.check(params)
    options = family.check_options(options, params)
    n = V.positive_int("n_samples", n_samples, minimum=min_samples)
    generator = V.generator_for("generator", generator, family.split(params)[0])
    x = family.map(lambda t: t.to(compute_dtype(t.dtype)), params)
    return Draw(family, options, params, x, n, generator)


def sum_to_batch(t: torch.Tensor, batch_ndim: int, lead: int) -> torch.Tensor:
    """Sum every dim after the ``lead`` leading dims and ``batch_ndim`` batch dims."""
    dims = tuple(range(lead + batch_ndim, t.dim()))
    return t.sum(dims) if dims else t


def unsqueeze_to(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(*t.shape, *([1] * (like.dim() - t.dim())))


def score_term(weights: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Value 0, gradient ``(1/n) Σ_i sg(w_i) ∇ log p(z_i)``: ``[*batch]``."""
    return (weights.detach() * (logp - logp.detach())).mean(0)


def param_term(coef: torch.Tensor, x: torch.Tensor, batch_ndim: int) -> torch.Tensor:
    """Value 0, gradient ``coef`` with respect to ``x``: ``[*batch]`` (zero, not ``inf - inf``, at a
    masked ``-inf`` logit)."""
    x = torch.where(torch.isinf(x.detach()), 0.0, x)
    return sum_to_batch(coef.detach() * (x - x.detach()), batch_ndim, 0)


def finish(value: torch.Tensor, *zero_terms: torch.Tensor) -> torch.Tensor:
    """``value`` plus zero-valued terms that carry the gradient."""
    for t in zero_terms:
        value = value + t.to(value.dtype)
    return value


MAX_CHUNK_NUMBERS = 1 << 22
"""Largest number of entries of the modified samples that :func:`per_variable_costs` passes to ``f`` at once."""


def per_variable_costs(f: CostFn, d: Draw, z: torch.Tensor, batch_ndim: int,
                       replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], m: int) -> torch.Tensor:
    """``f`` at ``m`` modified copies of the samples per variable of a batch element, without gradient.

    The ``V = prod(var_shape[batch_ndim:])`` variables of one batch element are changed one at a
    time, in every batch element at once (``f`` treats batch elements independently).
    ``replace(inner, mask)`` gets the samples ``inner [n, *batch, V, *event]`` and a bool
    ``mask [c, 1, 1, *batch 1s, V, *event 1s]`` selecting one variable per row and returns
    ``[c, m, n, *batch, V, *event]``. Returns the costs ``[V, m, n, *batch]``, evaluated in chunks of
    variables whose points hold at most about :data:`MAX_CHUNK_NUMBERS` numbers. Costs ``V m n``
    rows of ``f`` (IndeCateR: ``m = N`` categories; Poisson forward difference: ``m = 1``).
    """
    var_shape = tuple(d.family.var_shape(d.params))
    batch, v = var_shape[:batch_ndim], math.prod(var_shape[batch_ndim:])
    event = tuple(z.shape[1 + len(var_shape):])
    inner = z.reshape(d.n, *batch, v, *event)
    chunk = max(1, MAX_CHUNK_NUMBERS // max(1, m * z.numel()))
    eye = torch.eye(v, dtype=torch.bool, device=z.device)
    out = []
    with torch.no_grad():
        for start in range(0, v, chunk):
            mask = eye[start:start + chunk]
            c = mask.shape[0]
            points = replace(inner, mask.reshape(c, 1, 1, *([1] * len(batch)), v, *([1] * len(event))))
            rows = c * m * d.n
            costs = d.family.check_costs(f(points.reshape(rows, *z.shape[1:]).to(d.dtype)), rows, d.params)
            out.append(costs.reshape(c, m, d.n, *costs.shape[1:]))
    return torch.cat(out)


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

def reinforce(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 1,
              generator: torch.Generator | None = None, baseline: object = None, **options: Any) -> torch.Tensor:
    """REINFORCE (score function, likelihood ratio): ``(1/n) Σ_i (f(z_i) - b) ∇ log p(z_i)``.

    ``baseline`` ``b``: ``None`` (0), a float, a tensor broadcastable to the batch shape, or an
    :class:`EMAState` from :func:`ema_baseline`. Unbiased for any ``b`` that does not depend on
    the current samples; variance grows with ``|f - b|`` and the number of variables.
    """
    d = setup(f, params, distribution, n_samples, generator, options)
    z = d.sample()
    costs = d.costs(f, z)
    b = _baseline(baseline, costs)
    return finish(costs.mean(0), score_term(costs - b, d.log_prob(z, costs.dim() - 1)))


def rloo(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 2,
         generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
    """REINFORCE with the leave-one-out baseline ``b_i = mean_{j≠i} f(z_j)`` (``n_samples >= 2``).

    ``(1/n) Σ_i (f(z_i) - b_i) ∇ log p(z_i)``; unbiased because ``b_i`` is independent of ``z_i``.
    """
    d = setup(f, params, distribution, n_samples, generator, options, min_samples=2)
    z = d.sample()
    costs = d.costs(f, z)
    loo = (costs.sum(0, keepdim=True) - costs) / (d.n - 1)
    return finish(costs.mean(0), score_term(costs - loo, d.log_prob(z, costs.dim() - 1)))


def _slope_at(f: CostFn, point: torch.Tensor, d: Draw) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(μ̄)`` ``[1, *batch]`` and ``∂f/∂z`` at ``μ̄`` ``[1, *params.shape]``, both detached."""
    point = point.detach().unsqueeze(0).requires_grad_(True)
    with torch.enable_grad():
        value = d.family.check_costs(f(point.to(d.dtype)), 1, d.params)
        if value.requires_grad:
            (slope,) = torch.autograd.grad(value.sum(), point, allow_unused=True)
        else:
            slope = None
    return value.detach(), (torch.zeros_like(point) if slope is None else slope).detach()


def muprop(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 1,
           generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
    """MuProp: REINFORCE with the first-order Taylor expansion of ``f`` at the mean as control variate.

    With ``μ̄ = sg(E_θ[z])`` and ``h(z) = f(μ̄) + f'(μ̄)·(z - μ̄)``::

        ĝ = (1/n) Σ_i (f(z_i) - h(z_i)) ∇ log p(z_i) + f'(μ̄)·∇_θ E_θ[z].

    Unbiased (``E[h]`` is linear in ``E[z]``, so its gradient is exact). ``f`` must be
    differentiable in ``z`` and accept the real-valued mean (categorical: probabilities; Poisson:
    the rate). Costs one extra forward and backward of ``f``. Low variance when ``f`` is close to
    linear over the support.
    """
    d = setup(f, params, distribution, n_samples, generator, options)
    z = d.sample()
    costs = d.costs(f, z)
    batch_ndim = costs.dim() - 1
    mean = d.family.mean(d.x, **d.options)
    f_bar, slope = _slope_at(f, mean, d)
    taylor = f_bar + sum_to_batch(slope * (z - mean.detach()), batch_ndim, 1)
    return finish(costs.mean(0), score_term(costs - taylor, d.log_prob(z, batch_ndim)),
                  param_term(slope[0], mean, batch_ndim))


_REFERENCES = {
    "reinforce": "Williams 1992, Simple statistical gradient-following algorithms",
    "rloo": "Kool et al. 2019, Buy 4 REINFORCE samples, get a baseline for free!",
    "muprop": "Gu et al. 2016, MuProp: unbiased backpropagation for stochastic neural networks",
}

GENERIC: dict[str, tuple[Callable[..., torch.Tensor], int]] = {
    "reinforce": (reinforce, 1),
    "rloo": (rloo, 2),
    "muprop": (muprop, 1),
}
"""The family-generic score-function estimators: name -> (function, min_samples)."""


def register_for(distribution: str, *names: str) -> None:
    """Register the generic estimators ``names`` (default: all of :data:`GENERIC`) for a family
    whose ``log_prob`` is tractable (MuProp also needs its ``mean`` and a cost defined on it)."""
    for name in names or tuple(GENERIC):
        fn, min_samples = GENERIC[name]
        register(name, distribution=distribution, kind="surrogate", unbiased=True, reference=_REFERENCES[name],
                 min_samples=min_samples)(fn)
