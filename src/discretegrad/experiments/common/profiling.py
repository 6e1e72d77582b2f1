"""The peak memory of one training step: CUDA allocator statistics on a GPU, the profiler's
allocation events on a CPU."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator

import torch

__all__ = ["step_peak_memory_mb"]


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler back end prints start/stop lines there)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_peak_memory_mb(step: Callable[[], torch.Tensor], device: torch.device) -> tuple[tuple[float, str], torch.Tensor]:
    """Run ``step()`` once and measure the peak memory it allocates, in MiB, above what was
    allocated before it; return ``((peak_mb, how), step's result)``.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
      ``memory_allocated`` before the step.
    * CPU: the profiler's allocation events (``profile_memory=True``), ordered in time; the peak
      of their running sum (allocations minus frees) during the step. Both count every tensor
      the step creates (activations saved for backward, transient noise tensors such as
      GR-MCK's K conditional draws, gradients, optimiser temporaries), not the parameters,
      optimiser state or data set that exist before it.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return (peak / 2**20, "cuda max_memory_allocated above the pre-step allocation"), out
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings(), _quiet_fd2():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = step()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path) as fh:
                events = json.load(fh)["traceEvents"]
    mem = [(e["ts"], e["args"]["Bytes"]) for e in events
           if e.get("name") == "[memory]" and "Bytes" in e.get("args", {})]
    mem.sort(key=lambda tb: tb[0])  # stable: events with equal time stamps keep their recorded order
    running = list(itertools.accumulate(b for _, b in mem))
    peak = max([0, *running])
    return (peak / 2**20, "cpu profiler: peak running sum of allocations minus frees during the step"), out
