"""Diverged-run recording, report generation from a stored run set, grid parsing, progress bar."""

from __future__ import annotations

import io
import json
import math

import pytest
import toy_experiment  # noqa: F401  (registers "toy" through the plugin module)

from discretegrad import cli as cli_module
from discretegrad.harness.contract import EstimatorChoice, RunConfig, get_experiment
from discretegrad.harness.execute import ProgressEvent, RunResult
from discretegrad.harness.grid import expand, make_config, parse_estimators, parse_seeds, parse_value
from discretegrad.harness.progress import SweepProgress
from discretegrad.harness.report import efficiency, summarize
from discretegrad.harness.runner import experiment_info, plan_sweep, run_sweep
from discretegrad.harness.store import Store

# ----------------------------------------------------------------------------- diverged runs


@pytest.mark.parametrize("mode", ["nan", "raise"])
def test_diverged_runs_are_recorded_not_crashes(tmp_path, mode):
    s = run_sweep(plan_sweep("toy", out=tmp_path, estimators=["stgs"], seeds=[0, 1, 2], quick=True,
                             overrides={"diverge_seed": 1, "diverge_mode": mode}), progress=False)
    assert (s.finished, s.diverged, s.failed) == (2, 1, 0) and s.ok
    with Store(tmp_path) as st:
        runs = {r["seed"]: r for r in st.runs()}
        div = runs[1]
        assert div["status"] == "diverged" and div["metrics"] == {}
        assert div["error"] == ("train_loss = nan at epoch 2" if mode == "nan" else "toy divergence")
        epochs = st.epochs(div["run_id"])
        if mode == "nan":  # the diverging epoch is kept, its NaN stored as null
            assert [e for e, _ in epochs] == [1, 2] and epochs[1][1]["train_loss"] is None
        else:
            assert [e for e, _ in epochs] == [1]
        records = summarize(st)
    rec = next(r for r in records if r["metric"] == "final_loss")
    assert (rec["n_seeds"], rec["n_diverged"], rec["seeds"]) == (2, 1, [0, 2])
    # a rerun skips diverged runs like finished ones
    s2 = run_sweep(plan_sweep("toy", out=tmp_path, estimators=["stgs"], seeds=[0, 1, 2], quick=True,
                              overrides={"diverge_seed": 1, "diverge_mode": mode}), progress=False)
    assert (s2.skipped, s2.finished, s2.diverged) == (3, 0, 0)


def test_failed_run_exit_code_through_cli(tmp_path, capsys):
    code = cli_module.main(["run", "toy", "--quick", "--estimators", "st", "--seeds", "0-1", "--set", "fail_seed=0",
                            "--out", str(tmp_path), "--plugin", "toy_experiment"])
    cap = capsys.readouterr()
    assert code == 1
    assert "2 runs: 1 finished, 0 diverged, 1 failed" in cap.out
    assert "1 run(s) failed" in cap.err and "RuntimeError: toy failure at epoch 2" in cap.err
    assert "Traceback" not in cap.err


def test_dry_run_lists_runs_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "toy", "--quick", "--estimators", "st", "--seeds", "0-2", "--out", str(out),
            "--plugin", "toy_experiment"]
    assert cli_module.main([*argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"3 runs, 3 to run, into {out}" and not out.exists()
    assert all("to run    st  seed=" in line and line.endswith("lr=1.0") for line in lines[:-1])
    assert cli_module.main([*argv[:6], "0-1", *argv[7:]]) == 0  # seeds 0-1 run for real
    capsys.readouterr()
    assert cli_module.main([*argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"3 runs, 1 to run, into {out}"
    assert sum("finished" in line for line in lines) == 2


# ----------------------------------------------------------------------------- report from a stored set

def _result(cfg: RunConfig, status: str, final: dict, curve: list[float], eff: dict | None) -> RunResult:
    return RunResult(run_id=cfg.run_id, config=cfg.to_json(), status=status, metrics=final,
                     epochs=[(i + 1, {"train_loss": v, "grad_variance": 10.0 ** -i}) for i, v in enumerate(curve)],
                     artifacts={"efficiency": eff} if eff else {}, error=None if status == "finished" else "x",
                     environment={"torch": "t", "device": "cpu"}, started_at=100.0 + cfg.seed, finished_at=101.0 + cfg.seed)


def test_report_from_a_stored_run_set(tmp_path, capsys):
    exp = get_experiment("toy")
    info = experiment_info(exp)
    info["paper_results"] = [  # the most specific entry whose settings all hold wins (epochs=3 is the default)
        {"estimator": "gst(gap=1.0)", "grid": {"lr": 0.5}, "metrics": {"final_loss": [1.25, 0.5]}},
        {"estimator": "gst(gap=1.0)", "grid": {"epochs": 3, "lr": 0.5}, "metrics": {"final_loss": [1.0, 0.25]}},
        {"estimator": "gst(gap=1.0)", "grid": {"lr": 0.5, "steps": 99}, "metrics": {"final_loss": [9.0, 9.0]}},
        {"estimator": "stgs", "grid": {"lr": 1.0}, "metrics": {"final_loss": [9.0, 9.0]}},
    ]
    params = {"lr": 0.5}
    stgs, gst = EstimatorChoice("stgs"), EstimatorChoice("gst", {"gap": 1.0})
    with Store(tmp_path, create=True) as st:
        st.record_experiment("toy", info)
        # stgs: final_loss 1, 2, 4 over three seeds; 2 s / epoch, 100 MB
        for seed, v in enumerate([1.0, 2.0, 4.0]):
            cfg = make_config(exp, stgs, seed, params)
            st.write_run(_result(cfg, "finished", {"final_loss": v, "prob_target": 0.5}, [3.0, v],
                                 {"seconds_per_epoch": 2.0, "peak_memory_mb": 100.0}), grid={"lr": 0.5}, label="stgs")
        # gst: two finished (3, 5), one diverged; 3 s / epoch, 150 MB
        for seed, (status, v) in enumerate([("finished", 3.0), ("finished", 5.0), ("diverged", None)]):
            cfg = make_config(exp, gst, seed, params)
            final = {"final_loss": v, "prob_target": 0.25} if v is not None else {}
            st.write_run(_result(cfg, status, final, [3.0, v if v is not None else math.nan],
                                 {"seconds_per_epoch": 3.0, "peak_memory_mb": 150.0} if v else None),
                         grid={"lr": 0.5}, label="gst(gap=1.0)")
        recs = {(r["estimator"], r["metric"]): r for r in summarize(st)}
        eff = {e["estimator"]: e for e in efficiency(st)}

    a = recs[("stgs", "final_loss")]
    assert a["mean"] == pytest.approx(7 / 3) and a["std"] == pytest.approx(math.sqrt(7 / 3))  # ddof=1
    assert (a["n_seeds"], a["n_diverged"], a["paper_mean"]) == (3, 0, None)
    b = recs[("gst(gap=1.0)", "final_loss")]
    assert b["mean"] == pytest.approx(4.0) and b["std"] == pytest.approx(math.sqrt(2.0))
    assert (b["n_seeds"], b["n_diverged"], b["hparams"]) == (2, 1, {"gap": 1.0})
    assert (b["paper_mean"], b["paper_std"]) == (1.0, 0.25)
    assert eff["gst(gap=1.0)"]["seconds_per_epoch_ratio"] == pytest.approx(1.5)
    assert eff["gst(gap=1.0)"]["peak_memory_mb_ratio"] == pytest.approx(1.5)
    assert eff["stgs"]["seconds_per_epoch_ratio"] == pytest.approx(1.0)

    assert cli_module.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    # final_loss: lower is better, prob_target: higher is better -> stgs bold in both
    assert "| `stgs` | **2.333 ± 1.5** | – | **0.5 ± 0** | 3 | 0 | 0 |" in md
    assert "| `gst(gap=1.0)` | 4 ± 1.4 | 1 ± 0.25 | 0.25 ± 0 | 2 | 1 | 0 |" in md
    assert "| `gst(gap=1.0)` | 3 | 1.50× | 150 | 1.50× | 2 |" in md
    pngs = sorted(p.name for p in (tmp_path / "report").rglob("*.png"))
    assert pngs == ["lr=0.5_curves.png", "lr=0.5_grad_variance.png"]
    assert json.loads((tmp_path / "report" / "summary.json").read_text()) == summarize(Store(tmp_path))
    capsys.readouterr()


# ----------------------------------------------------------------------------- grid and parsing

def test_parse_seeds_and_estimators_and_values():
    assert parse_seeds("0-3") == (0, 1, 2, 3) and parse_seeds("0,3,5") == (0, 3, 5)
    assert parse_seeds("0-2,7,1") == (0, 1, 2, 7)
    for bad in ["", "3-1", "a", "1,,2", "-1", "1-", "0.5"]:
        with pytest.raises(ValueError, match="Expected --seeds"):
            parse_seeds(bad)
    a = parse_estimators("stgs,gst:gap=1.2:tau=0.5,gst(gap=0.8, tau=0.5),gumbel_rao:k=100")
    assert a == (EstimatorChoice("stgs"), EstimatorChoice("gst", {"gap": 1.2, "tau": 0.5}),
                 EstimatorChoice("gst", {"gap": 0.8, "tau": 0.5}), EstimatorChoice("gumbel_rao", {"k": 100}))
    assert parse_estimators("gst:gap=pi") == (EstimatorChoice("gst", {"gap": "pi"}),)
    assert parse_value("1e-3") == 0.001 and parse_value("True") is True and parse_value("none") is None
    assert parse_value("[1, 2]") == [1, 2] and parse_value("linear") == "linear"
    assert parse_value("__import__('os').getcwd()") == "__import__('os').getcwd()"  # never evaluated


def test_expand_grid_overrides_and_run_ids():
    exp = get_experiment("toy")
    full = expand(exp)
    assert len(full) == 2 * 2 * 3  # estimators x lr grid x seeds
    quick = expand(exp, quick=True)
    assert len(quick) == 2 * 1 * 2 and all(c.params["epochs"] == 2 and c.params["lr"] == 1.0 for c in quick)
    fixed = expand(exp, overrides={"lr": 1})  # fixes the grid key; int coerced to float
    assert len(fixed) == 2 * 3 and {c.params["lr"] for c in fixed} == {1.0}
    same = expand(exp, overrides={"lr": 1.0})
    assert [c.run_id for c in fixed] == [c.run_id for c in same]
    dup = expand(exp, estimators=["stgs", "stgs", "gst:gap=1.0", "gst(gap=1.0)"], seeds="0-1")
    assert len(dup) == 2 * 2 * 2 and len({c.run_id for c in dup}) == len(dup)
    with pytest.raises(ValueError, match="Expected --set epochs to be of type int"):
        expand(exp, overrides={"epochs": 2.5})


def test_progress_bar_shows_done_running_left_and_epoch():
    buf = io.StringIO()
    bar = SweepProgress(3, {"a": "stgs seed=0", "b": "st seed=1"}, enabled=True, file=buf)
    bar.on_event(ProgressEvent("a", started=True))
    bar.on_event(ProgressEvent("a", epoch=2, total_epochs=5, metric=0.125, metric_name="train_loss"))
    text = buf.getvalue()
    assert "done 0 | running 1 | left 2" in text and "stgs seed=0, epoch 2/5, train_loss 0.125" in text
    bar.on_result(RunResult("a", {}, "finished", {}, [], {}, None, {}, 0.0, 1.0))
    bar.close()
    assert "done 1 | running 0 | left 2" in buf.getvalue()
    quiet = io.StringIO()
    q = SweepProgress(3, {}, file=quiet)  # not a TTY: silent
    q.on_event(ProgressEvent("a", started=True))
    q.close()
    assert quiet.getvalue() == ""
