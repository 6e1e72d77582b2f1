"""The matrix-inverse tree marginals (``structures/kirchhoff.py``, the eager path of ``tree_marginals``)
against the log-space elimination (``tree_marginals_reference``) and enumeration: values, the SST
gradient ``J g`` (closed form) against the reference's double backward, derivatives of any order,
the fallback at the measured bound, masked and disconnected graphs, half precision."""

from __future__ import annotations

import math

import pytest
import torch

import discretegrad as dg
from discretegrad.structures import kirchhoff as K
from discretegrad.structures import matrix_tree as M


def _sym(w: torch.Tensor) -> torch.Tensor:
    return (w + w.transpose(-1, -2)) / 2


def _problem(directed: bool, shape, seed: int, scale: float = 2.0) -> torch.Tensor:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    return w if directed else _sym(w)


def _value_and_vjp(fn, w: torch.Tensor, v: torch.Tensor):
    leaf = w.clone().requires_grad_(True)
    mu = fn(leaf)
    (grad,) = torch.autograd.grad((mu * v).sum(), leaf)
    return mu.detach(), grad


def _spy(directed: bool, root: int):
    """A fallback that records the batch elements it is given (and computes the reference)."""
    seen = []

    def fallback(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return M.tree_marginals_reference(x, directed=directed, root=root)

    return seen, fallback


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_inverse_marginals_equal_enumeration_and_the_log_space_reference(directed, n):
    """float64, every root: values to 1e-12 of the reference and of dg.exact (enumeration), and the
    closed-form J g to 1e-11 of the reference's double backward; no element is refused."""
    for root in range(n) if directed else [0]:
        w = _problem(directed, (4, n, n), 10 * n + root)
        v = torch.randn(4, n, n, generator=torch.Generator().manual_seed(root), dtype=torch.float64)
        seen, fallback = _spy(directed, root)
        new = _value_and_vjp(lambda x: K.inverse_marginals(x, directed=directed, root=root, fallback=fallback), w, v)
        ref = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=root), w, v)
        structure = "arborescence" if directed else "spanning_tree"
        exact = dg.exact.marginals(w, structure=structure, **({"root": root} if directed else {}))
        assert not seen
        torch.testing.assert_close(new[0], ref[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(new[0], exact, rtol=0, atol=1e-12)
        torch.testing.assert_close(new[1], ref[1], rtol=0, atol=1e-11)


@pytest.mark.parametrize("directed", [False, True])
def test_inverse_marginals_are_differentiable_twice(directed):
    """The create_graph branch (autograd through the formula): gradcheck of μ and gradgradcheck."""
    w = _problem(directed, (2, 4, 4), 3).requires_grad_(True)
    fn = lambda x: M.tree_marginals(x, directed=directed, root=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w,))
    g = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.autograd.gradgradcheck(fn, (w,), (g,))


@pytest.mark.parametrize("directed", [False, True])
def test_the_bound_keeps_float64_errors_below_1e9_and_refuses_the_rest(directed):
    """Two clusters of 6 joined by bridges at ``-s``: the condition number grows like ``e^s``. Over
    s = 0..60 the marginals equal the log-space reference to 1e-9 (values) and 1e-9 relative (J g)
    wherever the inverse was kept, some elements are kept and some refused (the switch is
    exercised), and the result with the fallback mixed in is the reference too."""
    n = 12
    cluster = torch.arange(n) < n // 2
    cross = (cluster.unsqueeze(0) != cluster.unsqueeze(1)).double()
    s = torch.linspace(0, 60, 31, dtype=torch.float64).view(-1, 1, 1)
    w = _problem(directed, (31, n, n), 5, scale=1.0) - s * cross
    v = torch.randn(31, n, n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    seen, fallback = _spy(directed, 0)
    new = _value_and_vjp(lambda x: K.inverse_marginals(x, directed=directed, root=0, fallback=fallback), w, v)
    ref = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=0), w, v)
    assert seen and 0 < seen[0] < 31
    torch.testing.assert_close(new[0], ref[0], rtol=0, atol=1e-9)
    scale = ref[1].abs().amax((-1, -2), keepdim=True).clamp_min(1.0)
    torch.testing.assert_close(new[1] / scale, ref[1] / scale, rtol=0, atol=1e-9)
    # without the bound the same inputs are wrong: the bound is what keeps them right
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(K.KAPPA_MAX, torch.float64, math.inf)
        unguarded = K.inverse_marginals(w, directed=directed, root=0, fallback=fallback)
    assert not bool(torch.isclose(unguarded, ref[0], rtol=0, atol=1e-6).all())


def test_kappa_max_switches_every_element(monkeypatch):
    """KAPPA_MAX = 0 sends every element to the fallback; a finite bound on easy problems none."""
    w = _problem(False, (5, 7, 7), 8)
    seen, fallback = _spy(False, 0)
    kept = K.inverse_marginals(w, directed=False, root=0, fallback=fallback)
    assert not seen
    monkeypatch.setitem(K.KAPPA_MAX, torch.float64, 0.0)
    refused = K.inverse_marginals(w, directed=False, root=0, fallback=fallback)
    assert seen == [5]
    torch.testing.assert_close(kept, refused, rtol=0, atol=1e-12)


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("scale", [1e-6, 30.0, 1e3, 1e6])
def test_extreme_logits_float64(directed, scale):
    """Spreads from 1e-6 to 1e6: tree_marginals (inverse or fallback per element) equals the log-space
    reference to 1e-9 in values and relative J g; everything finite."""
    w = _problem(directed, (6, 9, 9), 9, scale=scale)
    v = torch.randn(6, 9, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    new = _value_and_vjp(lambda x: M.tree_marginals(x, directed=directed, root=2), w, v)
    ref = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=2), w, v)
    assert all(bool(torch.isfinite(t).all()) for t in new)
    torch.testing.assert_close(new[0], ref[0], rtol=0, atol=1e-9)
    scale_g = ref[1].abs().amax((-1, -2), keepdim=True).clamp_min(1.0)
    torch.testing.assert_close(new[1] / scale_g, ref[1] / scale_g, rtol=0, atol=1e-9)


def test_masked_edges_of_a_connected_graph():
    """``-inf`` edges (the graph stays connected): zero marginal and gradient there, the reference's
    values and gradient elsewhere; no element refused."""
    n = 7
    w = _problem(False, (3, n, n), 3)
    cut = torch.zeros(n, n, dtype=torch.bool)
    cut[0, 3] = cut[3, 0] = cut[2, 5] = cut[5, 2] = cut[1, 6] = cut[6, 1] = True
    w = w.masked_fill(cut, -math.inf)
    v = torch.randn(3, n, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for directed in (False, True):
        seen, fallback = _spy(directed, 0)
        new = _value_and_vjp(lambda x: K.inverse_marginals(x, directed=directed, root=0, fallback=fallback), w, v)
        ref = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=0), w, v)
        assert not seen
        assert (new[0][:, cut] == 0).all() and (new[1][:, cut] == 0).all()
        torch.testing.assert_close(new[0], ref[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(new[1], ref[1], rtol=0, atol=1e-11)


@pytest.mark.parametrize("directed", [False, True])
def test_a_graph_disconnected_by_masks_is_refused_and_gives_what_the_reference_gives(directed):
    """No spanning tree: the Laplacian minor is singular, the element is refused, and the result is the
    elimination's (NaN, as before this path existed); a connected element in the same batch is not."""
    n = 5
    w = _problem(directed, (2, n, n), 4)
    w[0, :2, 2:] = -math.inf
    w[0, 2:, :2] = -math.inf
    seen, _ = _spy(directed, 0)
    fallback = lambda x: (seen.append(x.shape[0]), M.tree_marginals_elimination(x, directed=directed))[1]  # noqa: E731
    got = K.inverse_marginals(w, directed=directed, root=0, fallback=fallback)
    expected = M.tree_marginals_elimination(w, directed=directed)
    assert seen == [1]
    assert torch.equal(torch.isnan(got), torch.isnan(expected)) and bool(torch.isnan(got[0]).any())
    torch.testing.assert_close(got[1], M.tree_marginals_reference(w[1], directed=directed), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("directed", [False, True])
def test_low_precision_is_computed_in_float64_and_returned_in_its_dtype(dtype, directed):
    """The result of a float32/half input is the float64 result of the same (rounded) values, rounded
    to the input's dtype; so is the gradient's direction (float32: to 1e-6)."""
    w = _problem(directed, (4, 8, 8), 7).to(dtype)
    got = M.tree_marginals(w, directed=directed, root=1)
    assert got.dtype == dtype
    assert torch.equal(got, M.tree_marginals(w.double(), directed=directed, root=1).to(dtype))
    leaf = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((M.tree_marginals(leaf, directed=directed, root=1) * 1.0).sum(), leaf)
    assert grad.dtype == dtype and bool(torch.isfinite(grad).all())
    if dtype == torch.float32:
        v = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        new = _value_and_vjp(lambda x: M.tree_marginals(x, directed=directed, root=1), w, v.float())
        ref = _value_and_vjp(lambda x: M.tree_marginals_reference(x, directed=directed, root=1), w.double(), v)
        torch.testing.assert_close(new[1].double(), ref[1], rtol=0, atol=1e-6)


def test_under_no_grad_and_inference_mode():
    w = _problem(True, (3, 6, 6), 2)
    ref = M.tree_marginals_reference(w, directed=True)
    with torch.no_grad():
        torch.testing.assert_close(M.tree_marginals(w, directed=True), ref, rtol=0, atol=1e-12)
    with torch.inference_mode():
        torch.testing.assert_close(M.tree_marginals(w, directed=True), ref, rtol=0, atol=1e-12)
