"""The contract between the experiment harness (runner, store, CLI) and the experiments.

An experiment is one module that builds an :class:`Experiment` and registers it with
:func:`register_experiment`. The harness expands a grid of :class:`RunConfig`s
(estimator choice x hyperparameters x seed), calls ``experiment.run(config, ctx)`` for each
unfinished one, and stores what it logs. Experiments know nothing about storage, workers or
progress bars; the harness knows nothing about models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

__all__ = [
    "EstimatorChoice",
    "RunConfig",
    "RunContext",
    "Diverged",
    "Experiment",
    "register_experiment",
    "get_experiment",
    "experiments",
    "load_plugins",
    "PLUGINS_ENV",
]

PLUGINS_ENV = "DISCRETEGRAD_PLUGINS"
"""Environment variable naming extra modules (comma-separated) that register experiments."""


@dataclasses.dataclass(frozen=True)
class EstimatorChoice:
    """One estimator with fixed hyperparameters, e.g. ``EstimatorChoice("gst", {"gap": 1.2})``.

    ``label`` is how tables name it (``gst(gap=1.2)``); ``hparams`` are passed to
    :func:`discretegrad.surrogate` (or the drop-in op) as keyword arguments.
    """

    name: str
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.hparams:
            return self.name
        return self.name + "(" + ", ".join(f"{k}={v}" for k, v in sorted(self.hparams.items())) + ")"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run. Its hash identifies the run in the store."""

    experiment: str
    estimator: EstimatorChoice
    seed: int
    params: Mapping[str, Any]  # the experiment's protocol settings (defaults + --quick + --set + grid point)

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "estimator": self.estimator.name,
                "estimator_hparams": dict(self.estimator.hparams), "seed": self.seed, "params": dict(self.params)}

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Diverged(Exception):
    """Raised (by an experiment or by the harness) when the loss became NaN/inf."""


class RunContext(Protocol):
    """What the harness hands to ``Experiment.run``."""

    device: str  # "cpu" or "cuda[:i]"

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record one epoch's metrics (floats). Raises :class:`Diverged` on a non-finite value of
        ``metrics[experiment.divergence_metric]``."""

    def progress(self, epoch: int, total_epochs: int, metric: float | None = None) -> None:
        """Report progress within the run (for the progress bar); cheap, may be called often."""

    def log_artifact(self, name: str, data: Mapping[str, Any]) -> None:
        """Store a JSON-serialisable record with the run (e.g. the efficiency measurement)."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A reproducible experiment.

    Attributes:
        name: CLI name (``categorical-vae``).
        distribution: the latent distribution; ``--estimators`` must be registered for it.
        paper: where the table comes from (``GST Table 3``).
        description: one paragraph (protocol and the choices the paper leaves open).
        defaults: the paper protocol's settings; the keys are exactly those ``--set`` accepts.
        quick: overrides applied by ``--quick`` (fewer epochs, etc.; same statistical meaning).
        grid: settings swept over by default, e.g. ``{"tau": [1.0, 0.5, 0.1, 0.01]}``; a
            ``--set key=value`` fixes that key instead.
        estimators: default estimator choices (paper's); ``quick_estimators`` for ``--quick``.
        seeds / quick_seeds: default seeds.
        run: ``run(config, ctx) -> final metrics`` (``dict[str, float]``); logs per-epoch metrics
            through ``ctx.log_epoch``; raises :class:`Diverged` on NaN/inf loss.
        metrics: the metrics reported in tables, first = primary; ``lower_is_better`` per metric.
        divergence_metric: the metric whose non-finite value marks the run diverged.
        paper_results: ``{(estimator label, frozen grid point): {metric: (mean, std or None)}}``
            with the grid point as a tuple of sorted ``(key, value)`` pairs.
        check: optional ``check(config)`` that validates a run's settings and the data it will
            read (checksums), raising ``ValueError``/``TypeError``/``OSError`` with one message.
            The harness calls it for every distinct (estimator, settings) of a sweep before it
            creates anything, so bad settings or a corrupt data file stop the sweep up front.
    """

    name: str
    distribution: str
    paper: str
    description: str
    defaults: Mapping[str, Any]
    quick: Mapping[str, Any]
    grid: Mapping[str, list[Any]]
    estimators: tuple[EstimatorChoice, ...]
    quick_estimators: tuple[EstimatorChoice, ...]
    seeds: tuple[int, ...]
    quick_seeds: tuple[int, ...]
    run: Callable[[RunConfig, RunContext], dict[str, float]]
    metrics: Mapping[str, bool]  # metric name -> lower_is_better
    divergence_metric: str = "train_loss"
    quick_grid: Mapping[str, list[Any]] | None = None
    paper_results: Mapping[tuple[str, tuple[tuple[str, Any], ...]], Mapping[str, tuple[float, float | None]]] = (
        dataclasses.field(default_factory=dict))
    check: Callable[[RunConfig], None] | None = None


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(exp: Experiment) -> Experiment:
    if exp.name in _EXPERIMENTS:
        raise ValueError(f"experiment {exp.name!r} is already registered")
    _EXPERIMENTS[exp.name] = exp
    return exp


def load_plugins(modules: str | Iterable[str]) -> list[str]:
    """Import user modules that call :func:`register_experiment` (the plugin hook).

    ``modules`` is an iterable of importable module names or one comma-separated string;
    importing a module twice is a no-op. Returns the names imported. A module that cannot be
    imported raises ``ValueError`` naming it (the CLI prints it as one line).
    """
    names = [m.strip() for m in (modules.split(",") if isinstance(modules, str) else modules)]
    loaded = []
    for name in names:
        if not name:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # an import error of a user module: report which one and why
            raise ValueError(f"Expected plugin module {name!r} to be importable, but got "
                             f"{type(e).__name__}: {e}") from e
        loaded.append(name)
    return loaded


def _load_all() -> None:
    from discretegrad.experiments import _modules  # noqa: F401

    load_plugins(os.environ.get(PLUGINS_ENV, ""))


def get_experiment(name: str) -> Experiment:
    _load_all()
    if name not in _EXPERIMENTS:
        raise ValueError(f"Expected experiment to be one of {sorted(_EXPERIMENTS)}, but got {name!r}")
    return _EXPERIMENTS[name]


def experiments() -> list[Experiment]:
    _load_all()
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]
