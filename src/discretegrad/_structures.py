"""Combinatorial solvers and log-partition dynamic programs for the structured estimators.

Private module: small pure functions on detached or differentiable tensors, batched over
leading dims, on the input's device. Public ops live in :mod:`discretegrad.subsets` and
:mod:`discretegrad.trees`; brute-force references in :mod:`discretegrad.exact`.

Solvers (exact maximisers of a linear score ``<u, x>`` over a structure set, no gradient):
:func:`topk_hard`, :func:`corr_topk_hard` (max-plus chain DP), :func:`kruskal`
(maximum spanning tree), :func:`edmonds` (maximum spanning arborescence, Chu-Liu/Edmonds).

Relaxations (marginals of the Gibbs distribution ``p(x) ∝ exp(<w, x>)``, differentiable by
autograd): :func:`topk_marginals` and :func:`corr_topk_marginals` (log-space forward-backward),
:func:`lml` (limited multilabel projection, closed-form backward), :func:`tree_marginals`
(matrix-tree theorem, undirected and directed, by log-space elimination).

Enumeration for the exact references: :func:`all_ksubsets`, :func:`all_spanning_trees`,
:func:`all_arborescences`, and :func:`kruskal_law` (the exact law of the Kruskal sample).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

__all__ = [
    "topk_hard",
    "topk_marginals",
    "corr_topk_hard",
    "corr_topk_marginals",
    "lml",
    "kruskal",
    "edmonds",
    "tree_marginals",
    "tree_log_partition",
    "all_ksubsets",
    "all_spanning_trees",
    "all_arborescences",
    "kruskal_law",
]


def _neg(dtype: torch.dtype) -> float:
    """A finite stand-in for ``-inf`` in log-space DPs (``logaddexp(-inf, -inf)`` has a NaN gradient)."""
    return -1e30 if dtype == torch.float32 else -1e300


def _logaddexp2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(e^a + e^b)`` as ``max(a, b) + log1p(e^{-|a-b|})``: unlike ``torch.logaddexp``, whose
    backward ``1/(1 + e^{b-a})`` gives ``inf/inf`` when differentiated again for a large gap, every
    derivative here is bounded, so double backward (needed for the tree marginals) stays finite."""
    return torch.maximum(a, b) + torch.log1p(torch.exp(-(a - b).abs()))


# ----------------------------------------------------------------------------- k-subsets

def topk_hard(u: torch.Tensor, k: int) -> torch.Tensor:
    """k-hot indicator of the ``k`` largest entries of ``u`` along the last dim (exactly ``k`` ones)."""
    index = u.topk(k, dim=-1).indices
    return torch.zeros_like(u).scatter_(-1, index, 1.0)


def topk_marginals(w: torch.Tensor, k: int) -> torch.Tensor:
    """Marginals ``μ_i = P(i ∈ S)`` of ``p(S) ∝ exp(Σ_{i∈S} w_i)`` over ``|S| = k``.

    Log-space forward-backward over (item, count): ``α_i(j)`` = log-sum over subsets of items
    ``0..i`` of size ``j``, ``β_i(j)`` = log-sum over the ways items ``i+1..n-1`` bring the count
    from ``j`` to ``k``. Then ``log Z = α_{n-1}(k)`` and
    ``μ_i = exp(w_i + LSE_j[α_{i-1}(j) + β_i(j+1)] - log Z)``. ``O(n k)`` work in ``n``
    vectorised steps; the Jacobian (the covariance of ``S``) comes from autograd.
    """
    n = w.shape[-1]
    neg = _neg(w.dtype)
    alpha = w.new_full((*w.shape[:-1], k + 1), neg)
    alpha[..., 0] = 0.0
    alphas = [alpha]  # alphas[i] = α_{i-1}
    for i in range(n - 1):
        shifted = torch.cat([alpha.new_full((*alpha.shape[:-1], 1), neg), alpha[..., :-1] + w[..., i:i + 1]], -1)
        alpha = torch.logaddexp(alpha, shifted)
        alphas.append(alpha)
    beta = w.new_full((*w.shape[:-1], k + 1), neg)
    beta[..., k] = 0.0
    betas = [beta]  # built backwards: betas[0] = β_{n-1}
    for i in range(n - 2, -1, -1):
        shifted = torch.cat([beta[..., 1:] + w[..., i + 1:i + 2], beta.new_full((*beta.shape[:-1], 1), neg)], -1)
        beta = torch.logaddexp(beta, shifted)
        betas.append(beta)
    a = torch.stack(alphas, -2)  # [..., n, k+1]: α_{i-1}
    b = torch.stack(betas[::-1], -2)  # [..., n, k+1]: β_i
    log_in = w + torch.logsumexp(a[..., :k] + b[..., 1:], -1)
    log_out = torch.logsumexp(a + b, -1)
    return torch.exp(log_in - torch.logaddexp(log_in, log_out))


def _chain_dp(u: torch.Tensor, v: torch.Tensor, k: int, semiring: str):
    """Forward pass over (item i, count j, state x_i) of the correlated top-k chain.

    Score of ``x`` (``Σx = k``): ``Σ_i u_i x_i + Σ_i v_i x_i x_{i+1}``. Returns the list of
    ``α_i`` of shape ``[..., k+1, 2]`` (log-sum or max over prefixes) and, for ``"max"``, the
    back-pointers (the previous state chosen for state 1).
    """
    neg = _neg(u.dtype)
    combine = torch.logaddexp if semiring == "sum" else torch.maximum
    n = u.shape[-1]
    alpha = u.new_full((*u.shape[:-1], k + 1, 2), neg)
    alpha[..., 0, 0] = 0.0
    alpha[..., 1, 1] = u[..., 0]
    alphas, pointers = [alpha], []
    pad = u.new_full((*u.shape[:-1], 1), neg)
    for i in range(1, n):
        stay = combine(alpha[..., 0], alpha[..., 1])  # x_i = 0
        from0 = alpha[..., 0]
        from1 = alpha[..., 1] + v[..., i - 1:i]
        if semiring == "max":
            pointers.append((from1 > from0))
        take = torch.cat([pad, combine(from0, from1)[..., :-1]], -1) + u[..., i:i + 1]  # x_i = 1
        alpha = torch.stack([stay, take], -1)
        alphas.append(alpha)
    return alphas, pointers


def corr_topk_marginals(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Marginals ``P(x_i = 1)`` of ``p(x) ∝ exp(Σ u_i x_i + Σ v_i x_i x_{i+1})`` over ``Σx = k``.

    Forward ``α_i(j, s)`` (prefixes ending in state ``s`` with ``j`` chosen) and backward
    ``β_i(j, s)`` (suffixes completing the count to ``k`` given ``x_i = s``) in log space;
    ``μ_i = exp(LSE_j[α_i(j,1) + β_i(j,1)] - log Z)``. Differentiable by autograd.
    """
    neg = _neg(u.dtype)
    n = u.shape[-1]
    alphas, _ = _chain_dp(u, v, k, "sum")
    log_z = torch.logsumexp(alphas[-1][..., k, :], -1)
    beta = u.new_full((*u.shape[:-1], k + 1, 2), neg)
    beta[..., k, :] = 0.0
    betas = [beta]
    pad = u.new_full((*u.shape[:-1], 1), neg)
    for i in range(n - 2, -1, -1):
        nxt0 = beta[..., 0]
        nxt1 = torch.cat([beta[..., 1:, 1], pad], -1) + u[..., i + 1:i + 2]  # x_{i+1} = 1, count j+1
        b0 = torch.logaddexp(nxt0, nxt1)
        b1 = torch.logaddexp(nxt0, nxt1 + v[..., i:i + 1])
        beta = torch.stack([b0, b1], -1)
        betas.append(beta)
    a = torch.stack([al[..., 1] for al in alphas], -2)  # [..., n, k+1]
    b = torch.stack([be[..., 1] for be in betas[::-1]], -2)
    return torch.exp(torch.logsumexp(a + b, -1) - log_z.unsqueeze(-1))


def corr_topk_hard(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Maximiser of ``Σ u_i x_i + Σ v_i x_i x_{i+1}`` over k-hot ``x`` (Viterbi with back-pointers)."""
    u, v = u.detach(), v.detach()
    n = u.shape[-1]
    alphas, pointers = _chain_dp(u, v, k, "max")
    x = torch.zeros_like(u)
    last = alphas[-1][..., k, :]
    state = (last[..., 1] > last[..., 0]).long()
    count = torch.full(u.shape[:-1], k, dtype=torch.long, device=u.device)
    for i in range(n - 1, -1, -1):
        x[..., i] = state.to(u.dtype)
        if i == 0:
            break
        prev_count = (count - state).clamp_min(0)
        # x_i = 1: the back-pointer says which previous state was best; x_i = 0: compare α_{i-1}
        via_ptr = pointers[i - 1].gather(-1, prev_count.unsqueeze(-1)).squeeze(-1).long()
        prev = alphas[i - 1].gather(-2, prev_count[..., None, None].expand(*prev_count.shape, 1, 2)).squeeze(-2)
        via_max = (prev[..., 1] > prev[..., 0]).long()
        state, count = torch.where(state == 1, via_ptr, via_max), prev_count
    return x


class _LML(torch.autograd.Function):
    """``y = σ(w + ν)`` with the scalar ``ν`` such that ``Σ y = k`` (per batch element).

    Forward: bisection on ``ν`` (the sum is increasing in ``ν``). Backward (implicit function
    theorem): with ``h = y(1-y)``, ``∂ν/∂w = -h/Σh`` and ``grad_w = h ⊙ (g - <h, g>/Σh)``.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, k: int, iters: int) -> torch.Tensor:  # type: ignore[override]
        lo = -w.amax(-1, keepdim=True) - 40.0
        hi = -w.amin(-1, keepdim=True) + 40.0
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            too_big = torch.sigmoid(w + mid).sum(-1, keepdim=True) > k
            hi = torch.where(too_big, mid, hi)
            lo = torch.where(too_big, lo, mid)
        y = torch.sigmoid(w + 0.5 * (lo + hi))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        h = y * (1 - y)
        total = h.sum(-1, keepdim=True)
        coef = torch.where(total > 0, (h * g).sum(-1, keepdim=True) / total.clamp_min(torch.finfo(h.dtype).tiny),
                           torch.zeros_like(total))
        return h * (g - coef), None, None


def lml(w: torch.Tensor, k: int) -> torch.Tensor:
    """Limited multilabel projection ``σ(w + ν)``, ``Σ = k`` (Amos et al. 2019), batched."""
    n = w.shape[-1]
    if k == n:
        return torch.ones_like(w) + 0.0 * w
    iters = 60 if w.dtype == torch.float64 else 40
    return _LML.apply(w, k, iters)


# ----------------------------------------------------------------------------- spanning trees

def _upper_edges(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.triu_indices(n, n, 1, device=device).unbind(0)


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
    rows, cols = _upper_edges(n, u.device)
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
    s = u.reshape(-1, n, n).to(torch.float64)
    b = s.shape[0]
    dev = s.device
    neg = -math.inf
    ar = torch.arange(n, device=dev)
    s = s.masked_fill(torch.eye(n, dtype=torch.bool, device=dev), neg)
    s[:, :, root] = neg
    active = torch.ones(b, n, dtype=torch.bool, device=dev)
    steps = max(1, math.ceil(math.log2(n))) + 1
    levels = []
    not_root = ar != root
    while True:
        par = s.masked_fill(~active.unsqueeze(-1), neg).argmax(1)
        par = torch.where(active & not_root, par, root)
        p = par
        for _ in range(steps):
            p = p.gather(1, p)
        on = torch.zeros(b, n, dtype=torch.bool, device=dev).scatter(1, p, True) & not_root
        has = on.any(1)
        if not bool(has.any()):
            break
        lab = torch.where(on, ar, n)
        q = par
        for _ in range(steps):
            lab = torch.minimum(lab, lab.gather(1, q))
            q = q.gather(1, q)
        c0 = torch.where(on, lab, n).amin(1)
        cyc = on & (lab == c0.unsqueeze(1))
        r = torch.where(has, c0, 0)
        inw = s.gather(1, par.unsqueeze(1)).squeeze(1)  # s[par[v], v]
        in_best, enter = (s - inw.unsqueeze(1)).masked_fill(~cyc.unsqueeze(1), neg).max(2)  # over v in the cycle
        out_best, leave = s.masked_fill(~cyc.unsqueeze(2), neg).max(1)  # over sources v in the cycle
        outside = active & ~cyc
        idx_col = r.view(b, 1, 1).expand(b, n, 1)
        idx_row = r.view(b, 1, 1).expand(b, 1, n)
        col = torch.where(has.unsqueeze(1), torch.where(outside, in_best, neg), s.gather(2, idx_col).squeeze(2))
        row = torch.where(has.unsqueeze(1), torch.where(outside, out_best, neg), s.gather(1, idx_row).squeeze(1))
        s = s.scatter(2, idx_col, col.unsqueeze(2)).scatter(1, idx_row, row.unsqueeze(1))
        active = active & ~(cyc & (ar != r.unsqueeze(1)))
        levels.append((cyc, par, enter, leave, r, has))
    parent = par
    for cyc, par_l, enter, leave, r, has in reversed(levels):
        p_r = parent.gather(1, r.unsqueeze(1))
        new = torch.where((parent == r.unsqueeze(1)) & ~cyc, leave, parent)
        new = torch.where(cyc, par_l, new)
        entered = enter.gather(1, p_r)
        new = new.scatter(1, entered, p_r)
        parent = torch.where(has.unsqueeze(1), new, parent)
    adj = torch.zeros(b, n, n, dtype=u.dtype, device=dev)
    child = ar[not_root]
    adj[torch.arange(b, device=dev).unsqueeze(1), parent[:, child], child.unsqueeze(0)] = 1.0
    return adj.reshape(u.shape)


def tree_log_partition(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """``log Σ_T exp(Σ_{e∈T} w_e)`` over spanning trees (or arborescences rooted at ``root``).

    Matrix-tree theorem (Koo et al. 2007 for the directed case): ``Z = det L̂``, the Laplacian
    ``L_jj = Σ_i A_ij``, ``L_ij = -A_ij`` (``A_ij = exp(w_ij)``, edge i → j) with the root's row and
    column removed. The determinant is computed by Gaussian elimination that never subtracts
    (as in the GTH algorithm for Markov chains): eliminating vertex ``v`` has pivot
    ``d_v = Σ_{i alive} A_iv`` (its in-weight from the vertices not yet eliminated, root included,
    which equals the Schur-complement diagonal) and updates ``A_ij += A_iv A_vj / d_v`` (paths
    through ``v``); ``log Z = Σ_v log d_v``. Everything runs in log space (``logsumexp`` and
    ``logaddexp``), so there is no overflow, underflow or cancellation at any scale of ``w``: no
    max-shift or clipping is needed and ``tau → 0`` stays accurate. ``O(n^3)`` in ``n - 1``
    vectorised steps. Undirected trees are arborescences of the symmetric graph rooted anywhere;
    their ``w`` is symmetrised as ``(w + wᵀ)/2``.
    """
    n = w.shape[-1]
    neg = _neg(w.dtype)
    eye = torch.eye(n, dtype=torch.bool, device=w.device)
    if not directed:  # symmetrise: each entry of an edge gets half its derivative
        w = 0.5 * (w + w.transpose(-1, -2))
        root = 0
    valid = ~eye
    valid[:, root] = False
    # root last; each step eliminates the first remaining vertex and drops its row and column
    order = torch.tensor([v for v in range(n) if v != root] + [root], device=w.device)
    logw = w.masked_fill(~valid, neg).index_select(-2, order).index_select(-1, order)
    log_z = w.new_zeros(w.shape[:-2])
    for m in range(n, 1, -1):
        into_v = logw[..., 1:, 0]  # in-weights of the eliminated vertex from the m - 1 others
        log_d = torch.logsumexp(into_v, -1)
        log_z = log_z + log_d
        through = into_v.unsqueeze(-1) + logw[..., 0, 1:].unsqueeze(-2) - log_d[..., None, None]
        self_loop = torch.eye(m - 1, dtype=torch.bool, device=w.device)
        logw = _logaddexp2(logw[..., 1:, 1:], through).masked_fill(self_loop, neg)
    return log_z


def tree_marginals(w: torch.Tensor, *, directed: bool, root: int = 0) -> torch.Tensor:
    """Edge marginals ``μ = ∂ log Z / ∂w`` of the Gibbs distribution ``p(T) ∝ exp(Σ_{e∈T} w_e)``.

    ``log Z`` from :func:`tree_log_partition`; the gradient is taken by autograd with
    ``create_graph`` when ``w`` requires grad, so ``μ`` is itself differentiable (its Jacobian is
    the covariance of the edge indicators). Undirected: symmetric ``μ`` (``μ_ij = μ_ji`` = the
    probability that edge {i, j} is in the tree, for the weights ``(w + wᵀ)/2``);
    directed: ``μ_ij`` = probability of edge i → j. Diagonal (and root column) are zero.
    """
    if torch.is_inference_mode_enabled():  # autograd is off there: leave inference mode for a copy
        with torch.inference_mode(False):
            return tree_marginals(w.clone(), directed=directed, root=root)
    differentiable = w.requires_grad and torch.is_grad_enabled()
    with torch.enable_grad():
        leaf = w if differentiable else w.detach().requires_grad_(True)
        log_z = tree_log_partition(leaf, directed=directed, root=root)
        (mu,) = torch.autograd.grad(log_z.sum(), leaf, create_graph=differentiable)
    if not directed:  # ∂/∂w_ij = ∂/∂w_ji = μ_{ij}/2
        mu = mu + mu.transpose(-1, -2)
    return mu


# ----------------------------------------------------------------------------- enumeration

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
def _trees(n: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """All ``n^(n-2)`` labelled trees on ``n`` vertices (Cayley), from Prüfer sequences."""
    if n == 2:
        return (((0, 1),),)
    return tuple(tuple(_prufer_decode(seq, n)) for seq in itertools.product(range(n), repeat=n - 2))


def all_spanning_trees(n: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Symmetric 0/1 adjacency of every spanning tree of the complete graph: ``[n^(n-2), n, n]``."""
    edges = torch.tensor(_trees(n), dtype=torch.long).reshape(-1, n - 1, 2)
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
    trees = _trees(n)
    adj = torch.zeros(len(trees), n, n, dtype=dtype)
    for t, tree in enumerate(trees):
        for j, p in enumerate(_orient(tree, n, root)):
            if p >= 0:
                adj[t, p, j] = 1.0
    return adj.to(device)


# ----------------------------------------------------------------------------- the Kruskal law

@functools.lru_cache(maxsize=4)
def _kruskal_prefixes(n: int) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Every prefix of an edge ordering at which Kruskal's scan completes a tree, and that tree's
    index in :func:`all_spanning_trees` order. Edges are numbered as ``torch.triu_indices``."""
    edges = list(itertools.combinations(range(n), 2))
    tree_index = {frozenset((min(a, b), max(a, b)) for a, b in t): s for s, t in enumerate(_trees(n))}
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
    spanning tree ``T`` in :func:`all_spanning_trees` order: ``[..., n^(n-2)]``.

    Kruskal's tree depends only on the order of the perturbed weights, and the decreasing order of
    Gumbel-perturbed weights is Plackett-Luce: a prefix ``e_1..e_L`` has probability
    ``Π_j exp(w_{e_j}) / Σ_{e ∉ {e_1..e_{j-1}}} exp(w_e)``. Summing over the prefixes at which the scan
    completes each tree gives its exact probability. ``w [..., n, n]`` is symmetrised, ``(w + wᵀ)/2``;
    the number of prefixes grows fast (6, 168, 40,440 for n = 3, 4, 5), so callers limit ``n``.
    """
    n = w.shape[-1]
    rows, cols = _upper_edges(n, w.device)
    x = (0.5 * (w + w.transpose(-1, -2)))[..., rows, cols]  # [..., E]
    e_count = x.shape[-1]
    if n == 2:
        return x.new_zeros((*x.shape[:-1], 1))
    prefixes, tree_of = _kruskal_prefixes(n)
    length = max(len(p) for p in prefixes)
    idx = torch.zeros(len(prefixes), length, dtype=torch.long, device=w.device)
    valid = torch.zeros(len(prefixes), length, dtype=torch.bool, device=w.device)
    for p, prefix in enumerate(prefixes):
        idx[p, :len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        valid[p, :len(prefix)] = True
    onehot = torch.nn.functional.one_hot(idx, e_count).bool() & valid.unsqueeze(-1)  # [P, L, E]
    taken_before = (onehot.cumsum(-2) - onehot.long()) > 0
    pool = x[..., None, None, :].expand(*x.shape[:-1], *taken_before.shape).masked_fill(taken_before, -math.inf)
    steps = x[..., idx] - torch.logsumexp(pool, -1)  # [..., P, L]
    log_prefix = steps.masked_fill(~valid, 0.0).sum(-1)  # [..., P]
    # group the prefixes by tree: a rectangle [S, most prefixes of one tree], padded with -inf
    n_trees = len(_trees(n))
    tree_t = torch.tensor(tree_of, dtype=torch.long, device=w.device)
    order = tree_t.argsort(stable=True)
    counts = torch.bincount(tree_t, minlength=n_trees)
    slot = torch.arange(len(prefixes), device=w.device) - (counts.cumsum(0) - counts)[tree_t[order]]
    table = x.new_full((*x.shape[:-1], n_trees, int(counts.max())), -math.inf)
    table[..., tree_t[order], slot] = log_prefix[..., order]
    return torch.logsumexp(table, -1)
