"""The paper's pick of one run per table cell among several (a random search's best trial).

An experiment declares it as :class:`~discretegrad.harness.contract.Selection` (``over`` settings, the
deciding ``metric`` and its direction, the ``report`` metrics); it is stored with the runs. The report
(:mod:`.report`) adds, per experiment that has one, a table of the picked runs: for every setting
and estimator, the finished run with the best final metric among those that differ only in the
``over`` settings and the seed, its reported metrics, the paper's numbers for them and where the
protocol differs from the paper's. Diverged runs and runs without a finite metric are no candidates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from discretegrad._format import format_mean_std, markdown_table
from discretegrad.harness.contract import get_experiment
from discretegrad.harness.grid import setting_name
from discretegrad.harness.paper import deviations, paper_number, protocol_of
from discretegrad.harness.paper import json_key as _key

__all__ = ["selection_of", "selected", "selection_table"]


def selection_of(exp: str, info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The experiment's :class:`~discretegrad.harness.contract.Selection` as stored with its runs; for a
    store recorded before selections existed (no ``selection`` key), the registered experiment's."""
    if "selection" in info:
        return info["selection"]
    try:
        sel = get_experiment(exp).selection
    except ValueError:  # not registered here (a plugin's store)
        return None
    return sel.to_json() if sel is not None else None


def selected(groups: Sequence[Any], info: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per cell of an experiment that declares a selection (the paper's pick of one run
    among its trials): the finished run with the best final ``selection.metric`` among the runs of
    one estimator whose settings differ only in the ``selection.over`` keys and the seed, with its
    ``selection.report`` metrics and the paper's numbers for them. ``groups, info``:
    :func:`discretegrad.harness.report.load_groups` of the store (its ``Group`` objects; not imported
    here: the report imports this module)."""
    out = []
    for exp in dict.fromkeys(g.experiment for g in groups):
        exp_info = info.get(exp, {})
        sel = selection_of(exp, exp_info)
        if sel is None:
            continue
        over, metric, higher = set(sel["over"]), sel["metric"], sel["higher_is_better"]
        cells: dict[tuple[str, str], list[tuple[Any, dict[str, Any]]]] = {}
        for g in (g for g in groups if g.experiment == exp):
            rest = {k: v for k, v in g.params.items() if k not in over}
            for r in g.finished:
                value = r["metrics"].get(metric)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    cells.setdefault((g.estimator, _key(rest)), []).append((g, r))
        for (label, _), candidates in cells.items():
            g, r = (max if higher else min)(candidates, key=lambda c: c[1]["metrics"][metric])
            numbers = {m: paper_number(exp_info, g.choice_label or g.estimator, g.params, m) for m in sel["report"]}
            fixed = sorted({k for *_, keys in numbers.values() for k in keys})
            out.append({
                "experiment": exp, "estimator": label, "grid": {k: v for k, v in g.point.items() if k not in over},
                "chosen": {**{k: g.params.get(k) for k in sel["over"]}, "seed": r["seed"]}, "run_id": r["run_id"],
                "candidates": len(candidates), "metric": metric, "higher_is_better": higher,
                "value": r["metrics"][metric], "report": {m: r["metrics"].get(m) for m in sel["report"]},
                "paper": {m: [mean, std] for m, (mean, std, _) in numbers.items()},
                "protocol_deviations": deviations(protocol_of(exp, exp_info), g.params, fixed),
            })
    return out


def selection_table(recs: Sequence[Mapping[str, Any]], sel: Mapping[str, Any]) -> list[str]:
    """The markdown lines of :func:`selected`'s records of one experiment (its ``sel``: the stored selection)."""
    direction = "highest" if sel["higher_is_better"] else "lowest"
    over = ", ".join(f"`{k}`" for k in sel["over"])
    lines = [f"### Selected runs: the {direction} `{sel['metric']}` over {over} and the seeds (the paper's pick)",
             f"Per setting and estimator, the finished run with the {direction} final `{sel['metric']}` among "
             f"those that differ only in {over} and the seed (the candidates); its "
             + ", ".join(f"`{m}`" for m in sel["report"]) + ", and the paper's numbers."]
    header = ["setting", "estimator", "chosen", "candidates", sel["metric"]]
    for m in sel["report"]:
        header += [m, f"{m} (paper)"]
    header.append("protocol vs the paper's")
    rows = []
    for r in recs:
        row = [setting_name(r["grid"]), f"`{r['estimator']}`",
               ", ".join(f"{k}={v}" for k, v in r["chosen"].items()), str(r["candidates"]), f"{r['value']:.4g}"]
        for m in sel["report"]:
            v = r["report"].get(m)
            row += ["–" if v is None else f"{v:.4g}", format_mean_std(*r["paper"][m])]
        dev = r["protocol_deviations"]
        row.append("unknown" if dev is None else
                   ", ".join(f"{k}={a} vs {'default' if b is None else b}" for k, (a, b) in dev.items()) or "same")
        rows.append(row)
    return lines + [markdown_table(header, rows)]
