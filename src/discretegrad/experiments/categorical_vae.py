"""``categorical-vae``: the MNIST-VAE of GST (Fan et al. 2022), Sec. 5.1, Tables 2, 3, 4, 5 and 7.

Protocol (the paper's and its released code's):

* data: MNIST grey levels in [0, 1] (not binarised), 60k train, 10k test; BCE with continuous
  targets;
* latent: 30 categorical variables x 10 classes, uniform prior;
* encoder 784 → 512 → 256 → 300 logits (ReLU), **with a ReLU on the logits** — a quirk of the
  authors' code, kept by default (``logits_activation="relu"``); ``--set logits_activation=none``
  removes it (ReinMax's choice: a ReLU clips every negative logit to 0, so a class can never be
  made less likely than the clipped ones);
* decoder 300 → 256 → 512 → 784 (ReLU), Bernoulli likelihood (sigmoid / BCE-with-logits) summed
  over pixels;
* loss: the single-sample negative ELBO: BCE(decoder(z)) + analytic KL(q‖Uniform(10)) with
  ``q = softmax(logits)``; the BCE term's gradient is the estimator's, the KL term's is exact;
* Adam 1e-3, batch 100, 40 epochs; after every epoch the single-sample test negative ELBO over
  the 10k test images (exact categorical sample, the law every estimator shares); final and best
  are reported;
* estimators: stgs, gumbel_rao (mc_samples=100), gst with gap 0.8, 1.0, 1.2, "pi"; the ablations
  st, nz_gst (gap 0 and 1), gst gap 0; reinmax; temperatures 1.0, 0.5, 0.1, 0.01 (the grid);
* ``mixed_temperature=true`` (GST App. A.3, Table 7): the training step with index ``s`` uses
  ``tau`` when ``s mod mixed_m == 0`` and ``mid_tau`` otherwise (M = 20, mid 0.5); the gradient
  probe uses ``tau``; the test ELBO uses hard samples, so it does not depend on the temperature;
* gradient-variance probe (Sec. 5.1.3, Figure 3), on by default, as the authors' variance script
  computes it: after each epoch, a random batch of ``grad_variance_batch`` = 1000 of the 10,000
  test images (their ``eval_loader``: the test set, batch 1000, shuffled); ``grad_variance_repeats``
  (100) forward/backward passes of the full loss (batch mean) with fresh latent noise; the
  variance over the repeats (divided by R, ``grad_variance_ddof=0``, as theirs) of the gradient of
  every scalar weight and bias of the three encoder layers, averaged. Logged as epoch metric
  ``grad_variance``. Its noise has its own generator, so probing does not change the training
  run. The loss is a batch mean, so the variance scales as 1/batch: the earlier probe
  (``grad_variance_batch=100``, ``grad_variance_pool=1000``, ``grad_variance_ddof=1``) reads about
  10 times higher;
* efficiency (Sec. 5.1.5, Table 5): artifact ``efficiency`` = mean training seconds per epoch
  (without evaluation and probe) and the peak memory of one training step
  (:func:`discretegrad.experiments.common.profiling.step_peak_memory_mb`).

Preset ``--set preset=disarm`` (GST Table 4, the DisARM categorical setup; for a GPU): 32 x 64
latent, LeakyReLU(0.2) everywhere, no activation on the logits, dynamic binarisation, the first
50,000 training images, batch 200, and 2000 epochs (5·10^5 steps). A preset changes a key only
while that key has its paper default, so ``--set`` of another value wins; the temperature is
the grid's (Table 4 shows ``--set tau=0.5``).

Quick protocol (``--quick``): 5 epochs, the full data, 2 seeds, tau in {1.0, 0.5}, a gradient
probe of 20 repeats, estimators stgs, gumbel_rao with K = 10, gst(1.0), gst(pi) and st. It keeps
the comparison's meaning (same data, model, loss and optimiser; the variance of the gradient,
averaged over ~600k scalars, is precise with 20 repeats) but its numbers are those of an early
stage of training, so they are higher than the paper's 40-epoch values. GR-MCK uses K = 10
because K = 100 costs 0.17-0.25 s per training step on one CPU core (104-150 s per epoch,
measured under varying load; much of it drawing the 100 x 100 x 30 x 10 exponential variates),
11 times STGS (``results/categorical-vae/efficiency.md``); run
``--estimators gumbel_rao:mc_samples=100`` on a GPU for the paper's GR-MC100.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import discretegrad as dg
from discretegrad.registry import get_family
from discretegrad.experiments.common.estimators import estimator_kwargs
from discretegrad.experiments.common.nets import mlp
from discretegrad.experiments.common.probes import gradient_variance
from discretegrad.experiments.common.seeding import derived_generator
from discretegrad.experiments.common.training import require_finite
from discretegrad.experiments.common.vae import VAEProblem, fit
from discretegrad.experiments.data import DATASETS, check_data, load_pixels
from discretegrad.experiments.data.pixels import dynamic_binarize
from discretegrad.harness.contract import (EFFICIENCY, EstimatorChoice, Experiment, RunConfig, RunContext,
                                           register_experiment, setting)

__all__ = ["EXPERIMENT", "Settings", "build_model", "resolve_params", "tau_at_step", "temperature_schedule", "PRESETS"]

DISTRIBUTION = "categorical"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``categorical-vae`` protocol (``--set key=value``); defaults: the GST paper's."""

    n_vars: int = setting(30, "categorical latent variables", ge=1)
    n_classes: int = setting(10, "classes per variable", ge=2)
    hidden1: int = setting(512, "first hidden width (encoder 784-h1-h2-latent, decoder mirrored)", ge=1)
    hidden2: int = setting(256, "second hidden width", ge=1)
    activation: str = setting("relu", "activation between layers", choices=("relu", "leaky_relu"))
    logits_activation: str = setting("relu", "activation on the encoder logits (the authors' ReLU)",
                                     choices=("relu", "none"))
    pixels: str = setting("continuous", "grey levels, or a fresh binarisation per batch", choices=("continuous", "dynamic"))
    dataset: str = setting("mnist", "data set", choices=tuple(DATASETS))
    data_root: str | None = setting(None, "directory of the four IDX files (none: the cache or package)",
                                     protocol=False)
    train_size: int = setting(60000, "training images used (the first ones)", ge=1)
    batch_size: int = setting(100, "mini-batch size", ge=1)
    lr: float = setting(1e-3, "Adam learning rate", gt=0)
    epochs: int = setting(40, "training epochs", ge=1)
    tau: float = setting(1.0, "temperature given to estimators that have one (unless the estimator fixes it)", gt=0)
    mixed_temperature: bool = setting(False, "GST App. A.3 schedule: tau every mixed_m-th step, mid_tau otherwise")
    mixed_m: int = setting(20, "period M of the mixed-temperature schedule", ge=1)
    mid_tau: float = setting(0.5, "temperature between the schedule's tau steps", gt=0)
    grad_variance: bool = setting(True, "log the encoder's gradient variance every epoch (Figure 3)",
                                  protocol=False)
    grad_variance_repeats: int = setting(100, "gradient draws per probe", ge=2, protocol=False)
    grad_variance_pool: int = setting(10000, "test images the probe batch is drawn from (the first ones)", ge=1,
                                     protocol=False)
    grad_variance_batch: int = setting(1000, "images in the probe batch (the authors' 1000)", ge=1, protocol=False)
    grad_variance_ddof: int = setting(0, "variance over repeats divided by repeats - ddof (authors: 0)",
                                      choices=(0, 1), protocol=False)
    efficiency: bool = setting(True, "log seconds per epoch and peak step memory (Table 5)", protocol=False)
    preset: str = setting("paper", "paper: GST Table 3 setup; disarm: the 32 x 64 DisARM setup of Table 4",
                          choices=("paper", "disarm"))


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "disarm": {
        "n_vars": 32,
        "n_classes": 64,
        "activation": "leaky_relu",
        "logits_activation": "none",
        "pixels": "dynamic",
        "train_size": 50000,
        "batch_size": 200,
        "epochs": 2000,
    },
}


def resolve_params(p: Settings) -> Settings:
    """The settings a run uses: the preset's values for the keys still at their paper default."""
    paper = Settings()
    changes = {k: v for k, v in PRESETS[p.preset].items() if getattr(p, k) == getattr(paper, k)}
    return dataclasses.replace(p, **changes)


def temperature_schedule(p: Settings) -> dg.schedules.Schedule:
    """The training temperatures: :class:`discretegrad.schedules.MixedTemperature` (GST App. A.3)
    with ``mixed_temperature=true``, else :class:`discretegrad.schedules.Constant`."""
    if p.mixed_temperature:
        return dg.schedules.MixedTemperature(p.tau, p.mid_tau, p.mixed_m)
    return dg.schedules.Constant(p.tau)


def tau_at_step(p: Settings, step: int) -> float:
    """The training temperature of step ``step`` (:func:`temperature_schedule` at ``step``)."""
    return temperature_schedule(p)(step)


class CategoricalVAE(nn.Module):
    def __init__(self, p: Settings, generator: torch.Generator):
        super().__init__()
        self.n_vars, self.n_classes = p.n_vars, p.n_classes
        latent = self.n_vars * self.n_classes
        self.encoder = mlp([784, p.hidden1, p.hidden2, latent], p.activation, generator,
                                final_activation=p.logits_activation)
        self.decoder = mlp([latent, p.hidden2, p.hidden1, 784], p.activation, generator)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).view(x.shape[0], self.n_vars, self.n_classes)

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """BCE summed over pixels; ``z [S, B, V, K]`` → ``[S, B]``."""
        out = self.decoder(z.flatten(-2))
        return F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """KL(softmax(logits) ‖ Uniform(K)) summed over variables, per image."""
        log_q = torch.log_softmax(logits, -1)
        return (log_q.exp() * (log_q + math.log(self.n_classes))).sum((-1, -2))

    def encoder_layers(self) -> list[nn.Linear]:
        return [m for m in self.encoder if isinstance(m, nn.Linear)]


def build_model(p: Settings, seed: int) -> CategoricalVAE:
    return CategoricalVAE(p, derived_generator(seed, "init"))


def check(config: RunConfig) -> None:
    """Pre-sweep check: the dataset's files verify."""
    p = resolve_params(config.settings)
    check_data(p.dataset, p.data_root)


def run(config: RunConfig, ctx: RunContext) -> dict[str, float]:
    p = resolve_params(config.settings)
    device = torch.device(ctx.device)
    model = build_model(p, config.seed).to(device)
    dynamic = p.pixels == "dynamic"
    train_x = load_pixels(p.dataset, "train", p.pixels, p.data_root, p.train_size, device)
    test_x = load_pixels(p.dataset, "test", p.pixels, p.data_root, None, device)

    schedule = temperature_schedule(p)

    def loss(x: torch.Tensor, step: int, generator: torch.Generator) -> torch.Tensor:
        logits = require_finite(model.logits(x), "encoder logits")
        kwargs = estimator_kwargs(config, DISTRIBUTION, schedule(step))
        rec = dg.surrogate(lambda z: model.reconstruction(z, x), logits, distribution=DISTRIBUTION,
                           estimator=config.estimator.name, generator=generator, **kwargs)
        return (rec + model.kl(logits)).mean()

    def test_neg_elbo(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        logits = model.logits(x)
        z = get_family(DISTRIBUTION).sample(logits, generator)
        return model.reconstruction(z.unsqueeze(0), x)[0] + model.kl(logits)

    probe, probe_state = None, {}
    if p.grad_variance:
        g_pick = derived_generator(config.seed, "probe-data")
        g_probe = derived_generator(config.seed, "probe-noise", device)
        pool = test_x[: p.grad_variance_pool]
        params = [t for layer in model.encoder_layers() for t in (layer.weight, layer.bias)]

        def probe(epoch: int) -> dict[str, float]:
            idx = torch.randperm(pool.shape[0], generator=g_pick)[: p.grad_variance_batch].to(device)
            xb = pool[idx]
            if dynamic:
                xb = dynamic_binarize(xb, g_probe)
            value = gradient_variance(lambda: loss(xb, 0, g_probe), params, p.grad_variance_repeats,
                                      ddof=p.grad_variance_ddof)
            return {"grad_variance": value}

        probe_state = {"g_probe_data": g_pick, "g_probe_noise": g_probe}

    problem = VAEProblem(model, loss, test_neg_elbo, probe_state)
    return fit(problem, config=config, ctx=ctx, train_x=train_x, test_x=test_x, epochs=p.epochs,
                    batch_size=p.batch_size, lr=p.lr, dynamic=dynamic, probe=probe,
                    measure_efficiency=p.efficiency)


def _choices() -> tuple[EstimatorChoice, ...]:
    gst = tuple(EstimatorChoice("gst", {"gap": g}) for g in (0.8, 1.0, 1.2, "pi"))
    ablations = (EstimatorChoice("st"), EstimatorChoice("nz_gst", {"gap": 0.0}), EstimatorChoice("nz_gst", {"gap": 1.0}),
                 EstimatorChoice("gst", {"gap": 0.0}), EstimatorChoice("reinmax"))
    return (EstimatorChoice("stgs"), EstimatorChoice("gumbel_rao", {"mc_samples": 100}), *gst, *ablations)


def _paper_results() -> dict:
    """GST Tables 2, 3, 4 and 7: ``test_neg_elbo`` mean and std over seeds."""
    lab = {"stgs": EstimatorChoice("stgs").label, "gr": EstimatorChoice("gumbel_rao", {"mc_samples": 100}).label,
           "st": EstimatorChoice("st").label}
    gst = {g: EstimatorChoice("gst", {"gap": g}).label for g in (0.0, 0.8, 1.0, 1.2, "pi")}
    nz = {g: EstimatorChoice("nz_gst", {"gap": g}).label for g in (0.0, 1.0)}
    out: dict = {}

    def put(label: str, point: dict[str, Any], mean: float, std: float | None) -> None:
        # every entry names its preset and schedule, so that a Table 3 number is never shown next
        # to a run of another setup (the report matches entries against a run's full settings)
        point = {"preset": "paper", "mixed_temperature": False, **point}
        out[(label, tuple(sorted(point.items())))] = {"test_neg_elbo": (mean, std)}

    table3 = {
        1.0: [(lab["stgs"], 122.96, 3.08), (lab["gr"], 120.65, 2.95), (gst[0.8], 113.61, 1.96), (gst[1.0], 113.63, 1.48),
              (gst[1.2], 112.58, 1.11), (gst["pi"], 112.72, 1.63)],
        0.5: [(lab["stgs"], 118.96, 2.51), (lab["gr"], 117.88, 3.01), (gst[0.8], 111.54, 1.30), (gst[1.0], 108.43, 1.08),
              (gst[1.2], 107.33, 0.69), (gst["pi"], 109.42, 1.32)],
        0.1: [(lab["stgs"], 127.70, 3.99), (lab["gr"], 123.23, 3.55)],
        0.01: [(lab["stgs"], 141.61, 3.53), (lab["gr"], 130.04, 3.63)],
    }
    for tau, rows in table3.items():
        for label, m, s in rows:
            put(label, {"tau": tau}, m, s)
    # Table 2 (ablation; the paper evaluates it on a dev set)
    for label, m1, s1, m5, s5 in [(lab["st"], 123.35, 0.54, 133.84, 0.66), (nz[0.0], 128.45, 0.53, 139.02, 0.47),
                                   (nz[1.0], 205.88, 0.04, 205.90, 0.05), (gst[0.0], 115.48, 0.81, 119.10, 0.29)]:
        put(label, {"tau": 1.0}, m1, s1)
        put(label, {"tau": 0.5}, m5, s5)
    # Table 7 (mixed-temperature training, M = 20, mid 0.5)
    table7 = {0.1: [119.38, 117.70, 111.33, 107.73, 107.36, 109.47], 0.01: [121.75, 117.69, 110.82, 107.90, 107.86, 109.08]}
    stds7 = {0.1: [2.36, 3.64, 0.95, 1.10, 0.78, 1.05], 0.01: [2.36, 2.13, 1.03, 1.04, 1.06, 1.26]}
    for tau, means in table7.items():
        for label, m, s in zip([lab["stgs"], lab["gr"], gst[0.8], gst[1.0], gst[1.2], gst["pi"]], means, stds7[tau]):
            put(label, {"tau": tau, "mixed_temperature": True}, m, s)
    # Table 4 (DisARM setup, tau 0.5)
    for label, m, s in [(lab["stgs"], 97.32, 0.20), (lab["gr"], 110.74, 1.23), (gst[1.0], 96.09, 0.25),
                        (gst[1.2], 96.16, 0.32)]:
        put(label, {"tau": 0.5, "preset": "disarm", "mixed_temperature": False}, m, s)
    return out


EXPERIMENT = register_experiment(Experiment(
    name="categorical-vae",
    distribution=DISTRIBUTION,
    paper="GST (Fan et al. 2022) Sec. 5.1, Tables 2, 3, 4, 5, 7 and Figure 3",
    description=(
        "MNIST-VAE with 30 categorical variables x 10 classes on continuous MNIST (GST protocol: BCE + analytic KL, "
        "Adam 1e-3, batch 100, 40 epochs, single-sample test -ELBO each epoch; ReLU on the encoder logits as in the "
        "authors' code). Also logs the gradient variance of the encoder every epoch (Figure 3) and the seconds per "
        "epoch and peak step memory (Table 5). --set preset=disarm gives the 32 x 64 DisARM setup of Table 4; "
        "--set mixed_temperature=true the schedule of Table 7."
    ),
    settings=Settings,
    quick={"epochs": 5, "grad_variance_repeats": 20},
    grid={"tau": [1.0, 0.5, 0.1, 0.01]},
    quick_grid={"tau": [1.0, 0.5]},
    estimators=_choices(),
    quick_estimators=(EstimatorChoice("stgs"), EstimatorChoice("gumbel_rao", {"mc_samples": 10}),
                      EstimatorChoice("gst", {"gap": 1.0}), EstimatorChoice("gst", {"gap": "pi"}), EstimatorChoice("st")),
    seeds=tuple(range(10)),
    quick_seeds=(0, 1),
    run=run,
    check=check,
    metrics={"test_neg_elbo": True, "best_test_neg_elbo": True, "grad_variance": True, "train_loss": True},
    divergence_metric="train_loss",
    artifacts=(EFFICIENCY.with_baseline("stgs"),),
    paper_results=_paper_results(),
))
