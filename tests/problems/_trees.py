"""Shared helpers for the spanning-tree and arborescence fixtures, written independently of the
library: brute-force enumeration of the structures of a small graph and a law check of the
perturb-and-max sample against reference draws computed here."""

from __future__ import annotations

import itertools

import torch
from scipy import stats

REF_DRAWS = 200_000


def undirected_trees(n: int) -> torch.Tensor:
    """Every spanning tree of K_n as a symmetric 0/1 adjacency ``[S, n, n]``: (n-1)-edge subsets
    that connect all vertices (checked with a small union-find)."""
    edges = list(itertools.combinations(range(n), 2))
    out = []
    for subset in itertools.combinations(edges, n - 1):
        parent = list(range(n))

        def find(a):
            while parent[a] != a:
                a = parent[a]
            return a

        ok = True
        for a, b in subset:
            ra, rb = find(a), find(b)
            if ra == rb:
                ok = False
                break
            parent[ra] = rb
        if ok:
            adj = torch.zeros(n, n, dtype=torch.float64)
            for a, b in subset:
                adj[a, b] = adj[b, a] = 1.0
            out.append(adj)
    return torch.stack(out)


def arborescences(n: int, root: int) -> torch.Tensor:
    """Every arborescence rooted at ``root`` as ``[S, n, n]`` (``[i, j]`` = edge i → j): parent
    assignments of the non-root vertices whose parent chains all reach the root."""
    others = [v for v in range(n) if v != root]
    out = []
    for parents in itertools.product(range(n), repeat=len(others)):
        par = dict(zip(others, parents, strict=True))
        if any(par[v] == v for v in others):
            continue
        ok = True
        for v in others:
            seen, x = set(), v
            while x != root and ok:
                if x in seen:
                    ok = False
                seen.add(x)
                x = par[x]
        if ok:
            adj = torch.zeros(n, n, dtype=torch.float64)
            for v in others:
                adj[par[v], v] = 1.0
            out.append(adj)
    return torch.stack(out)


def law_pvalue(params: torch.Tensor, samples: torch.Tensor, atoms: torch.Tensor, scored: torch.Tensor,
               symmetric_noise: bool) -> float:
    """Two-sample chi-square (contingency) test: the samples' structure counts against REF_DRAWS
    reference draws of argmax_T <θ + G, T> by brute force over ``atoms`` (noise from a generator
    of this module, one Gumbel per scored entry)."""
    n = params.shape[-1]
    gen = torch.Generator().manual_seed(2024)
    e = torch.empty(REF_DRAWS, n, n, dtype=torch.float64).exponential_(generator=gen)
    g = -e.log()
    if symmetric_noise:
        g = torch.triu(g, 1) + torch.triu(g, 1).transpose(-1, -2)
    u = params.double() + g
    ref = (u.flatten(1) @ scored.flatten(1).T).argmax(-1)
    z = samples.reshape(-1, n, n).double()
    match = (z.flatten(1).unsqueeze(1) == atoms.flatten(1).unsqueeze(0)).all(-1)  # [M, S]
    assert bool((match.sum(-1) == 1).all()), "a sample is not one of the enumerated structures"
    got = match.double().argmax(-1)
    s = atoms.shape[0]
    table = torch.stack([torch.bincount(got, minlength=s), torch.bincount(ref, minlength=s)]).double()
    table = table[:, table.sum(0) > 0]
    return float(stats.chi2_contingency(table.numpy())[1])


def reach_all(adj: torch.Tensor, start: int) -> torch.Tensor:
    n = adj.shape[-1]
    reach = torch.zeros(adj.shape[:-1], dtype=torch.float64)
    reach[..., start] = 1
    step = adj.double() + torch.eye(n, dtype=torch.float64)
    for _ in range(n):
        reach = ((reach.unsqueeze(-2) @ step).squeeze(-2) > 0).double()
    return (reach > 0).all(-1)


# ----------------------------------------------------------------------------- gradient references
# Written from the SST paper's definitions: X_t is the vector of edge marginals of the Gibbs
# distribution p(T) ∝ exp(<U, T>/t) over the enumerated structures, so ∂X_t/∂(U/t) is the
# covariance of the edge indicators; the hard forward value is the brute-force maximiser of <U, T>.

def replay_gumbel(shape, dtype, generator):
    u = torch.rand(shape, dtype=dtype, generator=generator)  # Gumbel by inversion: -log(-log(1 - U))
    return -(-torch.log1p(-u)).clamp_min(torch.finfo(dtype).tiny).log()


def _gibbs_vjp(scores_of, atoms, v, tau, out, hard):
    """Marginals and the vector-Jacobian product ``vᵀ ∂X_t/∂s`` per scored entry, by enumeration."""
    s = scores_of(atoms)  # [..., S]
    p = torch.softmax(s / tau, -1)
    flat = atoms.flatten(1)  # [S, n*n]
    mean = p @ flat
    if hard:
        best = atoms[s.argmax(-1)]
        assert torch.equal(out.detach(), best)  # forward = the maximiser of <U, T>
    else:
        torch.testing.assert_close(out.detach().flatten(-2), mean)
    proj = (v.flatten(-2).unsqueeze(-2) * flat).sum(-1)  # <v, T> per structure: [..., S]
    cov = (p * (proj - (p * proj).sum(-1, keepdim=True))).unsqueeze(-1) * flat  # Σ_T p (⟨v,T⟩ - E) T
    return cov.sum(-2).reshape(out.shape) / tau


def ref_spanning_tree(theta, out, v, generator, tau=1.0, hard=True):
    n = theta.shape[-1]
    g = torch.triu(replay_gumbel(theta.shape, theta.dtype, generator), 1)
    u = 0.5 * (theta + theta.transpose(-1, -2)) + g + g.transpose(-1, -2)
    atoms = undirected_trees(n)
    grad_edge = _gibbs_vjp(lambda a: u.flatten(-2) @ torch.triu(a, 1).flatten(1).T, atoms, v, tau, out, hard)
    # each undirected edge e = {i, j} is scored once, through (θ_ij + θ_ji)/2: both entries get half
    # (grad_edge is symmetric: entry [i, j] and [j, i] both hold ∂/∂s_e)
    return 0.5 * grad_edge * (1 - torch.eye(n, dtype=theta.dtype))


def ref_arborescence(theta, out, v, generator, tau=1.0, root=0, hard=True):
    u = theta + replay_gumbel(theta.shape, theta.dtype, generator)
    atoms = arborescences(theta.shape[-1], root)
    return _gibbs_vjp(lambda a: u.flatten(-2) @ a.flatten(1).T, atoms, v, tau, out, hard)


# ----------------------------------------------------------------------------- the polytopes (soak)

def _vertex_subsets(n: int) -> torch.Tensor:
    """Indicator rows of every vertex subset with at least two vertices: ``[2^n - n - 1, n]``."""
    rows = [[1.0 if i in s else 0.0 for i in range(n)]
            for r in range(2, n + 1) for s in itertools.combinations(range(n), r)]
    return torch.tensor(rows, dtype=torch.float64)


def in_tree_polytope(z: torch.Tensor, tol: float, *, directed: bool, root: int = 0) -> bool:
    """Whether edge weights ``z [..., n, n]`` lie in the convex hull of the spanning trees (undirected,
    symmetric) or of the arborescences rooted at ``root`` (directed), within ``tol`` per entry.

    Edmonds' descriptions: ``0 <= x <= 1``, zero diagonal, ``x(E(S)) <= |S| - 1`` for every vertex set
    ``S`` with ``|S| >= 2`` (``E(S)``: the edges inside ``S``) and, undirected, ``x(E) = n - 1``;
    directed, every non-root vertex has in-weight 1 and the root 0 (which gives ``x(E) = n - 1``).
    Equalities and subset sums are allowed ``tol`` per summed entry.
    """
    z = z.double()
    n = z.shape[-1]
    if not bool(torch.isfinite(z).all() and (z >= -tol).all() and (z <= 1 + tol).all()):
        return False
    if not bool((torch.diagonal(z, dim1=-2, dim2=-1).abs() <= tol).all()):
        return False
    off = z * (1 - torch.eye(n, dtype=z.dtype))
    if directed:
        indeg = off.sum(-2)
        target = (torch.arange(n) != root).double()
        if not bool(((indeg - target).abs() <= tol * n).all()):
            return False
        inside = torch.einsum("si,...ij,sj->...s", _vertex_subsets(n), off, _vertex_subsets(n))
    else:
        if not bool(((z - z.transpose(-1, -2)).abs() <= tol).all()):
            return False
        if not bool(((torch.triu(off, 1).sum((-2, -1)) - (n - 1)).abs() <= tol * n * n).all()):
            return False
        inside = torch.einsum("si,...ij,sj->...s", _vertex_subsets(n), torch.triu(off, 1), _vertex_subsets(n))
    size = _vertex_subsets(n).sum(-1)
    return bool((inside <= size - 1 + tol * size * size).all())
