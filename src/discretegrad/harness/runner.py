"""Sweeps: validate and expand (:func:`plan_sweep`), then execute and store (:func:`run_sweep`).

Resume semantics: a run is identified by ``RunConfig.run_id`` (a hash of its fully resolved
config: every setting and the estimator's registry defaults included).
A sweep skips every run the store already holds as ``finished`` or ``diverged`` and (re)runs
the others, including ``failed`` ones. Each ended run is stored in one transaction, so killing
a sweep at any moment (``kill -9`` included) loses at most the runs in flight; rerunning the
same command completes it. Sweeps running concurrently on one store claim each run before
computing it and skip runs another live sweep claimed (:mod:`discretegrad.harness.lease`). The device is not part of a run's identity (it is recorded in the
run's environment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from discretegrad.harness import lease
from discretegrad.harness.backends import Backend, make_backend
from discretegrad.harness.contract import EstimatorChoice, Experiment, RunConfig, get_experiment, load_plugins
from discretegrad.harness.environment import git_info
from discretegrad.harness.execute import Task, checkpoint_interval
from discretegrad.harness.files import check_no_links, has_checkpoint, remove_checkpoint
from discretegrad.harness.grid import DEFAULT_MAX_RUNS, expand, grid_keys, grid_point
from discretegrad.harness.progress import SweepProgress
from discretegrad.harness.store import STORE_FILE, Store, StoreError

__all__ = ["SweepPlan", "SweepSummary", "SweepAborted", "plan_sweep", "run_sweep", "stored_statuses",
           "check_out_dir", "check_device", "experiment_info", "DEFAULT_MAX_RUNS"]


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: nothing has been created yet."""

    experiment: Experiment
    configs: tuple[RunConfig, ...]
    out: Path
    device: str
    plugins: tuple[str, ...]
    flush_denormal: bool = True


@dataclasses.dataclass
class SweepSummary:
    out: Path
    total: int
    skipped: int = 0
    finished: int = 0
    diverged: int = 0
    failed: int = 0
    busy: int = 0  # claimed by another live sweep: left to it
    failures: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (run_id, what, error)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def stored(self) -> int:
        """Runs this sweep stored."""
        return self.finished + self.diverged + self.failed

    def describe(self) -> str:
        busy = f", {self.busy} left to another sweep that claimed them" if self.busy else ""
        return (f"{self.total} runs: {self.finished} finished, {self.diverged} diverged, {self.failed} failed, "
                f"{self.skipped} already stored{busy}; store: {self.out / STORE_FILE}")


class SweepAborted(StoreError):
    """A store error after this sweep had stored some runs (they are kept): exit status 1."""

    exit_status = 1

    def __init__(self, error: StoreError, summary: SweepSummary) -> None:
        super().__init__(f"{error} (the sweep stopped after storing {summary.stored} of {summary.total} runs, "
                         "which are kept; rerun the same command to resume)")
        self.summary = summary


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` must be a writable directory or creatable as one; nothing is created here."""
    p = Path(out)
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"Expected --out to be a directory, but got an existing file {str(p)!r}")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"Expected --out to be a writable directory, but got {str(p)!r} (not writable)")
        check_no_links(p, "runs")
        check_no_links(p, "report")
        if (p / STORE_FILE).exists():
            with Store(p) as store:  # raises ValueError on a corrupt or foreign database
                store.check_writable()  # and on a store of the old run-id scheme
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"Expected --out to be creatable as a directory, but got {str(p)!r} "
                         f"({str(parent)!r} is not a directory)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"Expected --out to be creatable as a directory, but got {str(p)!r} "
                         f"({str(parent)!r} is not writable)")
    return p


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, available on this machine."""
    import re

    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"Expected --device to be cpu, cuda or cuda:N, but got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"Expected --device {device} to be available, but got no CUDA device on this machine")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"Expected --device index < {torch.cuda.device_count()}, but got {device!r}")
    return device


def experiment_info(exp: Experiment) -> dict[str, Any]:
    """What reports need to know about an experiment, as plain JSON (stored with the runs)."""
    return {
        "name": exp.name,
        "distribution": exp.distribution,
        "paper": exp.paper,
        "description": exp.description,
        "metrics": dict(exp.metrics),
        "divergence_metric": exp.divergence_metric,
        "grid_keys": list(grid_keys(exp)),
        "protocol": exp.protocol,  # the paper's protocol: reports name the settings of a run that differ
        "artifacts": [a.to_json() for a in exp.artifacts],
        "paper_results": [{"estimator": label, "grid": dict(point), "metrics": {m: list(v) for m, v in res.items()}}
                          for (label, point), res in exp.paper_results.items()],
        "selection": exp.selection.to_json() if exp.selection is not None else None,
    }


def plan_sweep(
    experiment: str | Experiment,
    *,
    out: str | os.PathLike[str],
    estimators: Sequence[EstimatorChoice | str] | None = None,
    seeds: Sequence[int] | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    quick: bool = False,
    device: str = "cpu",
    plugins: Iterable[str] = (),
    max_runs: int = DEFAULT_MAX_RUNS,
    flush_denormal: bool = True,
) -> SweepPlan:
    """Validate everything and expand the grid; raises ``ValueError``/``TypeError`` with one
    clear message on bad input. Creates nothing. ``flush_denormal``: run with subnormal floats
    flushed to zero on the CPU (:class:`~discretegrad.harness.execute.Task`).

    Estimator hyperparameter values are checked by one tiny call of each estimator
    (:func:`discretegrad.harness.grid.check_hparam_values`); a sweep of more than ``max_runs``
    runs is refused before any run is built."""
    plugins = tuple(plugins)
    load_plugins(plugins)
    exp = get_experiment(experiment if isinstance(experiment, str) else experiment.name)
    if not isinstance(experiment, str) and exp is not experiment:
        raise ValueError(f"Expected experiment {experiment.name!r} to be the registered one "
                         "(register_experiment), but got a different object")
    configs = expand(exp, estimators=estimators, seeds=seeds, overrides=overrides, quick=quick,
                     max_runs=max_runs)
    device = check_device(device)
    checkpoint_interval()  # a bad DISCRETEGRAD_CHECKPOINT_INTERVAL stops the sweep before it starts
    out_path = check_out_dir(out)
    if exp.check is not None:
        checked: set[str] = set()
        for config in configs:  # once per (estimator, settings): the seed changes neither
            key = json.dumps({**config.to_json(), "seed": None}, sort_keys=True, default=str)
            if key not in checked:
                checked.add(key)
                exp.check(config)
    if not isinstance(flush_denormal, bool):
        raise TypeError(f"Expected flush_denormal to be a bool, but got {flush_denormal!r}")
    return SweepPlan(exp, tuple(configs), out_path, device, plugins, flush_denormal)


def stored_statuses(plan: SweepPlan) -> dict[str, str]:
    """``run_id -> status`` of the plan's runs already in the store (reads only; no store: ``{}``);
    ``"running"`` for a run not stored that another sweep's live claim holds (:func:`lease.is_live`),
    and ``"resumes"`` for a run not stored whose earlier, killed attempt left a checkpoint."""
    stored: dict[str, str] = {}
    running: dict[str, str] = {}
    if (plan.out / STORE_FILE).is_file():
        with Store(plan.out) as store:
            stored = store.statuses(c.run_id for c in plan.configs)
            live = {row["run_id"] for row in lease.claims(store) if lease.is_live(row)}
            running = {c.run_id: "running" for c in plan.configs if c.run_id in live}
    resumes = {c.run_id: "resumes" for c in plan.configs if has_checkpoint(plan.out, c.run_id)}
    return {**resumes, **running, **stored}


def run_sweep(
    plan: SweepPlan,
    *,
    workers: int = 1,
    backend: Backend | None = None,
    progress: bool | None = None,
    command: str | None = None,
    lease_s: float = lease.DEFAULT_LEASE_S,
) -> SweepSummary:
    """Run a planned sweep (:func:`plan_sweep`) into its store and return its summary.

    Each run is claimed in the store just before it starts (:mod:`discretegrad.harness.lease`):
    a run another live sweep has claimed is left to it (``summary.busy``), so concurrent sweeps
    on one ``--out`` share the work. A store error raises :class:`StoreError`, or
    :class:`SweepAborted` once this sweep has stored runs (those are kept).

    Args:
        plan: what :func:`plan_sweep` validated and expanded.
        workers: local processes when no ``backend`` is given (1 = in this process).
        backend: an execution backend (:mod:`discretegrad.harness.backends`).
        progress: ``None`` (default): a progress bar when stderr is a terminal, else one line per
            finished run; ``True``: the bar; ``False``: nothing.
        command: the command line recorded with the sweep (default: ``sys.argv``).
        lease_s: seconds a claim lasts without renewal (renewed every quarter of that).
    """
    if not isinstance(plan, SweepPlan):
        raise TypeError(f"Expected plan to be a SweepPlan (from plan_sweep), but got {type(plan).__name__}")
    if isinstance(lease_s, bool) or not isinstance(lease_s, (int, float)) or not 0 < lease_s < float("inf"):
        raise ValueError(f"Expected lease_s to be a finite number of seconds > 0, but got {lease_s!r}")
    if backend is None:
        backend = make_backend(workers)
    exp = plan.experiment
    summary = SweepSummary(plan.out, total=len(plan.configs))
    git = git_info()
    who = lease.Claimant.here()
    with Store(plan.out, create=True) as store:
        store.record_experiment(exp.name, experiment_info(exp))
        stored = store.statuses(c.run_id for c in plan.configs)
        todo = [c for c in plan.configs if stored.get(c.run_id) not in ("finished", "diverged")]
        summary.skipped = len(plan.configs) - len(todo)
        store.record_sweep(exp.name, command if command is not None else shlex.join(sys.argv), len(plan.configs),
                           len(todo))
        labels = {c.run_id: f"{c.estimator.label} seed={c.seed}" for c in todo}
        by_id = {c.run_id: c for c in todo}
        bar = SweepProgress(len(todo), labels, enabled=progress, metric=next(iter(exp.metrics), None))

        def claimed() -> Iterable[Task]:  # pulled by the backend as it starts each run
            for c in todo:
                state = lease.claim(store, c.run_id, who, lease_s)
                if state == "claimed":
                    yield Task(c, plan.device, plan.plugins, git, str(plan.out), plan.flush_denormal)
                    continue
                summary.skipped += state == "stored"
                summary.busy += state == "busy"
                bar.skip()

        try:
            with lease.keep_alive(plan.out, who, lease_s):
                for result in backend.map(claimed(), bar.on_event):
                    _store_result(store, exp, by_id[result.run_id], result, summary, labels)
                    bar.on_result(result)
        except StoreError as e:
            if isinstance(e, SweepAborted) or summary.stored == 0:
                raise
            raise SweepAborted(e, summary) from None
        finally:
            bar.close()
            with contextlib.suppress(StoreError):
                lease.release(store, who)
    return summary


def _store_result(store: Store, exp: Experiment, cfg: RunConfig, result: Any, summary: SweepSummary,
                  labels: Mapping[str, str]) -> None:
    stored = store.write_run(result, grid=grid_point(exp, cfg.params), label=cfg.estimator.label)
    remove_checkpoint(store.dir, result.run_id)  # stored (by us or another sweep): the checkpoint is spent
    if not stored:
        summary.skipped += 1  # another sweep stored it meanwhile (its claim on it had lapsed)
        return
    setattr(summary, result.status, getattr(summary, result.status) + 1)
    if result.status == "failed":
        first = (result.error or "").splitlines()[0] if result.error else ""
        summary.failures.append((result.run_id, labels[result.run_id], first))
