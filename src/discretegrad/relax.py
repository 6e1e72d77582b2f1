"""REBAR and RELAX: score-function estimators with a reparameterised control variate.

Generic over every family that declares a :class:`~discretegrad.family.Relaxation` (how to draw
the relaxed variable ``z``, the hard sample ``b = H(z)`` and ``z̃ ~ p(z | b)``, and the
continuous relaxation of ``H``): Bernoulli (logistic noise) and categorical (Gumbel noise).
The family's module calls :func:`register_for`. The shared score-function pieces come from
:mod:`discretegrad.score_function`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import torch

from discretegrad import _validation as V
from discretegrad.registry import families, get_family, register
from discretegrad.score_function import finish, param_term, setup, unsqueeze_to

__all__ = ["RelaxEstimate", "rebar", "register_for", "relax", "relax_estimate"]

CostFn = Callable[[torch.Tensor], torch.Tensor]


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
    """RELAX (Grathwohl et al. 2018, Alg. 1) for every family with a ``relaxation`` (Bernoulli, categorical).

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
    relaxable = [name for name in families() if get_family(name).relaxation is not None]
    if distribution not in relaxable:
        raise ValueError(f"Expected distribution to be one of {relaxable}, but got {distribution!r}")
    d = setup(f, params, distribution, n_samples, generator, {})
    tau = V.positive_float("tau", tau)
    if not isinstance(eta, numbers.Real) or isinstance(eta, bool) or not math.isfinite(float(eta)):
        raise ValueError(f"Expected eta to be a finite float, but got {eta!r}")
    _check_control_variate(control_variate)
    draw, relax_fn = d.family.relaxation
    xs = d.expand()
    z, z_tilde, hard = draw(xs, d.generator)
    costs = d.costs(f, hard)
    if not (torch.is_grad_enabled() and d.params.requires_grad):
        return RelaxEstimate(costs.mean(0), None)
    batch_ndim = costs.dim() - 1
    if control_variate is None:
        def control_variate(u: torch.Tensor) -> torch.Tensor:
            return float(eta) * f(relax_fn(u, tau).to(d.dtype))
    c = d.family.check_costs(control_variate(torch.cat([z, z_tilde])), 2 * d.n, d.params)
    c_z, c_tilde = c[: d.n], c[d.n:]
    logp = d.log_prob(hard, batch_ndim, xs)
    (score,) = torch.autograd.grad(logp.sum(), xs, retain_graph=True)
    diff = (c_z - c_tilde).sum()
    dc = None
    if diff.requires_grad:
        (dc,) = torch.autograd.grad(diff, xs, create_graph=create_graph, retain_graph=True, allow_unused=True)
    weights = costs.detach() - c_tilde
    if not create_graph:
        weights = weights.detach()
    per_sample = unsqueeze_to(weights, score) * score.detach()
    if dc is not None:
        per_sample = per_sample + dc
    grad = per_sample.mean(0)
    surrogate = finish(costs.mean(0), param_term(grad, d.x, batch_ndim))
    return RelaxEstimate(surrogate, grad if create_graph else grad.detach())


_RELAX_REF = "Grathwohl et al. 2018, Backpropagation through the void"
_REBAR_REF = "Tucker et al. 2017, REBAR: low-variance, unbiased gradient estimates for discrete latent variable models"


def rebar(f: CostFn, params: torch.Tensor, *, distribution: str, n_samples: int = 1,
          generator: torch.Generator | None = None, tau: float = 0.5, eta: float = 1.0) -> torch.Tensor:
    """REBAR: RELAX with the control variate ``η f(σ(z/τ))`` (categorical: ``softmax(z/τ)``).

    Unbiased for every ``τ > 0`` and ``η``; ``f`` must accept relaxed inputs. Tucker et al. also
    tune ``τ`` and ``η`` by minimising the variance; here they are fixed hyperparameters (tune
    them with :func:`relax_estimate` and a control variate that owns them).
    """
    return relax_estimate(f, params, distribution=distribution, n_samples=n_samples, generator=generator,
                          tau=tau, eta=eta).surrogate


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


def register_for(distribution: str) -> None:
    """Register ``rebar`` and ``relax`` for a family that declares a ``relaxation``."""
    if get_family(distribution).relaxation is None:
        raise ValueError(f"Expected a family with a relaxation, but {distribution!r} declares none")
    register("rebar", distribution=distribution, kind="surrogate", unbiased=True, reference=_REBAR_REF)(rebar)
    register("relax", distribution=distribution, kind="surrogate", unbiased=True, reference=_RELAX_REF)(relax)
