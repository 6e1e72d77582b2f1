"""Spanning-tree and arborescence SMT/SST ops: solvers and relaxations against brute force."""

from __future__ import annotations

import pytest
import torch

import discretegrad as dg
from discretegrad import structures as S
from problems import _trees as T


def _sym(x):
    return (x + x.transpose(-1, -2)) / 2


def _brute(w, structure, root=0):
    """(marginals, log Z, argmax structure) by enumeration in this test module (independent of dg)."""
    n = w.shape[-1]
    if structure == "spanning_tree":
        atoms = T.undirected_trees(n).to(w.dtype)
        scored = torch.triu(atoms, 1)
    else:
        atoms = scored = T.arborescences(n, root).to(w.dtype)
    score = w.flatten(-2) @ scored.flatten(1).T
    mu = (torch.softmax(score, -1) @ atoms.flatten(1)).reshape(w.shape)
    return mu, torch.logsumexp(score, -1), atoms[score.argmax(-1)], score.amax(-1)


def _cases(n, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, n, n, generator=g, dtype=torch.float64) * scale
    out = [("spanning_tree", _sym(w), 0)]
    out += [("arborescence", w, r) for r in range(n)]
    return out


# ----------------------------------------------------------------------------- relaxations vs brute force

@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_relaxed_marginals_and_gradients_vs_brute_force(n):
    """Matrix-tree marginals and log Z vs enumeration; their Jacobian vs enumeration's and vs
    finite differences (gradcheck)."""
    for structure, w, root in _cases(n, n):
        directed = structure == "arborescence"
        leaf = w.clone().requires_grad_(True)
        mu = S.tree_marginals(leaf, directed=directed, root=root)
        ref_leaf = w.clone().requires_grad_(True)
        ref, log_z, _, _ = _brute(ref_leaf, structure, root)
        torch.testing.assert_close(mu, ref, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(S.tree_log_partition(w, directed=directed, root=root), log_z.detach())
        v = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        if not directed:
            v = _sym(v)
        (g1,) = torch.autograd.grad((mu * v).sum(), leaf)
        (g2,) = torch.autograd.grad((ref * v).sum(), ref_leaf)
        if not directed:  # the derivative with respect to an edge's weight: both entries together
            g1, g2 = g1 + g1.transpose(-1, -2), g2 + g2.transpose(-1, -2)
        torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)
    if n <= 4:
        w = torch.randn(n, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: S.tree_marginals(x, directed=True, root=n - 1), (w,))
        assert torch.autograd.gradcheck(lambda x: S.tree_marginals(_sym(x), directed=False), (w,))


def test_op_relaxed_value_is_marginals_of_replayed_noise():
    theta = _sym(torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    out = dg.trees.spanning_tree(theta, tau=0.7, hard=False, generator=torch.Generator().manual_seed(4))
    g = torch.triu(dg.noise.gumbel(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(4)), 1)
    torch.testing.assert_close(out, _brute((theta + g + g.transpose(-1, -2)) / 0.7, "spanning_tree")[0])
    out = dg.trees.arborescence(theta, root=2, tau=0.7, hard=False, generator=torch.Generator().manual_seed(4))
    u = theta + dg.noise.gumbel(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, _brute(u / 0.7, "arborescence", 2)[0])


@pytest.mark.parametrize("structure", ["spanning_tree", "arborescence"])
def test_hard_gradient_is_relaxed_gradient(structure):
    """Forward = the exact maximiser of U = θ + G (brute force); gradient = that of X_t (same noise)."""
    n = 5
    theta = torch.randn(4, n, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    if structure == "spanning_tree":
        theta = _sym(theta)
    op = getattr(dg.trees, structure)
    v = torch.randn(4, n, n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grads, outs = [], []
    for hard in (True, False):
        leaf = theta.clone().requires_grad_(True)
        out = op(leaf, tau=0.5, hard=hard, generator=torch.Generator().manual_seed(7))
        grads.append(torch.autograd.grad((out * v).sum(), leaf)[0])
        outs.append(out.detach())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    g = dg.noise.gumbel(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(7))
    if structure == "spanning_tree":
        g = torch.triu(g, 1) + torch.triu(g, 1).transpose(-1, -2)
    assert torch.equal(outs[0], _brute(theta + g, structure)[2])


# ----------------------------------------------------------------------------- solvers

@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_solvers_reach_the_brute_force_optimum(n):
    for seed in range(3):
        for structure, w, root in _cases(n, 100 * n + seed, scale=1.0):
            _, _, best, best_score = _brute(w, structure, root)
            hard = S.kruskal(w) if structure == "spanning_tree" else S.edmonds(w, root)
            scored = torch.triu(hard, 1) if structure == "spanning_tree" else hard
            torch.testing.assert_close((scored * w).sum((-1, -2)), best_score)
            assert torch.equal(hard, best)  # continuous weights: the optimum is unique


def test_edmonds_matches_brute_force_at_n7_with_cycles():
    """Weights that make the greedy in-edges cyclic, so contraction (and nested contraction) is exercised."""
    g = torch.Generator().manual_seed(11)
    w = torch.randn(6, 7, 7, generator=g, dtype=torch.float64)
    w[:, 1, 2] += 4
    w[:, 2, 3] += 4
    w[:, 3, 1] += 4
    w[:, 4, 5] += 3
    w[:, 5, 4] += 3
    for root in (0, 3):
        _, _, best, best_score = _brute(w, "arborescence", root)
        hard = S.edmonds(w, root)
        torch.testing.assert_close((hard * w).sum((-1, -2)), best_score)


@pytest.mark.parametrize("n", [2, 3, 8, 20, 50])
def test_hard_samples_are_valid_structures(n):
    theta = torch.randn(6, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float32)
    tree = dg.trees.spanning_tree(_sym(theta), generator=torch.Generator().manual_seed(1))
    assert bool(dg.trees.is_spanning_tree(tree).all()) and bool(T.reach_all(tree, 0).all())
    for root in {0, n - 1}:
        arb = dg.trees.arborescence(theta, root=root, generator=torch.Generator().manual_seed(1))
        assert bool(dg.trees.is_arborescence(arb, root).all())
        indeg = arb.sum(-2)
        assert bool((indeg[..., root] == 0).all()) and int(indeg.sum()) == 6 * (n - 1)


def test_validity_checks_reject_non_structures():
    cyc = torch.zeros(4, 4)
    cyc[0, 1] = cyc[1, 2] = cyc[2, 0] = 1.0  # 3 edges but a cycle and an isolated vertex
    assert not bool(dg.trees.is_spanning_tree(cyc + cyc.T))
    arb = torch.zeros(3, 3)
    arb[1, 2] = arb[2, 1] = 1.0  # one parent each, but a cycle unreachable from the root
    assert not bool(dg.trees.is_arborescence(arb, 0))


# ----------------------------------------------------------------------------- limits, batching, dtypes, extremes

@pytest.mark.parametrize("structure", ["spanning_tree", "arborescence"])
def test_tau_to_zero_approaches_the_hard_sample(structure):
    n = 10
    theta = torch.randn(50, n, n, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    if structure == "spanning_tree":
        theta = _sym(theta)
    op = getattr(dg.trees, structure)
    hard = op(theta, generator=torch.Generator().manual_seed(9))
    gaps = []
    for tau in (1.0, 0.1, 0.01, 0.001):
        soft = op(theta, tau=tau, hard=False, generator=torch.Generator().manual_seed(9))
        assert torch.isfinite(soft).all() and float(soft.min()) > -1e-9 and float(soft.max()) < 1 + 1e-9
        gaps.append(float((soft - hard).abs().sum((-1, -2)).mean()))
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] < 0.05, gaps


@pytest.mark.parametrize("structure", ["spanning_tree", "arborescence"])
def test_batching_and_dtypes(structure):
    theta = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    if structure == "spanning_tree":
        theta = _sym(theta)
    op = getattr(dg.trees, structure)
    for dtype, atol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        out = op(theta.to(dtype), tau=0.5, hard=False, generator=torch.Generator().manual_seed(2))
        assert out.shape == theta.shape and out.dtype == dtype
        g = dg.noise.gumbel(theta.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
        if structure == "spanning_tree":
            g = torch.triu(g, 1) + torch.triu(g, 1).transpose(-1, -2)
        u = (theta.to(dtype) + g).double() / 0.5
        for i in range(2):
            for j in range(3):
                torch.testing.assert_close(out[i, j].double(), _brute(u[i, j], structure)[0], rtol=0, atol=atol)
        hard = op(theta.to(dtype), generator=torch.Generator().manual_seed(2))
        assert hard.dtype == dtype and hard.shape == theta.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("structure", ["spanning_tree", "arborescence"])
def test_ties_and_extreme_logits(structure, dtype):
    big = 1e4
    mats = [torch.full((5, 5), big), torch.zeros(5, 5), torch.full((5, 5), -big)]
    mixed = torch.where(torch.rand(5, 5, generator=torch.Generator().manual_seed(0)) > 0.5, big, -big)
    mats.append(mixed)
    theta = torch.stack(mats).to(dtype)
    if structure == "spanning_tree":
        theta = torch.where(torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), theta, theta.transpose(-1, -2))
    op = getattr(dg.trees, structure)
    check = dg.trees.is_spanning_tree if structure == "spanning_tree" else dg.trees.is_arborescence
    for tau in (1e-3, 1.0, 1e3):
        for hard in (True, False):
            leaf = theta.clone().requires_grad_(True)
            out = op(leaf, tau=tau, hard=hard, generator=torch.Generator().manual_seed(1))
            assert torch.isfinite(out).all()
            if hard:
                assert bool(check(out).all())
            v = torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape)
            (grad,) = torch.autograd.grad((out * v).sum(), leaf)
            assert torch.isfinite(grad).all()


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("structure", ["spanning_tree", "arborescence"])
def test_bad_input(structure):
    op = getattr(dg.trees, structure)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with pytest.raises(ValueError, match="square"):
        op(torch.zeros(3, 4), generator=gen())
    with pytest.raises(ValueError, match="n >= 2"):
        op(torch.zeros(1, 1), generator=gen())
    with pytest.raises(ValueError, match="edge_logits"):
        op(torch.zeros(4), generator=gen())
    with pytest.raises(TypeError, match="edge_logits"):
        op(torch.zeros(3, 3, dtype=torch.int64), generator=gen())
    for tau in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            op(torch.zeros(3, 3), tau=tau, generator=gen())
    with pytest.raises(TypeError, match="hard"):
        op(torch.zeros(3, 3), hard="yes", generator=gen())
    nan = torch.zeros(3, 3)
    nan[0, 1] = nan[1, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        op(nan, generator=gen())
    with dg.validate_args(False):
        op(nan, generator=gen())  # value checks are switchable


def test_symmetry_is_checked_with_a_tolerance():
    w = _sym(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    w_close = w.clone()
    w_close[0, 1] += 1e-7  # within the tolerance (float32 rounding of a symmetrisation)
    dg.trees.spanning_tree(w_close, generator=torch.Generator().manual_seed(1))
    w_far = w.clone()
    w_far[0, 1] += 1e-2
    with pytest.raises(ValueError, match="symmetric"):
        dg.trees.spanning_tree(w_far, generator=torch.Generator().manual_seed(1))
    with dg.validate_args(False):
        dg.trees.spanning_tree(w_far, generator=torch.Generator().manual_seed(1))
    dg.trees.arborescence(w_far, generator=torch.Generator().manual_seed(1))  # directed edges need no symmetry


def test_root_out_of_range():
    for root in (-1, 3, 1.0, True, None):
        with pytest.raises(ValueError, match=r"Expected root to be an int in \[0, 2\]"):
            dg.trees.arborescence(torch.zeros(3, 3), root=root)


def test_works_under_no_grad_and_inference_mode():
    """Evaluation code samples under no_grad/inference_mode: the marginals (a gradient of log Z)
    must still be computed there, and carry no graph."""
    theta = _sym(torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    ref = dg.trees.spanning_tree(theta, hard=False, generator=torch.Generator().manual_seed(1))
    leaf = theta.clone().requires_grad_(True)
    with torch.no_grad():
        out = dg.trees.spanning_tree(leaf, hard=False, generator=torch.Generator().manual_seed(1))
    assert not out.requires_grad
    torch.testing.assert_close(out, ref.detach())
    with torch.inference_mode():
        out = dg.trees.spanning_tree(theta, hard=False, generator=torch.Generator().manual_seed(1))
        hard = dg.trees.arborescence(theta, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, ref.detach())
    assert bool(dg.trees.is_arborescence(hard).all())


@pytest.mark.parametrize("structure", ["spanning_tree", "arborescence"])
def test_hard_sample_without_autograd_is_the_same_sample(structure):
    theta = _sym(torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(0)))
    op = getattr(dg.trees, structure)
    with_grad = op(theta.clone().requires_grad_(True), generator=torch.Generator().manual_seed(1))
    without = op(theta, generator=torch.Generator().manual_seed(1))
    assert torch.equal(with_grad.detach(), without) and not without.requires_grad


@pytest.mark.parametrize("n", [2, 3, 7, 20])
def test_prim_is_kruskal_for_distinct_weights_and_maximal_with_ties(n):
    """The op's solver (Prim) against the reference (Kruskal): the same tree for continuous weights; with
    ties (integer weights) a spanning tree of the same, maximal, weight."""
    g = torch.Generator().manual_seed(n)
    w = _sym(torch.randn(64, n, n, generator=g, dtype=torch.float64))
    assert torch.equal(S.prim(w), S.kruskal(w))
    ties = _sym(torch.randint(-2, 3, (64, n, n), generator=g).double())
    tree = S.prim(ties)
    assert bool(dg.trees.is_spanning_tree(tree).all())
    torch.testing.assert_close((torch.triu(tree, 1) * ties).sum((-1, -2)),
                               (torch.triu(S.kruskal(ties), 1) * ties).sum((-1, -2)))
    masked = w.clone()
    masked[:, 0, 1:] = masked[:, 1:, 0] = -torch.inf  # vertex 0 reachable only by masked edges
    if n > 1:
        assert bool(dg.trees.is_spanning_tree(S.prim(masked)).all())
        assert torch.equal(S.prim(masked[..., 1:, 1:]), S.kruskal(w[..., 1:, 1:]))


def test_linear_elimination_equals_the_log_space_reference():
    """The linear-space matrix-tree elimination (used where the centred spread allows) against the
    log-space one, in float64 and float32 (values, marginals, SST gradient), and the switch itself."""
    from discretegrad.structures import matrix_tree as M

    g = torch.Generator().manual_seed(4)
    for scale in (0.1, 3.0, 20.0):
        for directed in (False, True):
            w = torch.randn(8, 12, 12, generator=g, dtype=torch.float64) * scale
            if not directed:
                w = _sym(w)
            v = torch.randn(8, 12, 12, generator=g, dtype=torch.float64)
            out = []
            for fn in (M.tree_marginals_elimination, M.tree_marginals_reference):
                leaf = w.clone().requires_grad_(True)
                mu = fn(leaf, directed=directed, root=3)
                (grad,) = torch.autograd.grad((mu * v).sum(), leaf)
                out.append((fn.__name__, mu.detach(), grad))
            torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=1e-11)
            torch.testing.assert_close(out[0][2], out[1][2], rtol=0, atol=1e-9)
            lz = M.tree_log_partition(w.float(), directed=directed, root=3)
            torch.testing.assert_close(lz.double(), M.tree_log_partition_reference(w, directed=directed, root=3),
                                       rtol=1e-6, atol=1e-5)
    logw, _, valid = M._centred(torch.randn(2, 5, 5, generator=g) * 5, False, 0)
    assert M._linear_dtype(logw, valid) == torch.float32
    assert M._linear_dtype(logw * 10, valid) == torch.float64
    assert M._linear_dtype(logw * 100, valid) is None


@pytest.mark.parametrize("hard", [True, False])
def test_sst_gradient_learns_a_target_spanning_tree(hard):
    """End to end through the op: Adam on the edge logits of a 10-vertex tree distribution, with
    the squared distance of the (straight-through or relaxed) SST sample to a fixed target tree
    as the loss, must concentrate the hard samples on the target. Seeded, so deterministic; a
    sign or indexing error in the gradient leaves the overlap near chance (9 * 9/45 ≈ 1.8 of 9
    edges), the working gradient gives about 8.8 of 9 after 300 steps (measured: 8.77 hard,
    8.97 relaxed). Rules out the op as the cause of the NRI spanning-tree result
    (results/nri-graph-layout/README.md)."""
    g = torch.Generator().manual_seed(0)
    n = 10
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    target = dg.trees.spanning_tree((w + w.T) / 2, generator=g)
    theta = torch.zeros(n, n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    for _ in range(300):
        z = dg.trees.spanning_tree(theta, tau=1.0, hard=hard, generator=g)
        loss = (z - target).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            theta.copy_((theta + theta.T) / 2)
    with torch.no_grad():
        samples = torch.stack([dg.trees.spanning_tree(theta, generator=g) for _ in range(200)])
    overlap = float((samples * target).sum((-1, -2)).mean() / 2)
    assert overlap > 8.0, overlap
