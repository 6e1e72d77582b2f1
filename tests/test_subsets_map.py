"""I-MLE's noise and direction, SIMPLE's k = 1 limit (their gradient formulas are the generic
suite's references in tests/problems/topk.py)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import discretegrad as dg

ALPHA = 1e-4  # false-failure rate of each Kolmogorov-Smirnov test (fixed seeds: deterministic)


@pytest.mark.parametrize("a", [0.05, 0.5, 1.0, 3.0])
def test_gamma_draws_follow_the_gamma_law(a, gen):
    x = dg.noise.gamma(a, (20000,), dtype=torch.float64, generator=gen)
    assert (x >= 0).all() and torch.isfinite(x).all()
    assert stats.kstest(x.numpy(), stats.gamma(a).cdf).pvalue > ALPHA


@pytest.mark.parametrize("k", [1, 2, 5])
def test_sum_of_k_sum_of_gamma_draws_is_the_truncated_gumbel_series(k, gen):
    """Σ of k i.i.d. SoG(k, s) variables = Σ_{i≤s} E_i/i - log s (two-sample KS), and that series with
    many terms is a standard Gumbel (one-sample KS): I-MLE's reason for the noise (Niepert et al. 2021)."""
    s = 10
    total = dg.noise.sum_of_gamma(k, (20000, k), terms=s, dtype=torch.float64, generator=gen).sum(-1)
    e = dg.noise.exponential((20000, s), dtype=torch.float64, generator=gen)
    series = (e / torch.arange(1, s + 1, dtype=torch.float64)).sum(-1) - math.log(s)
    assert stats.ks_2samp(total.numpy(), series.numpy()).pvalue > ALPHA
    long = dg.noise.sum_of_gamma(k, (5000, k), terms=100, dtype=torch.float64, generator=gen).sum(-1)
    assert stats.kstest(long.numpy(), stats.gumbel_r.cdf).pvalue > ALPHA


def test_imle_forward_is_topk_of_sum_of_gamma_perturbation(gen):
    """The default forward sample is top-k of θ + ε, ε the sum-of-Gamma noise drawn from the same
    generator state, with k ones per row; with many noise terms and k = 1 its law is softmax(θ)
    (χ² on 5000 draws with 100 terms, α = ALPHA): the truncation at s terms is what makes it approximate."""
    theta = torch.tensor([0.3, -1.0, 1.5, 0.0, -0.2], dtype=torch.float64)
    state = gen.get_state()
    z = dg.subsets_map.imle(theta.expand(200, 5), k=2, generator=gen)
    eps = dg.noise.sum_of_gamma(2, (200, 5), dtype=torch.float64, generator=torch.Generator().set_state(state))
    top = (theta + eps).topk(2, -1).indices
    assert torch.equal(z, torch.zeros_like(z).scatter_(-1, top, 1.0))
    z1 = dg.subsets_map.imle(theta.expand(5000, 5), k=1, noise_terms=100, generator=gen)
    counts = z1.sum(0).numpy()
    assert stats.chisquare(counts, (torch.softmax(theta, -1) * 5000).numpy()).pvalue > ALPHA


def test_imle_gradient_is_a_descent_direction(gen):
    """For L = <c, z> the I-MLE gradient, averaged over noise, correlates positively with c: gradient
    descent moves θ towards the items that lower L (the sign of z - MAP(θ - λ c + ε))."""
    theta = torch.randn(4000, 6, generator=gen, dtype=torch.float64)
    c = torch.randn(6, generator=gen, dtype=torch.float64)
    leaf = theta.clone().requires_grad_(True)
    z = dg.subsets_map.imle(leaf, k=3, lam=2.0, generator=gen)
    (grad,) = torch.autograd.grad((z * c).sum(), leaf)
    assert set(grad.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert float((grad.mean(0) * c).sum()) > 0
    assert (grad.sum(-1) == 0).all()  # both MAP states have k ones


def test_simple_with_k_one_is_softmax_straight_through(gen):
    theta = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    v = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    leaf = theta.clone().requires_grad_(True)
    state = gen.get_state()
    z = dg.subsets_map.simple(leaf, k=1, generator=gen)
    # stgs: the same Gumbel draws and argmax (st samples by inverse CDF, other numbers, the same law)
    d = dg.categorical.stgs(theta, generator=torch.Generator().set_state(state))
    assert torch.equal(z.detach(), d)
    (grad,) = torch.autograd.grad((z * v).sum(), leaf)
    p = torch.softmax(theta, -1)
    torch.testing.assert_close(grad, p * (v - (p * v).sum(-1, keepdim=True)))


def test_simple_without_autograd_is_the_same_sample(gen):
    theta = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    state = gen.get_state()
    a = dg.subsets_map.simple(theta.clone().requires_grad_(True), k=2, generator=gen)
    b = dg.subsets_map.simple(theta, k=2, generator=torch.Generator().set_state(state))
    assert torch.equal(a.detach(), b)
