"""What can be run: registered estimators (per distribution, with hyperparameters) and
experiments (with their typed settings: type, default, allowed values, help), as plain records
and as text (``discretegrad list``)."""

from __future__ import annotations

from typing import Any

from discretegrad.harness.contract import experiments
from discretegrad.harness.settings import describe
from discretegrad.registry import estimators

__all__ = ["catalog", "format_catalog"]


def catalog() -> dict[str, Any]:
    """``{"estimators": {distribution: [spec records]}, "experiments": [experiment records]}``."""
    est: dict[str, list[dict[str, Any]]] = {}
    for spec in estimators():
        est.setdefault(spec.distribution, []).append(spec.describe())
    exps = [{
        "name": e.name, "distribution": e.distribution, "paper": e.paper, "description": e.description,
        "estimators": [c.label for c in e.estimators],
        "local_estimators": {k: dict(v) for k, v in e.local_estimators.items()}, "quick_estimators": [c.label for c in e.quick_estimators],
        "grid": {k: list(v) for k, v in e.grid.items()},
        "quick_grid": None if e.quick_grid is None else {k: list(v) for k, v in e.quick_grid.items()},
        "seeds": list(e.seeds), "quick_seeds": list(e.quick_seeds),
        "settings": describe(e.settings), "quick": dict(e.quick), "metrics": dict(e.metrics),
    } for e in experiments()]
    return {"estimators": est, "experiments": exps}


def _seeds(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def format_catalog(cat: dict[str, Any] | None = None) -> str:
    cat = cat if cat is not None else catalog()
    lines = ["Estimators (discretegrad run --estimators name[:key=value...]):"]
    for dist, specs in cat["estimators"].items():
        lines.append(f"  {dist}:")
        width = max(len(s["name"]) for s in specs)
        for s in specs:
            hp = ", ".join(f"{k}={v!r}" for k, v in s["hyperparameters"].items()) or "-"
            flags = ("unbiased" if s["unbiased"] else "biased") + (", needs f" if s["needs_f"] else "")
            lines.append(f"    {s['name']:<{width}}  [{flags}] hyperparameters: {hp}")
            if s["summary"]:
                lines.append(f"    {'':<{width}}  {s['summary']}")
    lines.append("")
    lines.append("Experiments (discretegrad run NAME):")
    if not cat["experiments"]:
        lines.append("  (none registered)")
    for e in cat["experiments"]:
        lines.append(f"  {e['name']}  [{e['distribution']}]  {e['paper']}")
        lines.append(f"    estimators: {', '.join(e['estimators'])}   (--quick: {', '.join(e['quick_estimators'])})")
        for name, hp in e.get("local_estimators", {}).items():
            lines.append(f"    own estimator {name} (not registered): "
                         + (", ".join(f"{k}={v!r}" for k, v in hp.items()) or "-"))
        grid = "; ".join(f"{k} in {v}" for k, v in e["grid"].items()) or "-"
        lines.append(f"    grid: {grid}" + (f"   (--quick: {'; '.join(f'{k} in {v}' for k, v in e['quick_grid'].items())})"
                                             if e["quick_grid"] is not None else ""))
        lines.append(f"    seeds: {_seeds(e['seeds'])}   (--quick: {_seeds(e['quick_seeds'])})")
        lines.append("    settings (--set key=value; name: type = default  [allowed]  help):")
        width = max((len(f"{x['name']}: {x['type']} = {x['default']!r}") for x in e["settings"]), default=0)
        for x in e["settings"]:
            head = f"{x['name']}: {x['type']} = {x['default']!r}"
            lines.append(f"      {head:<{width}}  [{x['constraint']}]  {x['help']}")
        if e["quick"]:
            lines.append("    --quick sets: " + ", ".join(f"{k}={v!r}" for k, v in e["quick"].items()))
    return "\n".join(lines)
