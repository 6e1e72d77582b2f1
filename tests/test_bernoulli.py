"""Bernoulli-specific checks: the exact oracle, pWGF-MMD's derivation, the conditional logistic."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy import stats

import discretegrad as dg

ALPHA = 1e-4  # false-failure rate per statistical test (Bonferroni over the coordinates compared)


def _rbf(h):
    def k(s, y):
        s, y = torch.as_tensor(s, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
        return h**2 * torch.exp(-((s - y) ** 2) / (2 * h**2))
    return k


def _mmd2(p, particles, k):
    """Squared MMD between Bern(p) and the empirical measure of ``particles``, written out (App. D)."""
    q = 1 - p
    model = q * q * k(0.0, 0.0) + 2 * p * q * k(0.0, 1.0) + p * p * k(1.0, 1.0)
    cross = (q * k(0.0, particles) + p * k(1.0, particles)).mean()
    data = k(particles.unsqueeze(0), particles.unsqueeze(1)).mean()
    return model - 2 * cross + data


def test_exact_expectation_enumerates_all_configurations():
    theta = torch.tensor([[0.3, -1.2, 2.0], [0.0, 4.0, -0.5]], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def f(z):
        return torch.sin(z @ w) + (z @ w) ** 2

    brute = torch.zeros(2, dtype=torch.float64)
    p = torch.sigmoid(theta)
    for bits in itertools.product([0.0, 1.0], repeat=3):
        z = torch.tensor(bits, dtype=torch.float64)
        prob = (p**z * (1 - p) ** (1 - z)).prod(-1)
        brute += prob * f(z.unsqueeze(0))[0]
    torch.testing.assert_close(dg.exact.expectation(f, theta, distribution="bernoulli"), brute)


@pytest.mark.parametrize("step", [0.05, 0.5, 3.0])
def test_pwgf_linear_kernel_is_st(step):
    """Expectation-difference projection (linear kernel) = ST exactly, for every step (Sec. 2.1)."""
    theta = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    v = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    outs = []
    for fn, hp in [(dg.bernoulli.pwgf_mmd, {"kernel": "linear", "step": step}), (dg.bernoulli.st, {})]:
        leaf = theta.clone().requires_grad_(True)
        out = fn(leaf, generator=torch.Generator().manual_seed(2), **hp)
        outs.append((out.detach(), torch.autograd.grad((out * v).sum(), leaf)[0]))
    assert torch.equal(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bandwidth,step", [(0.3, 0.1), (1.0, 0.5), (2.0, 2.0)])
def test_pwgf_mmd_matches_finite_differences_of_mmd(bandwidth, step):
    """ĝ = d/dθ [Δ²(θ; z - εg) - Δ²(θ; z)] / (2ε), by central finite differences of the written-out Δ²."""
    theta = torch.tensor([-2.0, -0.3, 0.0, 0.8, 2.5], dtype=torch.float64)
    v = torch.tensor([1.3, -0.7, 2.0, -3.0, 0.4], dtype=torch.float64)
    leaf = theta.clone().requires_grad_(True)
    z = dg.bernoulli.pwgf_mmd(leaf, bandwidth=bandwidth, step=step, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((z * v).sum(), leaf)
    k, h = _rbf(bandwidth), 1e-6
    fd = []
    for i in range(5):
        def obj(t, i=i):
            p = torch.sigmoid(torch.tensor(t, dtype=torch.float64))
            zi = z[i].detach().reshape(1)
            return (_mmd2(p, zi - step * v[i], k) - _mmd2(p, zi, k)) / (2 * step)
        fd.append((obj(theta[i].item() + h) - obj(theta[i].item() - h)) / (2 * h))
    torch.testing.assert_close(grad, torch.stack(fd), rtol=1e-6, atol=1e-9)


def test_pwgf_mmd_n_samples_is_the_papers_multi_sample_estimator():
    """Through dg.surrogate(n_samples=N) the N particles share θ: the gradient is the N-particle
    control-varied Δ² gradient with step ε/N on the per-sample gradients f'(z_n) (module docs)."""
    n, eps, h = 6, 0.4, 0.7
    theta = torch.tensor([0.4, -1.1, 1.7], dtype=torch.float64)
    w = torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64)
    seen = []

    def f(z):
        seen.append(z.detach())
        return torch.sin(z * w).sum(-1)

    leaf = theta.clone().requires_grad_(True)
    value = dg.surrogate(f, leaf, distribution="bernoulli", estimator="pwgf_mmd", n_samples=n,
                         generator=torch.Generator().manual_seed(4), bandwidth=h, step=eps)
    (grad,) = torch.autograd.grad(value, leaf)
    z = seen[0]  # [n, 3]
    slope = w * torch.cos(z * w)  # f'(z_n) per sample
    expected = []
    for i in range(3):
        t = theta[i].clone().requires_grad_(True)
        p = torch.sigmoid(t)
        k = _rbf(h)
        d2 = (_mmd2(p, z[:, i] - (eps / n) * slope[:, i], k) - _mmd2(p, z[:, i], k)) / (2 * eps / n)
        expected.append(torch.autograd.grad(d2, t)[0])
    torch.testing.assert_close(grad, torch.stack(expected), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("distribution", ["bernoulli", "poisson"])
def test_pwgf_mean_over_puts_the_step_on_the_per_sample_gradient(distribution):
    """A batch-mean loss with mean_over = B gives exactly 1/B of the batch-sum loss's gradient at
    the same ε (ε acts on the per-sample gradient); without it the mean loss runs at step ε/B,
    which for a large step is a different estimate."""
    b, eps, h = 25, 1.0, 0.5
    g = torch.Generator().manual_seed(11)
    params = (torch.randn(b, 4, generator=g, dtype=torch.float64) if distribution == "bernoulli"
              else 0.5 + 4 * torch.rand(b, 4, generator=g, dtype=torch.float64))
    w = torch.randn(4, generator=g, dtype=torch.float64)
    op = getattr(dg, distribution).pwgf_mmd

    def grad(reduce, mean_over):
        leaf = params.clone().requires_grad_(True)
        z = op(leaf, bandwidth=h, step=eps, mean_over=mean_over, generator=torch.Generator().manual_seed(3))
        cost = (torch.sin(z * w) + 0.3 * z ** 2).sum(-1)
        return torch.autograd.grad(reduce(cost), leaf)[0]

    per_sample = grad(torch.sum, 1)
    torch.testing.assert_close(grad(torch.mean, b) * b, per_sample, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(grad(torch.mean, 1) * b, per_sample, rtol=1e-3)


def test_pwgf_rbf_tends_to_st_for_large_bandwidth():
    theta = torch.randn(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    v = torch.randn(50, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grads = []
    for fn, hp in [(dg.bernoulli.pwgf_mmd, {"bandwidth": 1e3, "step": 0.1}), (dg.bernoulli.st, {})]:
        leaf = theta.clone().requires_grad_(True)
        out = fn(leaf, generator=torch.Generator().manual_seed(7), **hp)
        grads.append(torch.autograd.grad((out * v).sum(), leaf)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-8)


def test_conditional_logistic_has_the_conditional_law():
    """z̃ ~ θ + L | 1[θ + L > 0] = b: compare with rejection sampling (means, Welch z-test)."""
    m = 200000
    theta = torch.tensor([-1.5, 0.0, 2.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(8)
    free = theta + dg.noise.logistic((m, 3), dtype=torch.float64, device=theta.device, generator=gen)
    zstat = stats.norm.isf(ALPHA / (2 * 6))
    for b in (0.0, 1.0):
        hard = torch.full((m, 3), b, dtype=torch.float64)
        cond = dg.noise.conditional_logistic(theta.expand(m, 3), hard, generator=gen)
        assert ((cond > 0) == bool(b)).all()
        for j in range(3):
            ref = free[:, j][(free[:, j] > 0) == bool(b)]
            diff = cond[:, j].mean() - ref.mean()
            se = (cond[:, j].var() / m + ref.var() / ref.numel()).sqrt()
            assert diff.abs() < zstat * se, (b, j, float(diff / se))


def test_conditional_logistic_extreme_logits_are_finite_and_differentiable():
    theta = torch.tensor([1e4, -1e4, 0.0, 50.0, -50.0], requires_grad=True)
    for b in (0.0, 1.0):
        hard = torch.full((5,), b)
        out = dg.noise.conditional_logistic(theta, hard, generator=torch.Generator().manual_seed(9))
        (grad,) = torch.autograd.grad(out.sum(), theta)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ["st", "stgs", "gumbel_softmax", "pwgf_mmd"])
def test_nan_check_switchable(name):
    fn = getattr(dg.bernoulli, name)
    bad = torch.tensor([0.0, float("nan")])
    with pytest.raises(ValueError, match="logits"):
        fn(bad, generator=torch.Generator().manual_seed(0))
    with dg.validate_args(False):
        fn(bad, generator=torch.Generator().manual_seed(0))
