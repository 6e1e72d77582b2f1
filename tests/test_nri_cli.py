"""nri-graph-layout through the real CLI on a tiny config (seconds), resumed, reported and drawn."""

from __future__ import annotations

import json

import pytest
from _harness_util import cli

from discretegrad.experiments import nri_pictures

pytestmark = pytest.mark.slow  # real CLI processes


def test_nri_graph_layout_cli_resumes_reports_and_draws(tmp_path):
    out = tmp_path / "nri"
    args = ["run", "nri-graph-layout", "--estimators", "entropy_relaxed,entropy", "--seeds", "0",
            "--set", "search=false", "--set", "trial=0", "--set", f"data_root={tmp_path / 'data'}", "--set", "train_size=200",
            "--set", "valid_size=40", "--set", "test_size=30", "--set", "hidden=8", "--set", "batch_size=8",
            "--set", "train_steps=4", "--set", "eval_every=2", "--set", "steps=4", "--set", "n_pictures=2",
            "--out", str(out)]
    r = cli(*args, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    r = cli(*args, "--dry-run", timeout=120)  # every run is stored: nothing left to run
    assert r.returncode == 0 and "0 to run" in r.stdout, r.stdout + r.stderr
    r = cli("report", str(out), "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    final = {(r["estimator"], json.dumps(r["grid"], sort_keys=True), r["metric"]): r for r in records}
    rows = [k for k in final if k[2] == "test_precision"]
    assert len(rows) == 6  # 2 estimators x 3 structures
    assert all(final[k]["n_seeds"] == 1 for k in rows)
    r = cli("report", str(out), timeout=120)
    assert r.returncode == 0, r.stderr
    pngs = nri_pictures.write_pictures(out)
    assert [p.name for p in pngs] == ["trees_T4_seed0.png"] and pngs[0].stat().st_size > 1000
    assert nri_pictures.main([str(tmp_path / "empty")]) == 2  # no runs: one line, non-zero


@pytest.mark.parametrize("sets, word", [(["structure=chain"], "structure"), (["search=false"], "trial")])
def test_nri_graph_layout_bad_setting_is_one_line(tmp_path, sets, word):
    args = [a for s in sets for a in ("--set", s)]
    r = cli("run", "nri-graph-layout", *args, "--dry-run", "--out", str(tmp_path / "x"), timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert word in r.stderr and not (tmp_path / "x").exists()
