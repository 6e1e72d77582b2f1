"""What a new user expects of a Python package: ``--version``, ``python -m``, a LICENSE and
complete metadata, one message for a missing optional extra, plotting that leaves a notebook's
matplotlib backend alone, and sweep progress that shows up in a log file."""

from __future__ import annotations

import importlib.metadata
import io
import subprocess
import sys
from pathlib import Path

import pytest

import discretegrad as dg
from discretegrad._extras import MissingExtraError, require
from discretegrad.harness.execute import ProgressEvent, RunResult, _Context
from discretegrad.harness.progress import SweepProgress

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_version_flag_and_python_dash_m():
    for cmd in ([sys.executable, "-m", "discretegrad", "--version"], [sys.executable, "-m", "discretegrad.cli",
                                                                      "--version"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == f"discretegrad {dg.__version__}", r
    assert dg.__version__ == importlib.metadata.version("discretegrad")
    r = subprocess.run([sys.executable, "-m", "discretegrad"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "the following arguments are required: command" in r.stderr


def test_license_and_metadata():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    meta = importlib.metadata.metadata("discretegrad")
    assert meta["Name"] == "discretegrad" and meta["Summary"]
    assert meta.get("Author") or meta.get("Author-email")
    # no Project-URL until the project has a public address (none is known; a guessed one would mislead)
    assert not meta.get_all("Project-URL")
    classifiers = meta.get_all("Classifier") or []
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in classifiers)
    assert meta["Requires-Python"] == ">=3.10"
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"experiments", "dev", "docs"} <= extras


# ----------------------------------------------------------------------------- optional extras

_BLOCK = "import sys; sys.modules['matplotlib'] = None; from discretegrad.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("command", ["demo", "report"])
def test_missing_matplotlib_is_one_message_naming_the_extra(tmp_path, command):
    target = tmp_path / "out"
    r = _python(_BLOCK, command, *(["--out", str(target)] if command == "demo" else [str(target)]))
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert "needs matplotlib, which is not installed: pip install 'discretegrad[experiments]'" in r.stderr
    assert not target.exists()  # refused before any work


def test_require_raises_an_import_error_subclass(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(MissingExtraError, match=r"the bar needs tqdm.*discretegrad\[experiments\]"):
        require("tqdm", "the bar")
    assert issubclass(MissingExtraError, ImportError)


_BACKEND = """
import sys, torch
import matplotlib
matplotlib.use("svg")  # what a notebook user has set (any backend but Agg)
from pathlib import Path
from discretegrad import demo
from discretegrad.diagnostics import GradientReport
from discretegrad.harness import plots
out = Path(sys.argv[1])
plots.plot_setting({"stgs": [[(1, {"loss": 2.0, "grad_variance": 1.0}), (2, {"loss": 1.0, "grad_variance": 0.5})]]},
                   "toy", out / "toy")
import dataclasses
fields = {f.name: 0.5 for f in dataclasses.fields(GradientReport)}
fields.update(estimator="stgs", name="stgs", hparams={}, unbiased=False, draws=10, n_samples=1)
demo._plot([GradientReport(**fields)], "toy", out / "demo.png")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_plotting_keeps_the_users_backend_and_never_imports_pyplot(tmp_path):
    r = _python(_BACKEND, str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["svg", "False"]
    for name in ("toy_curves.png", "toy_grad_variance.png", "demo.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- progress

def _result(run_id: str, status: str, metrics: dict, seconds: float) -> RunResult:
    return RunResult(run_id, {}, status, metrics, [], {}, None, {}, 100.0, 100.0 + seconds)


def test_progress_off_a_terminal_prints_one_line_per_finished_run():
    log = io.StringIO()  # not a TTY, as a file or a CI log
    p = SweepProgress(2, {"a": "gst(gap=1.0) seed=3", "b": "stgs seed=0"}, file=log, metric="test_neg_elbo")
    p.on_event(ProgressEvent("a", started=True))
    p.on_event(ProgressEvent("a", epoch=1, total_epochs=5, metric=3.0, metric_name="train_loss"))
    assert log.getvalue() == ""  # epochs are not lines; finished runs are
    p.on_result(_result("a", "finished", {"train_loss": 99.0, "test_neg_elbo": 104.25}, 12.34))
    p.on_result(_result("b", "diverged", {"test_neg_elbo": None}, 1.0))
    p.close()
    assert log.getvalue().splitlines() == [
        "[1/2] finished  gst(gap=1.0) seed=3  test_neg_elbo=104.25  12.3 s  run a",
        "[2/2] diverged  stgs seed=0  test_neg_elbo=nan  1.0 s  run b",
    ]
    quiet = io.StringIO()
    q = SweepProgress(1, {"a": "x"}, file=quiet, enabled=False)  # --quiet
    q.on_result(_result("a", "finished", {"m": 1.0}, 1.0))
    assert quiet.getvalue() == ""
    other = io.StringIO()  # no metric named: the run's first one
    SweepProgress(1, {}, file=other).on_result(_result("c", "failed", {}, 0.5))
    assert other.getvalue() == "[1/1] failed    c  0.5 s  run c\n"


def test_progress_bar_names_the_metric_of_ctx_progress():
    events = []
    ctx = _Context("a", "cpu", "train_loss", "final_rate", events.append)
    ctx.progress(1, 10, 4.5, name="rate")
    assert events[-1].metric_name == "rate" and events[-1].metric == 4.5
    buf = io.StringIO()
    bar = SweepProgress(1, {"a": "st seed=0"}, enabled=True, file=buf)
    bar.on_event(events[-1])
    bar.close()
    assert "st seed=0, epoch 1/10, rate 4.5" in buf.getvalue()


def test_progress_without_tqdm_falls_back_to_lines(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    buf = io.StringIO()
    p = SweepProgress(1, {"a": "st seed=0"}, enabled=True, file=buf)
    p.on_result(_result("a", "finished", {"m": 2.0}, 3.0))
    assert buf.getvalue() == "[1/1] finished  st seed=0  m=2  3.0 s  run a\n"
