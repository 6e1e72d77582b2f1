"""The contract between the experiment harness (runner, store, CLI) and the experiments.

An experiment is one module that declares its settings (a dataclass of :func:`setting`
fields), builds an :class:`Experiment` and registers it with :func:`register_experiment`. The
harness expands a grid of :class:`RunConfig`s (estimator choice x hyperparameters x seed),
calls ``experiment.run(config, ctx)`` for each unfinished one, and stores what it logs. This is
the only harness module experiments import. Experiments know nothing about storage, workers or
progress bars; the harness knows nothing about models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from discretegrad._format import estimator_label
from discretegrad.harness import settings as _settings
from discretegrad.harness.settings import setting

__all__ = [
    "setting",
    "EstimatorChoice",
    "RunConfig",
    "RunContext",
    "Diverged",
    "Artifact",
    "EFFICIENCY",
    "Experiment",
    "Selection",
    "register_experiment",
    "get_experiment",
    "experiments",
    "load_plugins",
    "PLUGINS_ENV",
    "BUILTIN_EXPERIMENTS",
    "run_id",
]

PLUGINS_ENV = "DISCRETEGRAD_PLUGINS"
"""Environment variable naming extra modules (comma-separated) that register experiments."""

BUILTIN_EXPERIMENTS = "discretegrad.experiments._modules"
"""The one list of the package's experiment modules: the harness's only way into
``discretegrad.experiments`` (imported by name, on first use)."""


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
        return estimator_label(self.name, self.hparams)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run. Its hash identifies the run in the store.

    ``settings`` is the experiment's typed settings object (every setting, defaults included);
    ``estimator_defaults`` the registry's defaults of every hyperparameter of the estimator
    (``discretegrad.registry.get(name, distribution=...).hyperparameters``) at planning time,
    so that a changed estimator default changes the run's identity. Build one with
    :func:`discretegrad.harness.grid.make_config`.
    """

    experiment: str
    estimator: EstimatorChoice
    seed: int
    settings: Any  # an instance of the experiment's settings dataclass
    estimator_defaults: Mapping[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        """The settings as a plain dict (how the store keeps them): every setting, except one
        declared ``in_id_at_default=False`` while it has its default
        (:func:`discretegrad.harness.settings.identity`)."""
        return _settings.identity(self.settings)

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "estimator": self.estimator.name,
                "estimator_hparams": dict(self.estimator.hparams),
                "estimator_defaults": dict(self.estimator_defaults), "seed": self.seed, "params": self.params}

    @property
    def run_id(self) -> str:
        return run_id(self.to_json())


def run_id(config_json: Mapping[str, Any]) -> str:
    """The id of a run: the first 16 hex digits of SHA-256 of its config JSON (keys sorted)."""
    blob = json.dumps(config_json, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Diverged(Exception):
    """Raised (by an experiment or by the harness) when the loss became NaN/inf."""


class RunContext(Protocol):
    """What the harness hands to ``Experiment.run``."""

    device: str  # "cpu" or "cuda[:i]"

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record one epoch's metrics (floats). Raises :class:`Diverged` on a non-finite value of
        ``metrics[experiment.divergence_metric]``."""

    def progress(self, epoch: int, total_epochs: int, metric: float | None = None, *,
                 name: str | None = None) -> None:
        """Report progress within the run (for the progress bar, which shows ``metric`` under
        ``name``); cheap, may be called often."""

    def log_artifact(self, name: str, data: Mapping[str, Any]) -> None:
        """Store a JSON-serialisable record with the run (e.g. the efficiency measurement)."""

    # Optional (a context without them keeps no checkpoints; the training loop checks with getattr):
    # def save_checkpoint(self, data: bytes) -> bool: keep ``data`` as the run's checkpoint, replacing
    #     the last one; False when the run keeps none.
    # def load_checkpoint(self) -> bytes | None: the checkpoint an earlier, killed attempt left.
    # def note_resumed(self, epoch: int) -> None: the loop resumed after ``epoch`` from a checkpoint.
    # checkpoint_interval: float  (seconds between checkpoints; the loop's default is 60)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A JSON record that runs log with ``ctx.log_artifact(name, {...})``, as reports read it.

    ``columns``: ``(field, column header)`` pairs the report tabulates (mean over the finished
    runs of a setting); ``baseline``: the estimator *name* whose row the ratio columns divide by
    at the same setting (``None``: no ratios).
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    baseline: str | None = None

    def with_baseline(self, baseline: str) -> Artifact:
        return dataclasses.replace(self, baseline=baseline)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [list(c) for c in self.columns], "baseline": self.baseline}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Artifact:
        return cls(data["name"], tuple((f, h) for f, h in data["columns"]), data.get("baseline"))


EFFICIENCY = Artifact("efficiency", (("seconds_per_epoch", "seconds / epoch"), ("peak_memory_mb", "peak memory (MB)")))
"""The efficiency artifact (GST Table 5): mean training seconds per epoch and the peak memory
(MiB) of one training step; the producer may add fields (``memory_measure``, ``device``, ...).
An experiment declares ``artifacts=(EFFICIENCY.with_baseline("stgs"),)`` for ratio columns."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """How the paper picks one run per table cell among several: the best of a random search.

    Runs of one estimator whose settings differ only in the ``over`` keys (e.g. ``("trial",)``) and in
    their seed are the candidates of one cell; the one with the best final ``metric`` (e.g.
    ``best_valid_elbo``, higher is better) is the cell's run, and reports show its ``report`` metrics
    (e.g. the test metrics) next to the paper's. With a single value of the ``over`` keys (a
    protocol without the search) the candidates are the seeds.
    """

    over: tuple[str, ...]
    metric: str
    higher_is_better: bool
    report: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"over": list(self.over), "metric": self.metric, "higher_is_better": self.higher_is_better,
                "report": list(self.report)}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A reproducible experiment.

    Attributes:
        name: CLI name (``categorical-vae``).
        distribution: the latent distribution; ``--estimators`` must be registered for it.
        paper: where the table comes from (``GST Table 3``).
        description: one paragraph (protocol and the choices the paper leaves open).
        settings: the settings dataclass (fields made with :func:`setting`): the paper
            protocol's defaults, types, allowed values and help; its fields are exactly the
            keys ``--set`` accepts. The harness validates every value against it once and
            hands ``run`` the typed object as ``config.settings``.
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
        artifacts: the artifacts runs log that reports tabulate (:class:`Artifact`), e.g.
            ``EFFICIENCY.with_baseline("stgs")``.
        local_estimators: estimators the experiment implements itself, outside the registry (a
            relaxation whose forward law is not the distribution's, e.g. correlated top-k for
            ``topk``): ``{name: {hyperparameter: default}}``. ``--estimators`` accepts these names
            and their hyperparameter names; their defaults are part of the run id as the
            registry's are; their values are checked by the run (or ``check``), not by a probe call.
        selection: how the paper picks one run per cell among several (:class:`Selection`: the best
            trial of a random search); reports add a table of the picked runs. ``None``: no selection.
        family_options: options of the distribution's family that the run supplies itself from its
            settings (``("k",)`` for a k-subset experiment whose ``k`` is a setting): not required
            of, and refused in, ``--estimators`` hyperparameters. A run that samples other families
            than ``distribution`` (NRI's latent structures) declares theirs too; an estimator is
            only held to the ones it takes (:func:`discretegrad.experiments.common.estimators.family_options`
            picks a family's from the run's values).
        check: optional ``check(config)`` that validates what the settings types cannot (an
            estimator/architecture pair) and the data a run will read (checksums), raising
            ``ValueError``/``TypeError``/``OSError`` with one message. The harness calls it for
            every distinct (estimator, settings) of a sweep before it creates anything.
    """

    name: str
    distribution: str
    paper: str
    description: str
    settings: type
    quick: Mapping[str, Any]
    grid: Mapping[str, list[Any]]
    estimators: tuple[EstimatorChoice, ...]
    quick_estimators: tuple[EstimatorChoice, ...]
    seeds: tuple[int, ...]
    quick_seeds: tuple[int, ...]
    run: Callable[[RunConfig, RunContext], dict[str, float]]
    metrics: Mapping[str, bool | None]  # metric name -> lower_is_better (None: no direction)
    divergence_metric: str = "train_loss"
    quick_grid: Mapping[str, list[Any]] | None = None
    paper_results: Mapping[tuple[str, tuple[tuple[str, Any], ...]], Mapping[str, tuple[float, float | None]]] = (
        dataclasses.field(default_factory=dict))
    artifacts: tuple[Artifact, ...] = ()
    check: Callable[[RunConfig], None] | None = None
    local_estimators: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    family_options: tuple[str, ...] = ()
    selection: Selection | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        """Every setting's default (from the settings dataclass)."""
        return _settings.defaults(self.settings)

    @property
    def protocol(self) -> dict[str, Any]:
        """The paper's protocol: the defaults of the settings that are part of it."""
        return _settings.protocol_defaults(self.settings)

    def validate(self) -> None:
        """Check the declaration: the settings dataclass, and ``quick`` / grid values against it."""
        _settings.fields(self.settings)
        _settings.coerce_all(self.settings, self.quick, what=f"{self.name} quick setting")
        for name, grid in (("grid", self.grid), ("quick_grid", self.quick_grid or {})):
            for key, values in grid.items():
                for value in values:
                    _settings.coerce(self.settings, key, value, what=f"{self.name} {name} {key}",
                                     experiment=self.name)
        if self.selection is not None:
            sel = self.selection
            unknown = [k for k in sel.over if k not in _settings.defaults(self.settings)]
            if not sel.over or unknown:
                raise ValueError(f"Expected {self.name}'s selection.over to name settings, but got {list(sel.over)}")
            missing = [m for m in (sel.metric, *sel.report) if m not in self.metrics]
            if missing:
                raise ValueError(f"Expected {self.name}'s selection metrics to be among its metrics "
                                 f"{sorted(self.metrics)}, but got {missing}")


_EXPERIMENTS: dict[str, Experiment] = {}


_EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def register_experiment(exp: Experiment) -> Experiment:
    """Register ``exp`` under its name (once), after checking its declaration. The name becomes
    a path component (``runs/<name>``, report directories), so it is letters, digits, ``-`` and
    ``_`` only (at most 64, not starting with ``-`` or ``_``)."""
    if not isinstance(exp.name, str) or not _EXPERIMENT_NAME.fullmatch(exp.name):
        raise ValueError(f"Expected experiment name to be letters, digits, '-' and '_' (a safe path component, "
                         f"at most 64 characters), but got {exp.name!r}")
    exp.validate()
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
    importlib.import_module(BUILTIN_EXPERIMENTS)
    load_plugins(os.environ.get(PLUGINS_ENV, ""))


def get_experiment(name: str) -> Experiment:
    _load_all()
    if name not in _EXPERIMENTS:
        raise ValueError(f"Expected experiment to be one of {sorted(_EXPERIMENTS)}, but got {name!r}")
    return _EXPERIMENTS[name]


def experiments() -> list[Experiment]:
    _load_all()
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]
