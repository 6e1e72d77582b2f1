"""``l2x``: instance-wise feature selection on the synthetic tasks of L2X (Chen et al. 2018, Sec. 4.1),
with the subset relaxations of the SST paper's L2X table (Paulus et al. 2020).

Protocol (L2X's released ``synthetic/explain.py``, FACTS.md §3.6):

* data (:mod:`discretegrad.experiments.data.l2x_synthetic`): ``X ~ N(0, I_10)``, soft labels;
  tasks ``xor``, ``orange_skin``, ``nonlinear_additive``, ``switch`` (the grid), ``k`` = 2, 4, 4, 5
  (the task's number of true features; ``--set k=...`` overrides); 10^6 training rows and
  10^5 validation rows, generated from ``data_seed`` (the same data for every run seed, as L2X's
  fixed data seeds 0 and 1);
* selector: ``10 → 100 → 100 → 10`` logits (ReLU for ``xor`` / ``orange_skin``, SELU otherwise),
  an L2 penalty 1e-3 on its weights (Keras' ``kernel_regularizer``: ``1e-3 Σ W²``, added to the
  loss); with ``corr_topk`` a second head gives the 9 pair logits of adjacent features;
* predictor on ``X ⊙ z``: ``10 → 200 → BN → 200 → BN → 2`` (ReLU) with softmax; loss: cross
  entropy against the soft labels, the gradient through ``z`` is the relaxation's;
* Adam 1e-3, batch 1000, 1 epoch (1000 steps), ``tau`` 0.1 (L2X's τ0) for every relaxation;
* relaxations: ``l2x``, ``softsub``, ``entropy`` (SST exponential-family top-k, straight-through),
  ``binary_entropy`` (LML top-k, straight-through) from the registry, and ``corr_topk``
  (correlated top-k, straight-through; not registered, see :mod:`.common.selection`);
* metrics on the validation rows with the deterministic test-time selection (top-k of the
  logits; the correlated maximiser for ``corr_topk``): ``median_rank`` (per row the median rank
  of the true features under the selector's logits, ties broken at random; mean over rows; the
  optimum is ``(m + 1) / 2``: 1.5 for xor, 2.5 for orange skin and nonlinear additive, 3 for
  switch), ``precision`` (% of selected features that are true) and ``posthoc_accuracy`` (the
  predictor on ``X ⊙ mask`` against the Bayes label ``argmax P(y | X)``; L2X's post-hoc accuracy
  compares with a model trained on all features instead, which these tasks do not need).

Training is logged in ``evals`` equal chunks ("epochs" of the store: each one a tenth of the
data by default) so the learning curves have points; the efficiency artifact's
``seconds_per_epoch`` is therefore seconds per chunk.

Quick protocol: 10^5 training rows seen for 3 passes (300 steps), 10^4 validation rows, 2 seeds,
the five relaxations, the four tasks.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from discretegrad.experiments.common.nets import linear, mlp
from discretegrad.experiments.common.seeding import derived_generator, derived_seed
from discretegrad.experiments.common.selection import (DISTRIBUTION, LOCAL_ESTIMATORS, median_rank, needs_pairs,
                                                       relaxed_loss, subset_precision, test_mask)
from discretegrad.experiments.common.training import train
from discretegrad.experiments.data.l2x_synthetic import N_FEATURES, TASKS, make_task
from discretegrad.harness.contract import EFFICIENCY, EstimatorChoice, Experiment, RunConfig, RunContext, \
    register_experiment, setting

__all__ = ["EXPERIMENT", "Settings", "Selector", "Predictor"]

RELAXATIONS = ("l2x", "softsub", "entropy", "binary_entropy", "corr_topk")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``l2x`` protocol (``--set key=value``)."""

    task: str = setting("xor", "synthetic task", choices=tuple(TASKS))
    k: int | None = setting(None, "subset size (default: the task's number of true features)", ge=1)
    n_train: int = setting(1_000_000, "training rows", ge=1)
    n_valid: int = setting(100_000, "validation rows", ge=1)
    data_seed: int = setting(0, "seed of the generated data (shared by all run seeds)", ge=0)
    epochs: int = setting(1, "passes over the training rows", ge=1)
    evals: int = setting(10, "evaluations (logged chunks) over the run", ge=1)
    batch_size: int = setting(1000, "rows per step", ge=1)
    lr: float = setting(1e-3, "Adam learning rate", gt=0)
    tau: float = setting(0.1, "temperature of the relaxation (unless the estimator fixes one)", gt=0)
    selector_hidden: int = setting(100, "hidden width of the selector", ge=1)
    predictor_hidden: int = setting(200, "hidden width of the predictor", ge=1)
    l2: float = setting(1e-3, "L2 penalty on the selector's weights", ge=0)


class Selector(nn.Module):
    """Feature logits ``θ [B, d]`` and, with ``pairs``, adjacent-pair logits ``φ [B, d-1]``."""

    def __init__(self, d: int, hidden: int, activation: str, pairs: bool, generator: torch.Generator):
        super().__init__()
        act = nn.SELU if activation == "selu" else nn.ReLU
        self.body = nn.Sequential(linear(d, hidden, generator), act(), linear(hidden, hidden, generator), act())
        self.unary = linear(hidden, d, generator)
        self.pair = linear(hidden, d - 1, generator) if pairs else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(x)
        return self.unary(h), (None if self.pair is None else self.pair(h))

    def penalty(self) -> torch.Tensor:
        return sum((m.weight ** 2).sum() for m in self.modules() if isinstance(m, nn.Linear))


class Predictor(nn.Module):
    """Class logits from the masked input ``x ⊙ z`` (any leading dims)."""

    def __init__(self, d: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.first = mlp([d, hidden], "relu", generator, final_activation="relu")
        self.bn1, self.bn2 = nn.BatchNorm1d(hidden), nn.BatchNorm1d(hidden)
        self.second = mlp([hidden, hidden], "relu", generator, final_activation="relu")
        self.out = mlp([hidden, 2], "relu", generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = self.bn2(self.second(self.bn1(self.first(x.reshape(-1, x.shape[-1])))))
        return self.out(h).reshape(*lead, 2)


def _k(p: Settings) -> int:
    k = TASKS[p.task] if p.k is None else p.k
    if k > N_FEATURES:
        raise ValueError(f"Expected --set k <= {N_FEATURES} (the number of features), but got {k}")
    return k


def check(config: RunConfig) -> None:
    _k(config.settings)


def run(config: RunConfig, ctx: RunContext) -> dict[str, float]:
    p: Settings = config.settings
    device, k = torch.device(ctx.device), _k(p)
    train_data = make_task(p.task, p.n_train, torch.Generator().manual_seed(derived_seed(p.data_seed, "train")))
    valid = make_task(p.task, p.n_valid, torch.Generator().manual_seed(derived_seed(p.data_seed, "valid")))
    x, probs = train_data.x.to(device), train_data.probs.to(device)
    vx, vprobs, vtruth = valid.x.to(device), valid.probs.to(device), valid.truth.to(device)
    g_init = derived_generator(config.seed, "init")
    activation = "relu" if p.task in ("xor", "orange_skin") else "selu"
    selector = Selector(N_FEATURES, p.selector_hidden, activation, needs_pairs(config), g_init).to(device)
    predictor = Predictor(N_FEATURES, p.predictor_hidden, g_init).to(device)
    model = nn.ModuleDict({"selector": selector, "predictor": predictor})
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    g_shuffle, g_noise = derived_generator(config.seed, "shuffle"), derived_generator(config.seed, "noise", device)
    g_ties = derived_generator(config.seed, "ties", device)
    per_pass = -(-p.n_train // p.batch_size)
    total = per_pass * p.epochs
    bounds = [round(total * i / p.evals) for i in range(p.evals + 1)]
    orders = {}

    def batch_rows(index: int) -> torch.Tensor:
        epoch, b = divmod(index, per_pass)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = torch.randperm(p.n_train, generator=g_shuffle).to(device)
        return orders[epoch][b * p.batch_size:(b + 1) * p.batch_size]

    def batches(chunk: int):
        return (batch_rows(i) for i in range(bounds[chunk - 1], bounds[chunk]))

    def step(rows: torch.Tensor, index: int) -> torch.Tensor:
        model.train()
        xb, pb = x[rows], probs[rows]
        logits, pair = selector(xb)

        def f(z: torch.Tensor) -> torch.Tensor:  # [n, B, d] -> [n, B]: cross entropy on soft labels
            return -(pb * F.log_softmax(predictor(xb * z), -1)).sum(-1)

        loss = relaxed_loss(config, f, logits, pair, k=k, tau=p.tau, generator=g_noise).mean()
        opt.zero_grad(set_to_none=True)
        (loss + p.l2 * selector.penalty()).backward()
        opt.step()
        return loss.detach()

    def evaluate(chunk: int) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            logits, pair = selector(vx)
            mask = test_mask(config, logits, pair, k)
            bayes = vprobs.argmax(-1)
            acc = (predictor(vx * mask).argmax(-1) == bayes).double().mean()
            ce = -(vprobs * F.log_softmax(predictor(vx * mask), -1)).sum(-1).mean()
            return {"median_rank": float(median_rank(logits, vtruth, g_ties).mean()),
                    "precision": subset_precision(mask, vtruth), "posthoc_accuracy": float(acc),
                    "valid_loss": float(ce)}

    return train(ctx=ctx, epochs=p.evals, batches=batches, step=step, module=model, weight=len,
                 evaluate=evaluate, progress_metric="median_rank")


EXPERIMENT = register_experiment(Experiment(
    name="l2x",
    distribution=DISTRIBUTION,
    paper="L2X (Chen et al. 2018) Sec. 4.1 synthetic tasks, with the relaxations of the SST paper's L2X table",
    description=(
        "Instance-wise selection of k of 10 Gaussian features (L2X's XOR, orange skin, nonlinear additive and "
        "switch tasks, soft labels), selector 10-100-100-10 and predictor 10-200-BN-200-BN-2 trained jointly "
        "through a relaxed k-subset (l2x, softsub, SST entropy and binary-entropy top-k, correlated top-k), "
        "Adam 1e-3, batch 1000, one pass over 10^6 rows, tau 0.1; median rank of the true features, precision and "
        "post-hoc accuracy of the exact top-k on 10^5 validation rows."
    ),
    settings=Settings,
    quick={"n_train": 100_000, "n_valid": 10_000, "epochs": 3, "evals": 6},
    grid={"task": list(TASKS)},
    estimators=tuple(EstimatorChoice(name) for name in RELAXATIONS),
    quick_estimators=tuple(EstimatorChoice(name) for name in RELAXATIONS),
    seeds=tuple(range(5)),
    quick_seeds=(0, 1),
    run=run,
    metrics={"median_rank": True, "precision": False, "posthoc_accuracy": False, "valid_loss": True,
             "train_loss": True},
    check=check,
    artifacts=(EFFICIENCY.with_baseline("l2x"),),
    local_estimators=LOCAL_ESTIMATORS,
    family_options=("k",),
))
