"""One API for every estimator: :func:`surrogate`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from discretegrad import _validation as V
from discretegrad.family import Params
from discretegrad.registry import get, get_family

__all__ = ["surrogate"]

CostFn = Callable[[torch.Tensor], torch.Tensor]


def surrogate(
    f: CostFn,
    params: Params,
    *,
    distribution: str,
    estimator: str,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    **hparams: object,
) -> torch.Tensor:
    """Monte Carlo estimate of ``E[f(z)]``, ``z ~ p(params)``, whose gradient is the estimator's.

    Args:
        f: cost function. Gets ``z`` of shape ``[n_samples, *params.shape]`` and returns costs of
            shape ``[n_samples, *batch_shape]``, ``batch_shape`` a prefix of ``params``' shape
            without the event dims (e.g. ``[B]`` for categorical logits ``[B, V, N]``). ``f`` may
            depend on trainable parameters (a decoder); they get the pathwise gradient.
        params: distribution parameters (categorical: ``logits [..., N]``; a family with several
            parameters takes a tuple in its declared order).
        distribution: a registered family name (``discretegrad.families()``).
        estimator: a registered estimator for that family (``discretegrad.estimators(distribution)``).
        n_samples: samples per parameter; the estimate is their average.
        generator: ``torch.Generator`` used for every random draw.
        **hparams: the estimator's hyperparameters (e.g. ``tau=0.5``), including the family's
            options (``k=3`` for ``"topk"``, ``total_count=10`` for ``"binomial"``).

    Returns:
        Tensor of shape ``[*batch_shape]``: value = sample mean of ``f``; backward = the
        estimator's gradient with respect to ``params`` and to everything ``f`` depends on.

    Example:
        >>> logits = torch.zeros(8, 3, 5, requires_grad=True)
        >>> loss = dg.surrogate(lambda z: z[..., 0].sum(-1), logits, distribution="categorical",
        ...                     estimator="gst", tau=0.5).mean()
        >>> loss.backward()
    """
    family = get_family(distribution)
    spec = get(estimator, distribution=distribution)
    if not callable(f):
        raise TypeError(f"Expected f to be callable, but got {type(f).__name__}")
    n_samples = V.positive_int("n_samples", n_samples, minimum=spec.min_samples)
    spec.check_hparam_names(hparams)
    family.check(params)
    if spec.kind == "surrogate":
        return spec.fn(f, params, distribution=distribution, n_samples=n_samples, generator=generator, **hparams)
    z = spec.fn(family.expand(params, n_samples), generator=generator, **hparams)
    return family.check_costs(f(z), n_samples, params).mean(0)
