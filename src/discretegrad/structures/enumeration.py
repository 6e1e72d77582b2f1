"""Enumeration of every structure, for the exact (brute-force) references of :mod:`discretegrad.exact`.

k-subsets (:func:`all_ksubsets`), labelled spanning trees from Prüfer sequences
(:func:`all_spanning_trees`, also :func:`spanning_tree_edges` for :mod:`.kruskal_law`) and their
orientations away from a root (:func:`all_arborescences`). Pure Python combinatorics, cached.
"""

from __future__ import annotations

import functools
import itertools

import torch

__all__ = ["all_ksubsets", "all_spanning_trees", "all_arborescences", "spanning_tree_edges"]


@functools.lru_cache(maxsize=32)
def _ksubsets(n: int, k: int) -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.combinations(range(n), k))


def all_ksubsets(n: int, k: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every k-hot vector of length ``n`` (lexicographic order of the index sets): ``[C(n,k), n]``."""
    idx = torch.tensor(_ksubsets(n, k), dtype=torch.long, device=device).reshape(-1, k)
    return torch.zeros(idx.shape[0], n, dtype=dtype, device=device).scatter_(-1, idx, 1.0)


def _prufer_decode(seq: tuple[int, ...], n: int) -> list[tuple[int, int]]:
    degree = [1] * n
    for v in seq:
        degree[v] += 1
    edges = []
    for v in seq:
        leaf = min(x for x in range(n) if degree[x] == 1)
        edges.append((leaf, v))
        degree[leaf] -= 1
        degree[v] -= 1
    a, b = [x for x in range(n) if degree[x] == 1]
    edges.append((a, b))
    return edges


@functools.lru_cache(maxsize=16)
def spanning_tree_edges(n: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """All ``n^(n-2)`` labelled trees on ``n`` vertices (Cayley) as edge lists, from Prüfer sequences
    (the order of :func:`all_spanning_trees`)."""
    if n == 2:
        return (((0, 1),),)
    return tuple(tuple(_prufer_decode(seq, n)) for seq in itertools.product(range(n), repeat=n - 2))


def all_spanning_trees(n: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Symmetric 0/1 adjacency of every spanning tree of the complete graph: ``[n^(n-2), n, n]``."""
    edges = torch.tensor(spanning_tree_edges(n), dtype=torch.long).reshape(-1, n - 1, 2)
    adj = torch.zeros(edges.shape[0], n, n, dtype=dtype)
    t = torch.arange(edges.shape[0]).unsqueeze(-1)
    adj[t, edges[..., 0], edges[..., 1]] = 1.0
    adj[t, edges[..., 1], edges[..., 0]] = 1.0
    return adj.to(device)


def _orient(tree: tuple[tuple[int, int], ...], n: int, root: int) -> list[int]:
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for a, b in tree:
        nbrs[a].append(b)
        nbrs[b].append(a)
    parent = [-1] * n
    stack, seen = [root], {root}
    while stack:
        v = stack.pop()
        for x in nbrs[v]:
            if x not in seen:
                seen.add(x)
                parent[x] = v
                stack.append(x)
    return parent


def all_arborescences(n: int, root: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """0/1 adjacency (``[i, j]`` = edge i → j) of every arborescence rooted at ``root``.

    Each spanning tree has exactly one orientation away from the root, so there are ``n^(n-2)``.
    """
    trees = spanning_tree_edges(n)
    adj = torch.zeros(len(trees), n, n, dtype=dtype)
    for t, tree in enumerate(trees):
        for j, p in enumerate(_orient(tree, n, root)):
            if p >= 0:
                adj[t, p, j] = 1.0
    return adj.to(device)
