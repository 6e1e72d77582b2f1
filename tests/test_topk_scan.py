"""The fast top-k marginals (count-centred scans, ``structures/topk_scan.py``) against the log-space
chain DP they replace (``topk_marginals_reference``, kept as the reference) and enumeration.

Deterministic comparisons: the tolerances are float rounding (float64: 1e-10; float32: the
reference's own float32 error is of the same size, so both are compared to the float64 reference).
"""

from __future__ import annotations

import math

import pytest
import torch

import discretegrad as dg
from discretegrad import structures as S
from discretegrad.structures import topk_scan
from discretegrad.structures.topk import topk_marginals_reference


def _inputs(pattern: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    if pattern == "normal":
        return base
    if pattern == "spread":  # differences of 1e4: most marginals saturate at 0 or 1
        return 1e4 * base
    if pattern == "offset":
        return 1e6 + base
    if pattern == "ties":  # five tied levels
        return torch.randint(-2, 3, shape, generator=gen).double()
    if pattern == "one_huge":
        out = base.clone()
        out[..., 0] += 1e3
        return out
    return torch.zeros(shape, dtype=torch.float64)  # all equal


PATTERNS = ["normal", "spread", "offset", "ties", "one_huge", "equal"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("n,k", [(1, 1), (5, 1), (7, 3), (12, 11), (9, 9), (40, 10)])
def test_scan_marginals_equal_the_log_space_dp_in_float64(n, k, pattern):
    w = _inputs(pattern, (6, n), torch.Generator().manual_seed(n * 31 + k))
    got = topk_scan.scan_marginals(w, k)
    torch.testing.assert_close(got, topk_marginals_reference(w, k), rtol=0, atol=1e-10)
    torch.testing.assert_close(got.sum(-1), torch.full((6,), float(k), dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_scan_jacobian_and_second_derivative_equal_the_log_space_dp(pattern):
    """The SST backward (vector-Jacobian product of the marginals) and one more derivative, float64."""
    gen = torch.Generator().manual_seed(7)
    w = _inputs(pattern, (5, 11), gen).requires_grad_(True)
    v = torch.randn(5, 11, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (topk_scan.scan_marginals, topk_marginals_reference):
        (g,) = torch.autograd.grad((fn(w, 4) * v).sum(), w, create_graph=True)
        (gg,) = torch.autograd.grad((g * v).sum(), w)
        grads.append((g.detach(), gg))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-8, atol=1e-9)


def test_scan_jacobian_is_the_covariance_by_enumeration():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    atoms = S.all_ksubsets(7, 3, dtype=torch.float64, device=w.device)
    for b in range(3):
        p = torch.softmax(atoms @ w[b], 0)
        mean = p @ atoms
        cov = torch.einsum("s,si,sj->ij", p, atoms, atoms) - torch.outer(mean, mean)
        jac = torch.autograd.functional.jacobian(lambda a: topk_scan.scan_marginals(a, 3), w[b])
        torch.testing.assert_close(topk_scan.scan_marginals(w[b], 3), mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(jac, cov, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: topk_scan.scan_marginals(a, 3), (w.requires_grad_(True),))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_float32_scan_is_as_accurate_as_the_float32_reference(pattern):
    """At the benchmark's size (n = 100, k = 10) the float32 fast path's error against the float64
    reference is at most 2x the float32 log-space DP's own error plus 1e-6 (values and SST gradient)."""
    gen = torch.Generator().manual_seed(11)
    w64 = _inputs(pattern, (8, 100), gen).float().double()  # rounded to float32 first
    v = torch.randn(8, 100, generator=gen, dtype=torch.float64)
    exact = topk_marginals_reference(w64.requires_grad_(True), 10)
    (exact_grad,) = torch.autograd.grad((exact * v).sum(), w64)
    errors = []
    for fn in (topk_scan.scan_marginals, topk_marginals_reference):
        w32 = w64.detach().float().requires_grad_(True)
        mu = fn(w32, 10)
        (grad,) = torch.autograd.grad((mu * v.float()).sum(), w32)
        assert mu.dtype == torch.float32 and torch.isfinite(mu).all() and torch.isfinite(grad).all()
        errors.append(((mu.double() - exact).abs().max(), (grad.double() - exact_grad).abs().max()))
    (fast_mu, fast_grad), (ref_mu, ref_grad) = errors
    assert fast_mu <= 2 * ref_mu + 1e-6, (fast_mu, ref_mu)
    assert fast_grad <= 2 * ref_grad + 1e-6 * float(v.abs().max()), (fast_grad, ref_grad)


def test_scan_dtype_widens_to_float64_and_then_falls_back():
    assert topk_scan.scan_dtype(100, 10, torch.float32) == torch.float32
    assert math.lgamma(1226) - math.lgamma(50) - math.lgamma(1177) > topk_scan.LOG_RANGE[torch.float32]
    assert topk_scan.scan_dtype(1225, 49, torch.float32) == torch.float64  # the |V|-1 baseline at n = 50
    assert topk_scan.scan_dtype(4000, 2000, torch.float32) is None
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(2, 300, generator=gen)
    mu = S.topk_marginals(w, 60)  # log C(300, 60) = 165: the float64 scan, returned in float32
    assert mu.dtype == torch.float32
    torch.testing.assert_close(mu.double(), topk_marginals_reference(w.double(), 60), rtol=0, atol=1e-6)


def test_topk_marginals_keeps_the_reference_where_the_scan_does_not_fit(monkeypatch):
    calls = []
    monkeypatch.setattr(topk_scan, "LOG_RANGE", {torch.float32: -1.0, torch.float64: -1.0})
    monkeypatch.setattr("discretegrad.structures.topk.topk_marginals_reference",
                        lambda w, k: calls.append(k) or topk_marginals_reference(w, k))
    S.topk_marginals(torch.randn(2, 6, generator=torch.Generator().manual_seed(0)), 2)
    assert calls == [2]


def test_scan_under_vmap_grad_and_inference_mode():
    gen = torch.Generator().manual_seed(9)
    w = torch.randn(4, 3, 8, generator=gen)
    ref = topk_scan.scan_marginals(w, 3)
    torch.testing.assert_close(torch.func.vmap(lambda x: topk_scan.scan_marginals(x, 3))(w), ref)
    with torch.inference_mode():
        torch.testing.assert_close(topk_scan.scan_marginals(w, 3), ref)
    v = torch.randn(3, 8, generator=gen)
    g = torch.func.grad(lambda x: (topk_scan.scan_marginals(x, 3) * v).sum())(w[0])
    leaf = w[0].clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((topk_marginals_reference(leaf, 3) * v).sum(), leaf)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-6)


def test_masked_items_get_zero_marginal_and_zero_gradient():
    w = torch.tensor([[0.3, -math.inf, 1.0, -0.5, -math.inf, 2.0]], dtype=torch.float64, requires_grad=True)
    mu = topk_scan.scan_marginals(w, 3)
    finite = w.detach()[:, [0, 2, 3, 5]]
    torch.testing.assert_close(mu[:, [0, 2, 3, 5]], topk_marginals_reference(finite, 3), rtol=0, atol=1e-12)
    assert (mu[:, [1, 4]] == 0).all()
    (g,) = torch.autograd.grad((mu * torch.arange(6.0, dtype=torch.float64)).sum(), w)
    assert torch.isfinite(g).all() and (g[:, [1, 4]] == 0).all()


def test_hard_op_gradient_unchanged_at_the_benchmark_size():
    """The registered hard op (Kruskal-free: top-k + SST gradient) gives the reference's gradient."""
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(50, 100, generator=gen, dtype=torch.float64).requires_grad_(True)
    v = torch.randn(50, 100, generator=gen, dtype=torch.float64)
    out = dg.subsets.topk(x, 10, tau=0.5, generator=torch.Generator().manual_seed(1))
    (g,) = torch.autograd.grad((out * v).sum(), x)
    u = x.detach() + dg.noise.gumbel_like(x.detach(), generator=torch.Generator().manual_seed(1))
    w = (u / 0.5).requires_grad_(True)
    (expected,) = torch.autograd.grad((topk_marginals_reference(w, 10) * v).sum(), w)
    torch.testing.assert_close(g, expected / 0.5, rtol=0, atol=1e-10)
    assert torch.equal(out.detach(), S.topk_hard(u, 10))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("n,k", [(1, 1), (6, 1), (9, 4), (12, 12), (60, 10)])
def test_closed_form_backward_equals_autograd_through_the_scans(n, k, pattern):
    """The SST backward of the fast path (the closed-form covariance-vector product, used without
    create_graph) against autograd through the scans and through the log-space DP, float64."""
    gen = torch.Generator().manual_seed(n + 100 * k)
    w = _inputs(pattern, (4, n), gen).requires_grad_(True)
    v = torch.randn(4, n, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (topk_scan.scan_marginals, topk_scan.scan_marginals_autograd, topk_marginals_reference):
        (g,) = torch.autograd.grad((fn(w, k) * v).sum(), w)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-10)
    torch.testing.assert_close(grads[0], grads[2], rtol=0, atol=1e-10)


def test_closed_form_backward_float32_and_half_are_finite_at_extreme_scale():
    gen = torch.Generator().manual_seed(21)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for scale in ((1e2, 5e3) if dtype == torch.float16 else (1e4, 1e7)):  # float16 ends at 65504
            w = (scale * torch.randn(3, 30, generator=gen)).to(dtype).requires_grad_(True)
            mu = S.topk_marginals(w, 5)
            (g,) = torch.autograd.grad((mu * torch.randn(3, 30, generator=gen).to(dtype)).sum(), w)
            assert mu.dtype == dtype and g.dtype == dtype
            assert torch.isfinite(mu).all() and torch.isfinite(g).all()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_given_top_indices_give_the_same_marginals_and_gradient(pattern):
    """``topk_marginals(w, k, index)`` with the hard sample's indices (the top k of ``u``, ``w = u / tau``)
    against the scan's own ``topk`` and the log-space DP, float64, closed-form and autograd paths."""
    gen = torch.Generator().manual_seed(17)
    u = _inputs(pattern, (5, 30), gen)
    v = torch.randn(5, 30, generator=gen, dtype=torch.float64)
    index = u.topk(6, -1).indices
    w = (u / 0.3).requires_grad_(True)
    results = []
    for fn in (lambda a: S.topk_marginals(a, 6, index), lambda a: S.topk_marginals(a, 6),
               lambda a: topk_scan.scan_marginals_autograd(a, 6, index), lambda a: topk_marginals_reference(a, 6)):
        mu = fn(w)
        results.append((mu.detach(), *torch.autograd.grad((mu * v).sum(), w)))
    for got in results[:3]:
        torch.testing.assert_close(got[0], results[3][0], rtol=0, atol=1e-10)
        torch.testing.assert_close(got[1], results[3][1], rtol=0, atol=1e-10)
