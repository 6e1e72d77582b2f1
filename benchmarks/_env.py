"""Environment record shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def environment() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return (f"python {platform.python_version()}, torch {torch.__version__}, {device}, "
            f"torch threads {torch.get_num_threads()}, {platform.platform()}, git {commit}")


def write_report(lines: list[str], out: str) -> None:
    """Write the report lines to ``out`` (creating its folder) and print them."""
    from pathlib import Path

    text = "\n".join(lines) + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(text)
