"""Poisson-specific checks: truncation bounds, the exact oracle, ST and pWGF-MMD formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import discretegrad as dg
from discretegrad.poisson import TAIL, _pmf_derivative, upper_bound

RATES = [1e-6, 1e-2, 0.5, 1.0, 3.0, 10.0, 77.7, 1e3, 1e4]


@pytest.mark.parametrize("rate", RATES)
def test_support_bound_leaves_less_than_tail(rate):
    k = upper_bound(rate)
    assert stats.poisson.sf(k, rate) < TAIL  # P(X > K)
    assert k <= rate + 8 * np.sqrt(rate) + 12  # and it is not absurdly loose


def test_support_table_sums_to_one_and_uses_max_rate():
    rate = torch.tensor([[0.2, 3.0], [1.0, 0.7]], dtype=torch.float64)
    atoms, table = dg.poisson.family.support(rate)
    assert atoms[-1] == upper_bound(3.0) and atoms[0] == 0
    mass = table.exp().sum(-1)
    assert ((1 - mass).abs() < TAIL).all()


@pytest.mark.parametrize("rate", RATES)
def test_pwgf_window_holds_all_but_tail(rate):
    atoms, dpmf = _pmf_derivative(torch.tensor([rate], dtype=torch.float64))
    lo, hi = atoms[0, 0].item(), atoms[0, -1].item()
    outside = stats.poisson.cdf(lo - 1, rate) + stats.poisson.sf(hi, rate)
    assert outside < TAIL
    # d/dλ p(s) = p(s)(s/λ - 1)
    s = atoms[0].numpy()
    ref = stats.poisson.pmf(s, rate) * (s / rate - 1)
    np.testing.assert_allclose(dpmf[0].numpy(), ref, rtol=1e-7, atol=1e-9 * stats.poisson.pmf(s, rate).max())


def test_exact_expectation_and_gradient_closed_forms():
    rate = torch.tensor([[0.4, 2.5], [1.3, 0.9]], dtype=torch.float64)

    def f(z):  # E = λ0² + λ1 + λ1²... per batch element: E[z0(z0-1)] + E[z1²] = λ0² + λ1 + λ1²
        return z[..., 0] * (z[..., 0] - 1) + z[..., 1] ** 2

    closed = rate[:, 0] ** 2 + rate[:, 1] + rate[:, 1] ** 2
    torch.testing.assert_close(dg.exact.expectation(f, rate, distribution="poisson"), closed, rtol=1e-9, atol=1e-9)
    grad = dg.exact.gradient(f, rate, distribution="poisson")
    torch.testing.assert_close(grad, torch.stack([2 * rate[:, 0], 1 + 2 * rate[:, 1]], -1), rtol=1e-9, atol=1e-9)


def test_st_gradient_is_upstream_gradient():
    """ST: z + λ - sg(λ), so d(v·z)/dλ = v (Sec. 2.1 for Poisson)."""
    rate = torch.tensor([0.1, 2.0, 40.0, 1e3], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([1.0, -2.0, 0.3, 5.0], dtype=torch.float64)
    z = dg.poisson.st(rate, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((z * v).sum(), rate)
    assert torch.equal(grad, v)
    assert torch.equal(z, torch.poisson(rate.detach(), generator=torch.Generator().manual_seed(0)))


def _mmd2(rate, particles, k, top=400):
    """Squared MMD between Poisson(rate) (scipy pmf, 0..top) and the particles, written out."""
    s = torch.arange(top + 1, dtype=torch.float64)
    p = torch.tensor(stats.poisson.pmf(s.numpy(), rate), dtype=torch.float64)
    model = (p[:, None] * p[None] * k(s[:, None], s[None])).sum()
    cross = (p[:, None] * k(s[:, None], particles[None])).sum(0).mean()
    return model - 2 * cross


@pytest.mark.parametrize("kernel,bandwidth,step", [("rbf", 0.5, 0.1), ("rbf", 2.0, 1.0), ("linear", 1.0, 0.3)])
def test_pwgf_mmd_matches_finite_differences_of_mmd(kernel, bandwidth, step):
    rate = torch.tensor([0.3, 2.0, 7.0, 50.0], dtype=torch.float64)
    v = torch.tensor([0.8, -1.5, 0.4, 2.0], dtype=torch.float64)
    leaf = rate.clone().requires_grad_(True)
    z = dg.poisson.pwgf_mmd(leaf, bandwidth=bandwidth, step=step, kernel=kernel,
                            generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((z * v).sum(), leaf)
    if kernel == "linear":
        def k(s, y):
            return s * y
    else:
        def k(s, y):
            return bandwidth**2 * torch.exp(-((s - y) ** 2) / (2 * bandwidth**2))
    h, fd = 1e-5, []
    for i in range(4):
        zi = z[i].detach().reshape(1)

        def obj(lam, i=i, zi=zi):
            return (_mmd2(lam, zi - step * v[i], k) - _mmd2(lam, zi, k)) / (2 * step)
        fd.append((obj(rate[i].item() + h) - obj(rate[i].item() - h)) / (2 * h))
    torch.testing.assert_close(grad, torch.stack(fd), rtol=1e-5, atol=1e-8)
    if kernel == "linear":  # expectation-difference projection = ST (up to the truncated mass)
        torch.testing.assert_close(grad, v, rtol=1e-8, atol=1e-9)


def test_pwgf_mmd_n_samples_is_the_papers_multi_sample_estimator():
    n, eps, h = 5, 0.3, 1.2
    rate = torch.tensor([1.5, 6.0], dtype=torch.float64)
    seen = []

    def f(z):
        seen.append(z.detach())
        return torch.cos(0.7 * z).sum(-1)

    leaf = rate.clone().requires_grad_(True)
    value = dg.surrogate(f, leaf, distribution="poisson", estimator="pwgf_mmd", n_samples=n,
                         generator=torch.Generator().manual_seed(2), bandwidth=h, step=eps)
    (grad,) = torch.autograd.grad(value, leaf)
    z = seen[0]
    slope = -0.7 * torch.sin(0.7 * z)

    def k(s, y):
        return h**2 * torch.exp(-((s - y) ** 2) / (2 * h**2))

    d = 1e-5
    for i in range(2):
        def obj(lam, i=i):
            e = eps / n
            return (_mmd2(lam, z[:, i] - e * slope[:, i], k) - _mmd2(lam, z[:, i], k)) / (2 * e)
        fd = (obj(rate[i].item() + d) - obj(rate[i].item() - d)) / (2 * d)
        torch.testing.assert_close(grad[i], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("bad", [torch.tensor([1.0, 0.0]), torch.tensor([-1.0]), torch.tensor([float("nan")])])
def test_rate_checks_name_the_argument_and_are_switchable(bad):
    with pytest.raises(ValueError, match="Expected rate .* to be finite and > 0"):
        dg.poisson.st(bad)
    with dg.validate_args(False):
        dg.poisson.check_rate(bad)
    with pytest.raises(TypeError, match="rate"):
        dg.poisson.st(torch.tensor([1, 2]))


# ----------------------------------------------------------------------------- forward difference

def test_forward_difference_shared_is_the_same_estimate_with_fewer_evaluations():
    rate = torch.full((1,), 5.0, dtype=torch.float64)
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    rows = []

    def f(z):
        rows.append(z.shape[0])
        return torch.sin(w * z[..., 0]) + 0.1 * z[..., 0] ** 2

    out = {}
    for name in ("forward_difference", "forward_difference_shared"):
        rows.clear()
        leaf = rate.clone().requires_grad_(True)
        value = dg.surrogate(f, leaf, distribution="poisson", estimator=name, n_samples=64,
                             generator=torch.Generator().manual_seed(3))
        out[name] = (value.detach(), *torch.autograd.grad(value.sum(), (leaf, w)), sum(rows))
    a, b = out["forward_difference"], out["forward_difference_shared"]
    for x, y in zip(a[:3], b[:3]):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    assert a[3] == 128 and b[3] < 40  # 64 samples of Poisson(5) take few distinct values


def test_forward_difference_is_exact_for_linear_costs_and_uses_one_shift_per_variable():
    rate = torch.tensor([[0.5, 3.0, 7.0], [2.0, 1.0, 4.0]], dtype=torch.float64)
    c = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)
    rows = []

    def f(z):
        rows.append(z.shape[0])
        return z @ c

    leaf = rate.clone().requires_grad_(True)
    value = dg.surrogate(f, leaf, distribution="poisson", estimator="forward_difference", n_samples=5,
                         generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    torch.testing.assert_close(grad, c.expand(2, 3))  # f(z + e_v) - f(z) = c_v for every sample
    assert rows == [5, 15]  # the samples, then 3 variables x 5 samples in one call


def test_forward_difference_with_large_and_tiny_rates_is_finite():
    rate = torch.tensor([1e-6, 1e4, 1.0, 1e-3], dtype=torch.float32, requires_grad=True)
    for name in ("forward_difference", "forward_difference_shared"):
        value = dg.surrogate(lambda z: torch.log1p(z).sum(-1), rate, distribution="poisson", estimator=name,
                             n_samples=3, generator=torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(value.sum(), rate)
        assert torch.isfinite(grad).all() and (grad > 0).all()  # log1p is increasing
