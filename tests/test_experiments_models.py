"""The experiments on tiny configs: synthetic IDX data, 1-2 epochs, seconds each."""

from __future__ import annotations

import math

import pytest
import torch

from discretegrad.experiments import bernoulli_vae, categorical_vae, poisson_gan
from discretegrad.experiments.common.seeding import derived_generator
from discretegrad.experiments.data.pixels import dynamic_binarize
from discretegrad.harness import settings
from discretegrad.harness.contract import Diverged, get_experiment
from experiment_helpers import assert_resumes_bit_for_bit, run_tiny, write_idx_dataset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    write_idx_dataset(root, n_train=300, n_test=200, gz=True, seed=0)
    return str(root)


def _finite(metrics):
    return all(math.isfinite(v) for v in metrics.values())


CAT_TINY = dict(epochs=2, train_size=300, grad_variance_repeats=4, grad_variance_pool=200)


# ----------------------------------------------------------------------------- categorical-vae

@pytest.mark.parametrize("estimator, hparams", [("stgs", {}), ("gumbel_rao", {"mc_samples": 10}),
                                                ("gst", {"gap": "pi"}), ("reinmax", {})])
def test_categorical_vae_tiny_run(data_root, estimator, hparams):
    exp = get_experiment("categorical-vae")
    final, ctx = run_tiny(exp, estimator, hparams, data_root=data_root, **CAT_TINY)
    assert _finite(final) and {"test_neg_elbo", "best_test_neg_elbo", "grad_variance", "train_loss"} <= set(final)
    assert [e for e, _ in ctx.epochs] == [1, 2] and ctx.progress_calls == 2
    assert all(m["grad_variance"] > 0 for _, m in ctx.epochs)
    assert final["best_test_neg_elbo"] == min(m["test_neg_elbo"] for _, m in ctx.epochs)
    eff = ctx.artifacts["efficiency"]
    assert eff["seconds_per_epoch"] > 0 and eff["peak_memory_mb"] > 0


@pytest.mark.slow
def test_categorical_vae_seeded_and_probe_does_not_disturb_training(data_root):
    exp = get_experiment("categorical-vae")
    a, _ = run_tiny(exp, "gst", {"gap": 1.0}, seed=3, data_root=data_root, **CAT_TINY)
    b, _ = run_tiny(exp, "gst", {"gap": 1.0}, seed=3, data_root=data_root, **CAT_TINY)
    c, _ = run_tiny(exp, "gst", {"gap": 1.0}, seed=3, data_root=data_root, **{**CAT_TINY, "grad_variance": False})
    d, _ = run_tiny(exp, "gst", {"gap": 1.0}, seed=4, data_root=data_root, **CAT_TINY)
    assert a == b
    assert c["test_neg_elbo"] == a["test_neg_elbo"] and "grad_variance" not in c
    assert d["test_neg_elbo"] != a["test_neg_elbo"]


@pytest.mark.parametrize("estimator, hparams, extra", [("gst", {"gap": 1.0}, {}),
                                                       ("stgs", {}, {"mixed_temperature": True, "mixed_m": 2})])
def test_categorical_vae_killed_run_resumes_bit_for_bit(data_root, estimator, hparams, extra):
    """The probe's generators are in the checkpoint too (its variance is logged every epoch)."""
    assert_resumes_bit_for_bit(get_experiment("categorical-vae"), estimator, kill_at=2, hparams=hparams,
                               data_root=data_root, **{**CAT_TINY, "epochs": 3, **extra})


def test_relu_switch_on_the_logits(gen):
    x = torch.rand(64, 784, generator=gen)
    for activation, nonneg in (("relu", True), ("none", False)):
        p = categorical_vae.resolve_params(categorical_vae.Settings(logits_activation=activation))
        logits = categorical_vae.build_model(p, seed=0).logits(x)
        assert logits.shape == (64, 30, 10)
        assert bool((logits >= 0).all()) is nonneg
    assert categorical_vae.Settings().logits_activation == "relu"  # the paper's quirk is the default


def test_mixed_temperature_schedule(data_root, monkeypatch):
    p = categorical_vae.resolve_params(categorical_vae.Settings(mixed_temperature=True, tau=0.1))
    taus = [categorical_vae.tau_at_step(p, s) for s in range(41)]
    assert [s for s, t in enumerate(taus) if t == 0.1] == [0, 20, 40] and set(taus) == {0.1, 0.5}
    assert categorical_vae.tau_at_step(categorical_vae.resolve_params(categorical_vae.Settings(tau=0.1)), 7) == 0.1
    # the schedule reaches the estimator in a run (3 training steps per epoch, 2 epochs)
    seen = []
    real = categorical_vae.estimator_kwargs

    def spy(config, distribution, tau):
        seen.append(tau)
        return real(config, distribution, tau)

    monkeypatch.setattr(categorical_vae, "estimator_kwargs", spy)
    exp = get_experiment("categorical-vae")
    run_tiny(exp, "stgs", data_root=data_root, mixed_temperature=True, mixed_m=2, tau=0.1,
             **{**CAT_TINY, "grad_variance": False})
    assert seen == [0.1, 0.5, 0.1, 0.5, 0.1, 0.5]


@pytest.mark.slow
def test_disarm_preset(data_root, gen):
    Settings = categorical_vae.Settings
    p = categorical_vae.resolve_params(Settings(preset="disarm"))
    assert (p.n_vars, p.n_classes, p.activation, p.logits_activation, p.pixels,
            p.train_size, p.batch_size, p.epochs) == (32, 64, "leaky_relu", "none", "dynamic", 50000, 200, 2000)
    assert categorical_vae.resolve_params(Settings(preset="disarm", batch_size=50, epochs=3)).batch_size == 50
    model = categorical_vae.build_model(p, seed=0)
    assert isinstance(model.encoder[1], torch.nn.LeakyReLU) and isinstance(model.encoder[-1], torch.nn.Identity)
    assert model.logits(torch.rand(2, 784, generator=gen)).shape == (2, 32, 64)
    exp = get_experiment("categorical-vae")
    final, ctx = run_tiny(exp, "gst", {"gap": 1.0}, data_root=data_root, preset="disarm", tau=0.5, **CAT_TINY)
    assert _finite(final)
    # settings are validated once, by the harness, against the dataclass
    with pytest.raises(ValueError, match="preset"):
        settings.coerce(Settings, "preset", "nope")
    with pytest.raises(ValueError, match="Expected --set key to be one of"):
        settings.coerce(Settings, "no_such_key", 1)


def test_categorical_vae_divergence_is_raised(data_root):
    exp = get_experiment("categorical-vae")
    with pytest.raises(Diverged):
        run_tiny(exp, "stgs", data_root=data_root, lr=1e30, **{**CAT_TINY, "grad_variance": False})


def test_dynamic_binarization_is_fresh_per_batch():
    grey = torch.full((4, 784), 0.5)
    g = derived_generator(0, "binarize")
    a, b = dynamic_binarize(grey, g), dynamic_binarize(grey, g)
    assert not torch.equal(a, b)


# ----------------------------------------------------------------------------- bernoulli-vae

@pytest.mark.slow
@pytest.mark.parametrize("arch, estimator", [("linear", "st"), ("linear", "relax"), ("nonlinear", "disarm"),
                                             ("two_layer", "arm"), ("two_layer", "pwgf_mmd"), ("two_layer", "rloo")])
def test_bernoulli_vae_tiny_run(data_root, arch, estimator):
    exp = get_experiment("bernoulli-vae")
    final, ctx = run_tiny(exp, estimator, data_root=data_root, arch=arch, epochs=1, valid_size=100)
    assert _finite(final) and final["test_neg_elbo"] > 0
    assert len(ctx.epochs) == 1 and "efficiency" in ctx.artifacts


@pytest.mark.parametrize("arch, estimator", [("linear", "rebar"), ("two_layer", "relax")])
def test_bernoulli_vae_killed_run_resumes_bit_for_bit(data_root, arch, estimator):
    """The learned control variates and REBAR's tuned temperature live in the module: restored with it."""
    assert_resumes_bit_for_bit(get_experiment("bernoulli-vae"), estimator, kill_at=2, data_root=data_root,
                               arch=arch, epochs=3, valid_size=100)


@pytest.mark.parametrize("objective", ["arm", "analytic"])
def test_bernoulli_vae_relax_two_layer_trains_a_control_variate_per_layer(data_root, objective, monkeypatch):
    exp = get_experiment("bernoulli-vae")
    nets = []
    original = bernoulli_vae.RelaxControlVariate.__init__

    def spy(self, generator):
        original(self, generator)
        nets.append((self, [t.detach().clone() for t in self.parameters()]))

    monkeypatch.setattr(bernoulli_vae.RelaxControlVariate, "__init__", spy)
    final, _ = run_tiny(exp, "relax", data_root=data_root, arch="two_layer", epochs=1, valid_size=100,
                        objective=objective)
    assert _finite(final) and final["test_neg_elbo"] > 0 and len(nets) == 2
    for net, before in nets:  # both layers' networks moved
        assert any(not torch.equal(a.detach(), b) for a, b in zip(net.parameters(), before))


def test_bernoulli_kl_and_entropy_match_torch_distributions():
    logits = torch.tensor([[-80.0, -3.0, 0.0, 2.5, 80.0]], dtype=torch.float64)
    q = torch.distributions.Bernoulli(logits=logits)
    prior = torch.distributions.Bernoulli(probs=torch.full_like(logits, 0.5))
    kl = torch.distributions.kl_divergence(q, prior).sum(-1)
    assert torch.allclose(bernoulli_vae.kl_to_half(logits), kl, atol=1e-12)
    assert torch.allclose(bernoulli_vae.entropy(logits), q.entropy().sum(-1), atol=1e-12)


# ----------------------------------------------------------------------------- poisson-gan

@pytest.mark.parametrize("estimator", ["pwgf_mmd", "st", "reinforce", "muprop", "rloo"])
def test_poisson_gan_tiny_run(estimator):
    exp = get_experiment("poisson-gan")
    final, ctx = run_tiny(exp, estimator, epochs=2, steps_per_epoch=20)
    assert _finite(final) and final["final_rate"] > 0
    assert [e for e, _ in ctx.epochs] == [1, 2] and all("rate" in m for _, m in ctx.epochs)
    assert final["final_rate"] == ctx.epochs[-1][1]["rate"]


@pytest.mark.slow
def test_poisson_gan_learns_the_rate():
    """ST from lambda = 1 reaches the neighbourhood of 5 within 10 epochs (seed 0: measured 5.0)."""
    exp = get_experiment("poisson-gan")
    final, _ = run_tiny(exp, "st", epochs=10, steps_per_epoch=100)
    assert 4.0 < final["rate_last10"] < 6.0


def test_poisson_gan_divergence_is_raised():
    exp = get_experiment("poisson-gan")
    with pytest.raises(Diverged):
        run_tiny(exp, "st", epochs=3, steps_per_epoch=20, lr=1e6)


def test_paper_results_use_registered_labels():
    for exp in (get_experiment("categorical-vae"), get_experiment("bernoulli-vae"), get_experiment("poisson-gan")):
        labels = {c.label for c in exp.estimators}
        assert {label for label, _ in exp.paper_results} <= labels
    assert poisson_gan.EXPERIMENT.paper_results[("pwgf_mmd", ())]["final_rate"] == (5.0076, 0.013)
    # every GST number names its preset and schedule (Table 3 is never shown next to a Table 4 run)
    points = [dict(point) for _, point in categorical_vae.EXPERIMENT.paper_results]
    assert all({"preset", "mixed_temperature", "tau"} <= set(p) for p in points)
    assert sum(p["preset"] == "disarm" for p in points) == 4 and sum(p["mixed_temperature"] for p in points) == 12
