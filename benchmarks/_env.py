"""The benchmark scripts' environment line, report writer, interleaved timer and old-revision loader.

The environment is the harness's record (:mod:`discretegrad.harness.environment`, the one that
is stored with every experiment run), written as one line.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import types
from collections.abc import Callable
from pathlib import Path

from discretegrad.harness.environment import describe, environment as _record, git_info


def environment(device: str | None = None) -> str:
    """One line: Python and torch versions, device, threads, platform, git commit."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return describe(_record(device, git_info()))


def write_report(lines: list[str], out: str | None) -> None:
    """Write the report lines to ``out`` (creating its folder; not when ``None``) and print them."""
    text = "\n".join(lines) + "\n"
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    print(text)


def module_at(rev: str, path: str, name: str) -> types.ModuleType:
    """The source file ``path`` of the repository at git revision ``rev``, executed as a module ``name``
    (for timing a former implementation against the current one in one process)."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(name)
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102
    return module


def interleaved(variants: dict[str, Callable[[], object]], reps: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per variant; one warm-up each, then ``reps`` rounds in rotating order."""
    names = list(variants)
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            variants[n]()
            times[n].append(time.perf_counter() - t0)
    return {n: (statistics.median(t), min(t)) for n, t in times.items()}
