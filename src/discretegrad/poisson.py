"""Poisson variables: the distribution family and its drop-in ops (ST and pWGF-MMD).

Every op takes ``rate`` (``λ > 0``, any shape, float) and returns an exact sample
``z ~ Poisson(λ)`` (a non-negative integer-valued float tensor of the same shape and dtype),
drawn by ``torch.poisson`` with the given ``generator``; half precision is computed in float32
and the sample cast back, so counts above the dtype's exact-integer range (256 in bfloat16,
2048 in float16) are rounded to representable integers.

Truncation. Sums over the infinite support use a window that holds all but ``TAIL = 1e-10`` of
the mass, from the sub-gamma tail bounds of the centred Poisson variable (Boucheron, Lugosi and
Massart 2013, Sec. 2.4; log-MGF ``λ(e^s - 1 - s)``)::

    P(X ≥ λ + sqrt(2λL) + L/3) ≤ e^{-L},        P(X ≤ λ - sqrt(2λL)) ≤ e^{-L}.

``support`` (for :func:`discretegrad.exact.expectation`) enumerates ``0..K`` with
``K = ceil(λ_max + sqrt(2 λ_max L) + L/3)``, ``L = log(1/TAIL)``, so every variable (the
Poisson family is stochastically increasing in λ) has ``P(X > K) < 1e-10``; e.g. ``K = 26`` for
``λ_max = 3`` and ``K = 10699`` for ``λ_max = 1e4``. pWGF-MMD sums over the per-variable window
``[λ - sqrt(2λL), λ + sqrt(2λL) + L/3]`` with ``L = log(2/TAIL)`` (both tails together below
``TAIL``); its width grows like ``sqrt(λ)`` (about 1400 atoms at ``λ = 1e4``), and backward
memory is ``numel × width``.
"""

from __future__ import annotations

import math

import torch

from torch.distributions import constraints

from discretegrad import _pwgf, score_function
from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad.family import Example, Family, Param
from discretegrad.registry import register, register_family

__all__ = ["TAIL", "check_rate", "family", "forward_difference", "forward_difference_shared", "pwgf_mmd", "st", "upper_bound"]

TAIL = 1e-10
"""Probability mass left out by every truncated sum over the Poisson support."""

_PWGF = "Cheng et al. 2019, Straight-through estimator as projected Wasserstein gradient flow"


def check_rate(rate: object, name: str = "rate") -> torch.Tensor:
    """Poisson rates: a float tensor of any shape, finite and ``> 0`` when validating."""
    t = V.float_tensor(name, rate)
    if V.checking() and not bool((torch.isfinite(t.detach()) & (t.detach() > 0)).all()):
        raise ValueError(
            f"Expected {name} (Tensor of shape {tuple(t.shape)}) to be finite and > 0, but found invalid values")
    return t


def _upper(rate: torch.Tensor | float, log_inv_tail: float):
    """``λ + sqrt(2λL) + L/3``: the sub-gamma upper deviation bound at level ``e^{-L}``."""
    if isinstance(rate, torch.Tensor):
        return rate + torch.sqrt(2 * rate * log_inv_tail) + log_inv_tail / 3
    return rate + math.sqrt(2 * rate * log_inv_tail) + log_inv_tail / 3


def upper_bound(max_rate: float, tail: float = TAIL) -> int:
    """Smallest integer ``K`` the tail bound certifies: ``P(X > K) < tail`` for every ``λ ≤ max_rate``."""
    return math.ceil(_upper(float(max_rate), math.log(1 / tail)))


def log_pmf(rate: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``z log λ - λ - log z!`` (``0 log 0 = 0``)."""
    return torch.xlogy(z, rate) - rate - torch.lgamma(z + 1)


def _sample(rate: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    x = rate.detach().to(compute_dtype(rate.dtype))
    return torch.poisson(x, generator=generator).to(rate.dtype)


def _support(rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = upper_bound(float(rate.detach().max()) if rate.numel() else 0.0)
    atoms = torch.arange(k + 1, dtype=rate.dtype, device=rate.device)
    return atoms, log_pmf(rate.unsqueeze(-1), atoms)


def _example() -> Example:
    g = torch.Generator().manual_seed(2)
    v = 3
    rate = 0.5 + 2.5 * torch.rand(1, v, generator=g, dtype=torch.float64)
    w = torch.randn(v, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z @ w) + 0.1 * (z.sum(-1) - 4.0) ** 2

    return Example(f"{v} Poisson variables (rates {[round(r, 2) for r in rate[0].tolist()]}), "
                   f"f(z) = sin(w . z) + 0.1 (sum z - 4)^2", rate, f)


family = register_family(
    Family(
        name="poisson",
        params=(Param("rate", constraints.positive, check_rate),),
        event_ndim=0,
        sample_fn=_sample,
        log_prob_fn=log_pmf,
        support_fn=_support,
        mean_fn=lambda rate: rate,
        example=_example,
        support_size_fn=lambda rate: upper_bound(float(rate.max()) if rate.numel() else 0.0) + 1,
    )
)
score_function.register_for("poisson")


def _prepare(rate: torch.Tensor, generator: torch.Generator | None):
    check_rate(rate)
    generator = V.generator_for("generator", generator, rate)
    x = rate.to(compute_dtype(rate.dtype))
    return x, torch.poisson(x.detach(), generator=generator)


@register("st", distribution="poisson", reference="Bengio et al. 2013; " + _PWGF + ", Sec. 2.1")
def st(rate: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through: forward z, backward through the mean λ.

    ``z + λ - sg(λ)``: the gradient is ``f'(z)`` where the exact one is ``E[f(z+1) - f(z)]``.
    Biased; the expectation-difference projection of pWGF (Cheng et al. 2019, Sec. 2.1).
    """
    x, hard = _prepare(rate, generator)
    return straight_through(hard, x).to(rate.dtype)


def _window_pmf(rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variable window of atoms (module docstring) and the pmf on it, accurate at any rate.

    ``log p(s) - log p(m)``, ``m = floor(λ)`` the mode, is summed from the ratios
    ``log(p(s)/p(s-1)) = log(λ/s)`` outwards from the mode (``log1p((λ - s)/s)`` where ``λ/s`` is
    near 1, so each term is exact to rounding of its own size), then normalised over the window
    (which holds all but ``TAIL`` of the mass). ``z log λ - λ - log z!`` directly would cancel
    terms of size ``λ log λ`` (``1.4e7`` at ``λ = 1e6``, where float32 rounds to 1).
    """
    log_inv = math.log(2 / TAIL)
    lo = torch.floor((rate - torch.sqrt(2 * rate * log_inv)).clamp_min(0))
    hi = torch.ceil(_upper(rate, log_inv))
    width = int((hi - lo).max()) + 1 if rate.numel() else 1
    index = torch.arange(width, dtype=rate.dtype, device=rate.device)
    atoms = lo.unsqueeze(-1) + index
    r = rate.unsqueeze(-1)
    mode = torch.floor(r)
    s = atoms.clamp_min(1)
    near = (r - s).abs() <= 0.5 * s
    ratio = torch.where(near, torch.log1p((r - s) / s), torch.log(r / s))  # log p(s)/p(s-1), s >= 1
    ratio = torch.where(index >= 1, ratio, torch.zeros_like(ratio))  # the window's first atom has none
    above = torch.where(atoms > mode, ratio, torch.zeros_like(ratio)).cumsum(-1)  # Σ_{m < i <= s}
    below_terms = torch.where(atoms <= mode, ratio, torch.zeros_like(ratio))
    below = below_terms.flip(-1).cumsum(-1).flip(-1) - below_terms  # Σ_{s < i <= m}
    return atoms, torch.softmax(above - below, -1)


def _pmf_derivative(rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variable window of atoms and ``∂p_λ(s)/∂λ = p_λ(s-1) - p_λ(s) = p_λ(s) (s - λ)/λ`` on it.

    The product form has no cancellation (the difference of two nearly equal probabilities would
    lose ``log10(λ/|s - λ|)`` digits).
    """
    atoms, pmf = _window_pmf(rate)
    r = rate.unsqueeze(-1)
    return atoms, pmf * (atoms - r) / r


pwgf_mmd = register("pwgf_mmd", distribution="poisson", reference=_PWGF + ", Sec. 2.2 and 3.1")(
    _pwgf.make_pwgf_mmd(_prepare, _pmf_derivative, module=__name__, doc="""pWGF with the MMD projection: forward z, backward the derivative of the squared MMD.

    With upstream gradient ``g`` at ``z``, moved particle ``z̃ = z - ε g`` (``ε = step``) and the
    control variate of Sec. 2.1 (derivation in :mod:`discretegrad._pwgf`)::

        ĝ_λ = -(1/ε) Σ_s [p_λ(s-1) - p_λ(s)] [K(s, z̃) - K(s, z)],

    the sum over the window of the module docstring (mass outside it below ``1e-10``).
    ``kernel="rbf"`` is ``h² exp(-(s-y)²/(2h²))`` with ``h = bandwidth``; ``kernel="linear"``
    gives ST exactly (up to the truncated mass). Biased like ST, plus an ``O(ε)`` bias; an
    independent study of pWGF found it keeps ST's fixed point on ``E[(z-7)²]``. ``mean_over = M``:
    the loss averages ``M`` per-sample costs, and ε is applied to the per-sample gradient ``M g``
    (:mod:`discretegrad._pwgf`). Defaults: see ``results/pwgf_defaults/``.
    """))


# ----------------------------------------------------------------------------- the unbiased forward difference

def _forward_difference(f, rate: torch.Tensor, n_samples: int, generator: torch.Generator | None,
                        shared: bool) -> torch.Tensor:
    """The two forward-difference estimators (see :func:`forward_difference`)."""
    d = score_function.setup(f, rate, "poisson", n_samples, generator, {})
    z = d.sample()

    def evaluate(points: torch.Tensor) -> torch.Tensor:
        """``f`` at every row of ``points``, once per distinct row when ``shared``."""
        if not shared:
            return d.family.check_costs(f(points.to(d.dtype)), points.shape[0], d.params)
        unique, inverse = torch.unique(points.reshape(points.shape[0], -1), dim=0, return_inverse=True)
        costs = d.family.check_costs(f(unique.reshape(-1, *points.shape[1:]).to(d.dtype)), unique.shape[0], d.params)
        return costs[inverse]

    costs = d.family.check_costs(evaluate(z), d.n, d.params)
    batch_ndim = costs.dim() - 1
    if shared:
        with torch.no_grad():
            var_shape = tuple(d.family.var_shape(d.params))
            v = math.prod(var_shape[batch_ndim:])
            shifts = torch.eye(v, dtype=z.dtype, device=z.device).reshape(v, 1, *([1] * batch_ndim), *var_shape[batch_ndim:])
            up = evaluate((z.unsqueeze(0) + shifts).reshape(v * d.n, *z.shape[1:]))
            up = up.reshape(v, 1, d.n, *up.shape[1:])
    else:
        up = score_function.per_variable_costs(f, d, z, batch_ndim, lambda inner, mask: inner + mask, 1)
    diff = (up[:, 0].to(d.x.dtype) - costs.detach().to(d.x.dtype).unsqueeze(0))  # [V, n, *batch]
    coef = diff.mean(1).movedim(0, -1).reshape(d.x.shape)
    return score_function.finish(costs.mean(0), score_function.param_term(coef, d.x, batch_ndim))


_FD = ("the Poisson identity d/dλ E[f(z)] = E[f(z+1) - f(z)]: the measure-valued derivative of the Poisson "
       "(Mohamed, Rosca, Figurnov and Mnih 2020, Monte Carlo gradient estimation in machine learning, JMLR, Sec. 6)")


@register("forward_difference", distribution="poisson", kind="surrogate", unbiased=True, reference=_FD)
def forward_difference(f, rate: torch.Tensor, *, distribution: str = "poisson", n_samples: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Unbiased forward difference: ``∂/∂λ_v E[f(z)] = E[f(z + e_v) - f(z)]``, no relaxation.

    From ``∂p_λ(s)/∂λ = p_λ(s-1) - p_λ(s)`` and a shift of the summation index::

        ĝ_v = (1/n) Σ_i [f(z^{(i)} + e_v) - f(z^{(i)})],   z^{(i)} ~ Poisson(λ).

    Unbiased and, because ``f(z + e_v)`` and ``f(z)`` are evaluated at the same ``z``, its variance
    is that of a difference of ``f`` along one step (zero for linear ``f``), not of ``f`` times a
    score. ``f`` only needs to be defined on counts. Cost: one extra evaluation of ``f`` per sample
    and per variable of a batch element (``V`` extra, batched over batch elements, without
    gradient; :func:`discretegrad.score_function.per_variable_costs`).
    """
    V.choice("distribution", distribution, ("poisson",))
    return _forward_difference(f, rate, n_samples, generator, shared=False)


@register("forward_difference_shared", distribution="poisson", kind="surrogate", unbiased=True, reference=_FD)
def forward_difference_shared(f, rate: torch.Tensor, *, distribution: str = "poisson", n_samples: int = 1,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Forward difference with the evaluations shared across samples: ``f`` once per distinct point.

    The same estimate as ``forward_difference`` (same samples for the same generator), but ``f``
    is evaluated once per distinct sample ``z^{(i)}`` (whole rows ``[*rate.shape]``) and once per
    distinct shifted point ``z^{(i)} + e_v``, and the values are shared by every sample that needs
    them. Counts from one rate repeat a lot: 64 samples of Poisson(5) take 8-12 distinct values,
    so the Poisson GAN's 128 evaluations per step become 16-24 (21 on average over 20 seeds). Requires ``f`` to be
    deterministic and to treat samples (rows) independently. The shifted points are evaluated
    without gradient, in one call (no chunking: ``V n`` rows at most).
    """
    V.choice("distribution", distribution, ("poisson",))
    return _forward_difference(f, rate, n_samples, generator, shared=True)
