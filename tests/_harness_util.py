"""Helpers for the harness tests: run the real CLI entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    env.setdefault("DISCRETEGRAD_PLUGINS", "toy_experiment")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "discretegrad.cli", *args]


def cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m discretegrad.cli ARGS`` with tests/ on the path and the toy plugin loaded."""
    return subprocess.run(cli_cmd(*args), capture_output=True, text=True, env=cli_env(**env), timeout=timeout)
