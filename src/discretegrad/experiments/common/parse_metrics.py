"""Parse-tree quality against the gold bracketing: unlabelled constituent F1.

A constituent is the set of token positions a tree node covers, for nodes that cover two or more
tokens and not the whole sequence (those two kinds are in every tree). For a binary tree they are
spans; for a dependency tree (an arborescence) they are the yields of the vertices that have
children, which need not be contiguous. F1 is computed per sentence and averaged over the
sentences that have a gold constituent (``n >= 3`` tokens), as in the latent-tree literature
(Williams et al. 2018 report sentence-level F1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["constituents_from_spans", "constituents_from_heads", "f1", "mean_f1"]

Constituent = frozenset


def constituents_from_spans(n: int, spans: Iterable[tuple[int, int]]) -> set[frozenset]:
    """Non-trivial constituents of a binary tree given as half-open spans over ``n`` tokens."""
    return {frozenset(range(a, b)) for a, b in spans if 2 <= b - a < n}


def constituents_from_heads(heads: Sequence[int], root: int = 0) -> set[frozenset]:
    """Non-trivial yields of a dependency tree: ``heads[j]`` is the parent of ``j`` (the root's
    entry is ignored)."""
    n = len(heads)
    children: list[list[int]] = [[] for _ in range(n)]
    for j, h in enumerate(heads):
        if j != root:
            children[h].append(j)
    out = set()
    for v in range(n):
        if not children[v]:
            continue
        seen, stack = {v}, [v]
        while stack:
            for w in children[stack.pop()]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        if 2 <= len(seen) < n:
            out.add(frozenset(seen))
    return out


def f1(pred: set, gold: set) -> float | None:
    """Unlabelled F1 of two constituent sets (``None`` when there is no gold constituent)."""
    if not gold:
        return None
    hit = len(pred & gold)
    if hit == 0:
        return 0.0
    p, r = hit / len(pred), hit / len(gold)
    return 2 * p * r / (p + r)


def mean_f1(scores: Iterable[float | None]) -> float:
    """Mean over the sentences that have a gold constituent (NaN if none does)."""
    vals = [s for s in scores if s is not None]
    return sum(vals) / len(vals) if vals else float("nan")
