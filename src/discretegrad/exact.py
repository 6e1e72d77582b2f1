"""Exact expectations by enumeration: the oracle every estimator is tested against.

``expectation`` sums ``p(z) f(z)`` over every joint configuration of the variables of one
batch element. It is differentiable in ``params`` (through the probabilities) and in whatever
``f`` depends on, so ``torch.autograd`` gives the exact gradient.

``marginals`` and ``log_partition`` enumerate every structure (k-subset, spanning tree,
arborescence) of a small problem and return the marginals and log-normaliser of the Gibbs
distribution ``p(x) ∝ exp(<weights, x> / tau)``: the ground truth for the structured
relaxations of :mod:`discretegrad.subsets` and :mod:`discretegrad.trees`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from discretegrad import _validation as V
from discretegrad.family import Family, Params
from discretegrad.registry import families, get_family
from discretegrad.subsets import MAX_SUBSETS  # the enumeration limits live with the families that enumerate
from discretegrad.trees import MAX_TREE_VERTICES

__all__ = ["expectation", "gradient", "marginals", "log_partition", "DEFAULT_MAX_CONFIGS",
           "MAX_SUBSETS", "MAX_TREE_VERTICES"]

DEFAULT_MAX_CONFIGS = 1 << 20
"""Largest number of joint configurations :func:`expectation` enumerates unless told otherwise."""


def _infer_batch_ndim(f: Callable[[torch.Tensor], torch.Tensor], params: Params, family: Family,
                      options: dict | None = None) -> int:
    atoms, _ = family.support(family.map(torch.Tensor.detach, params), **(options or {}))
    var_shape = family.var_shape(params)
    z0 = atoms[0].expand(*var_shape, *atoms.shape[1:]).unsqueeze(0)
    with torch.no_grad():
        out = f(z0)
    family.check_costs(out, 1, params)
    return out.dim() - 1


def _configs(start: int, stop: int, n_vars: int, n_atoms: int, device: torch.device) -> torch.Tensor:
    """Index tuples number ``start .. stop-1`` of all ``n_atoms ** n_vars``, shape ``[stop-start, n_vars]``."""
    codes = torch.arange(start, stop, device=device)
    powers = n_atoms ** torch.arange(n_vars - 1, -1, -1, device=device)
    return (codes.unsqueeze(-1) // powers) % n_atoms


def expectation(
    f: Callable[[torch.Tensor], torch.Tensor],
    params: Params,
    *,
    distribution: str,
    batch_ndim: int | None = None,
    max_configs: int = DEFAULT_MAX_CONFIGS,
    **options: object,
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
        **options: the family's options (``k`` for ``"topk"``), see ``Family.options``.

    Returns:
        Tensor ``[*batch_shape]``, differentiable.
    """
    family = get_family(distribution)
    family.check(params)
    options = family.check_options(options, params)
    max_configs = V.positive_int("max_configs", max_configs)
    var_shape = tuple(family.var_shape(params))
    size = family.support_size(family.map(torch.Tensor.detach, params), **options)
    if size is not None and size > max_configs:  # refuse before building (or even sizing) the support
        raise ValueError(
            f"Expected at most max_configs={max_configs} joint configurations per batch element, but got "
            f"a support of {size} points per variable; raise max_configs or use a smaller problem"
        )
    if batch_ndim is None:
        batch_ndim = _infer_batch_ndim(f, params, family, options)
    else:
        batch_ndim = V.integer("batch_ndim", batch_ndim, 0, len(var_shape))
    batch, rest = var_shape[:batch_ndim], var_shape[batch_ndim:]
    atoms, log_table = family.support(params, **options)
    n_atoms, event = atoms.shape[0], tuple(atoms.shape[1:])
    n_vars = math.prod(rest)
    if n_vars * math.log2(max(n_atoms, 1)) > 64 or n_atoms**n_vars > max_configs:  # no huge power computed
        shown = f" = {n_atoms**n_vars}" if n_vars * math.log2(max(n_atoms, 1)) <= 64 else ""
        raise ValueError(
            f"Expected at most max_configs={max_configs} joint configurations per batch element, but got "
            f"{n_atoms}^{n_vars}{shown} ({n_vars} variables with {n_atoms} support points); "
            f"raise max_configs or use fewer variables"
        )
    n_configs = n_atoms**n_vars
    table = log_table.reshape(*batch, n_vars, n_atoms)
    ones = (1,) * len(batch)
    chunk = max(1, (1 << 22) // max(1, math.prod(var_shape) * max(1, math.prod(event))))
    total = None
    for start in range(0, n_configs, chunk):
        idx = _configs(start, min(start + chunk, n_configs), n_vars, n_atoms, atoms.device)
        c = idx.shape[0]
        z = atoms[idx].reshape(c, *ones, *rest, *event).expand(c, *batch, *rest, *event)
        costs = family.check_costs(f(z), c, params)
        gather_idx = idx.reshape(c, *ones, n_vars, 1).expand(c, *batch, n_vars, 1)
        logp = table.unsqueeze(0).expand(c, *batch, n_vars, n_atoms).gather(-1, gather_idx).squeeze(-1).sum(-1)
        part = (logp.exp() * costs).sum(0)
        total = part if total is None else total + part
    assert total is not None
    return total


def gradient(
    f: Callable[[torch.Tensor], torch.Tensor],
    params: Params,
    *,
    distribution: str,
    batch_ndim: int | None = None,
    max_configs: int = DEFAULT_MAX_CONFIGS,
    **options: object,
) -> Params:
    """Exact gradient of ``sum(E[f(z)])`` with respect to ``params`` (same shape as ``params``; a
    tuple of gradients for a family with several parameters)."""
    family = get_family(distribution)
    leaf = family.map(lambda t: t.detach().requires_grad_(True), params)
    value = expectation(f, leaf, distribution=distribution, batch_ndim=batch_ndim, max_configs=max_configs,
                        **options)
    return family.join(torch.autograd.grad(value.sum(), family.split(leaf)))


# ----------------------------------------------------------------------------- structures

def _gibbs_scores(weights: torch.Tensor, structure: str, tau: float, options: dict):
    """``(atoms [S, *event], scores [..., S] = <weights, atom> / tau)`` from the family's ``gibbs`` hook."""
    structures = [name for name in families() if get_family(name).gibbs is not None]
    structure = V.choice("structure", structure, tuple(structures))
    family = get_family(structure)
    tau = V.positive_float("tau", tau)
    weights = family.params[0].check(weights, "weights")
    options = family.check_options(options, weights)
    atoms, scores = family.gibbs(weights, **options)
    return atoms, scores / tau


def log_partition(weights: torch.Tensor, *, structure: str, tau: float = 1.0, **options: object) -> torch.Tensor:
    """``log Σ_x exp(<weights, x> / tau)`` over every structure ``x``, by enumeration.

    Args:
        weights: ``[..., n]`` for ``"topk"``; ``[..., n, n]`` for trees (``"spanning_tree"``:
            symmetric, each edge scored once with ``(w_ij + w_ji)/2``; ``"arborescence"``: entry
            ``[i, j]`` = edge i → j, rooted at ``root``). Batched over leading dims, differentiable.
        structure: a family with a Gibbs enumeration (``"topk"``, ``"spanning_tree"``, ``"arborescence"``).
        tau: temperature ``> 0``.
        **options: the family's options: ``k`` (``"topk"``), ``root`` (``"arborescence"``, default 0).

    Refuses (``ValueError``) more than ``MAX_SUBSETS`` subsets or more than
    ``MAX_TREE_VERTICES`` vertices. Returns ``[...]`` (the batch shape).
    """
    _, scores = _gibbs_scores(weights, structure, tau, options)
    return torch.logsumexp(scores, -1)


def marginals(weights: torch.Tensor, *, structure: str, tau: float = 1.0, **options: object) -> torch.Tensor:
    """Marginals ``E[x]`` of the Gibbs distribution ``p(x) ∝ exp(<weights, x> / tau)``, by enumeration.

    Same arguments and limits as :func:`log_partition`; returns a tensor of ``weights``' shape
    (trees: a symmetric adjacency of edge probabilities for ``"spanning_tree"``, ``P(i → j)`` for
    ``"arborescence"``). Differentiable: its Jacobian is the covariance of ``x`` divided by ``tau``.
    """
    atoms, scores = _gibbs_scores(weights, structure, tau, options)
    probs = torch.softmax(scores, -1)
    return (probs @ atoms.flatten(1)).reshape(weights.shape)
