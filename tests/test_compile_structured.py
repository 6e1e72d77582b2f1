"""The compiled paths of the structured relaxations, pinned to the eager references.

Under ``torch.compile`` the marginals cannot be ``∂ log Z`` by ``torch.autograd.grad`` (dynamo does not
trace it): top-k takes autograd through its scans (``scan_marginals_autograd``) instead of the
closed-form ``autograd.Function``, the matrix-tree marginals are the written-out reverse pass of the
log-space elimination (``tree_marginals_unrolled``), and Chu-Liu/Edmonds runs a fixed ``n - 1``
rounds instead of exiting when no cycle is left. Each is checked here against the eager reference
(values and the SST gradient, ``J(μ)ᵀ v``), in float64 to ``1e-10``-ish and float32 to float
tolerance, with extreme spreads and masked (``-inf``) entries, and end to end under
``torch.compile(fullgraph=True)`` at sizes larger than the registry-wide test in ``test_compile.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

import discretegrad as dg
from discretegrad import structures as S
from discretegrad.structures import matrix_tree as M

pytestmark = [pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")]


def _sym(w: torch.Tensor) -> torch.Tensor:
    return w + w.transpose(-1, -2)


def _value_and_vjp(fn, w: torch.Tensor, v: torch.Tensor):
    leaf = w.clone().requires_grad_(True)
    mu = fn(leaf)
    (grad,) = torch.autograd.grad((mu * v).sum(), leaf)
    return mu.detach(), grad


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("n", [2, 3, 9])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0, 1e3])
def test_unrolled_tree_marginals_equal_the_autograd_reference_float64(directed, n, scale):
    g = torch.Generator().manual_seed(n)
    w = torch.randn(4, n, n, generator=g, dtype=torch.float64) * scale
    w = w if directed else _sym(w)
    v = torch.randn(4, n, n, generator=g, dtype=torch.float64)
    root = n - 1 if directed else 0
    ref = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=root), w, v)
    new = _value_and_vjp(lambda x: M.tree_marginals_unrolled(x, directed=directed, root=root), w, v)
    torch.testing.assert_close(new[0], ref[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(new[1], ref[1], rtol=0, atol=1e-10 * max(1.0, float(ref[1].abs().max())))


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_unrolled_tree_marginals_float32_extreme_spreads(directed, scale):
    """float32 against the float64 reference: the same error as the float32 reference itself (both run
    the same ops in the same order), finite values and gradients at spreads up to 1e4."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(6, 8, 8, generator=g, dtype=torch.float64) * scale
    w = w if directed else _sym(w)
    v = torch.randn(6, 8, 8, generator=g, dtype=torch.float64)
    exact = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=2), w, v)
    ref32 = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=2), w.float(), v.float())
    new32 = _value_and_vjp(lambda x: M.tree_marginals_unrolled(x, directed=directed, root=2), w.float(), v.float())
    assert all(torch.isfinite(t).all() for t in new32)
    for i in (0, 1):
        err_ref = float((ref32[i].double() - exact[i]).abs().max())
        err_new = float((new32[i].double() - exact[i]).abs().max())
        assert err_new <= 2 * err_ref + 1e-6 * max(1.0, float(exact[i].abs().max()))


def test_unrolled_tree_marginals_with_masked_edges():
    """Edges at ``-inf`` (a graph that is not complete but still connected): zero marginal, zero gradient
    there, and the reference's values and gradient elsewhere."""
    g = torch.Generator().manual_seed(3)
    n = 7
    w = _sym(torch.randn(3, n, n, generator=g, dtype=torch.float64))
    cut = torch.zeros(n, n, dtype=torch.bool)
    cut[0, 3] = cut[3, 0] = cut[2, 5] = cut[5, 2] = cut[1, 6] = cut[6, 1] = True
    w = w.masked_fill(cut, -math.inf)
    v = torch.randn(3, n, n, generator=g, dtype=torch.float64)
    for directed in (False, True):
        ref = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=0), w, v)
        new = _value_and_vjp(lambda x: M.tree_marginals_unrolled(x, directed=directed, root=0), w, v)
        assert torch.isfinite(new[0]).all() and torch.isfinite(new[1]).all()
        assert (new[0][:, cut] == 0).all() and (new[1][:, cut] == 0).all()
        torch.testing.assert_close(new[0], ref[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(new[1], ref[1], rtol=0, atol=1e-10)


def _compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


@pytest.mark.slow
def test_compiled_edmonds_equals_eager_with_nested_cycles():
    """The fixed-round Edmonds (what compile runs) finds the eager tree, contractions nested."""
    g = torch.Generator().manual_seed(11)
    w = torch.randn(40, 7, 7, generator=g, dtype=torch.float64)
    w[:20, 1, 2] += 4
    w[:20, 2, 3] += 4
    w[:20, 3, 1] += 4
    w[10:30, 4, 5] += 3
    w[10:30, 5, 4] += 3
    for root in (0, 3):
        assert torch.equal(_compiled(lambda x: S.edmonds(x, root))(w), S.edmonds(w, root))


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_compiled_topk_marginals_equal_eager_with_masked_items(scale):
    """Autograd through the scans (compiled) against the closed-form backward (eager), ``-inf`` items
    included (zero marginal and gradient)."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 30, generator=g) * scale
    w[:, [3, 17]] = -math.inf
    v = torch.randn(6, 30, generator=g)
    eager = _value_and_vjp(lambda x: S.topk_marginals(x, 6), w, v)
    traced = _value_and_vjp(_compiled(lambda x: S.topk_marginals(x, 6)), w, v)
    assert (traced[0][:, [3, 17]] == 0).all() and (traced[1][:, [3, 17]] == 0).all()
    torch.testing.assert_close(traced[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(traced[1], eager[1], rtol=1e-4, atol=1e-5 * max(1.0, float(eager[1].abs().max())))


@pytest.mark.slow
@pytest.mark.parametrize("name,distribution,shape,hp", [
    ("entropy", "topk", (8, 40), {"k": 7, "tau": 0.5}),
    ("entropy_relaxed", "topk", (8, 40), {"k": 7, "tau": 0.5}),
    ("simple", "topk", (8, 40), {"k": 7}),
    ("entropy", "spanning_tree", (3, 8, 8), {"tau": 0.3}),
    ("entropy_relaxed", "spanning_tree", (3, 8, 8), {"tau": 0.3}),
    ("entropy", "arborescence", (3, 8, 8), {"tau": 0.3, "root": 2}),
    ("entropy_relaxed", "arborescence", (3, 8, 8), {"tau": 0.3, "root": 2}),
])
def test_compiled_structured_op_matches_eager(name, distribution, shape, hp):
    """The registered op compiled with ``fullgraph=True``: the same sample and gradient as eager for
    the same default-generator state (eager: linear-space elimination / closed-form scans; compiled:
    log-space unrolled / autograd scans, so float tolerance, not bit equality)."""
    op = dg.registry.get(name, distribution=distribution).fn
    g = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, generator=g) * 2
    if distribution == "spanning_tree":
        x = _sym(x)
    v = torch.randn(*shape, generator=g)
    compiled = _compiled(lambda t: op(t, **hp))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        eager = _value_and_vjp(lambda t: op(t, **hp), x, v)
        torch.manual_seed(0)
        traced = _value_and_vjp(compiled, x, v)
    torch.testing.assert_close(traced[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(traced[1], eager[1], rtol=1e-4, atol=1e-5 * max(1.0, float(eager[1].abs().max())))
