"""A tiny experiment for the harness tests, registered through the plugin hook
(``DISCRETEGRAD_PLUGINS=toy_experiment`` or ``--plugin toy_experiment`` with ``tests/`` on the path).

V categorical variables with K classes, cost f(z) = ||z - onehot(target)||^2 summed over the
variables, SGD on the logits with the chosen estimator through :func:`discretegrad.surrogate`.
The exact expected cost is sum_v 2 (1 - pi_v[target]), logged as ``train_loss``. Switches:
``diverge_seed`` (that seed's run logs NaN at epoch 2, or raises Diverged with
``diverge_mode="raise"``), ``fail_seed`` (that seed's run raises RuntimeError at epoch 2) and
``crash_seed`` (that seed's process exits at epoch 2: worker crash), ``sleep`` (seconds per
epoch, for the kill test) and ``attempt_log`` (a file every run start is appended to).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time

import torch

import discretegrad as dg
from discretegrad.harness.contract import (EFFICIENCY, Diverged, EstimatorChoice, Experiment, Selection,
                                           register_experiment, setting)

V, K = 3, 4


@dataclasses.dataclass(frozen=True)
class ToySettings:
    epochs: int = setting(3, "epochs", ge=1)
    steps: int = setting(5, "SGD steps per epoch", ge=1)
    lr: float = setting(0.5, "SGD step size", gt=0)
    target: int = setting(0, "the class every variable learns", ge=0)
    sleep: float = setting(0.0, "seconds slept per epoch (for the kill test)", ge=0)
    diverge_seed: int = setting(-1, "this seed's run diverges at epoch 2")
    diverge_mode: str = setting("nan", "how it diverges", choices=("nan", "raise"))
    fail_seed: int = setting(-1, "this seed's run raises at epoch 2")
    crash_seed: int = setting(-1, "this seed's process exits at epoch 2")
    attempt_log: str = setting("", "a file each run appends estimator:seed to when it starts (counts retries)")


def _run(config, ctx):
    p = config.settings
    if p.attempt_log:
        with open(p.attempt_log, "a") as log:
            log.write(f"{config.estimator.name}:{config.seed}\n")
    gen = torch.Generator().manual_seed(config.seed)
    logits = torch.zeros(V, K, dtype=torch.float64, requires_grad=True)
    onehot = torch.zeros(V, K, dtype=torch.float64)
    onehot[:, p.target] = 1.0
    hp = dict(config.estimator.hparams)

    def f(z):
        return ((z - onehot) ** 2).sum((-1, -2))

    def estimate(n):
        return dg.surrogate(f, logits, distribution="categorical", estimator=config.estimator.name,
                            n_samples=n, generator=gen, **hp)

    train_loss = float("nan")
    seconds = []
    for epoch in range(1, p.epochs + 1):
        t0 = time.perf_counter()
        for _ in range(p.steps):  # plain SGD (torch.optim would import torch._dynamo: seconds)
            (grad,) = torch.autograd.grad(estimate(8), logits)
            with torch.no_grad():
                logits -= p.lr * grad
        grads = []
        for _ in range(8):  # single-sample gradient draws for the variance probe
            (g,) = torch.autograd.grad(estimate(1), logits)
            grads.append(g)
        grad_var = float(torch.stack(grads).var(0).sum())
        with torch.no_grad():
            pi_t = torch.softmax(logits, -1)[:, p.target]
            train_loss = float((2 * (1 - pi_t)).sum())
        if config.seed == p.crash_seed and epoch == 2:
            os._exit(7)  # the process dies (a segfault or the OOM killer, as far as the harness can tell)
        if config.seed == p.fail_seed and epoch == 2:
            raise RuntimeError("toy failure at epoch 2")
        if config.seed == p.diverge_seed and epoch == 2:
            if p.diverge_mode == "raise":
                raise Diverged("toy divergence")
            train_loss = float("nan")
        time.sleep(p.sleep)
        seconds.append(time.perf_counter() - t0)
        ctx.progress(epoch, p.epochs, train_loss, name="train_loss")
        ctx.log_epoch(epoch, {"train_loss": train_loss, "prob_target": float(pi_t.mean()), "grad_variance": grad_var})
    ctx.log_artifact("efficiency", {"seconds_per_epoch": sum(seconds) / len(seconds),
                                    "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    ctx.log_artifact("threads", {"torch": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")})
    return {"final_loss": train_loss, "prob_target": float(pi_t.mean())}


TOY = register_experiment(Experiment(
    name="toy",
    distribution="categorical",
    paper="toy (harness tests)",
    description="Learn V=3 categorical variables towards one class by SGD on the logits.",
    settings=ToySettings,
    quick={"epochs": 2},
    grid={"lr": [0.5, 1.0]},
    quick_grid={"lr": [1.0]},
    estimators=(EstimatorChoice("stgs"), EstimatorChoice("gst", {"gap": 1.0})),
    quick_estimators=(EstimatorChoice("stgs"), EstimatorChoice("st")),
    seeds=(0, 1, 2),
    quick_seeds=(0, 1),
    run=_run,
    metrics={"final_loss": True, "prob_target": False},
    divergence_metric="train_loss",
    artifacts=(EFFICIENCY.with_baseline("stgs"),),
    paper_results={("stgs", (("lr", 1.0),)): {"final_loss": (0.5, 0.1)}},
))


def _run_loop(config, ctx):
    """The same problem through the generic training loop, which keeps checkpoints (``toy-loop``)."""
    from discretegrad.experiments.common.training import train

    p = config.settings
    gen = torch.Generator().manual_seed(config.seed)
    holder = torch.nn.Module()
    holder.logits = torch.nn.Parameter(torch.zeros(V, K, dtype=torch.float64))
    onehot = torch.zeros(V, K, dtype=torch.float64)
    onehot[:, p.target] = 1.0

    def step(batch, index):
        z = dg.surrogate(lambda z: ((z - onehot) ** 2).sum((-1, -2)), holder.logits, distribution="categorical",
                         estimator=config.estimator.name, n_samples=8, generator=gen, **dict(config.estimator.hparams))
        (grad,) = torch.autograd.grad(z, holder.logits)
        with torch.no_grad():
            holder.logits -= p.lr * grad
        return z.detach()

    def evaluate(epoch):
        time.sleep(p.sleep)
        if config.seed == p.crash_seed and epoch == 2:
            os._exit(7)
        with torch.no_grad():
            return {"prob_target": float(torch.softmax(holder.logits, -1)[:, p.target].mean())}

    final = train(ctx=ctx, epochs=p.epochs, batches=lambda epoch: range(p.steps), step=step, module=holder,
                  evaluate=evaluate, state={"module": holder, "gen": gen})
    return {"final_loss": final["train_loss"], "prob_target": final["prob_target"]}


TOY_LOOP = register_experiment(dataclasses.replace(TOY, name="toy-loop", run=_run_loop,
                                                   description="toy through the generic training loop"))


TOY_PICK = register_experiment(dataclasses.replace(
    TOY, name="toy-pick", description="toy whose paper picks, per estimator, the lr and seed of the lowest final_loss",
    selection=Selection(over=("lr",), metric="final_loss", higher_is_better=False, report=("prob_target", "final_loss"))))
