"""Comparison with the paper in reports: which paper number a group of runs stands next to,
where the runs' protocol differs from the paper's, and which row is clearly best.

The paper's protocol is the experiment's defaults (every experiment runs the paper's protocol
by default) of the settings that are part of it (not those declared ``protocol=False``, which
only change what is measured), stored with the runs (``info["protocol"]``); for stores written before that, the
registered experiment's defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from discretegrad._format import format_mean_std
from discretegrad.harness.contract import get_experiment

__all__ = ["json_key", "same_value", "protocol_of", "deviations", "paper_number", "clear_best", "paper_cell"]


def json_key(x: Any) -> str:
    """A canonical JSON text of ``x`` (for grouping and comparing settings)."""
    return json.dumps(x, sort_keys=True, default=str)


def same_value(a: Any, b: Any) -> bool:
    """Equal settings values (an int equals the same float)."""
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return json_key(a) == json_key(b)


def protocol_of(exp: str, info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's protocol (every setting's default): as stored with the runs, else as the
    registered experiment declares it now, else unknown (``None``)."""
    if "protocol" in info:
        return dict(info["protocol"])
    try:
        return get_experiment(exp).protocol
    except ValueError:
        return None


def deviations(protocol: Mapping[str, Any] | None, params: Mapping[str, Any], matched: Sequence[str]
               ) -> dict[str, list[Any]] | None:
    """``{setting: [this run's value, the paper's]}`` for the settings that differ from the
    protocol, leaving out those the matched paper entry fixes (``matched``); ``None`` when the
    protocol is unknown."""
    if protocol is None:
        return None
    return {k: [params[k], v] for k, v in sorted(protocol.items())
            if k in params and k not in matched and not same_value(params[k], v)}


def paper_number(info: Mapping[str, Any], label: str, params: Mapping[str, Any], metric: str
           ) -> tuple[Any, Any, list[str]]:
    """The paper's (mean, std) for ``label``: among the ``paper_results`` entries whose settings
    all hold in ``params`` (grid keys or others, e.g. a preset), the most specific one; and the
    settings that entry fixes."""
    best, best_size, keys = (None, None), -1, list(info.get("grid_keys", []))
    for entry in info.get("paper_results", []):
        if entry["estimator"] != label or metric not in entry["metrics"]:
            continue
        grid = entry["grid"]
        if all(k in params and same_value(params[k], v) for k, v in grid.items()) and len(grid) > best_size:
            value = list(entry["metrics"][metric]) + [None, None]
            best, best_size, keys = (value[0], value[1]), len(grid), [*keys, *grid]
    return (*best, keys)


def clear_best(recs: Sequence[Mapping[str, Any]], lower: bool) -> Mapping[str, Any] | None:
    """The record with the best mean if it beats every other by more than their combined
    standard error ``sqrt(se1² + se2²)`` (``se = std / sqrt(n_seeds)``), else ``None`` (also when
    a standard error is unknown: fewer than two seeds)."""
    rows = [r for r in recs if r["mean"] is not None]
    if len(rows) < 2 or any(r["std"] is None or r["n_seeds"] < 2 for r in rows):
        return None
    best = (min if lower else max)(rows, key=lambda r: r["mean"])
    se2 = {id(r): r["std"] ** 2 / r["n_seeds"] for r in rows}
    clear = all(abs(best["mean"] - r["mean"]) > (se2[id(best)] + se2[id(r)]) ** 0.5 for r in rows if r is not best)
    return best if clear else None


def paper_cell(r: Mapping[str, Any]) -> str:
    """A record's paper number, with the settings where its protocol differs from the paper's."""
    cell = format_mean_std(r["paper_mean"], r["paper_std"])
    dev = r.get("protocol_deviations")
    if r["paper_mean"] is None or dev == {}:
        return cell
    if dev is None:
        return cell + " (protocol unknown)"
    return cell + " (protocol differs: " + ", ".join(f"{k}={a} vs {'default' if b is None else b}" for k, (a, b) in dev.items()) + ")"
