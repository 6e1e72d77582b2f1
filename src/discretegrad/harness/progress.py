"""A sweep's progress on stderr. On a terminal: a tqdm bar (runs done / running / left, and the
most recently active run's epoch and named metric). Elsewhere (a file, a CI log), or without
tqdm: one line per finished run (its position, status, estimator and seed, the primary metric's
name and value, the run's time, its id). ``enabled=False`` (``--quiet``) prints nothing."""

from __future__ import annotations

import math
import sys
from typing import IO, Any

from discretegrad.harness.execute import ProgressEvent, RunResult

__all__ = ["SweepProgress", "result_line"]


def result_line(result: RunResult, label: str, metric: str | None, done: int, total: int) -> str:
    """``[3/10] finished  gst(gap=1.0) seed=2  test_neg_elbo=104.2  12.3 s  run a1b2c3d4``."""
    name = metric if metric in result.metrics else next(iter(result.metrics), None)
    value = result.metrics.get(name) if name else None
    shown = "" if name is None else f"{name}={'nan' if value is None else f'{value:.6g}'}  "
    seconds = result.finished_at - result.started_at
    took = f"{seconds:.1f} s" if math.isfinite(seconds) and seconds >= 0 else "? s"
    return f"[{done}/{total}] {result.status:<8}  {label}  {shown}{took}  run {result.run_id}"


class SweepProgress:
    """Feed it :class:`ProgressEvent`s (``on_event``) and results (``on_result``).

    Args:
        total: runs to execute.
        labels: run_id -> "estimator seed=s".
        enabled: ``None`` (default): a bar on a terminal, lines elsewhere; ``True``: a bar
            (lines without tqdm); ``False``: silent.
        file: where to write (default: stderr).
        metric: the metric each finished-run line shows (default: the run's first metric).
    """

    def __init__(self, total: int, labels: dict[str, str], *, enabled: bool | None = None,
                 file: IO[str] | None = None, metric: str | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.labels = labels
        self.total = total
        self.metric = metric
        self.done = 0
        self.running: set[str] = set()
        self.counts = {"finished": 0, "diverged": 0, "failed": 0}
        self._bar: Any = None
        self._lines = enabled is not False and total > 0
        if (enabled or (enabled is None and tty)) and total > 0:
            try:
                from tqdm import tqdm
            except ImportError:  # the experiments extra is absent: lines instead of a bar
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, file=self.file, unit="run", dynamic_ncols=True, leave=True)
                self._lines = False
                self._refresh_desc()

    def _refresh_desc(self) -> None:
        if self._bar is not None:
            left = self.total - self.done - len(self.running)
            self._bar.set_description_str(f"done {self.done} | running {len(self.running)} | left {left}",
                                          refresh=False)

    def on_event(self, ev: ProgressEvent) -> None:
        if ev.run_id not in self.running and ev.started:
            self.running.add(ev.run_id)
        if self._bar is None:
            return
        parts = [self.labels.get(ev.run_id, ev.run_id)]
        if ev.epoch is not None:
            parts.append(f"epoch {ev.epoch}" + (f"/{ev.total_epochs}" if ev.total_epochs else ""))
        if ev.metric is not None:
            parts.append(f"{ev.metric_name or 'metric'} {ev.metric:.4g}")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)
        self._refresh_desc()
        self._bar.refresh()

    def on_result(self, result: RunResult) -> None:
        self.running.discard(result.run_id)
        self.done += 1
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        if self._bar is not None:
            self._refresh_desc()
            self._bar.update(1)
        elif self._lines:
            label = self.labels.get(result.run_id, result.run_id)
            print(result_line(result, label, self.metric, self.done, self.total), file=self.file, flush=True)

    def skip(self) -> None:
        """One run fewer to do (stored or claimed by another sweep meanwhile)."""
        self.total -= 1
        if self._bar is not None:
            self._bar.total = self.total
            self._refresh_desc()
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
