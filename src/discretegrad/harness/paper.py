"""Comparison with the paper in reports: which paper number a group of runs stands next to,
where the runs' protocol differs from the paper's, which row is clearly best, and whether a
table's cells agree with the paper's as a whole (:func:`agreement_z`, :func:`table_agreement`).

The paper's protocol is the experiment's defaults (every experiment runs the paper's protocol
by default) of the settings that are part of it (not those declared ``protocol=False``, which
only change what is measured), stored with the runs (``info["protocol"]``); for stores written before that, the
registered experiment's defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from discretegrad._format import format_mean_std
from discretegrad.harness.contract import get_experiment

__all__ = ["json_key", "same_value", "protocol_of", "deviations", "paper_number", "clear_best", "paper_cell",
           "agreement_z", "table_agreement"]


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


def agreement_z(mean: float, n: int, paper_mean: float, paper_std: float, paper_n: int) -> float:
    """``(mean - paper_mean) / (paper_std · sqrt(1/n + 1/paper_n))``: the difference of our mean of
    ``n`` seeds from the paper's mean of ``paper_n`` seeds in standard errors, taking the paper's
    seed standard deviation as both's (ours, from two or three seeds, is too uncertain to use).
    Under the hypothesis that both ran the same protocol it is about standard normal."""
    if n < 1 or paper_n < 1:
        raise ValueError(f"Expected n and paper_n to be at least 1, but got {n} and {paper_n}")
    if not paper_std > 0:
        raise ValueError(f"Expected paper_std to be > 0, but got {paper_std!r}")
    return (mean - paper_mean) / (paper_std * math.sqrt(1 / n + 1 / paper_n))


def table_agreement(zs: Sequence[float], threshold: float = 2.0) -> dict[str, float]:
    """Whether a table's cells, as a whole, disagree with the paper more than seed noise explains:
    ``chi2 = Σ z²`` and its p-value on ``len(zs)`` degrees of freedom (the cells independent and
    each z standard normal under the same-protocol hypothesis); the count of ``|z| > threshold``, how
    many were expected, and the binomial probability of at least that many."""
    import torch  # the regularised incomplete gamma function

    k = len(zs)
    if k == 0:
        raise ValueError("Expected at least one z, but got none")
    chi2 = float(sum(z * z for z in zs))
    p_chi2 = float(torch.special.gammaincc(torch.tensor(k / 2, dtype=torch.float64),
                                           torch.tensor(chi2 / 2, dtype=torch.float64)))
    q = math.erfc(threshold / math.sqrt(2))  # P(|z| > threshold)
    beyond = sum(abs(z) > threshold for z in zs)
    p_beyond = sum(math.comb(k, j) * q ** j * (1 - q) ** (k - j) for j in range(beyond, k + 1))
    return {"cells": k, "chi2": chi2, "p_chi2": p_chi2, "beyond": beyond, "expected_beyond": k * q,
            "p_beyond": p_beyond}
