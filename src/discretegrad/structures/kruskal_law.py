"""The exact law of the Kruskal tree of Gumbel-perturbed edge weights, for small ``n``.

Its own module: an enumeration of the edge-order prefixes at which Kruskal's scan completes a
tree (:func:`_kruskal_prefixes`), scored by the Plackett-Luce prefix probability of
:mod:`.plackett_luce`; edges numbered as in :mod:`.kruskal`, trees as in :mod:`.enumeration`.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

from discretegrad.structures.enumeration import spanning_tree_edges
from discretegrad.structures.kruskal import upper_edges
from discretegrad.structures.plackett_luce import log_prob

__all__ = ["kruskal_law"]


@functools.lru_cache(maxsize=4)
def _kruskal_prefixes(n: int) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Every prefix of an edge ordering at which Kruskal's scan completes a tree, and that tree's
    index in :func:`~discretegrad.structures.enumeration.all_spanning_trees` order. Edges are
    numbered as ``torch.triu_indices``."""
    edges = list(itertools.combinations(range(n), 2))
    tree_index = {frozenset((min(a, b), max(a, b)) for a, b in t): s for s, t in enumerate(spanning_tree_edges(n))}
    prefixes: list[tuple[int, ...]] = []
    trees: list[int] = []

    def scan(prefix: tuple[int, ...], label: tuple[int, ...], accepted: tuple[int, ...]) -> None:
        if len(accepted) == n - 1:
            prefixes.append(prefix)
            trees.append(tree_index[frozenset(edges[e] for e in accepted)])
            return
        for e, (a, b) in enumerate(edges):
            if e in prefix:
                continue
            if label[a] != label[b]:
                merged = tuple(label[a] if x == label[b] else x for x in label)
                scan(prefix + (e,), merged, accepted + (e,))
            else:  # rejected: closes a cycle
                scan(prefix + (e,), label, accepted)

    scan((), tuple(range(n)), ())
    return tuple(prefixes), tuple(trees)


def kruskal_law(w: torch.Tensor) -> torch.Tensor:
    """``log P(T)`` of the maximum spanning tree of ``w + G`` (one Gumbel per undirected edge), for every
    spanning tree ``T`` in :func:`~discretegrad.structures.enumeration.all_spanning_trees` order:
    ``[..., n^(n-2)]``.

    Kruskal's tree depends only on the order of the perturbed weights, and the decreasing order of
    Gumbel-perturbed weights is Plackett-Luce: a prefix ``e_1..e_L`` has probability
    ``Π_j exp(w_{e_j}) / Σ_{e ∉ {e_1..e_{j-1}}} exp(w_e)``
    (:func:`~discretegrad.structures.plackett_luce.log_prob`). Summing over the prefixes at which the
    scan completes each tree gives its exact probability. ``w [..., n, n]`` is symmetrised,
    ``(w + wᵀ)/2``; the number of prefixes grows fast (6, 168, 40,440 for n = 3, 4, 5), so callers
    limit ``n``.
    """
    n = w.shape[-1]
    rows, cols = upper_edges(n, w.device)
    x = (0.5 * (w + w.transpose(-1, -2)))[..., rows, cols]  # [..., E]
    if n == 2:
        return x.new_zeros((*x.shape[:-1], 1))
    prefixes, tree_of = _kruskal_prefixes(n)
    length = max(len(p) for p in prefixes)
    idx = torch.zeros(len(prefixes), length, dtype=torch.long, device=w.device)
    valid = torch.zeros(len(prefixes), length, dtype=torch.bool, device=w.device)
    for p, prefix in enumerate(prefixes):
        idx[p, :len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        valid[p, :len(prefix)] = True
    log_prefix = log_prob(x.unsqueeze(-2), idx, valid)  # [..., P]
    # group the prefixes by tree: a rectangle [S, most prefixes of one tree], padded with -inf
    n_trees = len(spanning_tree_edges(n))
    tree_t = torch.tensor(tree_of, dtype=torch.long, device=w.device)
    order = tree_t.argsort(stable=True)
    counts = torch.bincount(tree_t, minlength=n_trees)
    slot = torch.arange(len(prefixes), device=w.device) - (counts.cumsum(0) - counts)[tree_t[order]]
    table = x.new_full((*x.shape[:-1], n_trees, int(counts.max())), -math.inf)
    table[..., tree_t[order], slot] = log_prefix[..., order]
    return torch.logsumexp(table, -1)
