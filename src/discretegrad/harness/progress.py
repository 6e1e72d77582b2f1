"""The sweep's progress bar (tqdm on stderr): runs done / running / left, and the most recently
active run's epoch and metric. Silent when stderr is not a terminal or when asked."""

from __future__ import annotations

import sys
from typing import IO, Any

from discretegrad.harness.execute import ProgressEvent, RunResult

__all__ = ["SweepProgress"]


class SweepProgress:
    """Feed it :class:`ProgressEvent`s (``on_event``) and results (``on_result``)."""

    def __init__(self, total: int, labels: dict[str, str], *, enabled: bool | None = None,
                 file: IO[str] | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.file, "isatty", lambda: False)())
        self.labels = labels  # run_id -> "estimator seed=s"
        self.total = total
        self.done = 0
        self.running: set[str] = set()
        self.counts = {"finished": 0, "diverged": 0, "failed": 0}
        self._bar: Any = None
        if enabled and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.file, unit="run", dynamic_ncols=True, leave=True)
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
