"""Execution backends: where runs execute.

The interface is one method::

    class Backend(Protocol):
        def map(self, tasks: Iterable[Task],
                on_event: Callable[[ProgressEvent], None] | None = None) -> Iterator[RunResult]: ...

``map`` runs every task with :func:`~discretegrad.harness.execute.execute_task` somewhere
and yields each :class:`RunResult` as soon as it is available (any order, exactly one result
per task). ``tasks`` may be a lazy iterable: a backend takes the next task only when it can
start it, since the runner claims each run in the store as it is taken. Progress messages from
running tasks are passed to ``on_event`` in the caller's process. Results travel back to the caller, which alone writes the store: a backend never
touches storage. A task is plain picklable data (config, device, plugin module names), so a
distributed backend only has to ship it to a machine that has the package installed, call
``execute_task`` there and send the result back.

* :class:`SerialBackend` runs tasks one after the other in this process.
* :class:`LocalProcessBackend` runs them in ``workers`` spawned processes, each with a thread
  budget of ``max(1, cores // workers)`` (``torch.set_num_threads`` plus ``OMP_NUM_THREADS`` /
  ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` set before the worker imports torch), so that
  N workers do not oversubscribe the cores. A worker that dies (killed, out of memory,
  segfault) turns its run into a ``failed`` result and is replaced; workers exit on their own
  when the parent process disappears (e.g. ``kill -9`` of the sweep).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from discretegrad.harness.environment import cpu_count
from discretegrad.harness.execute import ProgressEvent, RunResult, Task, execute_task

__all__ = ["Backend", "SerialBackend", "LocalProcessBackend", "make_backend", "thread_budget"]

EventFn = Callable[[ProgressEvent], None]


class Backend(Protocol):
    def map(self, tasks: Iterable[Task], on_event: EventFn | None = None) -> Iterator[RunResult]:
        """Run every task; yield one result per task as each ends. ``tasks`` may be lazy: take
        the next one only when it can start (the runner claims each run as it is taken)."""
        ...


class SerialBackend:
    """Runs tasks one by one in the calling process (no isolation, no start-up cost)."""

    def map(self, tasks: Iterable[Task], on_event: EventFn | None = None) -> Iterator[RunResult]:
        for task in tasks:
            yield execute_task(task, on_event)


def thread_budget(workers: int, cores: int | None = None) -> int:
    """Threads per worker so that ``workers`` processes share the cores without oversubscribing."""
    return max(1, (cores or cpu_count()) // max(1, workers))


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for processes started inside the block (then restore)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_main(wid: int, tasks: Any, events: Any, threads: int, parent: int) -> None:
    """Worker loop: take a task, run it, send the result; exit on ``None`` or when orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    import torch

    torch.set_num_threads(threads)

    def orphaned() -> bool:
        return os.getppid() != parent

    def emit(ev: ProgressEvent) -> None:
        if orphaned():  # the sweep was killed: stop instead of computing for nobody
            os._exit(3)
        events.put(("event", wid, ev))

    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if orphaned():
                return
            continue
        if task is None:
            return
        result = execute_task(task, emit)
        if orphaned():
            return
        events.put(("result", wid, result))


class LocalProcessBackend:
    """Runs tasks in ``workers`` local processes (``spawn`` start method by default)."""

    def __init__(self, workers: int, *, start_method: str = "spawn", threads: int | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"Expected workers to be an int >= 1, but got {workers!r}")
        self.workers = workers
        self.threads = threads if threads is not None else thread_budget(workers)
        self._mp = multiprocessing.get_context(start_method)

    def _start(self, wid: int, events: Any) -> tuple[Any, Any]:
        tasks = self._mp.Queue()
        n = str(self.threads)
        with _environ(**{k: n for k in _THREAD_VARS}):
            proc = self._mp.Process(target=_worker_main, args=(wid, tasks, events, self.threads, os.getpid()),
                                    name=f"discretegrad-worker-{wid}", daemon=True)
            proc.start()
        return proc, tasks

    def map(self, tasks: Iterable[Task], on_event: EventFn | None = None) -> Iterator[RunResult]:
        pending = iter(tasks)
        events = self._mp.Queue()
        workers: dict[int, tuple[Any, Any]] = {}
        busy: dict[int, Task] = {}
        next_wid = 0
        exhausted = False

        def take() -> Task | None:
            """The next task, pulled only when a worker is free to start it."""
            nonlocal exhausted
            task = None if exhausted else next(pending, None)
            exhausted = task is None
            return task

        def give(wid: int, task: Task | None) -> None:
            if task is not None:
                busy[wid] = task
            workers[wid][1].put(task)  # None: exit

        def start(task: Task) -> None:
            nonlocal next_wid
            workers[next_wid] = self._start(next_wid, events)
            give(next_wid, task)
            next_wid += 1

        try:
            for _ in range(self.workers):
                task = take()
                if task is None:
                    break
                start(task)
            last_check = time.monotonic()
            while busy:
                try:
                    kind, wid, payload = events.get(timeout=0.5)
                except queue.Empty:
                    kind = None
                if kind is None or time.monotonic() - last_check > 1.0:  # workers that died mid-run
                    last_check = time.monotonic()
                    for dead in [w for w in busy if workers[w][0].exitcode is not None]:
                        task = busy.pop(dead)
                        code = workers.pop(dead)[0].exitcode
                        yield _dead_worker_result(task, code)
                        replacement = take()
                        if replacement is not None:
                            start(replacement)
                if kind == "event":
                    if on_event is not None:
                        on_event(payload)
                elif kind == "result" and wid in busy:
                    del busy[wid]
                    give(wid, take())
                    yield payload
        finally:
            for wid in busy:  # stopped early (Ctrl-C, consumer gone): runs in flight are abandoned
                workers[wid][0].terminate()
            deadline = time.monotonic() + 5.0
            for proc, q in workers.values():
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.kill()
                    proc.join()
                q.close()
            events.close()


def _dead_worker_result(task: Task, exitcode: int | None) -> RunResult:
    now = time.time()
    return RunResult(run_id=task.run_id, config=task.config.to_json(), status="failed", metrics={}, epochs=[],
                     artifacts={}, error=f"worker process exited with code {exitcode} while running this run",
                     environment={}, started_at=now, finished_at=now)


def make_backend(workers: int = 1) -> Backend:
    """``SerialBackend`` for one worker, ``LocalProcessBackend(workers)`` otherwise."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Expected --workers to be an int >= 1, but got {workers!r}")
    return SerialBackend() if workers == 1 else LocalProcessBackend(workers)
