"""A Ray backend: each run of a sweep is one Ray task on an existing (or a local) Ray cluster.

``RayBackend(address=None, cpus_per_run=1, gpus_per_run=0, max_retries=3)`` implements the
backend interface (:mod:`discretegrad.harness.backends`): every :class:`Task` becomes a Ray
task with its own resources (``num_cpus``, ``num_gpus``) that calls
:func:`~discretegrad.harness.execute.execute_task` on whichever node Ray picks, and the
:class:`RunResult` travels back to the driver, the only writer of the store. Progress events go
through a small event actor (zero CPUs) that the driver drains while it waits, so the progress
bar shows epochs and metrics as the runs progress.

* Thread budget: a run gets ``cpus_per_run`` threads (``torch.set_num_threads`` plus
  ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` in the task's
  ``runtime_env``, set before the worker imports torch).
* Plugins: experiment modules named by ``--plugin`` or ``DISCRETEGRAD_PLUGINS`` that live
  outside site-packages (a user's ``my_experiment.py``) are shipped to the workers with
  ``runtime_env`` ``py_modules``; the ``discretegrad`` package itself must be installed on the
  nodes (``pip install discretegrad[ray]``), the same version as the driver's.
* Failures: a run that fails in Python is a ``failed`` result like on any backend (no retry:
  the failure is the run's own). A worker that dies (killed, out of memory, segfault, a lost
  node) is retried by Ray up to ``max_retries`` times; after the last attempt the run is
  recorded as ``failed`` with Ray's error.
* Driver death: the tasks are owned by the driver; when it dies (``kill -9`` included) Ray
  cancels them, and a local instance that the driver started exits with it. Rerunning the
  sweep resumes it from the store, whichever backend the rerun uses (run ids do not depend on
  the backend).

Ray is imported only when a :class:`RayBackend` is made: the rest of the package works without
the ``ray`` extra, and a missing extra raises :class:`MissingRayExtra`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from discretegrad.harness.contract import PLUGINS_ENV
from discretegrad.harness.execute import ProgressEvent, RunResult, Task, execute_task

__all__ = ["RayBackend", "MissingRayExtra", "check_ray_device"]

EventFn = Callable[[ProgressEvent], None]
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_POLL_S = 0.2  # how often the driver drains progress events while it waits for results


class MissingRayExtra(ImportError, ValueError):
    """``--backend ray`` without Ray installed (a ``ValueError`` too, so the CLI prints one line)."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise MissingRayExtra("the ray backend needs the ray extra: pip install 'discretegrad[ray]' "
                              f"(import ray failed: {e})") from None
    return ray


def _check_count(name: str, value: Any, *, integer: bool, low: float) -> None:
    types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, types) or not value >= low:
        what = "an int" if integer else "a number"
        raise ValueError(f"Expected {name} to be {what} >= {low:g}, but got {value!r}")


def check_ray_device(device: str, gpus_per_run: float) -> str:
    """The device a Ray task sees: ``cpu``, or ``cuda`` / ``cuda:N`` with N below the GPUs it holds
    (Ray sets ``CUDA_VISIBLE_DEVICES`` to the task's GPUs). Checked here, not on the driver, which
    may have no GPU."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"Expected --device to be cpu, cuda or cuda:N, but got {device!r}")
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if gpus_per_run < 1 or index >= int(gpus_per_run):
            raise ValueError(f"Expected --gpus-per-run > {index} with --device {device} on the ray backend "
                             f"(a task sees only the GPUs it holds), but got {gpus_per_run!r}")
    return device


def _is_installed(path: str) -> bool:
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    return any(os.path.commonpath([os.path.abspath(path), r]) == r for r in roots)


def plugin_modules(names: Sequence[str]) -> list[str]:
    """Local paths (a ``.py`` file or a package directory) of the plugin modules that are not
    installed packages, for ``runtime_env`` ``py_modules``."""
    paths: list[str] = []
    for name in names:
        top = name.split(".")[0]
        if top == "discretegrad":
            continue
        spec = importlib.util.find_spec(top)
        if spec is None or spec.origin in (None, "built-in", "frozen") or _is_installed(spec.origin):
            continue
        path = os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin
        if path not in paths:
            paths.append(path)
    return paths


class _Events:
    """The event actor: running tasks ``put`` progress events, the driver ``drain``s them."""

    def __init__(self) -> None:
        self._events: list[ProgressEvent] = []

    def put(self, ev: ProgressEvent) -> None:
        self._events.append(ev)

    def drain(self) -> list[ProgressEvent]:
        out, self._events = self._events, []
        return out


def _run_on_worker(task: Task, events: Any, threads: int) -> RunResult:
    """The Ray task body: the thread budget, then the run, its events sent to the event actor."""
    import torch

    torch.set_num_threads(threads)

    def emit(ev: ProgressEvent) -> None:
        events.put.remote(ev)  # fire and forget: progress must not slow the run down

    return execute_task(task, emit)


def _lost_result(task: Task, attempts: int, error: BaseException) -> RunResult:
    now = time.time()
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return RunResult(run_id=task.run_id, config=task.config.to_json(), status="failed", metrics={}, epochs=[],
                     artifacts={}, environment={}, started_at=now, finished_at=now,
                     error=f"ray: the run's worker was lost in each of {attempts} attempt(s) "
                           f"({type(error).__name__}: {first})")


class RayBackend:
    """Runs each task as a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.

    Args:
        address: a running cluster (``ray start --head`` prints it; ``"auto"`` finds a local one);
            ``None`` starts a local instance for the sweep (all of this machine's cores) and stops
            it afterwards. Ignored when Ray is already initialised in this process.
        cpus_per_run: CPUs (and threads) per run.
        gpus_per_run: GPUs per run (fractions share a GPU); ``--device cuda`` needs at least 1.
        max_retries: Ray's retries of a run whose worker died.
        runtime_env: the job's ``runtime_env`` when this backend connects (e.g. ``{"pip": [...]}``);
            the plugin modules and ``DISCRETEGRAD_PLUGINS`` are added to it.
        init_kwargs: passed to ``ray.init`` (e.g. ``num_cpus=2`` for a small local instance).
    """

    def __init__(self, address: str | None = None, *, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 max_retries: int = 3, runtime_env: dict[str, Any] | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise ValueError(f"Expected --address to be a non-empty str, but got {address!r}")
        _check_count("--cpus-per-run", cpus_per_run, integer=False, low=1)
        _check_count("--gpus-per-run", gpus_per_run, integer=False, low=0)
        _check_count("--max-retries", max_retries, integer=True, low=0)
        self._ray = _import_ray()
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.max_retries = max_retries
        self.threads = max(1, int(cpus_per_run))
        self.runtime_env = dict(runtime_env or {})
        self.init_kwargs = dict(init_kwargs or {})

    def _connect(self, tasks: Sequence[Task]) -> bool:
        """``ray.init`` unless already connected; returns whether this call made the connection.

        The job's ``runtime_env`` ships the plugin modules (Ray uploads local paths only at the
        job level) and ``DISCRETEGRAD_PLUGINS``; a caller that initialised Ray itself provides them.
        """
        ray = self._ray
        if ray.is_initialized():
            return False
        env = dict(self.runtime_env)
        env_plugins = os.environ.get(PLUGINS_ENV, "")
        if env_plugins:
            env["env_vars"] = {PLUGINS_ENV: env_plugins, **env.get("env_vars", {})}
        names = {p for t in tasks for p in t.plugins} | {p.strip() for p in env_plugins.split(",") if p.strip()}
        modules = plugin_modules(sorted(names))
        if modules:
            env["py_modules"] = [*env.get("py_modules", []), *modules]
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning",
                  **self.init_kwargs}
        # "local": a new instance even where /tmp/ray names another (possibly dead) cluster
        ray.init(address=self.address or "local", runtime_env=env or None, **kwargs)
        return True

    def _check_feasible(self) -> None:
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= self.cpus_per_run and r.get("GPU", 0) >= self.gpus_per_run for r in nodes):
            return
        have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes) or "no live node"
        raise ValueError(f"Expected a Ray node with {self.cpus_per_run:g} CPU and {self.gpus_per_run:g} GPU "
                         f"(--cpus-per-run / --gpus-per-run), but got nodes with {have}")

    def map(self, tasks: Sequence[Task], on_event: EventFn | None = None) -> Iterator[RunResult]:
        tasks = list(tasks)
        if not tasks:
            return
        for t in tasks:
            check_ray_device(t.device, self.gpus_per_run)
        ray = self._ray
        started = self._connect(tasks)
        pending: dict[Any, Task] = {}
        try:
            self._check_feasible()
            events = ray.remote(num_cpus=0, max_restarts=-1)(_Events).remote()
            remote = ray.remote(_run_on_worker).options(
                num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=self.max_retries,
                retry_exceptions=False,
                runtime_env={"env_vars": {k: str(self.threads) for k in _THREAD_VARS}})
            for t in tasks:  # Ray queues what the cluster cannot run yet
                pending[remote.remote(t, events, self.threads)] = t
            done_ids: set[str] = set()

            def forward() -> None:
                for ev in ray.get(events.drain.remote()):
                    if on_event is not None and ev.run_id not in done_ids:  # late events of ended runs
                        on_event(ev)

            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                forward()
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except (ray.exceptions.RayError, OSError) as e:  # the worker (or its node) died
                        result = _lost_result(task, self.max_retries + 1, e)
                    done_ids.add(task.run_id)
                    yield result
        finally:
            for ref in pending:  # stopped early (Ctrl-C, consumer gone): runs in flight are abandoned
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()

