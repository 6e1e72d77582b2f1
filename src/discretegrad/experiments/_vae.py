"""What the two discrete-VAE experiments share: seeding, data preparation, parameter
initialisation, the training loop, the gradient-variance probe and the efficiency measurement.

An experiment supplies a :class:`VAEProblem` (the model's training loss for a batch and its
single-sample test negative ELBO per image); :func:`fit` does the rest identically for every
estimator: Adam, shuffled mini-batches drawn with an explicit generator, dynamic binarisation
when asked, a non-finite loss raises :class:`~discretegrad.experiments.base.Diverged`, one
``ctx.log_epoch`` per epoch with ``train_loss`` and ``test_neg_elbo`` (plus any probe metrics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

import discretegrad as dg
from discretegrad.experiments import data as D
from discretegrad.experiments.base import Diverged, RunConfig, RunContext

__all__ = [
    "derived_generator",
    "diverged_if_nonfinite",
    "require_finite",
    "load_pixels",
    "init_linear",
    "mlp",
    "estimator_kwargs",
    "samples_for",
    "VAEProblem",
    "fit",
    "gradient_variance",
    "step_peak_memory_mb",
]


# ----------------------------------------------------------------------------- seeding

def derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed derived from ``(seed, name)`` by hashing: streams are independent, and adding
    a stream does not shift the others (DomainBed's ``seed_hash``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big") >> 1


def derived_generator(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(derived_seed(seed, name))


# ----------------------------------------------------------------------------- data

_LOADERS = {"mnist": "load_mnist", "fashion-mnist": "load_fashion_mnist"}
PIXELS = ("continuous", "threshold", "dynamic")


@functools.lru_cache(maxsize=None)
def check_data(dataset: str, root: str | None) -> None:
    """Load (and so verify: IDX headers, sizes, checksums) both splits of ``dataset`` once per
    process; raises the loader's one-line error. Used by the experiments' pre-sweep checks."""
    loader = getattr(D, _LOADERS[dataset])
    for split in ("train", "test"):
        loader(split, root=root)


def load_pixels(dataset: str, split: str, pixels: str, root: str | None, size: int | None,
                device: str | torch.device) -> torch.Tensor:
    """Images of ``dataset``/``split`` as float ``[N, 784]`` on ``device``: grey levels for
    ``"continuous"`` and ``"dynamic"`` (binarised per batch by :func:`fit`), {0, 1} for
    ``"threshold"``. ``size`` keeps the first ``size`` images (``None``: all)."""
    loader = getattr(D, _LOADERS[dataset])
    images, _ = loader(split, root=root)
    if size is not None:
        if size > images.shape[0]:
            raise ValueError(f"Expected train_size <= {images.shape[0]} ({dataset} {split}), but got {size}")
        images = images[:size]
    x = D.threshold(images) if pixels == "threshold" else D.continuous(images)
    return x.to(device)


# ----------------------------------------------------------------------------- models

def init_linear(layer: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """PyTorch's default ``nn.Linear`` initialisation (uniform ±1/√fan_in for weight and bias,
    i.e. Kaiming-uniform with a = √5), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "none": nn.Identity,
}


def mlp(sizes: Sequence[int], activation: str, generator: torch.Generator, final_activation: str = "none") -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]`` with ``activation`` between them and
    ``final_activation`` after the last (GST's ReLU on the encoder logits)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(init_linear(nn.Linear(a, b), generator))
        last = i == len(sizes) - 2
        layers.append(ACTIVATIONS[final_activation if last else activation]())
    return nn.Sequential(*layers)


def samples_for(estimator: str, distribution: str, n_samples: int) -> int:
    """``n_samples`` raised to the estimator's registered minimum (RLOO: 2)."""
    return max(n_samples, dg.get_estimator(estimator, distribution=distribution).min_samples)


def estimator_kwargs(config: RunConfig, distribution: str, tau: float | None) -> dict[str, Any]:
    """The estimator's hyperparameters from the run config, plus the protocol's ``tau`` when the
    estimator has a temperature and the config does not fix one."""
    spec = dg.get_estimator(config.estimator.name, distribution=distribution)
    kwargs = dict(config.estimator.hparams)
    spec.check_hparam_names(kwargs)
    if tau is not None and "tau" in spec.hyperparameters and "tau" not in config.estimator.hparams:
        kwargs["tau"] = tau
    return kwargs


# ----------------------------------------------------------------------------- training

def require_finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """Raise :class:`Diverged` when ``t`` (e.g. an encoder's logits) has NaN/inf entries."""
    if not bool(torch.isfinite(t).all()):
        raise Diverged(f"{what} became non-finite")
    return t


@contextlib.contextmanager
def diverged_if_nonfinite(module: nn.Module, where: str) -> Iterator[None]:
    """Turn a ``ValueError`` raised while some parameter of ``module`` is NaN/inf (the library's
    input validation rejecting non-finite logits or rates) into :class:`Diverged`."""
    try:
        yield
    except ValueError as e:
        if all(bool(torch.isfinite(t).all()) for t in module.parameters()):
            raise
        raise Diverged(f"parameters became non-finite ({where}): {e}") from e


@dataclasses.dataclass
class VAEProblem:
    """A VAE as the training loop sees it.

    Attributes:
        module: holds every trainable parameter (the optimiser trains ``module.parameters()``).
        loss: ``loss(x, step, generator) -> scalar`` training objective (batch mean) whose
            gradient is the estimator's.
        test_neg_elbo: ``test_neg_elbo(x, generator) -> [B]`` single-sample negative ELBO per
            image, with an exact (hard) latent sample; called under ``torch.no_grad``.
    """

    module: nn.Module
    loss: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
    test_neg_elbo: Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]


def _evaluate(problem: VAEProblem, x: torch.Tensor, batch_size: int, dynamic: bool, generator: torch.Generator) -> float:
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            if dynamic:
                xb = D.dynamic_binarize(xb, generator)
            total += problem.test_neg_elbo(xb, generator).sum().double()
    return float(total) / x.shape[0]


def fit(
    problem: VAEProblem,
    *,
    config: RunConfig,
    ctx: RunContext,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    dynamic: bool,
    probe: Callable[[int], Mapping[str, float]] | None = None,
    measure_efficiency: bool = True,
) -> dict[str, float]:
    """Train with Adam(lr) for ``epochs`` epochs; return the final metrics.

    Per epoch it logs ``train_loss`` (mean training objective), ``test_neg_elbo`` and whatever
    ``probe(epoch)`` returns. Final metrics: ``test_neg_elbo`` (last epoch), ``best_test_neg_elbo``
    (minimum over epochs), ``train_loss``, and the probe's metrics of the last epoch. With
    ``measure_efficiency`` the artifact ``efficiency`` records the mean training seconds per
    epoch and the peak memory of one training step (:func:`step_peak_memory_mb`).
    """
    device = train_x.device
    seed = config.seed
    g_data = derived_generator(seed, "data")  # shuffling (CPU)
    g_noise = derived_generator(seed, "noise", device)  # estimator noise
    g_binarize = derived_generator(seed, "binarize", device)  # dynamic binarisation (train)
    g_test = derived_generator(seed, "test", device)  # test-time sampling and binarisation
    optimizer = torch.optim.Adam(problem.module.parameters(), lr=lr)
    n = train_x.shape[0]
    step, best, epoch_seconds, memory = 0, math.inf, [], None
    final: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=device)
        excluded = 0.0
        for idx in _batches(n, batch_size, g_data, device):
            xb = train_x[idx]
            if dynamic:
                xb = D.dynamic_binarize(xb, g_binarize)

            def train_step() -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = problem.loss(xb, step, g_noise)
                loss.backward()
                optimizer.step()
                return loss.detach()

            with diverged_if_nonfinite(problem.module, f"epoch {epoch}, step {step}"):
                if measure_efficiency and memory is None and step == 2:  # after Adam's state exists
                    t0 = time.perf_counter()
                    memory, loss = step_peak_memory_mb(train_step, device)
                    excluded = time.perf_counter() - t0
                else:
                    loss = train_step()
            total += loss.double() * xb.shape[0]
            step += 1
        train_loss = float(total) / n  # synchronises the device
        epoch_seconds.append(time.perf_counter() - start - excluded)
        if not math.isfinite(train_loss):
            ctx.log_epoch(epoch, {"train_loss": train_loss})
            raise Diverged(f"train_loss = {train_loss} at epoch {epoch}")
        test = _evaluate(problem, test_x, 1000, dynamic, g_test)
        best = min(best, test)
        metrics = {"train_loss": train_loss, "test_neg_elbo": test}
        if probe is not None:
            metrics.update(probe(epoch))
        ctx.log_epoch(epoch, metrics)
        ctx.progress(epoch, epochs, test)
        final = {**metrics, "best_test_neg_elbo": best}
    if measure_efficiency:
        ctx.log_artifact("efficiency", {
            "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
            "peak_memory_mb": memory[0] if memory else float("nan"),
            "memory_measure": memory[1] if memory else "not measured (fewer than 3 steps)",
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "epochs_timed": len(epoch_seconds),
        })
    return final


# ----------------------------------------------------------------------------- probes

def gradient_variance(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], repeats: int) -> float:
    """Average over all scalars of ``params`` of the sample variance (ddof = 1) of their gradient
    over ``repeats`` independent evaluations of ``loss_fn()`` (each draws fresh noise).

    This is GST Sec. 5.1.3's measure with the unbiased variance (the authors' script divides by
    ``repeats``: a factor (R-1)/R = 0.99 at R = 100). Sums are kept in float64.
    """
    if repeats < 2:
        raise ValueError(f"Expected grad_variance_repeats to be an int >= 2, but got {repeats!r}")
    s1 = s2 = None
    for _ in range(repeats):
        grads = torch.autograd.grad(loss_fn(), params)
        g = torch.cat([t.reshape(-1) for t in grads]).double()
        s1 = g if s1 is None else s1 + g
        s2 = g * g if s2 is None else s2 + g * g
    var = (s2 - s1 * s1 / repeats) / (repeats - 1)
    return float(var.mean())


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler back end prints start/stop lines there)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_peak_memory_mb(step: Callable[[], torch.Tensor], device: torch.device) -> tuple[tuple[float, str], torch.Tensor]:
    """Run ``step()`` once and measure the peak memory it allocates, in MiB, above what was
    allocated before it; return ``((peak_mb, how), step's result)``.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
      ``memory_allocated`` before the step.
    * CPU: the profiler's allocation events (``profile_memory=True``), ordered in time; the peak
      of their running sum (allocations minus frees) during the step. Both count every tensor
      the step creates (activations saved for backward, transient noise tensors such as
      GR-MCK's K conditional draws, gradients, optimiser temporaries), not the parameters,
      optimiser state or data set that exist before it.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return (peak / 2**20, "cuda max_memory_allocated above the pre-step allocation"), out
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings(), _quiet_fd2():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = step()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path) as fh:
                events = json.load(fh)["traceEvents"]
    mem = [(e["ts"], e["args"]["Bytes"]) for e in events
           if e.get("name") == "[memory]" and "Bytes" in e.get("args", {})]
    mem.sort(key=lambda tb: tb[0])  # stable: events with equal time stamps keep their recorded order
    running = list(itertools.accumulate(b for _, b in mem))
    peak = max([0, *running])
    return (peak / 2**20, "cpu profiler: peak running sum of allocations minus frees during the step"), out
