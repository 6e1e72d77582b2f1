"""The two discrete-VAE experiments' training protocol on top of the generic loop.

An experiment supplies a :class:`VAEProblem` (the model's training loss for a batch and its
single-sample test negative ELBO per image); :func:`fit` does the rest identically for every
estimator: Adam, shuffled mini-batches drawn with an explicit generator, dynamic binarisation
when asked, and, per epoch, ``train_loss``, ``test_neg_elbo`` and whatever the probe returns
(:func:`~discretegrad.experiments.common.training.train` logs them and raises ``Diverged``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from discretegrad.experiments.common.seeding import derived_generator
from discretegrad.experiments.common.training import Best, train
from discretegrad.experiments.data.pixels import dynamic_binarize
from discretegrad.harness.contract import RunConfig, RunContext

__all__ = ["VAEProblem", "fit"]

_TEST_BATCH = 1000


@dataclasses.dataclass
class VAEProblem:
    """A VAE as the training loop sees it.

    Attributes:
        module: holds every trainable parameter (the optimiser trains ``module.parameters()``).
        loss: ``loss(x, step, generator) -> scalar`` training objective (batch mean) whose
            gradient is the estimator's.
        test_neg_elbo: ``test_neg_elbo(x, generator) -> [B]`` single-sample negative ELBO per
            image, with an exact (hard) latent sample; called under ``torch.no_grad``.
        state: whatever else the run's future depends on (e.g. a probe's generators), saved in
            the run's checkpoints with the module, the optimiser and :func:`fit`'s generators.
    """

    module: nn.Module
    loss: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
    test_neg_elbo: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    state: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _evaluate(problem: VAEProblem, x: torch.Tensor, batch_size: int, dynamic: bool, generator: torch.Generator) -> float:
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            if dynamic:
                xb = dynamic_binarize(xb, generator)
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
    epoch and the peak memory of one training step.
    """
    device = train_x.device
    seed = config.seed
    g_data = derived_generator(seed, "data")  # shuffling (CPU)
    g_noise = derived_generator(seed, "noise", device)  # estimator noise
    g_binarize = derived_generator(seed, "binarize", device)  # dynamic binarisation (train)
    g_test = derived_generator(seed, "test", device)  # test-time sampling and binarisation
    optimizer = torch.optim.Adam(problem.module.parameters(), lr=lr)
    n = train_x.shape[0]

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        perm = torch.randperm(n, generator=g_data).to(device)
        for start in range(0, n, batch_size):
            xb = train_x[perm[start:start + batch_size]]
            yield dynamic_binarize(xb, g_binarize) if dynamic else xb

    def step(xb: torch.Tensor, index: int) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = problem.loss(xb, index, g_noise)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def evaluate(epoch: int) -> dict[str, float]:
        return {"test_neg_elbo": _evaluate(problem, test_x, _TEST_BATCH, dynamic, g_test)}

    hooks = [lambda epoch, metrics: probe(epoch)] if probe is not None else []
    return train(ctx=ctx, epochs=epochs, batches=batches, step=step, module=problem.module,
                 weight=lambda xb: xb.shape[0], evaluate=evaluate, hooks=hooks, progress_metric="test_neg_elbo",
                 best=Best("test_neg_elbo"), measure_efficiency=measure_efficiency,
                 state={"module": problem.module, "optimizer": optimizer, "g_data": g_data, "g_noise": g_noise,
                        "g_binarize": g_binarize, "g_test": g_test, **problem.state})
