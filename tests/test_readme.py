"""Every ```python block of README.md and docs/getting-started.md runs as written: the blocks of
one file, in order, as one script (later blocks may continue earlier ones), in a fresh process
whose working directory is a temporary folder (the README's sweep writes runs/ there). The
script is run as ``__main__`` with the ``spawn`` start method, as a user's script would be."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/getting-started.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in _BLOCK.finditer(text)]


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n\n```\nnot python\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_code_blocks_run_as_written(doc, tmp_path):
    blocks = python_blocks((REPO / doc).read_text())
    assert blocks, f"{doc} has no python blocks"
    script = tmp_path / "blocks.py"
    script.write_text("\n\n".join(blocks))
    env = dict(os.environ, OMP_NUM_THREADS="1", DISCRETEGRAD_PLUGINS="")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, f"{doc}: {r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    if doc == "README.md":  # the harness block ran its sweep and wrote its report
        assert "4 runs: 4 finished" in r.stdout, r.stdout
        assert (tmp_path / "runs" / "pgan" / "report" / "report.md").is_file()
