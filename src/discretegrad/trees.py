"""Spanning trees and arborescences: stochastic argmax and softmax tricks (Paulus et al. 2020).

Notation: ``θ`` = edge logits ``[..., n, n]``, ``G`` i.i.d. standard Gumbel, ``U = θ + G``,
``t`` = ``tau``. The SMT sample is the maximum-weight structure ``X = argmax_{T} Σ_{e∈T} U_e``
(Kruskal for undirected spanning trees, Chu-Liu/Edmonds for arborescences). The SST with the
exponential-family entropy relaxes it to the edge marginals ``X_t = E_{p_t}[X]`` of the Gibbs
distribution ``p_t(T) ∝ exp(Σ_{e∈T} U_e / t)``, i.e. ``X_t = ∂ log Z(U/t) / ∂(U/t)`` where ``Z``
comes from the matrix-tree theorem (Koo et al. 2007 for the directed case). ``hard=True``
returns ``X`` with the gradient of ``X_t`` (straight-through), ``hard=False`` returns ``X_t``.
Both are biased for ``∇ E[f(X)]``.

The law of the SMT sample is *not* the Gibbs distribution (the SST authors note that uniform
logits do not give uniform trees). For spanning trees it is still exactly computable on small
graphs: Kruskal's tree depends only on the order of the perturbed weights, and that order is
Plackett-Luce, so ``P(T)`` is a sum over the prefixes of edge orderings at which Kruskal's scan
completes ``T`` (:func:`discretegrad.structures.kruskal_law.kruskal_law`, ``n <= MAX_LAW_VERTICES = 5``).
:func:`discretegrad.exact.expectation` and :func:`discretegrad.diagnostics.compare` use it. The
arborescence solver depends on the weights themselves, not only on their order, so no such
formula exists and the exact oracle refuses ``"arborescence"``; :func:`discretegrad.exact.marginals`
and :func:`discretegrad.exact.log_partition` give the Gibbs ground truth for both.

Numerics: the marginals are the matrix-tree closed form ``μ_ij = A_ij (M_jj - M_ji)``, one float64
matrix inverse per batch element, with every column of ``A`` centred by its best in-edge, wherever
the inverse's condition number keeps it accurate (measured: within ``4.4e-10`` for float64 results,
``4.4e-8`` for float32 and half inputs; :mod:`discretegrad.structures.kirchhoff`). Elsewhere (low
``t`` mostly) they are ``∂ log Z`` of a subtraction-free Gaussian elimination, in log space where
needed (see :func:`discretegrad.structures.matrix_tree.tree_log_partition`), so no clipping range
is needed: the marginals lie in ``[0, 1]`` with the structure's sums for any scale of ``U/t``, a
common offset costs no precision, and they converge to the hard tree as ``t → 0``. Rounding is
relative to the spread of each vertex's in-weights (near-ties at spreads of ``1e6`` and more are
not resolved in float32; ``docs/structured.md``, "Precision"). Half precision inputs give half
precision outputs.

Graph baselines of the SST paper (NRI), one line each with ``i, j = torch.triu_indices(n, n, 1)``:

* independent edges: ``x = dg.bernoulli.stgs(edge_logits[..., i, j], tau=tau)`` (a Bernoulli per
  undirected edge; any Bernoulli estimator works), then mirror as below;
* "|V|-1 edges": ``x = dg.subsets.topk(edge_logits[..., i, j], n - 1, tau=tau)``;

mirroring into an adjacency: ``adj = torch.zeros_like(edge_logits); adj[..., i, j] = x;
adj = adj + adj.transpose(-1, -2)``.
"""

from __future__ import annotations

import math

import torch

from torch.distributions import constraints

from discretegrad import structures as S
from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad.family import Example, Family, Option, Param
from discretegrad.noise import gumbel_like, symmetric_gumbel_like
from discretegrad.registry import register, register_family

__all__ = ["spanning_tree", "arborescence", "check_edge_logits", "check_root", "is_spanning_tree", "is_arborescence",
           "MAX_LAW_VERTICES", "MAX_TREE_VERTICES"]

_SST = "Paulus et al. 2020, Gradient estimation with stochastic softmax tricks"
SYMMETRY_RTOL = 1e-5
SYMMETRY_ATOL = 1e-6

MAX_LAW_VERTICES = 5
"""Largest ``n`` for the exact law of the Kruskal sample (40,440 ordering prefixes at n = 5)."""

MAX_TREE_VERTICES = 7
"""Largest ``n`` for which :func:`discretegrad.exact.marginals` enumerates trees (``n^(n-2)`` = 16,807 at n = 7)."""


# ----------------------------------------------------------------------------- checks

def check_edge_logits(edge_logits: object, *, symmetric: bool = False, name: str = "edge_logits") -> torch.Tensor:
    """``[..., n, n]`` float tensor with ``n >= 2``; finite and, if ``symmetric``, symmetric off the
    diagonal up to ``|a - b| <= SYMMETRY_ATOL + SYMMETRY_RTOL |b|`` (value checks when validating)."""
    t = V.float_tensor(name, edge_logits, min_ndim=2)
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(
            f"Expected {name} to be square in its last two dims [..., n, n], but got shape {tuple(t.shape)}")
    if t.shape[-1] < 2:
        raise ValueError(f"Expected {name} to have n >= 2 vertices, but got shape {tuple(t.shape)}")
    if not (symmetric and V.checking()):
        V.finite(name, t)
        return t
    # one pass and one sync for both checks: a NaN or inf entry makes its gap NaN, which fails the test
    other = t.detach().transpose(-1, -2)
    gap = (t.detach() - other).abs()
    if not bool((gap <= torch.addcmul(torch.full_like(gap, SYMMETRY_ATOL), other.abs(), gap.new_tensor(SYMMETRY_RTOL))).all()):
        V.finite(name, t)
        raise ValueError(
            f"Expected {name} to be symmetric (undirected edges), but got max |w_ij - w_ji| = {float(gap.max()):.3g}")
    return t


def check_root(root: object, n: int) -> int:
    """``root`` must be an integer-like vertex index in ``[0, n - 1]`` (returned as an int)."""
    return V.integer("root", root, 0, n - 1)


def _common(edge_logits: object, tau: object, hard: object, generator: object, symmetric: bool):
    t = check_edge_logits(edge_logits, symmetric=symmetric)
    tau = V.positive_float("tau", tau)
    if not isinstance(hard, bool):
        raise TypeError(f"Expected hard to be a bool, but got {type(hard).__name__}")
    generator = V.generator_for("generator", generator, t)
    return t.to(compute_dtype(t.dtype)), tau, generator


def _needs_grad(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


# ----------------------------------------------------------------------------- ops

def spanning_tree(
    edge_logits: torch.Tensor,
    *,
    tau: float = 1.0,
    hard: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Undirected spanning tree: maximum-spanning-tree SMT sample (Prim, the tree Kruskal finds) with the
    matrix-tree SST gradient, or ``X_t``.

    Args:
        edge_logits: symmetric ``θ [..., n, n]`` (``n >= 2``; diagonal ignored; asymmetry beyond a
            small tolerance is an error when validation is on). ``θ`` is symmetrised as
            ``(θ + θᵀ)/2``, so both entries of an edge get half its gradient.
        tau: relaxation temperature ``t > 0``.
        hard: forward the maximum spanning tree of ``U = θ + G`` (one Gumbel per undirected
            edge) with the gradient of ``X_t``; else return ``X_t``.
        generator: ``torch.Generator`` for the noise.

    Returns:
        Symmetric ``[..., n, n]`` adjacency in ``edge_logits``' dtype: 0/1 with ``n - 1`` edges
        (hard) or edge marginals in ``[0, 1]`` summing to ``n - 1`` over the upper triangle.

    Reference: Paulus et al. 2020 (SST), spanning-tree SST (NRI experiment); Kruskal 1956.
    """
    x, tau, generator = _common(edge_logits, tau, hard, generator, symmetric=True)
    sym = 0.5 * (x + x.transpose(-1, -2))
    u = sym + symmetric_gumbel_like(x, generator=generator)
    if hard and not _needs_grad(u):  # evaluation: the relaxation would only be discarded
        return S.prim(u).to(edge_logits.dtype)
    soft = S.tree_marginals(u / tau, directed=False)
    out = straight_through(S.prim(u), soft) if hard else soft
    return out.to(edge_logits.dtype)


def arborescence(
    edge_logits: torch.Tensor,
    *,
    root: int = 0,
    tau: float = 1.0,
    hard: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Arborescence rooted at ``root``: Chu-Liu/Edmonds SMT sample with the directed matrix-tree
    SST gradient (Koo et al. 2007), or ``X_t``.

    Args:
        edge_logits: ``θ [..., n, n]``, entry ``[i, j]`` = edge ``i → j`` (``n >= 2``; diagonal and
            the root's column are ignored).
        root: the root vertex, ``0 <= root < n``.
        tau: relaxation temperature ``t > 0``.
        hard: forward the maximum spanning arborescence of ``U = θ + G`` (one Gumbel per directed
            edge) with the gradient of ``X_t``; else return ``X_t``.
        generator: ``torch.Generator`` for the noise.

    Returns:
        ``[..., n, n]`` in ``edge_logits``' dtype: 0/1 with one parent per non-root vertex and no
        cycle (hard), or edge marginals (each non-root column sums to 1).

    Reference: Paulus et al. 2020 (SST), arborescence SST (ListOps); Chu & Liu 1965, Edmonds 1967.
    """
    x, tau, generator = _common(edge_logits, tau, hard, generator, symmetric=False)
    root = check_root(root, x.shape[-1])
    u = x + gumbel_like(x, generator=generator)
    if hard and not _needs_grad(u):
        return S.edmonds(u, root).to(edge_logits.dtype)
    soft = S.tree_marginals(u / tau, directed=True, root=root)
    out = straight_through(S.edmonds(u, root), soft) if hard else soft
    return out.to(edge_logits.dtype)


# ----------------------------------------------------------------------------- validity

def is_spanning_tree(adj: torch.Tensor) -> torch.Tensor:
    """Per-matrix check: 0/1, symmetric, zero diagonal, ``n - 1`` edges and connected."""
    n = adj.shape[-1]
    a = adj.detach()
    binary = ((a == 0) | (a == 1)).flatten(-2).all(-1)
    sym = (a == a.transpose(-1, -2)).flatten(-2).all(-1)
    diag = (torch.diagonal(a, dim1=-2, dim2=-1) == 0).all(-1)
    count = a.sum((-1, -2)) == 2 * (n - 1)
    reach = torch.zeros(a.shape[:-1], dtype=a.dtype, device=a.device)
    reach[..., 0] = 1
    for _ in range(n):
        reach = ((reach.unsqueeze(-2) @ (a + torch.eye(n, dtype=a.dtype, device=a.device))).squeeze(-2) > 0).to(a.dtype)
    connected = (reach > 0).all(-1)
    return binary & sym & diag & count & connected


def is_arborescence(adj: torch.Tensor, root: int = 0) -> torch.Tensor:
    """Per-matrix check: 0/1, every non-root vertex has exactly one parent, the root none, and
    every vertex is reachable from the root (hence no cycle)."""
    n = adj.shape[-1]
    a = adj.detach()
    binary = ((a == 0) | (a == 1)).flatten(-2).all(-1)
    indeg = a.sum(-2)
    parents = ((indeg == 1) | (torch.arange(n, device=a.device) == root)).all(-1) & (indeg[..., root] == 0)
    diag = (torch.diagonal(a, dim1=-2, dim2=-1) == 0).all(-1)
    reach = torch.zeros(a.shape[:-1], dtype=a.dtype, device=a.device)
    reach[..., root] = 1
    for _ in range(n):
        reach = ((reach.unsqueeze(-2) @ (a + torch.eye(n, dtype=a.dtype, device=a.device))).squeeze(-2) > 0).to(a.dtype)
    return binary & parents & diag & (reach > 0).all(-1)


# ----------------------------------------------------------------------------- families

def _no_arborescence_law(params: torch.Tensor, *args: object, **options: object) -> torch.Tensor:
    """``support``/``log_prob``/``mean`` of the arborescence family: the law is not computable."""
    raise ValueError(
        "Expected a distribution whose sample law is enumerable, but got 'arborescence': the law of the "
        "perturb-and-max arborescence has no closed form (it is not the Gibbs distribution, and Chu-Liu/Edmonds "
        "depends on the weights, not only on their order as Kruskal does). Use dg.exact.marginals / "
        "dg.exact.log_partition(structure='arborescence') for the Gibbs ground truth, or compare relaxations on "
        "'spanning_tree' or 'topk'"
    )


def _tree_support(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = params.shape[-1]
    if n > MAX_LAW_VERTICES:
        raise ValueError(f"Expected at most MAX_LAW_VERTICES={MAX_LAW_VERTICES} vertices for the exact law of the "
                         f"Kruskal sample, but got n = {n}")
    atoms = S.all_spanning_trees(n, dtype=params.dtype, device=params.device)
    return atoms, S.kruskal_law(params)


def _tree_log_prob(params: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    atoms, log_table = _tree_support(params)
    match = (z.unsqueeze(-3) == atoms).flatten(-2).all(-1)  # [..., S]
    log_table = log_table.expand(match.shape)
    return torch.where(match, log_table, torch.zeros_like(log_table)).sum(-1).masked_fill(~match.any(-1), -math.inf)


def _tree_mean(params: torch.Tensor) -> torch.Tensor:
    atoms, log_table = _tree_support(params)
    return (log_table.exp() @ atoms.flatten(1)).reshape(params.shape)


def _tree_sample(params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    x = params.detach().to(compute_dtype(params.dtype))
    sym = 0.5 * (x + x.transpose(-1, -2))
    return S.prim(sym + symmetric_gumbel_like(x, generator=generator)).to(params.dtype)


def _arb_sample(params: torch.Tensor, generator: torch.Generator | None, *, root: int) -> torch.Tensor:
    x = params.detach().to(compute_dtype(params.dtype))
    return S.edmonds(x + gumbel_like(x, generator=generator), root).to(params.dtype)


def _check_enumerable(n: int) -> None:
    if n > MAX_TREE_VERTICES:
        raise ValueError(f"Expected at most MAX_TREE_VERTICES={MAX_TREE_VERTICES} vertices for brute-force "
                         f"enumeration of {n}^{n - 2} structures, but got n = {n}")


def _tree_gibbs(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every spanning tree and its score: each undirected edge counted once, weight ``(w_ij + w_ji)/2``."""
    n = w.shape[-1]
    _check_enumerable(n)
    atoms = S.all_spanning_trees(n, dtype=w.dtype, device=w.device)
    sym = 0.5 * (w + w.transpose(-1, -2))
    return atoms, sym.flatten(-2) @ torch.triu(atoms, 1).flatten(1).T


def _arb_gibbs(w: torch.Tensor, *, root: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every arborescence rooted at ``root`` and its score ``<w, x>``."""
    n = w.shape[-1]
    _check_enumerable(n)
    atoms = S.all_arborescences(n, root, dtype=w.dtype, device=w.device)
    return atoms, w.flatten(-2) @ atoms.flatten(1).T


def _tree_example() -> Example:
    g = torch.Generator().manual_seed(4)
    n = 4
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    theta = (w + w.T).unsqueeze(0)
    c = torch.randn(n, n, generator=g, dtype=torch.float64)
    c = c + c.T

    def f(z: torch.Tensor) -> torch.Tensor:
        return ((z * c).sum((-1, -2)) - 1.0) ** 2

    return Example(f"spanning trees of K_{n} (exact law of the Kruskal sample), f(z) = (<C, z> - 1)^2", theta, f)


spanning_tree_family = register_family(
    Family(
        name="spanning_tree",
        params=(Param("edge_logits", constraints.real, lambda t, name: check_edge_logits(t, symmetric=True, name=name),
                      event_ndim=2),),
        event_ndim=2,
        sample_fn=_tree_sample,
        log_prob_fn=_tree_log_prob,
        support_fn=_tree_support,
        mean_fn=_tree_mean,
        gibbs=_tree_gibbs,
        example=_tree_example,
    )
)

arborescence_family = register_family(
    Family(
        name="arborescence",
        params=(Param("edge_logits", constraints.real, lambda t, name: check_edge_logits(t, name=name),
                      event_ndim=2),),
        event_ndim=2,
        sample_fn=_arb_sample,
        log_prob_fn=_no_arborescence_law,
        support_fn=_no_arborescence_law,
        mean_fn=_no_arborescence_law,
        options=(Option("root", lambda root, w: check_root(root, w.shape[-1]), default=0),),
        gibbs=_arb_gibbs,
    )
)


# ----------------------------------------------------------------------------- registry entries

@register("entropy", distribution="spanning_tree", reference=_SST + ", spanning-tree SST")
def _tree_entropy(edge_logits: torch.Tensor, *, tau: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Kruskal SMT forward, SST gradient through the matrix-tree edge marginals at temperature t.

    ``spanning_tree(edge_logits, tau=tau, hard=True)``. Biased.
    """
    return spanning_tree(edge_logits, tau=tau, hard=True, generator=generator)


@register("entropy_relaxed", distribution="spanning_tree", relaxed=True, reference=_SST + ", spanning-tree SST")
def _tree_entropy_relaxed(edge_logits: torch.Tensor, *, tau: float = 1.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed SST sample: Gibbs edge marginals of exp(Σ_{e∈T} U_e / t) over spanning trees.

    ``spanning_tree(edge_logits, tau=tau, hard=False)``; tends to the Kruskal sample as t → 0.
    """
    return spanning_tree(edge_logits, tau=tau, hard=False, generator=generator)


@register("entropy", distribution="arborescence", reference=_SST + ", arborescence SST; Koo et al. 2007")
def _arb_entropy(edge_logits: torch.Tensor, *, root: int = 0, tau: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Chu-Liu/Edmonds SMT forward, SST gradient through directed matrix-tree marginals.

    ``arborescence(edge_logits, root=root, tau=tau, hard=True)``. Biased. ``root`` is the
    family's option (default vertex 0).
    """
    return arborescence(edge_logits, root=root, tau=tau, hard=True, generator=generator)


@register("entropy_relaxed", distribution="arborescence", relaxed=True,
          reference=_SST + ", arborescence SST; Koo et al. 2007")
def _arb_entropy_relaxed(edge_logits: torch.Tensor, *, root: int = 0, tau: float = 1.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed SST sample: Gibbs edge marginals over arborescences rooted at ``root``.

    ``arborescence(edge_logits, root=root, tau=tau, hard=False)``.
    """
    return arborescence(edge_logits, root=root, tau=tau, hard=False, generator=generator)
