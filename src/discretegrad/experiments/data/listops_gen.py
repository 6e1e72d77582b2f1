"""The ListOps distribution (Nangia & Bowman 2018): a seeded re-implementation of the original
generator, its semantics, its bracketed strings and the gold binary bracketing.

The original generator (SPINN ``python/spinn/data/listops/make_data.py``; see
``FACTS.md`` §5), restated:

* a node at depth ``d`` (root ``d = 1``) draws ``r ~ U(0, 1)`` when ``d < 20`` (else ``r = 1``);
  ``r > 0.25`` gives a leaf digit, uniform over 0-9; otherwise an operator node with
  ``m ~ UniformInt{2..5}`` children generated at depth ``d + 1``, then its operator, uniform over
  MIN, MAX, MED, SM (the children are drawn before the operator, as in the original);
* semantics: MIN, MAX; MED = ``int(numpy.median(values))`` (for an even count the mean of the two
  middle values, truncated); SM = sum modulo 10;
* string: the left-branching binary bracketing ``( ( ( [MIN 6 ) 3 ) ] )`` -- each argument
  attaches to the operator's partial application, then ``]`` closes it; a lone digit is
  written bare;
* a data set is a set of *distinct* trees.

A tree is an ``int`` (a leaf) or a tuple ``(operator, children)`` with ``operator`` one of
:data:`OPERATORS` and ``children`` a tuple of trees. Random draws come from a
``random.Random`` instance (never the global one).

Preprocessing (the GST / Choi et al. code, see :func:`tokens`): parentheses are dropped, an
operator ``[MIN`` becomes the two tokens ``[`` and ``min``, ``]`` and digits are tokens, all
lower-cased. :func:`gold_spans` is the original bracketing on those tokens: the pair
``[ min`` is one constituent, then each argument and the closing ``]`` attach to the left.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

__all__ = ["OPERATORS", "VALUE_P", "MAX_ARGS", "MAX_DEPTH", "Tree", "generate_tree", "generate_distinct", "value",
           "to_string", "parse", "tokens", "n_tokens", "gold_spans", "depth"]

OPERATORS = ("MIN", "MAX", "MED", "SM")
VALUE_P = 0.25
MAX_ARGS = 5
MAX_DEPTH = 20

Tree = int | tuple  # int leaf, or (operator, tuple of children)


def generate_tree(rng: random.Random, depth: int = 1, max_depth: int = MAX_DEPTH) -> Tree:
    """One tree of the original distribution, drawn from ``rng`` (see the module docstring)."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.randrange(10)
    n_args = rng.randint(2, MAX_ARGS)
    children = tuple(generate_tree(rng, depth + 1, max_depth) for _ in range(n_args))
    return (OPERATORS[rng.randrange(len(OPERATORS))], children)


def generate_distinct(seed: int, n: int, exclude: Iterable[str] = (), max_tokens: int | None = None) -> list[Tree]:
    """``n`` distinct trees (as the original's set of data points) whose strings are not in
    ``exclude`` (e.g. the test set), in the order first drawn; deterministic for ``seed``. With
    ``max_tokens``, a tree of ``max_tokens`` or more :func:`tokens` is rejected before it counts
    (the original distribution conditioned on short expressions)."""
    if n < 0:
        raise ValueError(f"Expected n >= 0, but got {n}")
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"Expected max_tokens >= 2 or None, but got {max_tokens}")
    rng = random.Random(seed)
    banned = set(exclude)
    seen: set[str] = set()
    out: list[Tree] = []
    while len(out) < n:
        t = generate_tree(rng)
        if max_tokens is not None and n_tokens(t) >= max_tokens:
            continue
        s = to_string(t)
        if s in seen or s in banned:
            continue
        seen.add(s)
        out.append(t)
    return out


def value(t: Tree) -> int:
    """The value of the expression, 0-9, with the original's semantics."""
    if isinstance(t, int):
        return t
    op, children = t
    vals = [value(c) for c in children]
    if op == "MIN":
        return min(vals)
    if op == "MAX":
        return max(vals)
    if op == "MED":  # int(np.median(vals)): mean of the two middle values for an even count, truncated
        s = sorted(vals)
        return (s[(len(s) - 1) // 2] + s[len(s) // 2]) // 2
    if op == "SM":
        return sum(vals) % 10
    raise ValueError(f"Expected an operator in {OPERATORS}, but got {op!r}")


def to_string(t: Tree) -> str:
    """The original file's string: the left-branching binary bracketing with parentheses."""
    if isinstance(t, int):
        return str(t)
    op, children = t
    s = f"[{op}"
    for c in children:
        s = f"( {s} {to_string(c)} )"
    return f"( {s} ] )"


def parse(expression: str) -> Tree:
    """Invert :func:`to_string`: a line's expression back into the tree (``ValueError`` if it is
    not a well-formed ListOps bracketing)."""
    toks = expression.split()
    pos = 0

    def item():
        # one binary item: an atom, or "( left right )" folded into a partial application
        nonlocal pos
        if pos >= len(toks):
            raise ValueError(f"Expected a ListOps expression, but got a truncated one: {expression!r}")
        tok = toks[pos]
        pos += 1
        if tok != "(":
            return tok
        left, right = item(), item()
        if pos >= len(toks) or toks[pos] != ")":
            raise ValueError(f"Expected ')' at token {pos} of {expression!r}")
        pos += 1
        if isinstance(left, str) and left.startswith("[") and left[1:] in OPERATORS:
            return ("partial", left[1:], (_atom(right),))
        if isinstance(left, tuple) and left[0] == "partial":
            if right == "]":
                return (left[1], left[2])
            return ("partial", left[1], left[2] + (_atom(right),))
        raise ValueError(f"Expected an operator application in {expression!r}, but got {left!r} {right!r}")

    def _atom(x):
        if isinstance(x, str):
            if x.isdigit() and len(x) == 1:
                return int(x)
            raise ValueError(f"Expected a digit or a sub-expression in {expression!r}, but got {x!r}")
        if x[0] == "partial":
            raise ValueError(f"Expected a closed sub-expression in {expression!r}, but got an unclosed one")
        return x

    out = _atom(item())
    if pos != len(toks):
        raise ValueError(f"Expected one expression, but got trailing tokens in {expression!r}")
    return out


def tokens(t: Tree) -> list[str]:
    """The preprocessed tokens (GST / Choi et al.): ``[`` and the lower-cased operator as two
    tokens, the arguments, ``]``; no parentheses."""
    if isinstance(t, int):
        return [str(t)]
    op, children = t
    out = ["[", op.lower()]
    for c in children:
        out += tokens(c)
    out.append("]")
    return out


def gold_spans(t: Tree) -> list[tuple[int, int]]:
    """The constituents of the gold binary tree on :func:`tokens` positions, as half-open
    ``(start, end)`` spans of two or more tokens (``n - 1`` of them for ``n`` tokens): per
    operator the pair ``[ op``, then one span per argument attached and one for ``]``."""
    out: list[tuple[int, int]] = []

    def walk(node: Tree, start: int) -> int:  # returns the end position
        if isinstance(node, int):
            return start + 1
        _, children = node
        end = start + 2
        out.append((start, end))
        for c in children:
            end = walk(c, end)
            out.append((start, end))
        out.append((start, end + 1))
        return end + 1

    walk(t, 0)
    return out


def n_tokens(t: Tree) -> int:
    """``len(tokens(t))`` without building the list: 3 per operator (``[``, the operator, ``]``)
    plus one per digit."""
    return 1 if isinstance(t, int) else 3 + sum(n_tokens(c) for c in t[1])


def depth(t: Tree) -> int:
    """Operator nesting depth (0 for a lone digit)."""
    return 0 if isinstance(t, int) else 1 + max(depth(c) for c in t[1])


def merges_for_spans(n: int, spans: Sequence[tuple[int, int]]) -> list[int]:
    """The parser's merge index at each of the ``n - 1`` levels that builds the binary tree with
    constituents ``spans``: at every level the leftmost adjacent pair whose union is a span."""
    wanted = set(spans)
    nodes = [(i, i + 1) for i in range(n)]
    out = []
    for _ in range(n - 1):
        k = next((k for k in range(len(nodes) - 1) if (nodes[k][0], nodes[k + 1][1]) in wanted), None)
        if k is None:
            raise ValueError(f"Expected the spans of a binary tree over {n} tokens, but got {sorted(wanted)}")
        nodes[k:k + 2] = [(nodes[k][0], nodes[k + 1][1])]
        out.append(k)
    return out


def spans_from_merges(n: int, merges: Sequence[int]) -> list[tuple[int, int]]:
    """The constituents (spans of two or more tokens) the parser built from its merge indices."""
    nodes = [(i, i + 1) for i in range(n)]
    out = []
    for k in merges[: n - 1]:
        merged = (nodes[k][0], nodes[k + 1][1])
        nodes[k:k + 2] = [merged]
        out.append(merged)
    return out


__all__ += ["merges_for_spans", "spans_from_merges"]
