"""The paper experiments through the real CLI entry point on tiny configs (seconds each)."""

from __future__ import annotations

import json

import pytest
from _harness_util import cli

from experiment_helpers import write_idx_dataset

pytestmark = pytest.mark.slow  # real CLI processes: seconds each (make test-quick skips them)


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    write_idx_dataset(root, n_train=300, n_test=200, gz=False, seed=0)
    return str(root)


def _sweep(out, *args):
    r = cli("run", *args, "--seeds", "0", "--out", str(out), timeout=240)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    r = cli("report", str(out), "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_categorical_vae_cli(tmp_path, idx_root):
    records = _sweep(tmp_path / "cv", "categorical-vae", "--estimators", "stgs,gst:gap=1.0",
                     "--set", f"data_root={idx_root}", "--set", "train_size=300", "--set", "epochs=1",
                     "--set", "grad_variance_repeats=3", "--set", "grad_variance_pool=200", "--set", "tau=0.5")
    final = {(r["estimator"], r["metric"]): r for r in records}
    for label in ("stgs", "gst(gap=1.0)"):
        rec = final[(label, "test_neg_elbo")]
        assert rec["n_seeds"] == 1 and rec["n_diverged"] == 0 and rec["mean"] > 0
        assert rec["paper_mean"] is not None  # GST Table 3 at tau = 0.5
    r = cli("report", str(tmp_path / "cv"), timeout=120)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "cv" / "report" / "report.md").read_text()
    assert "Efficiency" in md and "grad_variance" in md


def test_bernoulli_vae_cli(tmp_path, idx_root):
    records = _sweep(tmp_path / "bv", "bernoulli-vae", "--estimators", "st,disarm",
                     "--set", f"data_root={idx_root}", "--set", "valid_size=100", "--set", "epochs=1",
                     "--set", "arch=linear")
    labels = {r["estimator"] for r in records if r["metric"] == "test_neg_elbo" and r["n_seeds"] == 1}
    assert labels == {"st", "disarm"}


def test_poisson_gan_cli(tmp_path):
    records = _sweep(tmp_path / "pg", "poisson-gan", "--estimators", "pwgf_mmd,muprop",
                     "--set", "epochs=2", "--set", "steps_per_epoch=10")
    rec = {r["estimator"]: r for r in records if r["metric"] == "final_rate"}
    assert set(rec) == {"pwgf_mmd", "muprop"} and rec["pwgf_mmd"]["paper_mean"] == 5.0076


def test_unknown_setting_is_one_clean_error(tmp_path):
    r = cli("run", "poisson-gan", "--set", "nope=1", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "nope" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("experiment, extra", [("categorical-vae", ["--set", "train_size=300"]),
                                               ("bernoulli-vae", ["--set", "valid_size=100"])])
def test_corrupt_data_stops_the_sweep_before_anything_is_written(tmp_path, experiment, extra):
    root = tmp_path / "idx"
    write_idx_dataset(root, n_train=300, n_test=200, gz=False, seed=0)
    images = root / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])  # truncated
    out = tmp_path / "out"
    r = cli("run", experiment, "--estimators", "st", "--seeds", "0", "--set", f"data_root={root}",
            "--set", "epochs=1", *extra, "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "train-images" in r.stderr
    assert not out.exists()


def test_relax_with_two_stochastic_layers_is_planned(tmp_path, idx_root):
    """Formerly refused up front (no learned control variate per layer); now planned like any pair.
    The experiment's check(config) still runs before anything is created (the corrupt-data test above)."""
    out = tmp_path / "out"
    r = cli("run", "bernoulli-vae", "--estimators", "relax", "--seeds", "0", "--set", f"data_root={idx_root}",
            "--set", "arch=two_layer", "--dry-run", "--out", str(out))
    assert r.returncode == 0 and "relax" in r.stdout and "Traceback" not in r.stderr
    assert not out.exists()


def test_l2x_cli_with_corr_topk_by_name_and_resume(tmp_path):
    args = ("l2x", "--estimators", "entropy,corr_topk:hard=False", "--set", "task=xor", "--set", "n_train=1000",
            "--set", "n_valid=200", "--set", "batch_size=200", "--set", "evals=1")
    records = _sweep(tmp_path / "l2x", *args)
    labels = {r["estimator"] for r in records if r["metric"] == "median_rank" and r["n_seeds"] == 1}
    assert labels == {"entropy", "corr_topk(hard=False)"}
    r = cli("run", *args, "--seeds", "0", "--out", str(tmp_path / "l2x"), "--dry-run", timeout=120)
    assert r.returncode == 0 and "2 runs, 0 to run" in r.stdout, r.stdout + r.stderr
    r = cli("run", "l2x", "--estimators", "entropy:k=3", "--out", str(tmp_path / "bad"), timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_l2x_aspect_cli_on_the_fixture(tmp_path):
    records = _sweep(tmp_path / "asp", "l2x-aspect", "--estimators", "l2x,corr_topk", "--set", "k=5",
                     "--set", "fixture_train=40", "--set", "fixture_valid=10", "--set", "fixture_test=10",
                     "--set", "epochs=1", "--set", "embed=8", "--set", "hidden=8")
    rec = {r["estimator"]: r for r in records if r["metric"] == "subset_precision"}
    assert set(rec) == {"l2x", "corr_topk"} and rec["corr_topk"]["paper_mean"] == 63.1
