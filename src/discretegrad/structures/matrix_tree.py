"""Log-partition and edge marginals of spanning trees and arborescences (matrix-tree theorem).

Its own module: a determinant by log-space Gaussian elimination, unrelated to the chain DP of
:mod:`.semiring` except for the shared log-space primitives of :mod:`.logspace`.
"""

from __future__ import annotations

import torch

from discretegrad._autograd import compute_dtype, under_func_transform
from discretegrad.structures.kirchhoff import inverse_marginals
from discretegrad.structures.logspace import gradient, logaddexp, neg_inf

__all__ = ["tree_log_partition", "tree_log_partition_reference", "tree_marginals", "tree_marginals_elimination",
           "tree_marginals_reference", "tree_marginals_unrolled"]


def tree_log_partition(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """``log Σ_T exp(Σ_{e∈T} w_e)`` over spanning trees (or arborescences rooted at ``root``).

    Matrix-tree theorem (Koo et al. 2007 for the directed case): ``Z = det L̂``, the Laplacian
    ``L_jj = Σ_i A_ij``, ``L_ij = -A_ij`` (``A_ij = exp(w_ij)``, edge i → j) with the root's row and
    column removed. The determinant is computed by Gaussian elimination that never subtracts
    (as in the GTH algorithm for Markov chains): eliminating vertex ``v`` has pivot
    ``d_v = Σ_{i alive} A_iv`` (its in-weight from the vertices not yet eliminated, root included,
    which equals the Schur-complement diagonal) and updates ``A_ij += A_iv A_vj / d_v`` (paths
    through ``v``); ``log Z = Σ_v log d_v``. Everything runs in log space (``logsumexp`` and
    ``logaddexp``), so there is no overflow, underflow or cancellation, and no clipping; ``tau → 0``
    stays accurate. Every column is centred by its largest entry, first and again when its vertex is
    eliminated (exact: every arborescence of the remaining graph has one in-edge per non-root
    vertex, so ``log Z`` shifts by the sum of the centres, added back), so the pivots ``log d_v`` stay
    in ``[0, log n]`` and a common offset of the weights costs no precision: rounding is relative to
    the spread of each vertex's in-weights. ``O(n^3)`` in ``n - 1`` vectorised steps. Undirected trees are
    arborescences of the symmetric graph rooted anywhere; their ``w`` is symmetrised as
    ``(w + wᵀ)/2``. Half precision is computed and returned in float32.

    Where the centred columns' spread allows (:func:`_linear_dtype`), the same elimination runs in
    linear space (:func:`_linear_elimination`: no transcendental per entry, about 3x faster with its
    backward, ``results/benchmarks/structured.md``), in float64 for float32 inputs whose spread
    needs it; otherwise, and always in :func:`tree_log_partition_reference`, in log space.
    """
    logw, centre, valid = _centred(w, directed, root)
    work = _linear_dtype(logw, valid)
    if work is None:
        return centre.sum(-1) + _log_elimination(logw)
    return (centre.sum(-1) + _linear_elimination(logw.to(work))).to(logw.dtype)


def tree_log_partition_reference(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """:func:`tree_log_partition` always in log space (the reference the linear path is tested against)."""
    logw, centre, _ = _centred(w, directed, root)
    return centre.sum(-1) + _log_elimination(logw)


def _centred(w: torch.Tensor, directed: bool, root: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logw, centre, valid)``: the log-weights with the root last, invalid entries at the finite
    ``-inf`` stand-in and every column centred by its largest entry; the centres; the valid entries."""
    n = w.shape[-1]
    w = w.to(compute_dtype(w.dtype))  # half precision is computed (and returned) in float32
    neg = neg_inf(w.dtype)
    eye = torch.eye(n, dtype=torch.bool, device=w.device)
    if not directed:  # symmetrise: each entry of an edge gets half its derivative
        w = 0.5 * (w + w.transpose(-1, -2))
        root = 0
    valid = ~eye
    valid[:, root] = False
    # root last; each step eliminates the first remaining vertex and drops its row and column
    order = torch.tensor([v for v in range(n) if v != root] + [root], device=w.device)
    logw = w.masked_fill(~valid, neg).index_select(-2, order).index_select(-1, order)
    # centring: every arborescence has one in-edge per non-root vertex, so subtracting c_j from column j
    # divides Z by exp(c_j); c_j = the column's largest entry (detached; the root's column, the last,
    # holds no edge) puts every column's best entry at 0, so rounding is relative to the spread within
    # columns, not to their magnitude
    centre = logw.detach().amax(-2)
    centre = torch.cat([centre[..., :-1], torch.zeros_like(centre[..., -1:])], -1)
    return logw - centre.unsqueeze(-2), centre, valid.index_select(0, order).index_select(1, order)


def _linear_dtype(logw: torch.Tensor, valid: torch.Tensor) -> torch.dtype | None:
    """The dtype :func:`_linear_elimination` may run in for the column-centred ``logw``, or ``None``.

    Every valid entry of a centred column lies in ``[-S, 0]``, ``S`` the largest spread of a column.
    In linear space the elimination only adds non-negative terms, so an entry never drops below its
    initial ``e^{-S}``, a pivot (a sum of the alive entries of its column, the root's among them) never
    below ``e^{-S}``, and no column sum grows; with ``S <= LINEAR_RANGE[dtype]`` no entry, product of
    two entries or squared inverse pivot of the backward leaves the normal range, and the rounding is
    relative, as in log space. The float32 range is tried first, then float64; beyond both, and under
    ``torch.func`` transforms or compilation (the choice reads the data), ``None``: the log-space path.
    """
    if torch.compiler.is_compiling() or under_func_transform():
        return None
    spread = float(-logw.detach().masked_fill(~valid, 0.0).amin()) if logw.numel() else 0.0
    candidates = (logw.dtype, torch.float64) if logw.dtype == torch.float32 else (torch.float64,)
    for dtype in candidates:
        if spread <= LINEAR_RANGE[dtype]:
            return dtype
    return None


LINEAR_RANGE = {torch.float32: 30.0, torch.float64: 300.0}
"""Largest column spread ``S`` of the centred log-weights for the linear-space elimination, per dtype
(float32: ``e^{-2·30} = 8.8e-27`` and ``e^{60}`` stay normal; float64: ``e^{±600}``)."""


def _linear_elimination(logw: torch.Tensor) -> torch.Tensor:
    """``log Z - Σ centres`` of the column-centred ``logw [..., n, n]`` (root last) by the same
    subtraction-free elimination as :func:`_log_elimination`, on ``A = exp(logw)`` in linear space.

    The diagonal is never read (a pivot sums the other entries of its column, an update reads the
    other entries of its row), so the self-loops an update writes there are left in place instead of
    being masked out; the logarithms of the pivots are taken once, at the end."""
    a = logw.exp()  # the finite -inf stand-in gives exact zeros
    pivots = []
    for m in range(logw.shape[-1], 1, -1):
        # split, not slices: the backward of a split is one concatenation, that of a slice a zero-filled
        # copy of the whole matrix (most of this loop's backward before)
        top, others = a.split([1, m - 1], -2)
        into_v, rest = others.split([1, m - 1], -1)  # in-weights of the eliminated vertex from the others
        out_of_v = top.split([1, m - 1], -1)[1]
        d = into_v.sum(-2, keepdim=True)  # the pivot, >= e^{-S}
        pivots.append(d)
        a = torch.addcmul(rest, into_v, out_of_v / d)  # paths through the vertex
    return torch.cat(pivots, -1).log().sum((-2, -1))


def _log_elimination(logw: torch.Tensor) -> torch.Tensor:
    """``log Z - Σ centres`` of the column-centred ``logw [..., n, n]`` (root last), in log space."""
    neg = neg_inf(logw.dtype)
    log_z = torch.zeros(logw.shape[:-2], dtype=logw.dtype, device=logw.device)
    for m in range(logw.shape[-1], 1, -1):
        into_v = logw[..., 1:, 0]  # in-weights of the eliminated vertex from the m - 1 others
        # the eliminated column again (the same identity): elimination can move a column's best entry
        # far below 0, and logsumexp's backward exp(x - out) is then not normalised once out is rounded
        pivot = into_v.detach().amax(-1, keepdim=True)
        into_v = into_v - pivot
        log_z = log_z + pivot.squeeze(-1)
        log_d = torch.logsumexp(into_v, -1)
        log_z = log_z + log_d
        through = into_v.unsqueeze(-1) + logw[..., 0, 1:].unsqueeze(-2) - log_d[..., None, None]
        self_loop = torch.eye(m - 1, dtype=torch.bool, device=logw.device)
        logw = logaddexp(logw[..., 1:, 1:], through).masked_fill(self_loop, neg)
    return log_z


def tree_marginals(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """Edge marginals ``μ = ∂ log Z / ∂w`` of the Gibbs distribution ``p(T) ∝ exp(Σ_{e∈T} w_e)``.

    Undirected: symmetric ``μ`` (``μ_ij = μ_ji`` = the probability that edge {i, j} is in the tree,
    for the weights ``(w + wᵀ)/2``); directed: ``μ_ij`` = probability of edge i → j. Diagonal (and
    root column) are zero. ``μ`` is differentiable (its Jacobian is the covariance of the edge
    indicators, the SST backward), to any order.

    Eagerly, by one matrix inverse per batch element (:func:`.kirchhoff.inverse_marginals`, float64,
    closed-form backward) where its measured error bound holds, else, for the elements it refuses, by
    :func:`tree_marginals_elimination` (``∂ log Z`` of the subtraction-free elimination by autograd);
    under ``torch.func`` transforms by the latter; under ``torch.compile`` by
    :func:`tree_marginals_unrolled`.
    """
    if torch.compiler.is_compiling():  # dynamo cannot trace torch.autograd.grad nor the data-dependent choice
        return tree_marginals_unrolled(w, directed=directed, root=root)
    if under_func_transform():
        return tree_marginals_elimination(w, directed=directed, root=root)
    return inverse_marginals(w, directed=directed, root=root,
                             fallback=lambda x: tree_marginals_elimination(x, directed=directed, root=root))


def tree_marginals_elimination(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """:func:`tree_marginals` as ``∂`` :func:`tree_log_partition` by autograd
    (:func:`~discretegrad.structures.logspace.gradient`, with ``create_graph`` when ``w`` requires
    grad): the elimination in linear space where the centred spread allows, else in log space."""
    return _marginals(tree_log_partition, w, directed, root)


def tree_marginals_reference(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """:func:`tree_marginals` through :func:`tree_log_partition_reference` (log space throughout)."""
    return _marginals(tree_log_partition_reference, w, directed, root)


def _marginals(log_partition, w: torch.Tensor, directed: bool, root: int) -> torch.Tensor:
    if torch.compiler.is_compiling():  # dynamo cannot trace torch.autograd.grad
        return tree_marginals_unrolled(w, directed=directed, root=root)
    mu = gradient(lambda x: log_partition(x, directed=directed, root=root), w)
    if not directed:  # ∂/∂w_ij = ∂/∂w_ji = μ_{ij}/2
        mu = mu + mu.transpose(-1, -2)
    return mu


def tree_marginals_unrolled(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """:func:`tree_marginals_reference` with the reverse pass of the log-space elimination written out
    as tensor code instead of taken by ``torch.autograd.grad``: what ``torch.compile`` runs.

    The marginals are the same adjoints autograd computes (``∂ log Z`` through every step, in the
    same order and with the same ops: ``σ`` of the ``logaddexp`` gap, the pivot's ``softmax``), so they
    agree with the reference to rounding; they are plain differentiable tensor code, so the SST
    gradient (their Jacobian times a vector) is autograd's backward through both passes, as the
    reference's ``create_graph`` derivative is. Half precision is computed in float32."""
    logw, _, valid = _centred(w, directed, root)
    adjoint = _log_elimination_adjoint(logw).masked_fill(~valid, 0.0)
    n, root = w.shape[-1], root if directed else 0  # undirected: rooted at vertex 0, as in _centred
    order = [v for v in range(n) if v != root] + [root]
    back = torch.tensor(sorted(range(n), key=order.__getitem__), device=w.device)  # inverse of the root-last order
    mu = adjoint.index_select(-2, back).index_select(-1, back)
    return mu if directed else mu + mu.transpose(-1, -2)  # symmetrised weights: both entries of an edge


def _log_elimination_adjoint(logw: torch.Tensor) -> torch.Tensor:
    """``∂ _log_elimination(logw) / ∂ logw`` by the elimination forward (keeping every step's inputs)
    and its reverse pass, written out (no ``torch.autograd.grad``)."""
    neg = neg_inf(logw.dtype)
    steps = []
    for m in range(logw.shape[-1], 1, -1):
        into_v = logw[..., 1:, 0]
        into_v = into_v - into_v.detach().amax(-1, keepdim=True)  # the detached pivot: no derivative
        log_d = torch.logsumexp(into_v, -1)
        rest = logw[..., 1:, 1:]
        through = into_v.unsqueeze(-1) + logw[..., 0, 1:].unsqueeze(-2) - log_d[..., None, None]
        self_loop = torch.eye(m - 1, dtype=torch.bool, device=logw.device)
        steps.append((into_v, log_d, rest, through, self_loop))
        logw = logaddexp(rest, through).masked_fill(self_loop, neg)
    grad = torch.zeros_like(logw)  # the last 1 x 1 matrix: not read
    for into_v, log_d, rest, through, self_loop in reversed(steps):
        grad = grad.masked_fill(self_loop, 0.0)
        to_through = grad * torch.sigmoid(through - rest)  # logaddexp's derivative in its second argument
        to_rest = grad * torch.sigmoid(rest - through)
        d_log_d = 1.0 - to_through.sum((-2, -1))  # log Z += log d, and through = ... - log d
        d_into = to_through.sum(-1) + d_log_d.unsqueeze(-1) * torch.softmax(into_v, -1)
        top = torch.cat([torch.zeros_like(d_log_d).unsqueeze(-1), to_through.sum(-2)], -1)  # row of v
        grad = torch.cat([top.unsqueeze(-2), torch.cat([d_into.unsqueeze(-1), to_rest], -1)], -2)
    return grad
