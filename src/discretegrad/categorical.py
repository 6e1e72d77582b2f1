"""Drop-in estimators for categorical variables: the straight-through family.

Every function takes ``logits`` of shape ``[..., N]`` (categories on the last dim, or on
``dim`` as in ``torch.nn.functional.gumbel_softmax``) and returns a tensor of the same shape
and dtype. Hard estimators return an exact one-hot sample
``D ~ Categorical(softmax(logits))`` in the forward pass: the *un-tempered* softmax, drawn
with the given ``generator``. Two samplers, one law: the ops whose forward pass needs nothing
but ``D`` (st, gst, reinmax, gumbel_rao) draw one uniform per row and invert the distribution
function (:func:`discretegrad.noise.categorical_inverse_cdf`); the ops that use the Gumbel noise
itself (stgs, decoupled_stgs, gumbel_softmax, nz_gst, the family's ``sample``) draw one Gumbel
per entry (Gumbel-max). For one generator state the ops of a group draw the same ``D``; the two
groups draw different ones (common random numbers hold within a group only). The temperature ``tau`` only shapes the backward pass (``decoupled_stgs``
also has a forward temperature, which tempers the law of ``D``). Half-precision
inputs are computed in float32 and the result cast back (the forward value stays exactly
one-hot). Notation below: ``π = softmax(θ)``, ``sg`` = stop-gradient.

Masked logits: a ``-inf`` entry masks its category (padding, invalid actions): it is never
sampled, has probability 0 and gets a zero gradient; every row needs one finite entry (an
all-``-inf`` row is a ``ValueError`` when validating; NaN and ``+inf`` are refused). The fused ops
(st, stgs, gst, reinmax, decoupled_stgs, gumbel_rao: custom autograd Functions with closed-form
backward passes, :mod:`discretegrad._st_functions`) keep ``-inf`` as it is: its probability is 0,
its gradient exactly 0, and no ``inf - inf`` is formed. The others (gumbel_softmax, nz_gst)
replace a masked logit by the dtype's most negative finite number (``torch.where``, so its
gradient is exactly zero) and exclude it from the sample's argmax.
"""

from __future__ import annotations

import math

import torch

from torch.distributions import constraints

from discretegrad import _validation as V
from discretegrad import relax, score_function
from discretegrad import _st_functions as fn
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad._st_functions import gap_pi
from discretegrad.family import Example, Family, Param, Relaxation
from discretegrad.noise import conditional_gumbel, gumbel_max, gumbel_perturb, inverse_cdf_parts
from discretegrad.registry import register, register_family

__all__ = ["check_logits", "decoupled_stgs", "family", "gap_pi", "gst", "gumbel_rao", "gumbel_softmax", "nz_gst", "one_hot_like",
           "reinmax", "st", "stgs"]

_GST = "Fan et al. 2022, Training discrete deep generative models via gapped straight-through"


# ----------------------------------------------------------------------------- the family

def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Categorical logits ``[..., N]``: a float tensor with ``N >= 1``; when validating, finite or
    ``-inf`` (masked), with a finite entry in every row."""
    t = V.float_tensor(name, logits, min_ndim=1)
    if t.shape[-1] < 1:
        raise ValueError(
            f"Expected {name} to have at least one category (last dim >= 1), but got shape {tuple(t.shape)}"
        )
    V.masked_logits(name, t)
    return t


def unmask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x with -inf replaced by the most negative finite number, the mask)``; zero gradient to masked entries."""
    mask = torch.isneginf(x)
    return torch.where(mask, torch.finfo(x.dtype).min, x), mask


def one_hot_like(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One-hot of ``index`` (shape ``like.shape[:-1]``) with ``like``'s shape, dtype and device."""
    categories = torch.arange(like.shape[-1], device=like.device)
    return (index.unsqueeze(-1) == categories).to(like.dtype)  # no in-place scatter: vmap has a rule for ==


def _family_sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    x = logits.detach().to(compute_dtype(logits.dtype))
    _, index = gumbel_max(x, generator=generator)
    return one_hot_like(index, logits.detach())


def _log_prob(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits, -1)
    return (torch.where(z != 0, log_p, 0.0) * z).sum(-1)  # 0 (not NaN) for masked categories not drawn


def _support(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = logits.shape[-1]
    return torch.eye(n, dtype=logits.dtype, device=logits.device), torch.log_softmax(logits, -1)


def _relaxed(x: torch.Tensor, generator: torch.Generator | None):
    """REBAR/RELAX draws: ``z = θ + G``, ``z̃ ~ p(z | argmax z = b)`` (reparameterised) and one-hot ``b``."""
    x, mask = unmask(x)
    perturbed, index = gumbel_max(x, generator=generator)
    index = perturbed.detach().masked_fill(mask, -math.inf).argmax(-1)
    tilde = conditional_gumbel(x, index, 1, generator=generator, reparameterized=True)[0]
    return perturbed, tilde, one_hot_like(index, x.detach())


def _example() -> Example:
    g = torch.Generator().manual_seed(0)
    v, n = 4, 8
    logits = torch.randn(1, v, n, generator=g, dtype=torch.float64)
    a = torch.randn(v * n, 6, generator=g, dtype=torch.float64) / (v ** 0.5)
    b = torch.randn(6, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        # nonlinear in z and coupling all variables: squared distance of a random projection
        h = z.flatten(-2) @ a
        return ((h - b) ** 2).sum(-1) + torch.sin(3 * h[..., 0])

    return Example(f"{v} variables x {n} classes, f(z) = ||A vec(z) - b||^2 + sin(3 (A vec(z))_0)", logits, f)


family = register_family(
    Family(
        name="categorical",
        params=(Param("logits", constraints.real_vector, check_logits, event_ndim=1),),
        event_ndim=1,
        sample_fn=_family_sample,
        log_prob_fn=_log_prob,
        support_fn=_support,
        mean_fn=lambda logits: torch.softmax(logits, -1),
        relaxation=Relaxation(_relaxed, lambda z, tau: torch.softmax(z / tau, -1)),
        example=_example,
    )
)
score_function.register_for("categorical")
relax.register_for("categorical")


# ----------------------------------------------------------------------------- the straight-through family


def _check_dim(dim: object, logits: object) -> int:
    ndim = V.float_tensor("logits", logits, min_ndim=1).dim()
    if not isinstance(dim, int) or isinstance(dim, bool) or not -ndim <= dim < ndim:
        raise ValueError(f"Expected dim to be an int in [{-ndim}, {ndim - 1}] (a dim of logits), but got {dim!r}")
    return dim


def _prepare(logits: torch.Tensor, tau: float, generator: torch.Generator | None, dim: int = -1):
    """Checks; ``(x, mask, tau, generator)``: logits with ``dim`` moved last, in the compute dtype, masked
    entries made finite (:func:`unmask`)."""
    dim = _check_dim(dim, logits)
    check_logits(logits.movedim(dim, -1))
    tau = V.positive_float("tau", tau)
    generator = V.generator_for("generator", generator, logits)
    x, mask = unmask(logits.movedim(dim, -1).to(compute_dtype(logits.dtype)))
    return x, mask, tau, generator


def _finish(out: torch.Tensor, logits: torch.Tensor, dim: int) -> torch.Tensor:
    """``out`` (categories last) in ``logits``' dtype with the categories moved back to ``dim``."""
    return out.to(logits.dtype).movedim(-1, dim)


def _sample(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None):
    """Gumbel-max sample: (perturbed logits θ+G, index D, one-hot D); masked categories never win."""
    perturbed = gumbel_perturb(x, generator=generator)
    index = perturbed.masked_fill(mask, -math.inf).argmax(-1)
    return perturbed, index, one_hot_like(index, x.detach())


def _setup(logits: torch.Tensor, tau: float, generator: torch.Generator | None, dim: int):
    """Argument checks for the fused ops; ``(logits with dim moved last, tau, generator, dim)``. Masked
    (``-inf``) entries stay as they are: the Functions never form ``inf - inf``. The value check of
    :func:`check_logits` runs later, on the row maxima the sampler computes anyway (:func:`_check_rows`)."""
    dim = _check_dim(dim, logits)
    moved = logits if dim in (-1, logits.dim() - 1) else logits.movedim(dim, -1)
    if moved.shape[-1] < 1:
        check_logits(moved)  # raises: no category
    return moved, V.positive_float("tau", tau), V.generator_for("generator", generator, logits), dim


def _check_rows(moved: torch.Tensor, top: torch.Tensor) -> None:
    """:func:`check_logits`' value check from ``top``, one number per row that is finite iff the row has no
    NaN, no ``+inf`` and a finite entry (the row maxima of the logits plus finite noise, or the totals
    of the inverse-CDF sampler's running sums), so a valid input costs no pass over the logits and one
    sync; an invalid one gets check_logits' message. The numbers are summed first (one small kernel and one read; measured 7x cheaper than
    ``isfinite(top).all()``, which converts and compares); a sum that overflows only sends a valid
    input through the full check."""
    if V.checking() and not math.isfinite(float(top.sum())):
        check_logits(moved)


def _compute_input(moved: torch.Tensor) -> torch.Tensor:
    x = moved.detach()
    dtype = compute_dtype(x.dtype)
    return x if x.dtype == dtype else x.to(dtype)


def _gumbel_argmax(moved: torch.Tensor, generator: torch.Generator | None, forward_tau: float = 1.0):
    """``(θ/τ_f + G`` in the compute dtype, no gradient; its row maxima and argmax ``D``, ``[..., 1]``)``:
    the same random numbers as :func:`_sample`; a ``-inf`` logit stays ``-inf`` and never wins.
    ``max`` gives both in one pass (the first maximal index, as ``argmax``). Checks the logits' values."""
    x = _compute_input(moved)
    perturbed = gumbel_perturb(x if forward_tau == 1.0 else x / forward_tau, generator=generator)
    top, index = perturbed.max(-1, keepdim=True)
    _check_rows(moved, top)
    return perturbed, top, index


def _inverse_cdf(moved: torch.Tensor, generator: torch.Generator | None):
    """``(D [..., 1], softmax(θ))`` for the ops whose forward pass needs only the sample (st, gst, reinmax,
    gumbel_rao): one uniform per row by inversion (:func:`discretegrad.noise.inverse_cdf_parts`), the
    same law as Gumbel-max, other random numbers. Checks the logits' values (from the running sums'
    totals, NaN exactly for an invalid row)."""
    index, probs, total = inverse_cdf_parts(_compute_input(moved), generator=generator)
    _check_rows(moved, total)
    return index, probs


def _back(out: torch.Tensor, dim: int) -> torch.Tensor:
    return out if dim in (-1, out.dim() - 1) else out.movedim(-1, dim)


@register("st", distribution="categorical", reference="Bengio et al. 2013; GST eq. 7")
def st(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1,
       generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through: forward D, backward through p = softmax(θ/τ).

    ``D + p - sg(p)``. Biased; it is the expectation-difference projection of a Wasserstein
    gradient step (pWGF, Cheng et al. 2019) and the GST paper's "ST" ablation.
    """
    moved, tau, generator, dim = _setup(logits, tau, generator, dim)
    index, probs = _inverse_cdf(moved, generator)
    return _back(fn.apply(fn.StraightThrough, moved, index, tau, probs), dim)


@register("gumbel_softmax", distribution="categorical", relaxed=True,
          reference="Jang et al. 2017; Maddison et al. 2017")
def gumbel_softmax(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed Gumbel-softmax sample softmax((θ + G)/τ) (not discrete).

    Reparameterised and exact for the *relaxed* objective; biased for the discrete one.
    Its argmax is an exact categorical sample; as τ → 0 it approaches one-hot.
    """
    x, mask, tau, generator = _prepare(logits, tau, generator, dim)
    perturbed = x + (gumbel_max(x.detach(), generator=generator)[0] - x.detach())
    return _finish(torch.softmax(perturbed / tau, -1), logits, dim)


@register("stgs", distribution="categorical", reference="Jang et al. 2017; GST eq. 10")
def stgs(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through Gumbel-softmax: forward argmax(θ+G), backward through softmax((θ+G)/τ).

    Same estimator as ``torch.nn.functional.gumbel_softmax(hard=True)``, with explicit
    generator, log-space noise and an exactly one-hot forward value in every dtype.
    """
    moved, tau, generator, dim = _setup(logits, tau, generator, dim)
    perturbed, top, index = _gumbel_argmax(moved, generator)
    return _back(fn.apply(fn.PerturbedSoftmax, moved, perturbed, top, index, tau, 1.0)[0], dim)


@register("gumbel_rao", distribution="categorical", reference="Paulus et al. 2021 (Gumbel-Rao); GST eq. 11")
def gumbel_rao(
    logits: torch.Tensor,
    *,
    tau: float = 1.0,
    mc_samples: int = 100,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """GR-MCK: STGS Rao-Blackwellised over Gumbel noise conditioned on the sample.

    Forward ``D``; backward: the average over ``mc_samples`` = K draws of ``G_k ~ p(G | argmax(θ+G)=D)``
    of the STGS Jacobian ``J(y_k)/τ`` with ``y_k = softmax((θ + G_k)/τ)``, i.e. the gradient of
    ``E[softmax((θ + sg(G))/τ) | D]``. Conditioning keeps the mean of the STGS gradient and
    lowers its variance.

    Variant: the noise is held fixed (no gradient through the conditional Gumbels' dependence
    on θ), as in the GST paper's GR-MCK and its public reference code; that is the estimator
    whose expectation equals STGS's. The conditional Gumbels enter through their closed-form weights
    (:func:`discretegrad.noise.conditional_gumbel_offweights`). Memory and time: the forward value
    needs no draw but ``D``; the K conditional draws are made in the backward pass, in chunks of
    bounded memory, from a generator seeded by one number drawn from ``generator`` in the forward
    pass (:class:`discretegrad._st_functions.GumbelRao`). Only the logits and ``D`` are saved: the
    memory kept for backward does not grow with K, and no draw is made when no gradient is taken.
    """
    moved, tau, generator, dim = _setup(logits, tau, generator, dim)
    mc_samples = V.positive_int("mc_samples", mc_samples)
    index, _ = _inverse_cdf(moved, generator)
    seed = fn.seed_from(generator, moved.device)
    return _back(fn.apply(fn.GumbelRao, moved, index, tau, mc_samples, seed), dim)


def _check_gap(gap: float | str) -> float | str:
    if gap == "pi":
        return gap
    if isinstance(gap, str):
        raise ValueError(f"Expected gap to be a float >= 0 or 'pi', but got {gap!r}")
    try:
        return V.nonnegative_float("gap", gap)
    except ValueError:
        raise ValueError(f"Expected gap to be a float >= 0 or 'pi', but got {gap!r}") from None


def _gapped_logits(x: torch.Tensor, index: torch.Tensor, hard: torch.Tensor, gap: float | str) -> torch.Tensor:
    """Target values of the GST perturbation: θ'_D = max θ, θ'_j = min(θ_j, max θ - g) (j ≠ D)."""
    m = x.max(-1, keepdim=True).values
    g: torch.Tensor | float
    if gap == "pi":
        g = gap_pi(torch.softmax(x.detach(), -1).gather(-1, index.unsqueeze(-1)))
    else:
        g = float(gap)
    return torch.where(hard.bool(), m, torch.minimum(x, m - g))


@register("gst", distribution="categorical", reference=_GST + ", eq. 17-19")
def gst(
    logits: torch.Tensor,
    *,
    tau: float = 1.0,
    gap: float | str = 1.0,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gapped straight-through: ST through softmax of logits moved to a strict gap, no noise.

    With ``θ̄ = sg(θ)`` and ``m = max θ̄``, the perturbation moves the sampled logit up to ``m``
    (consistency: D becomes the argmax) and every other logit within ``gap`` of ``m`` down to
    ``m - gap`` (strict gap). The moves are computed from θ̄, so the Jacobian of the perturbed
    logits ``θ'`` is the identity: output ``D + softmax(θ'/τ) - sg(softmax(θ'/τ))``.
    ``gap="pi"`` uses ``-log(1 - π_D)/π_D``, the expected gap of STGS. ``gap=0`` is the paper's
    GST-0.0 ablation. Biased, deterministic given D (no Gumbel noise in the backward pass).
    """
    gap = _check_gap(gap)
    moved, tau, generator, dim = _setup(logits, tau, generator, dim)
    index, _ = _inverse_cdf(moved, generator)
    return _back(fn.apply(fn.Gapped, moved, index, tau, gap), dim)


@register("nz_gst", distribution="categorical", reference=_GST + ", Table 1 (ablation)")
def nz_gst(
    logits: torch.Tensor,
    *,
    tau: float = 1.0,
    gap: float | str = 1.0,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """GST ablation: the same perturbation without detaching (gradient through max and clamp).

    ``θ'_D = max θ`` and ``θ'_j = min(θ_j, max θ - gap)`` as differentiable functions of θ (the
    gap itself, for ``gap="pi"``, is held fixed). The GST paper shows this breaks training.
    """
    gap = _check_gap(gap)
    x, mask, tau, generator = _prepare(logits, tau, generator, dim)
    _, index, hard = _sample(x, mask, generator)
    return _finish(straight_through(hard, torch.softmax(_gapped_logits(x, index, hard, gap) / tau, -1)), logits, dim)


@register("reinmax", distribution="categorical",
          reference="Liu et al. 2023, Bridging discrete and backpropagation: straight-through and beyond, Alg. 2")
def reinmax(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """ReinMax: second-order (Heun) straight-through.

    With ``π0 = softmax(θ)`` and ``π1 = (D + softmax(θ/τ))/2`` the backward pass is
    ``2 J(π1) - J(π0)/2``, where ``J(p) = diag(p) - ppᵀ`` is the softmax Jacobian at ``p``.
    ``J(π1)`` is applied as a fixed linear map (no ``log π1``, so no ``log 0`` for extreme logits).
    """
    moved, tau, generator, dim = _setup(logits, tau, generator, dim)
    index, probs = _inverse_cdf(moved, generator)
    return _back(fn.apply(fn.ReinMax, moved, index, tau, probs), dim)


@register("decoupled_stgs", distribution="categorical",
          reference="Shah, Yan, Mozer and Liu 2024, Improving discrete optimisation via decoupled straight-through "
                    "Gumbel-softmax (arXiv 2410.13331)")
def decoupled_stgs(logits: torch.Tensor, *, tau: float = 1.0, forward_tau: float = 1.0, dim: int = -1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Decoupled ST-GS: a forward temperature for the sample, a backward temperature for the gradient.

    The paper separates "forward-pass stochasticity, which controls exploration" (``τ_f``) from
    "backward-pass gradient dispersion, how learning signals are distributed across categories"
    (``τ_b``); single-temperature ST-GS ties the two. Here, with ``u = θ/τ_f + G``::

        forward   D = one_hot(argmax u)              (a sample of Categorical(softmax(θ/τ_f)))
        backward  ∂/∂θ softmax(u/τ_b)  =  J(softmax(u/τ_b)) / (τ_f τ_b)

    ``forward_tau = τ_f`` tempers the distribution the sample is drawn from (above 1: flatter,
    more exploration; below 1: greedier); it has to act on the logits, because
    ``argmax((θ+G)/τ)`` does not depend on ``τ``. ``tau = τ_b`` is the ST-GS temperature of the
    backward pass (named ``tau`` so that the experiments' temperature and schedules drive it, as
    for ``stgs``). ``forward_tau = 1`` is exactly ``stgs`` with ``tau = τ_b``. Biased (the ST-GS
    bias); with ``forward_tau ≠ 1`` the forward sample is not drawn from ``softmax(θ)`` either,
    so it optimises the tempered objective.
    """
    moved, tau, generator, dim = _setup(logits, tau, generator, dim)
    forward_tau = V.positive_float("forward_tau", forward_tau)
    perturbed, top, index = _gumbel_argmax(moved, generator, forward_tau)
    return _back(fn.apply(fn.PerturbedSoftmax, moved, perturbed, top, index, tau, forward_tau)[0], dim)
