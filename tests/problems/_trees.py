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
