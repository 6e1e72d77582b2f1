"""Reports compared with the paper: a paper number never stands next to a run of another
protocol without the row saying so, and bold marks a best mean only when it is clear of the
standard errors."""

from __future__ import annotations

import pytest

from discretegrad.harness.paper import clear_best, deviations, paper_cell
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
