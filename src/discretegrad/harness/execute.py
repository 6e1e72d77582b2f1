"""Running one run: :class:`Task` in, :class:`RunResult` out (the unit every backend ships).

:func:`execute_task` is a top-level pure-ish function of picklable data, so any backend
(in-process, local processes, a cluster) can call it wherever it runs. It never raises for a
failing experiment: a NaN/inf loss or :class:`Diverged` gives status ``"diverged"``, any other
exception ``"failed"`` with the message and traceback. Per-epoch metrics and artifacts are
buffered in the result; the parent stores them with the run in one transaction.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from discretegrad.harness.contract import Diverged, RunConfig, get_experiment, load_plugins
from discretegrad.harness.environment import environment
from discretegrad.harness.files import read_checkpoint, write_checkpoint

__all__ = ["Task", "RunResult", "ProgressEvent", "execute_task", "STATUSES", "checkpoint_interval"]

STATUSES = ("finished", "diverged", "failed")


@dataclasses.dataclass(frozen=True)
class Task:
    """What a backend needs to run one run anywhere: the config, the device, the plugin modules
    to import first (so user experiments resolve in a fresh process), the git state, the
    sweep's output directory, where the run keeps its checkpoint (``None``: no checkpoints), and
    whether the CPU flushes subnormal floats to zero during the run.

    ``flush_denormal`` (default on; ``torch.set_flush_denormal``, reset afterwards): arithmetic on
    subnormal floats (below 1.2e-38 in float32) is about 100 times slower on x86 CPUs, and the
    backward pass of a straight-through estimator at a low temperature is full of them (ListOps'
    Tree-LSTM with STGS at tau 0.01 trains 2.3x faster with them flushed, to the same bits over 60
    steps: ``results/listops/denormals.md``). Like the device, it is not part of a run's identity;
    the run's environment records it."""

    config: RunConfig
    device: str = "cpu"
    plugins: tuple[str, ...] = ()
    git: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    out: str | None = None
    flush_denormal: bool = True

    @property
    def run_id(self) -> str:
        return self.config.run_id


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """A progress message from a running run (for the progress bar)."""

    run_id: str
    epoch: int | None = None
    total_epochs: int | None = None
    metric: float | None = None
    metric_name: str | None = None
    started: bool = False


@dataclasses.dataclass
class RunResult:
    """Everything the store keeps about one executed run (plain, picklable data)."""

    run_id: str
    config: dict[str, Any]
    status: str
    metrics: dict[str, float | None]
    epochs: list[tuple[int, dict[str, float | None]]]
    artifacts: dict[str, Any]
    error: str | None
    environment: dict[str, Any]
    started_at: float
    finished_at: float


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _to_float(what: str, key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"Expected {what}[{key!r}] to be a number, but got {type(value).__name__}") from None


class _Context:
    """The harness's :class:`~discretegrad.harness.contract.RunContext`."""

    _MIN_INTERVAL = 0.2  # seconds between progress messages within one epoch

    def __init__(self, run_id: str, device: str, divergence_metric: str, primary: str | None,
                 emit: Callable[[ProgressEvent], None], out: str | None = None) -> None:
        self.device = device
        self._out = None if out is None else Path(out)
        self._run_id = run_id
        self._div = divergence_metric
        self._primary = primary
        self._emit = emit
        self._last_emit = 0.0
        self._last_epoch: int | None = None
        self._total: int | None = None
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.artifacts: dict[str, Any] = {}
        self.resumed_from: int | None = None
        self.checkpoint_interval = checkpoint_interval()

    def _send(self, epoch: int | None, metric: float | None, name: str | None, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._last_emit >= self._MIN_INTERVAL:
            self._last_emit = now
            self._emit(ProgressEvent(self._run_id, epoch, self._total, metric, name))

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"Expected epoch to be an int, but got {epoch!r}")
        if self.epochs and epoch <= self.epochs[-1][0]:
            raise ValueError(f"Expected epoch to be greater than the previous one ({self.epochs[-1][0]}), "
                             f"but got {epoch}")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"Expected metrics to be a mapping, but got {type(metrics).__name__}")
        clean = {str(k): _to_float("metrics", k, v) for k, v in metrics.items()}
        self.epochs.append((epoch, clean))
        name = self._primary if self._primary in clean else (self._div if self._div in clean else None)
        self._send(epoch, clean.get(name) if name else None, name, force=True)
        value = clean.get(self._div)
        if value is not None and not math.isfinite(value):
            raise Diverged(f"{self._div} = {value} at epoch {epoch}")

    def progress(self, epoch: int, total_epochs: int, metric: float | None = None, *,
                 name: str | None = None) -> None:
        self._total = total_epochs
        new_epoch = epoch != self._last_epoch
        self._last_epoch = epoch
        self._send(epoch, None if metric is None else float(metric), name, force=new_epoch)

    def save_checkpoint(self, data: bytes) -> bool:
        """Keep ``data`` as the run's checkpoint (replacing the last one); ``False`` when this
        run keeps none (no output directory, or it cannot be written: the run goes on without)."""
        if self._out is None:
            return False
        try:
            write_checkpoint(self._out, self._run_id, data)
        except (OSError, ValueError):
            self._out = None  # e.g. a cluster node that cannot reach --out: no more attempts
            return False
        return True

    def note_resumed(self, epoch: int) -> None:
        """The training loop resumed after ``epoch`` from a checkpoint (recorded in the run's
        environment as ``resumed_from_epoch``)."""
        self.resumed_from = int(epoch)

    def load_checkpoint(self) -> bytes | None:
        """The checkpoint an earlier attempt of this run left, or ``None``."""
        if self._out is None:
            return None
        try:
            return read_checkpoint(self._out, self._run_id)
        except (OSError, ValueError):
            return None

    def log_artifact(self, name: str, data: Mapping[str, Any]) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Expected artifact name to be a non-empty str, but got {name!r}")
        try:  # a JSON round trip: stored exactly as a JSON consumer will read it
            self.artifacts[name] = json.loads(json.dumps(data))
        except (TypeError, ValueError) as e:
            raise TypeError(f"Expected artifact {name!r} to be JSON-serialisable, but got {e}") from None


def checkpoint_interval() -> float:
    """Seconds between a run's checkpoints: ``DISCRETEGRAD_CHECKPOINT_INTERVAL``, default 60."""
    text = os.environ.get("DISCRETEGRAD_CHECKPOINT_INTERVAL", "60")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"Expected DISCRETEGRAD_CHECKPOINT_INTERVAL to be a number of seconds >= 0, but got {text!r}")
    return value


def execute_task(task: Task, emit: Callable[[ProgressEvent], None] | None = None) -> RunResult:
    """Run ``task`` in this process and return its result (never raises for a failing run;
    ``KeyboardInterrupt`` and ``SystemExit`` pass through)."""
    emit = emit or (lambda ev: None)
    cfg = task.config
    started = time.time()
    env: dict[str, Any] = {}
    ctx = None
    status, metrics, error = "failed", {}, None
    try:
        load_plugins(task.plugins)
        exp = get_experiment(cfg.experiment)
        import torch

        env = {**environment(task.device, dict(task.git)), "flush_denormal": bool(task.flush_denormal)}
        primary = next(iter(exp.metrics), None)
        ctx = _Context(cfg.run_id, task.device, exp.divergence_metric, primary, emit, task.out)
        emit(ProgressEvent(cfg.run_id, started=True))
        # The paper experiments draw everything from explicit generators; a plugin experiment that
        # relies on torch's global RNG (default module initialisation) gets it seeded with the run
        # seed, forked so that an in-process (serial) run leaves the caller's RNG state as it was.
        cuda = [torch.device(task.device).index or 0] if task.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(cfg.seed)
            torch.set_flush_denormal(bool(task.flush_denormal))
            try:
                out = exp.run(cfg, ctx)
            finally:
                torch.set_flush_denormal(False)  # a fresh process's setting
        if not isinstance(out, Mapping):
            raise TypeError(f"Expected {cfg.experiment}.run to return a dict of final metrics, but got "
                            f"{type(out).__name__}")
        metrics = {str(k): _to_float("final metrics", k, v) for k, v in out.items()}
        final = metrics.get(exp.divergence_metric)
        if final is not None and not math.isfinite(final):
            status, error = "diverged", f"final {exp.divergence_metric} = {final}"
        else:
            status = "finished"
    except Diverged as e:
        status, error = "diverged", str(e) or "diverged"
    except Exception as e:  # one run's failure must not stop the sweep: record it
        status = "failed"
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    if ctx is not None and ctx.resumed_from is not None:
        env = {**env, "resumed_from_epoch": ctx.resumed_from}
    return RunResult(
        run_id=cfg.run_id,
        config=cfg.to_json(),
        status=status,
        metrics={k: _finite_or_none(v) for k, v in metrics.items()},
        epochs=[(e, {k: _finite_or_none(v) for k, v in m.items()}) for e, m in (ctx.epochs if ctx else [])],
        artifacts=dict(ctx.artifacts) if ctx else {},
        error=error,
        environment=env,
        started_at=started,
        finished_at=time.time(),
    )
