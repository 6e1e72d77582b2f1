"""The harness through the real entry point: smoke sweep + report + JSON records, the process
backend, and bad input (one message, non-zero exit, no traceback, nothing created)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import statistics

import pytest
from _harness_util import cli

from discretegrad import cli as cli_module
from discretegrad.harness.environment import cpu_count


def _rows(out):
    db = sqlite3.connect(out / "store.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY run_id")], \
               [dict(r) for r in db.execute("SELECT * FROM epochs")], \
               [dict(r) for r in db.execute("SELECT * FROM artifacts")]
    finally:
        db.close()


@pytest.mark.slow
def test_smoke_run_report_and_json(tmp_path):
    out = tmp_path / "sweep"
    r = cli("run", "toy", "--quick", "--out", str(out), "--plugin", "toy_experiment", DISCRETEGRAD_PLUGINS="")
    assert r.returncode == 0, r.stderr
    # not a TTY: no bar, one line per finished run (position, status, estimator, seed, metric, time, id)
    lines = r.stderr.splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 4, r.stderr
    assert [line.split()[0] for line in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    for line in lines:
        assert re.fullmatch(r"\[\d/4\] finished  (st|stgs) seed=[01]  final_loss=\S+  \d+\.\d s  run [0-9a-f]+", line), line
    assert "4 runs: 4 finished, 0 diverged, 0 failed, 0 already stored" in r.stdout

    runs, epochs, artifacts = _rows(out)
    assert len(runs) == 4 and {x["status"] for x in runs} == {"finished"}
    assert sorted({x["estimator"] for x in runs}) == ["st", "stgs"] and sorted({x["seed"] for x in runs}) == [0, 1]
    assert len(epochs) == 4 * 2  # --quick: 2 epochs per run
    assert {a["name"] for a in artifacts} == {"efficiency", "threads"}
    for x in runs:
        env = json.loads(x["environment"])
        assert {"python", "torch", "numpy", "device", "git_commit", "hostname", "torch_threads"} <= set(env)
        # the files mirror the row; config.json hashes to the run id
        d = out / "runs" / x["run_id"]
        cfg = json.loads((d / "config.json").read_text())
        blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
        assert hashlib.sha256(blob.encode()).hexdigest()[:16] == x["run_id"]
        m = json.loads((d / "metrics.json").read_text())
        assert m["status"] == "finished" and m["final"] == json.loads(x["metrics"]) and len(m["epochs"]) == 2
        assert json.loads((d / "env.json").read_text()) == env

    r = cli("report", str(out))
    assert r.returncode == 0, r.stderr
    md = (out / "report" / "report.md").read_text()
    assert "| `stgs` |" in md and "| `st` |" in md
    assert "0.5 ± 0.1" in md  # the (toy) paper number next to stgs at lr=1.0
    assert "Efficiency" in md and "1.00×" in md
    pngs = sorted(p.name for p in (out / "report").rglob("*.png"))
    assert any(p.endswith("_curves.png") for p in pngs) and any(p.endswith("_grad_variance.png") for p in pngs)

    r = cli("report", str(out), "--json")
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert {(x["estimator"], x["metric"]) for x in records} == {
        (e, m) for e in ("stgs", "st") for m in ("final_loss", "prob_target")}
    for rec in records:
        assert {"experiment", "estimator", "hparams", "metric", "mean", "std", "n_seeds", "n_diverged", "grid"} <= set(rec)
        vals = [json.loads(x["metrics"])[rec["metric"]] for x in runs if x["estimator_label"] == rec["estimator"]]
        assert rec["n_seeds"] == 2 and rec["n_diverged"] == 0 and rec["grid"] == {"lr": 1.0}
        assert rec["mean"] == pytest.approx(statistics.mean(vals), rel=1e-12)
        assert rec["std"] == pytest.approx(statistics.stdev(vals), rel=1e-12)
    paper = [x for x in records if x["estimator"] == "stgs" and x["metric"] == "final_loss"][0]
    assert (paper["paper_mean"], paper["paper_std"]) == (0.5, 0.1)


@pytest.mark.slow
def test_process_backend_matches_serial_and_pins_threads(tmp_path):
    args = ["--quick", "--seeds", "0-1", "--estimators", "stgs,gst:gap=1.0", "--quiet"]
    serial, par = tmp_path / "serial", tmp_path / "par"
    assert cli_module.main(["run", "toy", *args, "--out", str(serial), "--plugin", "toy_experiment"]) == 0
    r2 = cli("run", "toy", *args, "--out", str(par), "--workers", "2", OMP_NUM_THREADS="7")
    assert r2.returncode == 0, r2.stderr
    a, _, _ = _rows(serial)
    b, _, arts = _rows(par)
    # same run ids and bit-identical results whichever backend ran them (explicit generators)
    assert [(x["run_id"], x["metrics"]) for x in a] == [(x["run_id"], x["metrics"]) for x in b]
    budget = str(max(1, cpu_count() // 2))
    for x in b:
        env = json.loads(x["environment"])
        assert env["torch_threads"] == int(budget) and env["omp_num_threads"] == budget
    assert len({json.loads(x["environment"])["pid"] for x in b}) >= 1
    threads = [json.loads(x["data"]) for x in arts if x["name"] == "threads"]
    assert threads and all(t == {"torch": int(budget), "omp": budget} for t in threads)


@pytest.mark.slow
def test_list_shows_estimators_and_plugin_experiments(capsys):
    r = cli("list")  # the toy experiment comes in through DISCRETEGRAD_PLUGINS here
    assert r.returncode == 0, r.stderr
    assert "categorical:" in r.stdout and "gst" in r.stdout and "gap=1.0" in r.stdout
    assert "toy  [categorical]  toy (harness tests)" in r.stdout and "grid: lr in [0.5, 1.0]" in r.stdout
    assert cli_module.main(["list", "--json", "--plugin", "toy_experiment"]) == 0
    cat = json.loads(capsys.readouterr().out)
    assert any(e["name"] == "toy" and e["estimators"] == ["stgs", "gst(gap=1.0)"] for e in cat["experiments"])
    assert "tau" in next(s for s in cat["estimators"]["categorical"] if s["name"] == "stgs")["hyperparameters"]


# ----------------------------------------------------------------------------- bad input

def _bad(capsys, argv, needle):
    code = cli_module.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("discretegrad: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (["nope"], "Expected experiment to be one of"),
    (["toy", "--estimators", "bogus"], "Expected estimator to be one of"),
    (["toy", "--estimators", "gst:bogus=1"], "Expected hyperparameters of estimator 'gst'"),
    (["toy", "--estimators", "gst:gap"], "to look like key=value"),
    (["toy", "--estimators", ""], "Expected --estimators to name at least one estimator"),
    (["toy", "--set", "nope=1"], "Expected --set key to be one of"),
    (["toy", "--set", "epochs=abc"], "Expected --set epochs to be of type int"),
    (["toy", "--set", "epochs"], "Expected --set to look like key=value"),
    (["toy", "--set", "lr=1e999"], "Expected --set lr to be finite"),
    (["toy", "--seeds", "5-2"], "Expected --seeds"),
    (["toy", "--seeds", "a-b"], "Expected --seeds"),
    (["toy", "--seeds", "1,,2"], "Expected --seeds"),
    (["toy", "--seeds", "-1"], "Expected --seeds"),
    (["toy", "--workers", "0"], "Expected --workers to be an int >= 1"),
    (["toy", "--device", "tpu"], "Expected --device to be cpu, cuda or cuda:N"),
    (["toy", "--plugin", "no_such_module_xyz"], "Expected plugin module 'no_such_module_xyz' to be importable"),
])
def test_bad_run_input(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    _bad(capsys, ["run", *args, "--out", str(out), "--plugin", "toy_experiment"], needle)
    assert not out.exists()


def test_cuda_unavailable(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = tmp_path / "out"
    _bad(capsys, ["run", "toy", "--device", "cuda", "--out", str(out), "--plugin", "toy_experiment"],
         "Expected --device cuda to be available")
    assert not out.exists()


def test_unwritable_or_invalid_out(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _bad(capsys, ["run", "toy", "--out", str(f / "sub" / "dir"), "--plugin", "toy_experiment"],
         "is not a directory")
    _bad(capsys, ["run", "toy", "--out", str(f), "--plugin", "toy_experiment"], "Expected --out to be a directory")
    assert f.read_text() == "x"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root can write anywhere: this case needs a normal user
            _bad(capsys, ["run", "toy", "--out", str(ro / "out"), "--plugin", "toy_experiment"], "is not writable")
            assert not (ro / "out").exists()
    finally:
        ro.chmod(0o700)
    bad_store = tmp_path / "corrupt"
    bad_store.mkdir()
    (bad_store / "store.sqlite").write_bytes(b"this is not a database" * 100)
    _bad(capsys, ["run", "toy", "--out", str(bad_store), "--plugin", "toy_experiment"], "to be a discretegrad store")
    assert sorted(p.name for p in bad_store.iterdir()) == ["store.sqlite"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    con = sqlite3.connect(foreign / "store.sqlite")
    con.execute("CREATE TABLE t (a)")
    con.commit()
    con.close()
    _bad(capsys, ["run", "toy", "--out", str(foreign), "--plugin", "toy_experiment"], "to be a discretegrad store")
    con = sqlite3.connect(foreign / "store.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left untouched
    con.close()


def test_report_of_a_dir_without_store(tmp_path, capsys):
    _bad(capsys, ["report", str(tmp_path / "nothing")], "Expected a directory holding a discretegrad store")
    _bad(capsys, ["report", str(tmp_path), "--json"], "Expected a directory holding a discretegrad store")
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "report").exists()


@pytest.mark.slow
def test_bad_input_through_the_real_process(tmp_path):
    out = tmp_path / "out"
    r = cli("run", "toy", "--estimators", "stgs,toy_other_estimator", "--out", str(out),
            "--plugin", "toy_other_family")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "registered for ['toy_other_family']" in r.stderr
    assert not out.exists()
    r = cli("run", "toy", "--seeds", "3-1", "--out", str(out))
    assert r.returncode == 2 and r.stderr.startswith("discretegrad: error: Expected --seeds") and not out.exists()
