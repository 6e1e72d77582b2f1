"""The paper-protocol settings of issue 15: the Bernoulli VAE's ARM objective, Glorot init, tuned
REBAR and per-sample pWGF step; the GST probe's variance (ddof)."""

from __future__ import annotations

import math

import pytest
import torch

import discretegrad as dg
from discretegrad.experiments import bernoulli_vae
from discretegrad.experiments.common.nets import init_linear, mlp
from discretegrad.experiments.common.probes import gradient_variance
from discretegrad.harness.contract import get_experiment
from experiment_helpers import run_tiny, write_idx_dataset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    write_idx_dataset(root, n_train=300, n_test=200, gz=True, seed=0)
    return str(root)


def test_log_ratio_has_the_kl_as_its_mean():
    logits = torch.tensor([[-30.0, -2.0, 0.0, 1.5, 30.0]], dtype=torch.float64)
    q = torch.sigmoid(logits)
    one, zero = torch.ones_like(logits), torch.zeros_like(logits)
    per_unit = lambda b: bernoulli_vae.log_ratio_to_half(logits.unsqueeze(-1), b.unsqueeze(-1))  # noqa: E731
    mean = q * per_unit(one) + (1 - q) * per_unit(zero)
    torch.testing.assert_close(mean.sum(-1), bernoulli_vae.kl_to_half(logits), rtol=1e-12, atol=1e-12)


def _encoder_grad(objective, estimator, arch="linear", **hp):
    model = bernoulli_vae.BernoulliVAE(arch, torch.Generator().manual_seed(0), "glorot").double()
    x = (torch.rand(7, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float64) > 0.5).double()
    g = torch.Generator().manual_seed(2)

    def sample(f, logits, layer):
        return dg.surrogate(f, logits, distribution="bernoulli", estimator=estimator, generator=g, **hp)

    loss = bernoulli_vae._neg_elbo_fn(model, sample, objective)(x).mean()
    return torch.autograd.grad(loss, model.enc1[0].weight)[0]


def test_st_gives_the_same_gradient_under_both_objectives():
    """log q(b) - log p(b) is linear in b, so ST's pathwise gradient of it is exactly the KL's
    gradient: for ST (same noise) the ARM objective and the analytic KL give one gradient; for
    pWGF-RBF the ARM objective weighs the KL by the kernel's factor too, so they differ."""
    torch.testing.assert_close(_encoder_grad("arm", "st"), _encoder_grad("analytic", "st"), rtol=1e-9, atol=1e-12)
    a, b = _encoder_grad("arm", "pwgf_mmd", bandwidth=1.0), _encoder_grad("analytic", "pwgf_mmd", bandwidth=1.0)
    assert not torch.allclose(a, b, rtol=1e-3)


def test_two_layer_objectives_agree_in_value_at_exact_samples():
    """At exact samples both objectives estimate the same negative ELBO: their means over many
    draws agree within 4 standard errors (false-failure rate below 1e-4 for a normal mean)."""
    model = bernoulli_vae.BernoulliVAE("two_layer", torch.Generator().manual_seed(0), "glorot").double()
    x = (torch.rand(3, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float64) > 0.5).double()
    fam = dg.registry.get_family("bernoulli")
    vals = {}
    for objective in ("arm", "analytic"):
        g = torch.Generator().manual_seed(5)
        exact = lambda f, logits, layer: f(fam.sample(logits, g).unsqueeze(0))[0]  # noqa: E731
        with torch.no_grad():
            vals[objective] = torch.stack([bernoulli_vae._neg_elbo_fn(model, exact, objective)(x) for _ in range(400)])
    diff = vals["arm"] - vals["analytic"]  # paired per draw index (independent draws)
    se = diff.std(0) / math.sqrt(diff.shape[0])
    assert (diff.mean(0).abs() < 4 * se).all()


def test_glorot_init_has_zero_bias_and_the_glorot_bound():
    layer = init_linear(torch.nn.utils.skip_init(torch.nn.Linear, 784, 200), torch.Generator().manual_seed(0), "glorot")
    bound = math.sqrt(6 / (784 + 200))
    assert torch.count_nonzero(layer.bias) == 0
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.99 * bound
    with pytest.raises(ValueError, match="init"):
        mlp([3, 2], "none", torch.Generator(), init="xavier")


@pytest.mark.parametrize("objective", ["arm", "analytic"])
def test_bernoulli_vae_tuned_rebar_learns_tau_and_eta(data_root, objective, monkeypatch):
    exp = get_experiment("bernoulli-vae")
    seen = {}
    original = bernoulli_vae.RebarControlVariate.__init__

    def spy(self, tau, eta):
        original(self, tau, eta)
        seen["cv"] = self

    monkeypatch.setattr(bernoulli_vae.RebarControlVariate, "__init__", spy)
    final, _ = run_tiny(exp, "rebar", data_root=data_root, epochs=1, valid_size=100, objective=objective)
    log_tau, eta = seen["cv"].log_tau.detach().item(), seen["cv"].eta.detach().item()
    assert math.isfinite(final["test_neg_elbo"]) and math.isfinite(log_tau) and math.isfinite(eta)
    assert log_tau != pytest.approx(math.log(0.5), abs=1e-7) and eta != pytest.approx(1.0, abs=1e-7)
    assert final["rebar_tau"] == pytest.approx(math.exp(log_tau)) and final["rebar_eta"] == pytest.approx(eta)


@pytest.mark.parametrize("arch, estimator", [("linear", "pwgf_mmd"), ("two_layer", "st"), ("linear", "relax")])
def test_bernoulli_vae_analytic_and_torch_init_settings_run(data_root, arch, estimator):
    exp = get_experiment("bernoulli-vae")
    final, _ = run_tiny(exp, estimator, data_root=data_root, arch=arch, epochs=1, valid_size=100,
                        objective="analytic", init="torch", pwgf_step="batch_mean", rebar_tuning=False)
    assert math.isfinite(final["test_neg_elbo"]) and final["test_neg_elbo"] > 0


def test_gradient_variance_ddof():
    """Two repeats with gradients 1 and 3 (loss = c·w): variance 1 with ddof 0, 2 with ddof 1."""
    w = torch.zeros((), requires_grad=True)
    values = iter([1.0, 3.0, 1.0, 3.0])
    loss = lambda: next(values) * w  # noqa: E731
    assert gradient_variance(loss, [w], 2, ddof=0) == pytest.approx(1.0)
    assert gradient_variance(loss, [w], 2, ddof=1) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="ddof"):
        gradient_variance(loss, [w], 2, ddof=2)
