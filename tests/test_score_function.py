"""Score-function family: baselines, MuProp's exactness for linear f, RELAX's control-variate
training interface, extreme inputs. Unbiasedness against dg.exact is in the generic suite."""

from __future__ import annotations

import math

import pytest
import torch
from problems import case_for
from scipy import stats

import discretegrad as dg
from _nets import linear
from discretegrad.relax import relax_estimate
from discretegrad.score_function import ema_baseline

ALPHA = 1e-4  # false-failure rate per statistical test (Bonferroni over the coordinates compared)
SURROGATES = [s for s in dg.estimators() if s.kind == "surrogate"]


def _draws(f, params, m, estimator, distribution, seed, **hp):
    """m independent gradient draws of E[f] (params replicated along a new leading dim)."""
    big = params.expand(m, *params.shape).clone().requires_grad_(True)
    value = dg.surrogate(f, big, distribution=distribution, estimator=estimator, n_samples=hp.pop("n_samples", 1),
                         generator=torch.Generator().manual_seed(seed), **hp)
    return torch.autograd.grad(value.sum(), big)[0]


def _bern_problem():
    theta = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    return theta, (lambda z: torch.sin(z @ w) + 3.0)


def test_rloo_needs_two_samples():
    theta, f = _bern_problem()
    with pytest.raises(ValueError, match="Expected n_samples to be an int >= 2"):
        dg.surrogate(f, theta, distribution="bernoulli", estimator="rloo")


@pytest.mark.parametrize("distribution", ["bernoulli", "categorical", "poisson"])
def test_muprop_is_exact_for_linear_f(distribution):
    """For linear f the Taylor control variate is f itself: zero variance, exact gradient."""
    params = {"bernoulli": torch.tensor([[0.3, -2.0]]), "categorical": torch.tensor([[[0.3, -2.0, 1.0]]]),
              "poisson": torch.tensor([[0.7, 3.0]])}[distribution].double()
    w = torch.randn(params.shape[1:], generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(z):
        return (z * w).flatten(2).sum(-1) + 1.0

    g = _draws(f, params, 50, "muprop", distribution, 1)
    exact = dg.exact.gradient(f, params, distribution=distribution)
    torch.testing.assert_close(g, exact.expand_as(g), rtol=1e-12, atol=1e-12)


def test_baselines_keep_the_mean_and_a_good_one_cuts_variance():
    theta, f = _bern_problem()
    m = 20000
    exact = dg.exact.gradient(f, theta, distribution="bernoulli")
    mean_f = float(dg.exact.expectation(f, theta, distribution="bernoulli"))
    plain = _draws(f, theta, m, "reinforce", "bernoulli", 2)
    state = ema_baseline(0.5).update(ema_baseline(0.5).init(), torch.tensor(mean_f, dtype=torch.float64))
    for baseline in (mean_f, torch.full((1,), mean_f, dtype=torch.float64), state):
        g = _draws(f, theta, m, "reinforce", "bernoulli", 3, baseline=baseline)
        z = stats.norm.isf(ALPHA / (2 * 3))
        assert ((g.mean(0) - exact).abs() <= z * g.std(0) / math.sqrt(m)).all()
        # f is within ±1 of 3 + E-ish: centring removes most of the |f| in (f - b) ∇ log p
        assert g.var(0).sum() < 0.2 * plain.var(0).sum()  # measured 0.264 vs 5.14 for b = E[f]


def test_ema_baseline_state_is_explicit_and_bias_corrected():
    ema = ema_baseline(0.9)
    s0 = ema.init()
    assert s0.count == 0 and float(s0.value) == 0.0
    s1 = ema.update(s0, torch.tensor(4.0))
    assert float(s1.value) == pytest.approx(4.0) and s0.count == 0  # bias-corrected; s0 untouched
    s2 = ema.update(s1, torch.tensor([2.0, 6.0]))
    expected = (0.9 * 0.1 * 4.0 + 0.1 * torch.tensor([2.0, 6.0])) / (1 - 0.81)
    torch.testing.assert_close(s2.value, expected)
    with pytest.raises(ValueError, match="decay"):
        ema_baseline(1.0)
    with pytest.raises(TypeError, match="state"):
        ema.update(3.0, torch.tensor(1.0))


def test_baseline_of_wrong_shape_names_the_argument():
    theta, f = _bern_problem()
    with pytest.raises(ValueError, match="Expected baseline to broadcast to the batch shape"):
        dg.surrogate(f, theta, distribution="bernoulli", estimator="reinforce", baseline=torch.zeros(4),
                     generator=torch.Generator().manual_seed(0))


def test_disarm_variance_not_above_arm():
    """Dong et al. 2020, Thm. 1: DisARM's variance is at most ARM's (checked with a wide margin)."""
    theta, f = _bern_problem()
    g_arm = _draws(f, theta, 20000, "arm", "bernoulli", 4)
    g_dis = _draws(f, theta, 20000, "disarm", "bernoulli", 5)
    assert g_dis.var(0).sum() < 0.9 * g_arm.var(0).sum()  # measured 0.244 vs 0.317 (variance SE about 1%)


class _Net(torch.nn.Module):
    """A small control variate c_φ(z) on the relaxed variable, batch kept (z [n, B, V] -> [n, B])."""

    def __init__(self, v: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = linear(v, 8, g).double()
        self.out = linear(8, 1, g).double()

    def forward(self, z):
        return self.out(torch.tanh(self.lin(torch.sigmoid(z)))).squeeze(-1)


def test_relax_with_a_user_control_variate_is_unbiased():
    theta, f = _bern_problem()
    net = _Net(3, 0)
    m = 20000
    g = _draws(f, theta, m, "relax", "bernoulli", 6, control_variate=net)
    exact = dg.exact.gradient(f, theta, distribution="bernoulli")
    z = stats.norm.isf(ALPHA / (2 * 3))
    assert ((g.mean(0) - exact).abs() <= z * g.std(0) / math.sqrt(m)).all()


def test_relax_estimate_grad_is_the_surrogate_gradient_and_trains_the_control_variate():
    """``grad`` equals the surrogate's gradient; minimising E[grad²] over φ lowers the variance;
    the surrogate itself never sends gradient to φ."""
    theta, f = _bern_problem()
    m = 4000
    net = _Net(3, 1)
    big = theta.expand(m, 3).clone().requires_grad_(True)

    def estimate(seed, create_graph=False):
        return relax_estimate(f, big, distribution="bernoulli", control_variate=net,
                              generator=torch.Generator().manual_seed(seed), create_graph=create_graph)

    est = estimate(7)
    (g_sur,) = torch.autograd.grad(est.surrogate.sum(), big, retain_graph=True)
    torch.testing.assert_close(g_sur, est.grad)
    est.surrogate.sum().backward()
    assert all(p.grad is None for p in net.parameters())

    before = float(estimate(100).grad.var(0).sum())
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for step in range(60):
        est = estimate(200 + step, create_graph=True)
        loss = (est.grad**2).sum() / m
        grads = torch.autograd.grad(loss, list(net.parameters()))
        for p, gp in zip(net.parameters(), grads):
            p.grad = gp
        opt.step()
    after = float(estimate(100).grad.var(0).sum())
    assert after < 0.25 * before, (before, after)  # measured: 5.59 -> 0.21


@pytest.mark.parametrize("spec", SURROGATES, ids=lambda s: f"{s.distribution}:{s.name}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_extreme_inputs_stay_finite(spec, dtype):
    case = case_for(spec.distribution)
    for params in case.extreme_params(dtype):
        leaf = params.clone().requires_grad_(True)

        def f(z):
            return torch.sin(z.flatten(1)).sum(-1) + 0.01 * z.flatten(1).sum(-1)

        options = {k: v for k, v in case.test_hparams.items() if k in spec.hyperparameters}  # e.g. k for "topk"
        value = dg.surrogate(f, leaf, distribution=spec.distribution, estimator=spec.name, n_samples=2,
                             generator=torch.Generator().manual_seed(3), **options)
        (grad,) = torch.autograd.grad(value.sum(), leaf)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()


def test_categorical_conditional_gumbel_reparameterized():
    logits = torch.tensor([[0.5, -1.0, 2.0], [1e4, -1e4, 0.0]], requires_grad=True)
    index = torch.tensor([0, 2])
    z = dg.noise.conditional_gumbel(logits, index, 1, generator=torch.Generator().manual_seed(0),
                                    reparameterized=True)[0]
    assert torch.equal(z.argmax(-1), index)
    (grad,) = torch.autograd.grad(z.sum(), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
