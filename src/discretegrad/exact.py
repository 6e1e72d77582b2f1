"""Exact expectations by enumeration: the oracle every estimator is tested against.

``expectation`` sums ``p(z) f(z)`` over every joint configuration of the variables of one
batch element. It is differentiable in ``params`` (through the probabilities) and in whatever
``f`` depends on, so ``torch.autograd`` gives the exact gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from discretegrad import _validation as V
from discretegrad.distributions import Family, get_distribution
from discretegrad.surrogate import check_costs

__all__ = ["expectation", "gradient", "DEFAULT_MAX_CONFIGS"]

DEFAULT_MAX_CONFIGS = 1 << 20
"""Largest number of joint configurations :func:`expectation` enumerates unless told otherwise."""


def _infer_batch_ndim(f: Callable[[torch.Tensor], torch.Tensor], params: torch.Tensor, family: Family) -> int:
    atoms, _ = family.support(params.detach())
    var_shape = family.var_shape(params)
    z0 = atoms[0].expand(*var_shape, *atoms.shape[1:]).unsqueeze(0)
    with torch.no_grad():
        out = f(z0)
    check_costs(out, 1, params, family)
    return out.dim() - 1


def _configs(start: int, stop: int, n_vars: int, n_atoms: int, device: torch.device) -> torch.Tensor:
    """Index tuples number ``start .. stop-1`` of all ``n_atoms ** n_vars``, shape ``[stop-start, n_vars]``."""
    codes = torch.arange(start, stop, device=device)
    powers = n_atoms ** torch.arange(n_vars - 1, -1, -1, device=device)
    return (codes.unsqueeze(-1) // powers) % n_atoms


def expectation(
    f: Callable[[torch.Tensor], torch.Tensor],
    params: torch.Tensor,
    *,
    distribution: str,
    batch_ndim: int | None = None,
    max_configs: int = DEFAULT_MAX_CONFIGS,
) -> torch.Tensor:
    """Exact ``E[f(z)]`` for every batch element, by enumeration.

    Args:
        f: cost function with the same contract as in :func:`discretegrad.surrogate`.
        params: distribution parameters.
        distribution: registered family name.
        batch_ndim: number of leading variable dims ``f`` keeps (its output is
            ``[n, *var_shape[:batch_ndim]]``); inferred by calling ``f`` once when ``None``.
        max_configs: refuse (``ValueError``) when one batch element has more joint
            configurations than this (categorical: ``N ** V`` for ``V`` variables of ``N`` classes).

    Returns:
        Tensor ``[*batch_shape]``, differentiable.
    """
    family = get_distribution(distribution)
    family.check(params)
    max_configs = V.positive_int("max_configs", max_configs)
    var_shape = tuple(family.var_shape(params))
    if batch_ndim is None:
        batch_ndim = _infer_batch_ndim(f, params, family)
    elif not isinstance(batch_ndim, int) or not 0 <= batch_ndim <= len(var_shape):
        raise ValueError(f"Expected batch_ndim to be an int in [0, {len(var_shape)}], but got {batch_ndim!r}")
    batch, rest = var_shape[:batch_ndim], var_shape[batch_ndim:]
    atoms, log_table = family.support(params)
    n_atoms, event = atoms.shape[0], tuple(atoms.shape[1:])
    n_vars = math.prod(rest)
    n_configs = n_atoms**n_vars
    if n_configs > max_configs:
        raise ValueError(
            f"Expected at most max_configs={max_configs} joint configurations per batch element, but got "
            f"{n_atoms}^{n_vars} = {n_configs} ({n_vars} variables with {n_atoms} support points); "
            f"raise max_configs or use fewer variables"
        )
    table = log_table.reshape(*batch, n_vars, n_atoms)
    ones = (1,) * len(batch)
    chunk = max(1, (1 << 22) // max(1, math.prod(var_shape) * max(1, math.prod(event))))
    total = None
    for start in range(0, n_configs, chunk):
        idx = _configs(start, min(start + chunk, n_configs), n_vars, n_atoms, params.device)
        c = idx.shape[0]
        z = atoms[idx].reshape(c, *ones, *rest, *event).expand(c, *batch, *rest, *event)
        costs = check_costs(f(z), c, params, family)
        gather_idx = idx.reshape(c, *ones, n_vars, 1).expand(c, *batch, n_vars, 1)
        logp = table.unsqueeze(0).expand(c, *batch, n_vars, n_atoms).gather(-1, gather_idx).squeeze(-1).sum(-1)
        part = (logp.exp() * costs).sum(0)
        total = part if total is None else total + part
    assert total is not None
    return total


def gradient(
    f: Callable[[torch.Tensor], torch.Tensor],
    params: torch.Tensor,
    *,
    distribution: str,
    batch_ndim: int | None = None,
    max_configs: int = DEFAULT_MAX_CONFIGS,
) -> torch.Tensor:
    """Exact gradient of ``sum(E[f(z)])`` with respect to ``params`` (same shape as ``params``)."""
    leaf = params.detach().requires_grad_(True)
    value = expectation(f, leaf, distribution=distribution, batch_ndim=batch_ndim, max_configs=max_configs)
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    return grad
