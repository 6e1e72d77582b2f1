"""Maximum spanning arborescence (Chu-Liu/Edmonds), batched in torch.

Its own module: a combinatorial solver (contraction of cycles, then expansion) sharing nothing
with the undirected solver in :mod:`.kruskal` or with the log-space DPs.
"""

from __future__ import annotations

import itertools
import math

import torch

from discretegrad.structures.eager import eager_solver

__all__ = ["edmonds"]


@eager_solver
def edmonds(u: torch.Tensor, root: int) -> torch.Tensor:
    """Maximum spanning arborescence rooted at ``root`` of ``u [..., n, n]`` (``u[i, j]`` = i → j).

    Chu-Liu/Edmonds, batched in torch on the input's device (float64 internally). Each round:
    every active non-root node takes its best in-edge; cycles of these choices are found by
    pointer doubling (the image of ``parent^(2^m)``, ``2^m >= n``, is the set of cycle nodes), and
    one cycle per batch element (the one holding the smallest node index) is contracted into
    that node: in-edges get scores ``u(a, c) - u(parent(c), c)`` (maximised over the cycle node
    ``c`` they enter, remembered), out-edges ``max_c u(c, b)`` (remembered). Rounds repeat until no
    element has a cycle (at most ``n - 1``); the contractions are then undone in reverse order:
    the contracted node's in-edge enters the remembered cycle node, whose cycle in-edge is
    dropped, and edges leaving it start from the remembered cycle node. ``O(n^3)`` per element.
    Returns the 0/1 adjacency (one parent per non-root node, none for the root, acyclic).
    """
    u = u.detach()
    n = u.shape[-1]
    score = u.reshape(-1, n, n).to(torch.float64)  # score[b, i, j]: edge i -> j of the contracted graph
    batch = score.shape[0]
    device = score.device
    neg = -math.inf
    nodes = torch.arange(n, device=device)
    not_root = nodes != root
    # no self-loops, no edges into the root
    score = score.masked_fill(torch.eye(n, dtype=torch.bool, device=device), neg)
    score[:, :, root] = neg
    active = torch.ones(batch, n, dtype=torch.bool, device=device)  # nodes not yet merged into another
    doublings = max(1, math.ceil(math.log2(n))) + 1  # 2^doublings >= n: enough to walk around any cycle
    contractions = []  # what each round needs to undo its contraction
    # eager: until no element has a cycle; under torch.compile (no data-dependent exit) a fixed n - 1
    # rounds: each contraction merges at least two of the n - 1 non-root nodes, so at most n - 2 rounds
    # contract and the last finds no cycle; a round with no cycle changes nothing (every update below is
    # masked by has_cycle), so the result is the same
    compiling = torch.compiler.is_compiling()
    for _ in range(n - 1) if compiling else itertools.count():
        # greedy in-edge of every active non-root node (the root and merged nodes point to the root)
        best_parent = score.masked_fill(~active.unsqueeze(-1), neg).argmax(1)
        best_parent = torch.where(active & not_root, best_parent, root)
        # pointer doubling: after 2^doublings steps up the parent pointers, every node sits on a cycle
        # (the root's self-loop included), so the image is exactly the set of cycle nodes
        ancestor = best_parent
        for _ in range(doublings):
            ancestor = ancestor.gather(1, ancestor)
        on_cycle = torch.zeros(batch, n, dtype=torch.bool, device=device).scatter(1, ancestor, True) & not_root
        has_cycle = on_cycle.any(1)
        if not compiling and not bool(has_cycle.any()):
            break
        # label each cycle by its smallest node: the minimum over the first 2^doublings ancestors
        cycle_label = torch.where(on_cycle, nodes, n)
        jump = best_parent
        for _ in range(doublings):
            cycle_label = torch.minimum(cycle_label, cycle_label.gather(1, jump))
            jump = jump.gather(1, jump)
        # contract one cycle per element: the one with the smallest label, into its representative node
        first_label = torch.where(on_cycle, cycle_label, n).amin(1)
        in_cycle = on_cycle & (cycle_label == first_label.unsqueeze(1))
        rep = torch.where(has_cycle, first_label, 0)
        chosen_in = score.gather(1, best_parent.unsqueeze(1)).squeeze(1)  # score[best_parent[v], v]
        # edge a -> cycle: the best cycle node c to enter, scored relative to c's cycle in-edge
        in_score, enter_at = (score - chosen_in.unsqueeze(1)).masked_fill(~in_cycle.unsqueeze(1), neg).max(2)
        # edge cycle -> b: the best cycle node to leave from
        out_score, leave_from = score.masked_fill(~in_cycle.unsqueeze(2), neg).max(1)
        outside = active & ~in_cycle
        rep_col = rep.view(batch, 1, 1).expand(batch, n, 1)
        rep_row = rep.view(batch, 1, 1).expand(batch, 1, n)
        # the representative's column (in-edges) and row (out-edges); unchanged where there is no cycle
        new_col = torch.where(has_cycle.unsqueeze(1), torch.where(outside, in_score, neg),
                              score.gather(2, rep_col).squeeze(2))
        new_row = torch.where(has_cycle.unsqueeze(1), torch.where(outside, out_score, neg),
                              score.gather(1, rep_row).squeeze(1))
        score = score.scatter(2, rep_col, new_col.unsqueeze(2)).scatter(1, rep_row, new_row.unsqueeze(1))
        active = active & ~(in_cycle & (nodes != rep.unsqueeze(1)))  # the other cycle nodes are merged away
        contractions.append((in_cycle, best_parent, enter_at, leave_from, rep, has_cycle))
    if compiling:  # the greedy in-edges after the last round (eager: computed by the round that exits)
        best_parent = torch.where(active & not_root, score.masked_fill(~active.unsqueeze(-1), neg).argmax(1), root)
    # expand the contractions, last first
    parent = best_parent
    for in_cycle, cycle_parent, enter_at, leave_from, rep, has_cycle in reversed(contractions):
        rep_parent = parent.gather(1, rep.unsqueeze(1))  # the source of the edge into the contracted node
        # edges leaving the contracted node start from the remembered cycle node
        new_parent = torch.where((parent == rep.unsqueeze(1)) & ~in_cycle, leave_from, parent)
        # cycle nodes keep their cycle in-edges ...
        new_parent = torch.where(in_cycle, cycle_parent, new_parent)
        # ... except the remembered node the in-edge enters, which takes that edge instead
        entered = enter_at.gather(1, rep_parent)
        new_parent = new_parent.scatter(1, entered, rep_parent)
        parent = torch.where(has_cycle.unsqueeze(1), new_parent, parent)
    adj = torch.zeros(batch, n, n, dtype=u.dtype, device=device)
    child = torch.cat([nodes[:root], nodes[root + 1:]])  # the non-root nodes (static shape, for compile)
    adj[torch.arange(batch, device=device).unsqueeze(1), parent[:, child], child.unsqueeze(0)] = 1.0
    return adj.reshape(u.shape)
