"""The benchmark scripts' environment line and report writer.

The environment is the harness's record (:mod:`discretegrad.harness.environment`, the one that
is stored with every experiment run), written as one line.
"""

from __future__ import annotations

from pathlib import Path

from discretegrad.harness.environment import describe, environment as _record, git_info


def environment(device: str | None = None) -> str:
    """One line: Python and torch versions, device, threads, platform, git commit."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return describe(_record(device, git_info()))


def write_report(lines: list[str], out: str) -> None:
    """Write the report lines to ``out`` (creating its folder) and print them."""
    text = "\n".join(lines) + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(text)
