"""The environment recorded with every run: versions, device, git commit, host, threads."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["git_info", "environment", "cpu_count", "describe"]


def cpu_count() -> int:
    """Cores this process may use (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def git_info(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository holding ``path``
    (default: this package's source), ``None`` values when it is not a git checkout.

    Read-only: a plain ``git status`` refreshes the index's stat cache and rewrites
    ``.git/index`` when it can take the lock, so the query runs with ``--no-optional-locks``
    (and ``GIT_OPTIONAL_LOCKS=0``), which leaves the repository as it was."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "--no-optional-locks", "-C", str(where), *args], capture_output=True,
                               text=True, timeout=10, env=env)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": (bool(status) if status is not None else None)}


def environment(device: str, git: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record stored with a run (called in the process that runs it)."""
    import numpy
    import torch

    import discretegrad

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "discretegrad": discretegrad.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": cpu_count(),
        "git_commit": (git or {}).get("commit"),
        "git_dirty": (git or {}).get("dirty"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def describe(env: dict[str, Any]) -> str:
    """One line for a benchmark report: versions, device, threads, platform, short git commit."""
    device = env.get("gpu") or f"CPU ({env['cpu_count']} cores)"
    commit = (env.get("git_commit") or "unknown")[:7] + (" (dirty)" if env.get("git_dirty") else "")
    return (f"python {env['python']}, torch {env['torch']}, {device}, torch threads {env['torch_threads']}, "
            f"{env['platform']}, git {commit}")
