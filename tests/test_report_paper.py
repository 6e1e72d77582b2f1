"""Reports compared with the paper: a paper number never stands next to a run of another
protocol without the row saying so, and bold marks a best mean only when it is clear of the
standard errors."""

from __future__ import annotations

import pytest

from discretegrad.harness.paper import agreement_z, clear_best, deviations, paper_cell, table_agreement
from discretegrad.harness.report import summarize, to_markdown
from discretegrad.harness.runner import plan_sweep, run_sweep
from discretegrad.harness.store import Store


def _rec(mean, std, n, **kw):
    return {"mean": mean, "std": std, "n_seeds": n, **kw}


def test_clear_best_needs_a_difference_beyond_the_combined_standard_error():
    a, b = _rec(1.0, 0.1, 4), _rec(1.2, 0.1, 4)  # se 0.05 each: combined 0.0707 < 0.2
    assert clear_best([a, b], lower=True) is a and clear_best([a, b], lower=False) is b
    c, d = _rec(1.0, 0.2, 4), _rec(1.1, 0.2, 4)  # combined se 0.141 > 0.1: a tie
    assert clear_best([c, d], lower=True) is None
    e = _rec(1.0, 0.0, 4)
    assert clear_best([e, _rec(1.0 + 1e-9, 0.0, 4)], lower=True) is e  # zero spread: any difference is clear
    assert clear_best([_rec(1.0, None, 1), _rec(5.0, 0.1, 3)], lower=True) is None  # one seed: unknown se
    assert clear_best([a], lower=True) is None
    assert clear_best([a, b, _rec(None, None, 0)], lower=True) is a  # all-diverged rows have no mean
    assert clear_best([a, b, _rec(1.05, 0.1, 4)], lower=True) is None  # beats b but not the third


def test_deviations_name_the_settings_that_differ_from_the_protocol():
    protocol = {"epochs": 40, "tau": 1.0, "lr": 1e-3, "train_size": None}
    params = {"epochs": 5, "tau": 0.5, "lr": 0.001, "train_size": 100}
    assert deviations(protocol, params, matched=["tau"]) == {"epochs": [5, 40], "train_size": [100, None]}
    assert deviations(protocol, {**params, "epochs": 40.0, "train_size": None}, matched=["tau"]) == {}
    assert deviations(None, params, matched=[]) is None
    cell = paper_cell({"paper_mean": 123.0, "paper_std": 3.1, "protocol_deviations": {"epochs": [5, 40],
                                                                                      "train_size": [100, None]}})
    assert cell == "123 ± 3.1 (protocol differs: epochs=5 vs 40, train_size=100 vs default)"
    assert paper_cell({"paper_mean": 123.0, "paper_std": 3.1, "protocol_deviations": {}}) == "123 ± 3.1"
    assert paper_cell({"paper_mean": 1.0, "paper_std": None, "protocol_deviations": None}).endswith(
        "(protocol unknown)")
    assert paper_cell({"paper_mean": None, "paper_std": None, "protocol_deviations": {"epochs": [5, 40]}}) == "–"


@pytest.mark.parametrize("quick", [True, False])
def test_report_rows_say_when_the_protocol_differs(tmp_path, quick):
    import toy_experiment  # noqa: F401  (registers "toy")

    plan = plan_sweep("toy", out=tmp_path, estimators=["stgs", "st"], seeds="0-1", quick=quick,
                      overrides={"lr": 1.0})
    assert run_sweep(plan, progress=False).ok
    with Store(tmp_path) as store:
        records = summarize(store)
        info = store.experiment_info()
    paper = next(r for r in records if r["estimator"] == "stgs" and r["metric"] == "final_loss")
    assert paper["paper_mean"] == 0.5
    md = to_markdown(records, info)
    row = next(line for line in md.splitlines() if line.startswith("| `stgs` |"))
    if quick:  # --quick sets epochs=2: the toy's protocol has more
        default = info["toy"]["protocol"]["epochs"]
        assert paper["protocol_deviations"] == {"epochs": [2, default]}
        assert f"0.5 ± 0.1 (protocol differs: epochs=2 vs {default})" in row
    else:
        assert paper["protocol_deviations"] == {} and "0.5 ± 0.1 |" in row and "protocol differs" not in row


def test_agreement_z_and_the_table_level_tests_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    assert agreement_z(10.0, 2, 9.0, 1.0, 10) == pytest.approx(1.0 / (0.5 + 0.1) ** 0.5)
    assert agreement_z(9.0, 10, 9.0, 2.0, 10) == 0.0
    for bad in ((1.0, 0, 1.0, 1.0, 10), (1.0, 2, 1.0, 0.0, 10), (1.0, 2, 1.0, 1.0, 0)):
        with pytest.raises(ValueError, match="Expected"):
            agreement_z(*bad)
    zs = [-0.5, 0.29, 2.21, -2.0, 1.3, -0.1, 0.7]
    a = table_agreement(zs)
    chi2 = sum(z * z for z in zs)
    q = 2 * stats.norm.sf(2.0)
    assert a["chi2"] == pytest.approx(chi2) and a["p_chi2"] == pytest.approx(stats.chi2.sf(chi2, len(zs)), rel=1e-9)
    assert a["beyond"] == 1 and a["expected_beyond"] == pytest.approx(len(zs) * q)  # 2.21; -2.0 is not beyond 2
    assert a["p_beyond"] == pytest.approx(stats.binom.sf(0, len(zs), q), rel=1e-9)
    assert table_agreement([0.0])["p_chi2"] == pytest.approx(1.0) and table_agreement([0.0])["p_beyond"] == 1.0
    with pytest.raises(ValueError, match="Expected at least one z"):
        table_agreement([])


def test_paper_agreement_tool_pools_cells_across_stores(tmp_path, capsys):
    import shutil
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tools"))
    try:
        import paper_agreement
    finally:
        sys.path.remove(str(root / "tools"))
    for name in ("categorical-vae-full", "categorical-vae-table3"):
        shutil.copytree(root / "results" / name, tmp_path / name, ignore=shutil.ignore_patterns("report", "runs"))
    assert paper_agreement.main(["--metric", "test_neg_elbo", "--paper-seeds", "10",
                                 str(tmp_path / "categorical-vae-full"), str(tmp_path / "categorical-vae-table3")]) == 0
    out = capsys.readouterr().out
    assert "| tau=0.5 | stgs | 10 |" in out  # 3 seeds in one store and 7 in the other: one cell
    assert "| tau=0.5 | gst(gap=1.0) | 3 | 107.24 | 108.43 ± 1.08 | -1.67 |" in out
    cells = [line for line in out.splitlines() if line.startswith("| tau=")]  # the stores grow: count the rows
    assert len(cells) >= 8 and f"\n{len(cells)} cells: Σ z² =" in out
    with pytest.raises(SystemExit):
        paper_agreement.main(["--metric", "test_neg_elbo", "--paper-seeds", "10", str(tmp_path / "nowhere")])


def test_selection_picks_the_best_candidate_and_reports_it(tmp_path):
    """An experiment's ``selection`` (the paper's pick among its trials): per estimator the finished run
    with the best metric over the ``over`` settings and the seeds, its reported metrics and the paper's."""
    import toy_experiment  # noqa: F401  (registers "toy-pick": lr in {0.5, 1.0} is what it picks over)

    from discretegrad.harness.report import load_groups
    from discretegrad.harness.selection import selected

    plan = plan_sweep("toy-pick", out=tmp_path, estimators=["stgs", "st"], seeds="0-2",
                      overrides={"diverge_seed": 2})  # seed 2 diverges: never a candidate
    run_sweep(plan, progress=False)
    with Store(tmp_path) as store:
        runs = store.runs()
        groups, info = load_groups(store)
        picked = selected(groups, info)
        records = summarize(store)
        info_without = {k: {kk: vv for kk, vv in v.items() if kk != "selection"} for k, v in info.items()}
        assert selected(groups, info_without) == picked  # a store from before selections: the registered one
    assert [r["estimator"] for r in picked] == ["stgs", "st"]
    for rec in picked:
        candidates = [r for r in runs if r["estimator"] == rec["estimator"] and r["status"] == "finished"]
        assert len(candidates) == rec["candidates"] == 4  # 2 lr x seeds 0-1
        best = min(candidates, key=lambda r: r["metrics"]["final_loss"])
        assert rec["run_id"] == best["run_id"] and rec["value"] == best["metrics"]["final_loss"]
        assert rec["chosen"] == {"lr": best["params"]["lr"], "seed": best["seed"]}
        assert rec["report"] == {m: best["metrics"][m] for m in ("prob_target", "final_loss")}
        on_paper = rec["estimator"] == "stgs" and best["params"]["lr"] == 1.0  # the paper entry: stgs at lr 1.0
        assert rec["paper"]["final_loss"] == ([0.5, 0.1] if on_paper else [None, None])
        assert rec["protocol_deviations"] == {"diverge_seed": [2, -1]}
    md = to_markdown(records, info, selections=picked)
    section = md.split("### Selected runs: the lowest `final_loss` over `lr` and the seeds")[1]
    rows = [line for line in section.splitlines() if line.startswith("| default setting |")]
    assert [row.split(" | ")[1] for row in rows] == ["`stgs`", "`st`"]
    assert all(row.endswith("| diverge_seed=2 vs -1 |") for row in rows)


def test_selection_is_checked_when_registered():
    import dataclasses

    import toy_experiment

    from discretegrad.harness.contract import Selection

    for sel, match in [(Selection(("nope",), "final_loss", False, ()), "selection.over to name settings"),
                       (Selection((), "final_loss", False, ()), "selection.over to name settings"),
                       (Selection(("lr",), "test_loss", False, ()), "selection metrics"),
                       (Selection(("lr",), "final_loss", False, ("nope",)), "selection metrics")]:
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(toy_experiment.TOY, name="toy-bad", selection=sel).validate()
