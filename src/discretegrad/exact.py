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
from discretegrad.distributions import Family, get_distribution
from discretegrad.surrogate import check_costs

__all__ = ["expectation", "gradient", "marginals", "log_partition", "DEFAULT_MAX_CONFIGS",
           "MAX_SUBSETS", "MAX_TREE_VERTICES"]

DEFAULT_MAX_CONFIGS = 1 << 20
"""Largest number of joint configurations :func:`expectation` enumerates unless told otherwise."""


def _infer_batch_ndim(f: Callable[[torch.Tensor], torch.Tensor], params: torch.Tensor, family: Family,
                      options: dict | None = None) -> int:
    atoms, _ = family.support(params.detach(), **(options or {}))
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
    family = get_distribution(distribution)
    family.check(params)
    options = family.check_options(options)
    max_configs = V.positive_int("max_configs", max_configs)
    var_shape = tuple(family.var_shape(params))
    if batch_ndim is None:
        batch_ndim = _infer_batch_ndim(f, params, family, options)
    elif not isinstance(batch_ndim, int) or not 0 <= batch_ndim <= len(var_shape):
        raise ValueError(f"Expected batch_ndim to be an int in [0, {len(var_shape)}], but got {batch_ndim!r}")
    batch, rest = var_shape[:batch_ndim], var_shape[batch_ndim:]
    atoms, log_table = family.support(params, **options)
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
    **options: object,
) -> torch.Tensor:
    """Exact gradient of ``sum(E[f(z)])`` with respect to ``params`` (same shape as ``params``)."""
    leaf = params.detach().requires_grad_(True)
    value = expectation(f, leaf, distribution=distribution, batch_ndim=batch_ndim, max_configs=max_configs,
                        **options)
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    return grad


# ----------------------------------------------------------------------------- structures

MAX_SUBSETS = 1 << 16
"""Largest number ``C(n, k)`` of k-subsets :func:`marginals` enumerates."""

MAX_TREE_VERTICES = 7
"""Largest ``n`` for spanning trees and arborescences (``n^(n-2)`` = 16,807 structures at n = 7)."""

STRUCTURES = ("topk", "spanning_tree", "arborescence")


def _gibbs_scores(weights: torch.Tensor, structure: str, tau: float, k: int | None, root: int):
    """``(atoms [S, *event], scores [..., S] = <weights, atom> / tau)`` for every structure."""
    from discretegrad import structures as S
    from discretegrad import subsets, trees

    structure = V.choice("structure", structure, STRUCTURES)
    tau = V.positive_float("tau", tau)
    if structure == "topk":
        w = subsets.check_logits(weights, "weights")
        n = w.shape[-1]
        if k is None:
            raise ValueError("Expected k (an int in [1, n]) for structure='topk', but got None")
        k = subsets.check_k(k, n)
        if math.comb(n, k) > MAX_SUBSETS:
            raise ValueError(
                f"Expected at most MAX_SUBSETS={MAX_SUBSETS} k-subsets, but got C({n}, {k}) = {math.comb(n, k)}")
        atoms = S.all_ksubsets(n, k, dtype=w.dtype, device=w.device)
        return atoms, (w @ atoms.T) / tau
    w = trees.check_edge_logits(weights, symmetric=structure == "spanning_tree", name="weights")
    n = w.shape[-1]
    if n > MAX_TREE_VERTICES:
        raise ValueError(f"Expected at most MAX_TREE_VERTICES={MAX_TREE_VERTICES} vertices for brute-force "
                         f"enumeration of {n}^{n - 2} structures, but got n = {n}")
    if structure == "spanning_tree":
        atoms = S.all_spanning_trees(n, dtype=w.dtype, device=w.device)
        scored = torch.triu(atoms, 1)  # each undirected edge counted once, weight (w_ij + w_ji)/2
        w = 0.5 * (w + w.transpose(-1, -2))
    else:
        root = trees.check_root(root, n)
        atoms = scored = S.all_arborescences(n, root, dtype=w.dtype, device=w.device)
    return atoms, (w.flatten(-2) @ scored.flatten(1).T) / tau


def log_partition(
    weights: torch.Tensor,
    *,
    structure: str,
    tau: float = 1.0,
    k: int | None = None,
    root: int = 0,
) -> torch.Tensor:
    """``log Σ_x exp(<weights, x> / tau)`` over every structure ``x``, by enumeration.

    Args:
        weights: ``[..., n]`` for ``"topk"``; ``[..., n, n]`` for trees (``"spanning_tree"``:
            symmetric, each edge scored once with ``(w_ij + w_ji)/2``; ``"arborescence"``: entry
            ``[i, j]`` = edge i → j, rooted at ``root``). Batched over leading dims, differentiable.
        structure: ``"topk"``, ``"spanning_tree"`` or ``"arborescence"``.
        tau: temperature ``> 0``.
        k: subset size (``"topk"`` only).
        root: root vertex (``"arborescence"`` only).

    Refuses (``ValueError``) more than ``MAX_SUBSETS`` subsets or more than
    ``MAX_TREE_VERTICES`` vertices. Returns ``[...]`` (the batch shape).
    """
    _, scores = _gibbs_scores(weights, structure, tau, k, root)
    return torch.logsumexp(scores, -1)


def marginals(
    weights: torch.Tensor,
    *,
    structure: str,
    tau: float = 1.0,
    k: int | None = None,
    root: int = 0,
) -> torch.Tensor:
    """Marginals ``E[x]`` of the Gibbs distribution ``p(x) ∝ exp(<weights, x> / tau)``, by enumeration.

    Same arguments and limits as :func:`log_partition`; returns a tensor of ``weights``' shape
    (trees: a symmetric adjacency of edge probabilities for ``"spanning_tree"``, ``P(i → j)`` for
    ``"arborescence"``). Differentiable: its Jacobian is the covariance of ``x`` divided by ``tau``.
    """
    atoms, scores = _gibbs_scores(weights, structure, tau, k, root)
    probs = torch.softmax(scores, -1)
    return (probs @ atoms.flatten(1)).reshape(weights.shape)
