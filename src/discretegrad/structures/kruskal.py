"""Maximum spanning tree of a complete undirected graph (Prim; Kruskal kept as the reference), and the edge numbering.

Edges ``{i, j}``, ``i < j``, are numbered as ``torch.triu_indices(n, n, 1)`` (:func:`upper_edges`);
:mod:`.kruskal_law` uses the same numbering for the law of the perturbed Kruskal tree.
"""

from __future__ import annotations

import torch

from discretegrad.structures.eager import eager_solver

__all__ = ["upper_edges", "kruskal", "prim"]


def upper_edges(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of the ``n(n-1)/2`` edges ``i < j`` in ``torch.triu_indices`` order."""
    return torch.triu_indices(n, n, 1, device=device).unbind(0)


@eager_solver
def kruskal(u: torch.Tensor) -> torch.Tensor:
    """Maximum spanning tree of symmetric weights ``u [..., n, n]`` (upper triangle read).

    Kruskal's algorithm vectorised over the batch: edges sorted by decreasing weight, a
    component label per vertex; an edge joins two components iff their labels differ, after
    which the second label is renamed to the first. ``O(E n)`` work per element, ``E`` steps.
    Returns the symmetric 0/1 adjacency with exactly ``n - 1`` edges.
    """
    u = u.detach()
    n = u.shape[-1]
    batch = u.shape[:-2]
    flat = u.reshape(-1, n, n)
    b = flat.shape[0]
    rows, cols = upper_edges(n, u.device)
    order = flat[:, rows, cols].argsort(-1, descending=True)  # [b, E]
    ei, ej = rows[order], cols[order]
    label = torch.arange(n, device=u.device).expand(b, n).clone()
    adj = torch.zeros_like(flat)
    arange_b = torch.arange(b, device=u.device)
    added = torch.zeros(b, dtype=torch.long, device=u.device)
    check_every = max(1, n)
    for e in range(ei.shape[1]):
        i, j = ei[:, e], ej[:, e]
        li, lj = label[arange_b, i], label[arange_b, j]
        join = li != lj
        adj[arange_b, i, j] = torch.where(join, 1.0, adj[arange_b, i, j])
        label = torch.where(join.unsqueeze(-1) & (label == lj.unsqueeze(-1)), li.unsqueeze(-1), label)
        added += join.long()
        if (e + 1) % check_every == 0 and bool((added == n - 1).all()):
            break
    adj = adj + adj.transpose(-1, -2)
    return adj.reshape(*batch, n, n)


@eager_solver
def prim(u: torch.Tensor) -> torch.Tensor:
    """Maximum spanning tree of symmetric weights ``u [..., n, n]``, the one :func:`kruskal` returns when
    the tree is unique (distinct weights: almost surely under Gumbel noise; tested), by Prim's algorithm.

    Grown from vertex 0, one vertex per step (``n - 1`` vectorised steps over ``[..., n]`` tensors, no
    data-dependent loop): every vertex outside the tree keeps its best weight into the tree (``key``),
    the best of those joins. A step is four small kernels (``argmax``, one ``scatter_`` closing the
    vertex, one row ``gather``, ``maximum`` plus the closed mask); the parents are read off at the end:
    the parent of ``v`` is its heaviest edge to a vertex that joined before it (that edge set ``v``'s
    key when it joined). With tied weights it returns a maximum spanning tree too, possibly another
    one than Kruskal's. ``-inf`` weights (masked edges) are used only when nothing else connects.
    Measured faster than :func:`kruskal` (``results/benchmarks/structured.md``); Kruskal stays the reference.
    """
    u = u.detach()
    n = u.shape[-1]
    batch = u.shape[:-2]
    flat = u.reshape(-1, n, n)
    flat = flat.masked_fill(torch.isneginf(flat), torch.finfo(flat.dtype).min)  # masked edges: finite, last
    b = flat.shape[0]
    closed = torch.zeros(b, n, dtype=flat.dtype, device=u.device)  # -inf once a vertex is in the tree
    closed[:, 0] = -torch.inf
    key = flat[:, 0] + closed  # best weight from each vertex into the tree; -inf inside it
    joined = [torch.zeros(b, 1, dtype=torch.long, device=u.device)]
    for _ in range(n - 1):
        v = key.argmax(-1, keepdim=True)
        joined.append(v)
        closed.scatter_(1, v, -torch.inf)
        key = torch.maximum(key, flat.gather(1, v.unsqueeze(-1).expand(b, 1, n)).squeeze(1)) + closed
    order = torch.cat(joined, 1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=u.device).expand(b, n))
    earlier = rank.unsqueeze(-2) < rank.unsqueeze(-1)  # [b, v, j]: j joined before v
    parent = flat.masked_fill(~earlier, -torch.inf).argmax(-1)  # vertex 0 (no earlier vertex): itself
    adj = torch.zeros_like(flat).scatter_(2, parent.unsqueeze(-1), 1.0)
    adj[:, 0, 0] = 0.0
    adj = adj + adj.transpose(-1, -2)
    return adj.reshape(*batch, n, n)
