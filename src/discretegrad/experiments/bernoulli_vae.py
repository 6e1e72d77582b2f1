"""``bernoulli-vae``: the Bernoulli VAE of pWGF (Cheng et al. 2019) App. E, Table 2, in the ARM
settings (Yin and Zhou 2019).

Data: MNIST thresholded at 0.5; as in ARM (TensorFlow's ``read_data_sets``), the first 5,000
training images are held out as validation and the remaining 55,000 are trained on; the test
metric is on the 10,000 test images. Every layer's binary (or relaxed) input ``v`` enters as
``2v - 1``. Prior ``Bernoulli(0.5)`` on the top layer. Adam 1e-4, batch 25, single latent sample.

Architectures (``arch``, the grid):

* ``linear``: encoder 784 → 200 logits (linear), decoder 200 → 784 logits (linear);
* ``nonlinear``: encoder 784 → 200 → 200 → 200 logits, decoder 200 → 200 → 200 → 784, LeakyReLU(0.2);
* ``two_layer``: two stochastic layers of 200 units, all maps linear:
  ``q(b1|x)``, ``q(b2|b1)``, ``p(b2) = Bernoulli(0.5)``, ``p(b1|b2)``, ``p(x|b1)``.

Objective (``objective``). ``"arm"`` (default, the ARM code's): the estimator takes the whole
``f = log q(b|x) - log p(x, b)``, the KL sampled through it: one layer
``E_{q(b|x)}[-log p(x|b) + log q(b|x) - log p(b)]``, with ``log q`` evaluated at detached logits
(its direct dependence on the encoder has expectation zero, so dropping it keeps every estimator
unbiased; for a pathwise estimator the gradient then flows through ``b`` only, ``log q(b) - log p(b)``
being linear in ``b``). ``"analytic"``: the estimator takes ``-log p(x|b)`` only and the KL
``KL(q(b|x) ‖ Bernoulli(0.5))`` gets its exact gradient. The two differ in what the estimator
weighs: a score-function estimator gains (no KL noise) under ``analytic``, and pWGF-MMD, whose
ε → 0 gradient is ST's times ``exp(-1/(2h²))`` on a 0/1 support, becomes a β-weighted objective
(reconstruction at that weight, 0.88 at h = 2, KL at 1). Two layers (``analytic``):

    -ELBO = E_{q(b1|x)}[ f1(b1) ] - H(q(b1|x)),
    f1(b1) = -log p(x|b1) + KL(q(b2|b1) ‖ p(b2)) + E_{q(b2|b1)}[ -log p(b1|b2) ],

and with ``arm``, ``-ELBO = E_{q(b1|x)}[ log q(b1|x) + f1(b1) ]``, ``f1(b1) = -log p(x|b1) +
E_{q(b2|b1)}[ log q(b2|b1) - log p(b2) - log p(b1|b2) ]``; the inner expectation is a nested
``dg.surrogate`` call (same estimator) inside ``f1``. This is
correct for every estimator: pathwise ones (st, stgs, pwgf_mmd) backpropagate from the inner
layer through ``b1``'s surrogate into the encoder of ``b1``; score-function ones (reinforce,
rloo, muprop, arm, disarm, rebar) treat ``f1`` as a cost whose value is an unbiased one-sample
estimate with noise independent of ``b1``'s, so the outer estimate stays unbiased, and the inner
call supplies the gradient of the inner expectation for the inner encoder (and, through its
dependence on ``b1``, what MuProp/REBAR's pathwise terms need). ``relax`` learns a control
variate per stochastic layer, as in the RELAX paper: with two layers the inner one is a
``relax_estimate`` with its own learned network inside ``f1``, each network trained on the
variance of its own layer's estimate (``_relax_loss``).

RELAX (``relax``): the control variate is REBAR's ``f(σ(z/τ))`` plus a learned MLP
``r_φ(z)`` (200 → 200 → 1, LeakyReLU), trained jointly (same Adam) to minimise the squared norm
of the estimator's gradient with respect to the logits (Grathwohl et al. 2018, Alg. 2, with the
variance taken at the logits). REBAR (``rebar``) with ``rebar_tuning=true`` (default) tunes its
temperature and η online as Tucker et al. 2017 do: the control variate ``η f(σ(z/τ))`` owns
``η`` (from 1) and ``log τ`` (from log 0.5, or the estimator's ``tau``), trained by the same
variance loss as RELAX's network (one layer; two layers keep the fixed values); ``false``:
fixed ``τ = 0.5, η = 1`` (the registered defaults).

pWGF-MMD's step (``pwgf_step``): ``per_sample`` (default) passes ``mean_over`` = batch size ×
samples, so ε acts on the per-sample gradient as in the paper (:mod:`discretegrad._pwgf`);
``batch_mean`` is the former behaviour, ε on the batch-mean loss's gradient (ε / 25 in effect).
Initialisation (``init``): ``glorot`` (default), TensorFlow's Glorot-uniform weights with zero
bias as in the ARM code; ``torch``, PyTorch's default.

The test metric is the single-sample negative ELBO with exact Bernoulli samples (per image,
averaged over the test set): ``-log p(x|b) + KL`` for one layer, ``-log p(x|b1) - log p(b1|b2)
+ KL(q(b2|b1)‖p(b2)) - H(q(b1|x))`` for two layers (an unbiased estimate of the same quantity as
ARM's sampled ``log q - log p``).

Epochs: 400 (linear, nonlinear) and 1500 (two_layer) in ARM; ``epochs=None`` (default) picks
those; ``--set epochs=N`` fixes them. RLOO needs two samples per image and gets ``n_samples=2``
whatever ``n_samples`` says (ARM/DisARM evaluate ``f`` twice per sample too).

Quick protocol: 2 epochs, architectures linear and nonlinear, 2 seeds; estimators st, pwgf_mmd,
arm, disarm, rebar, stgs, reinforce. Two epochs of 2,200 steps at lr 1e-4 are an early stage of
the 400-epoch protocol, so negative ELBOs are far above the paper's (about 110-130 there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

import discretegrad as dg
from discretegrad.registry import get_family
from discretegrad.experiments.common.estimators import estimator_kwargs, samples_for
from discretegrad.experiments.common.nets import INITS, mlp
from discretegrad.experiments.common.seeding import derived_generator
from discretegrad.experiments.common.training import require_finite
from discretegrad.experiments.common.vae import VAEProblem, fit
from discretegrad.experiments.data import DATASETS, check_data, load_pixels
from discretegrad.harness.contract import (EFFICIENCY, EstimatorChoice, Experiment, RunConfig, RunContext,
                                           register_experiment, setting)
from discretegrad.relax import relax_estimate

__all__ = ["EXPERIMENT", "Settings", "BernoulliVAE", "ARCHS"]

DISTRIBUTION = "bernoulli"
ARCHS = ("linear", "nonlinear", "two_layer")
ARM_EPOCHS = {"linear": 400, "nonlinear": 400, "two_layer": 1500}
LATENT = 200


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``bernoulli-vae`` protocol (``--set key=value``); defaults: ARM's settings."""

    arch: str = setting("linear", "architecture (the grid)", choices=ARCHS)
    dataset: str = setting("mnist", "data set", choices=tuple(DATASETS))
    data_root: str | None = setting(None, "directory of the four IDX files (none: the cache or package)",
                                     protocol=False)
    valid_size: int = setting(5000, "first training images held out (not trained on)", ge=0)
    batch_size: int = setting(25, "mini-batch size", ge=1)
    lr: float = setting(1e-4, "Adam learning rate", gt=0)
    epochs: int | None = setting(None, "training epochs (none: ARM's, 400 or 1500 for two_layer)", ge=1)
    n_samples: int = setting(1, "latent samples per image (RLOO: at least 2)", ge=1)
    tau: float | None = setting(None, "temperature for estimators that have one (none: the estimator's default)", gt=0)
    objective: str = setting("arm", "arm: the whole log q(b|x) - log p(x, b) through the estimator (ARM's code); "
                             "analytic: -log p(x|b) through it, the KL's gradient exact", choices=("arm", "analytic"))
    init: str = setting("glorot", "layer initialisation: glorot (TF's, zero bias; ARM's code) or torch (PyTorch's)",
                        choices=INITS)
    pwgf_step: str = setting("per_sample", "pWGF's step on the per-sample gradient, or on the batch-mean "
                             "loss's (the former behaviour)", choices=("per_sample", "batch_mean"))
    rebar_tuning: bool = setting(True, "REBAR: tune tau and eta online by the gradient variance (Tucker et al.); "
                                 "false: fixed tau 0.5, eta 1")


def _signed(v: torch.Tensor) -> torch.Tensor:
    return 2.0 * v - 1.0


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-log Bernoulli(target; σ(logits))`` summed over the last dim (broadcasting)."""
    logits, target = torch.broadcast_tensors(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def kl_to_half(logits: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(σ(l)) ‖ Bernoulli(0.5)) summed over the last dim (stable in logit space)."""
    q = torch.sigmoid(logits)
    return (q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits) + math.log(2.0)).sum(-1)


def log_ratio_to_half(logits: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log q(b) - log Bernoulli(b; 0.5)`` summed over the last dim, at detached ``logits``
    (linear in ``b``, so relaxed ``b`` are accepted; its mean under ``q`` is :func:`kl_to_half`)."""
    lg = logits.detach()
    return (b * F.logsigmoid(lg) + (1 - b) * F.logsigmoid(-lg) + math.log(2.0)).sum(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    q = torch.sigmoid(logits)
    return -(q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits)).sum(-1)


class BernoulliVAE(nn.Module):
    def __init__(self, arch: str, generator: torch.Generator, init: str = "torch"):
        super().__init__()
        self.arch = arch
        act = "leaky_relu" if arch == "nonlinear" else "none"
        hidden = [LATENT, LATENT] if arch == "nonlinear" else []
        self.enc1 = mlp([784, *hidden, LATENT], act, generator, init=init)
        self.dec1 = mlp([LATENT, *hidden, 784], act, generator, init=init)
        if arch == "two_layer":
            self.enc2 = mlp([LATENT, LATENT], "none", generator, init=init)  # q(b2 | b1)
            self.dec2 = mlp([LATENT, LATENT], "none", generator, init=init)  # p(b1 | b2)

    def logits1(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc1(_signed(x))

    def rec(self, b1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | b1) per image, ``b1 [..., B, 200]`` → ``[..., B]``."""
        return _bce(self.dec1(_signed(b1)), x)


def _neg_elbo_fn(model: BernoulliVAE, sample: Callable, objective: str = "analytic") -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-image negative ELBO with the latent expectations taken by ``sample(f, logits, layer)``
    (an estimator's surrogate during training, an exact sample at test time); ``objective``: what
    goes through ``sample`` (module docstring)."""
    arm = objective == "arm"

    def neg_elbo(x: torch.Tensor) -> torch.Tensor:
        logits1 = require_finite(model.logits1(x), "encoder logits")
        if model.arch != "two_layer":
            if arm:
                return sample(lambda b1: model.rec(b1, x) + log_ratio_to_half(logits1, b1), logits1, 1)
            return sample(lambda b1: model.rec(b1, x), logits1, 1) + kl_to_half(logits1)

        def f1(b1: torch.Tensor) -> torch.Tensor:
            logits2 = model.enc2(_signed(b1))
            if arm:  # log q(b2|b1) - log p(b2) - log p(b1|b2) through the inner estimator
                inner = sample(lambda b2: _bce(model.dec2(_signed(b2)), b1) + log_ratio_to_half(logits2, b2), logits2, 2)
                return model.rec(b1, x) + inner
            inner = sample(lambda b2: _bce(model.dec2(_signed(b2)), b1), logits2, 2)
            return model.rec(b1, x) + kl_to_half(logits2) + inner

        if arm:  # + log q(b1|x): log_ratio_to_half less the prior term, which belongs to p(b1|b2)
            return sample(lambda b1: f1(b1) + log_ratio_to_half(logits1, b1) - LATENT * math.log(2.0), logits1, 1)
        return sample(f1, logits1, 1) - entropy(logits1)

    return neg_elbo


class RelaxControlVariate(nn.Module):
    """``c(z) = f(σ(z/τ)) + r_φ(z)`` with ``r_φ`` an MLP 200 → 200 → 1 (Grathwohl et al. 2018)."""

    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.r = mlp([LATENT, LATENT, 1], "leaky_relu", generator)

    def bind(self, f: Callable[[torch.Tensor], torch.Tensor], tau: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda z: f(torch.sigmoid(z / tau)) + self.r(z).squeeze(-1)


class RebarControlVariate(nn.Module):
    """REBAR's ``c(z) = η f(σ(z/τ))`` with ``η`` and ``log τ`` learned (Tucker et al. 2017, Sec. 3.3)."""

    def __init__(self, tau: float, eta: float):
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        self.eta = nn.Parameter(torch.tensor(float(eta)))

    def bind(self, f: Callable[[torch.Tensor], torch.Tensor], tau: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda z: self.eta * f(torch.sigmoid(z / self.log_tau.exp()))


def check(config: RunConfig) -> None:
    """Pre-sweep check: the dataset's files."""
    check_data(config.settings.dataset, config.settings.data_root)


def run(config: RunConfig, ctx: RunContext) -> dict[str, float]:
    p: Settings = config.settings
    name = config.estimator.name
    epochs = ARM_EPOCHS[p.arch] if p.epochs is None else p.epochs
    device = torch.device(ctx.device)
    g_init = derived_generator(config.seed, "init")
    model = BernoulliVAE(p.arch, g_init, p.init)
    kwargs = estimator_kwargs(config, DISTRIBUTION, p.tau)
    learned_cv = name == "relax" and "control_variate" not in config.estimator.hparams
    if learned_cv:
        model.cv = RelaxControlVariate(g_init)
        if p.arch == "two_layer":
            model.cv2 = RelaxControlVariate(g_init)  # the inner layer's r_φ
    elif name == "rebar" and p.rebar_tuning and p.arch != "two_layer":
        learned_cv = True
        model.cv = RebarControlVariate(kwargs.pop("tau", 0.5), kwargs.pop("eta", 1.0))
    model = model.to(device)
    train_x = load_pixels(p.dataset, "train", "threshold", p.data_root, None, device)[p.valid_size:]
    test_x = load_pixels(p.dataset, "test", "threshold", p.data_root, None, device)
    n = samples_for(name, DISTRIBUTION, p.n_samples)
    family = get_family(DISTRIBUTION)
    per_sample_step = name == "pwgf_mmd" and p.pwgf_step == "per_sample" and "mean_over" not in kwargs

    def loss(x: torch.Tensor, step: int, generator: torch.Generator) -> torch.Tensor:
        if learned_cv:
            return _relax_loss(model, x, generator, n, kwargs.get("tau", 0.5), p.objective)

        def sample(f, logits, layer):
            # the loss is a mean over the batch and over n samples per stochastic layer
            extra = {"mean_over": x.shape[0] * n ** layer} if per_sample_step else {}
            return dg.surrogate(f, logits, distribution=DISTRIBUTION, estimator=name, n_samples=n,
                                generator=generator, **kwargs, **extra)

        return _neg_elbo_fn(model, sample, p.objective)(x).mean()

    def test_neg_elbo(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        exact = lambda f, logits, layer: f(family.sample(logits, generator).unsqueeze(0))[0]  # noqa: E731
        return _neg_elbo_fn(model, exact)(x)

    problem = VAEProblem(model, loss, test_neg_elbo)
    final = fit(problem, config=config, ctx=ctx, train_x=train_x, test_x=test_x, epochs=epochs,
                batch_size=p.batch_size, lr=p.lr, dynamic=False, measure_efficiency=True)
    if isinstance(getattr(model, "cv", None), RebarControlVariate):  # the tuned values, for the report
        final.update(rebar_tau=float(model.cv.log_tau.detach().exp()), rebar_eta=float(model.cv.eta.detach()))
    return final


def _relax_loss(model: BernoulliVAE, x: torch.Tensor, generator: torch.Generator, n: int, tau: float,
                objective: str) -> torch.Tensor:
    """RELAX (or tuned REBAR) step: sets every learned control variate's gradient (the variance
    loss of its own layer's estimate) and returns the surrogate loss for the encoder and decoder.

    Two stochastic layers (RELAX): the inner layer is a ``relax_estimate`` with its own learned
    ``c2`` inside ``f1``, as the nested ``dg.surrogate`` calls; the outer control variate is
    ``c1(z) = g1(σ(z/τ)) + r1(z)`` with ``g1`` the outer layer's own terms (``-log p(x|b1)``, and
    ``log q(b1|x)`` under ``arm``) rather than all of ``f1``: unbiased for every ``c1``, and the
    inner estimator is then evaluated once, at the hard ``b1``."""
    logits = require_finite(model.logits1(x), "encoder logits")
    arm = objective == "arm"
    estimates = []  # (estimate, control variate) per stochastic layer

    def layer(f, lg, cv, own=None):
        est = relax_estimate(f, lg, distribution=DISTRIBUTION, control_variate=cv.bind(own or f, tau),
                             n_samples=n, generator=generator, tau=tau, create_graph=True)
        estimates.append((est, cv))
        return est.surrogate

    own = lambda b: model.rec(b, x) + (log_ratio_to_half(logits, b) if arm else 0.0)  # noqa: E731
    if model.arch != "two_layer":
        value = layer(own, logits, model.cv) + (0.0 if arm else kl_to_half(logits))
    else:
        def f1(b1: torch.Tensor) -> torch.Tensor:
            logits2 = model.enc2(_signed(b1))
            f2 = lambda b2: _bce(model.dec2(_signed(b2)), b1) + (log_ratio_to_half(logits2, b2) if arm else 0.0)  # noqa: E731
            return model.rec(b1, x) + layer(f2, logits2, model.cv2) + (0.0 if arm else kl_to_half(logits2))

        log_q = (lambda b: log_ratio_to_half(logits, b) - LATENT * math.log(2.0)) if arm else (lambda b: 0.0)
        own = lambda b: model.rec(b, x) + log_q(b)  # noqa: E731
        value = layer(lambda b1: f1(b1) + log_q(b1), logits, model.cv, own) - (0.0 if arm else entropy(logits))
    for est, cv in estimates:
        cv_params = list(cv.parameters())
        grads = torch.autograd.grad((est.grad ** 2).sum() / x.shape[0], cv_params, retain_graph=True, allow_unused=True)
        for prm, g in zip(cv_params, grads):
            prm.grad = None if g is None else g.detach()
    return value.mean()


def _paper_results() -> dict:
    """pWGF Table 2 (test negative ELBO; no standard deviations given). "Gumbel-Softmax" is
    mapped to ``stgs``."""
    table = {
        "linear": {"pwgf_mmd": 119.8, "st": 119.1, "arm": 110.3, "relax": 122.1, "rebar": 123.2, "stgs": 129.2},
        "two_layer": {"pwgf_mmd": 108.3, "st": 107.6, "arm": 98.2, "relax": 114.0, "rebar": 113.7},
        "nonlinear": {"pwgf_mmd": 104.6, "st": 104.2, "arm": 101.3, "relax": 110.9, "rebar": 111.6, "stgs": 112.5},
    }
    return {(est, (("arch", arch),)): {"test_neg_elbo": (value, None)}
            for arch, row in table.items() for est, value in row.items()}


_ALL = ("st", "pwgf_mmd", "arm", "disarm", "relax", "rebar", "stgs", "reinforce", "rloo")

EXPERIMENT = register_experiment(Experiment(
    name="bernoulli-vae",
    distribution=DISTRIBUTION,
    paper="pWGF (Cheng et al. 2019) App. E, Table 2 (ARM settings)",
    description=(
        "Bernoulli VAE with 200 latent bits on MNIST thresholded at 0.5 (ARM settings: 55k train, Adam 1e-4, "
        "batch 25, 400 epochs, 1500 for two stochastic layers); architectures linear, nonlinear and two_layer; "
        "test single-sample negative ELBO. Two stochastic layers use nested estimator calls (relax: a learned "
        "control variate per layer). Defaults follow the ARM code: the whole log q - log p through the estimator, "
        "Glorot init, REBAR tuned online, pWGF's step on the per-sample gradient."
    ),
    settings=Settings,
    quick={"epochs": 2},
    grid={"arch": list(ARCHS)},
    quick_grid={"arch": ["linear", "nonlinear"]},
    estimators=tuple(EstimatorChoice(e) for e in _ALL),
    quick_estimators=tuple(EstimatorChoice(e) for e in ("st", "pwgf_mmd", "arm", "disarm", "rebar", "stgs", "reinforce")),
    seeds=(0, 1, 2, 3, 4),
    quick_seeds=(0, 1),
    run=run,
    check=check,
    metrics={"test_neg_elbo": True, "best_test_neg_elbo": True, "train_loss": True},
    divergence_metric="train_loss",
    artifacts=(EFFICIENCY.with_baseline("stgs"),),
    paper_results=_paper_results(),
))
