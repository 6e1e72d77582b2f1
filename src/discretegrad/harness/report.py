"""Summaries of a store: records (for ``--json``), markdown tables and the report directory.

Runs are grouped by experiment, then by *setting* (their full parameters: runs of different
``--set`` values are never pooled), then by estimator (name and hyperparameters). A setting is
named by its grid point plus every parameter that differs between the experiment's stored
settings. Per group and metric: mean and sample standard deviation (ddof=1) of the final metric
over the finished runs (``n_seeds``), the number of diverged and failed runs, and the paper's
number where ``Experiment.paper_results`` has one for that estimator label whose settings all
hold in the group's parameters (the most specific such entry), with the settings in which the
group's protocol differs from the paper's (the experiment's defaults), so that a paper number
never stands next to a run of another protocol (``epochs=5``) without the row saying so.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from discretegrad._format import format_mean_std, markdown_table, mean_std
from discretegrad.harness.contract import EFFICIENCY, Artifact, get_experiment
from discretegrad.harness.files import atomic_write_text, dumps, path_component, safe_dir
from discretegrad.harness.grid import setting_name
from discretegrad.harness.paper import clear_best, deviations, paper_cell, paper_number, protocol_of
from discretegrad.harness.paper import json_key as _key
from discretegrad.harness.selection import selected, selection_of, selection_table
from discretegrad.harness.store import Store

__all__ = ["Group", "load_groups", "summarize", "declared_artifacts", "artifact_rows", "efficiency", "to_markdown",
           "write_report", "setting_name"]


@dataclasses.dataclass
class Group:
    """The runs of one estimator at one setting of one experiment."""

    experiment: str
    point: dict[str, Any]  # the setting's name (grid point + varying parameters)
    params: dict[str, Any]  # the full setting
    estimator: str  # label, e.g. "gst(gap=1.2)"
    estimator_name: str
    hparams: dict[str, Any]
    runs: list[dict[str, Any]]
    choice_label: str = ""  # the estimator choice's label (paper numbers are keyed by it)

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "finished"]

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.runs)


def _defaults(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The estimator defaults a run was planned with (``None``: a schema-1 run, unknown)."""
    return run["config"].get("estimator_defaults")


def load_groups(store: Store) -> tuple[list[Group], dict[str, dict[str, Any]]]:
    """All groups of the store (in the order their first run started) and the experiments' info.

    Runs of the same estimator choice planned with different estimator defaults (a default
    changed between two sweeps into one store) are different groups; their labels then say
    which defaults differ (``pwgf_mmd [bandwidth=2.0]``, ``[defaults unknown]`` for runs of a
    schema-1 store), so they are never pooled.
    """
    info = store.experiment_info()
    runs = store.runs()
    groups: dict[tuple[str, str, str], Group] = {}
    by_exp: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_exp.setdefault(r["experiment"], []).append(r)
    for exp, exp_runs in by_exp.items():
        settings = {_key(r["params"]): r["params"] for r in exp_runs}
        keys = set().union(*(p.keys() for p in settings.values()))
        varying = {k for k in keys if len({_key(p.get(k, "<unset>")) for p in settings.values()}) > 1}
        shown = varying | set(info.get(exp, {}).get("grid_keys", [])) | set().union(*(r["grid"] for r in exp_runs))
        for r in exp_runs:
            choice = r["estimator"] + _key(r["hparams"])
            gkey = (exp, _key(r["params"]), choice + _key(_defaults(r)))
            if gkey not in groups:
                point = {k: r["params"][k] for k in sorted(shown) if k in r["params"]}
                label = r["estimator_label"]
                variants = _variants(exp_runs, r)
                if len(variants) > 1:
                    label += f" [{_defaults_diff(_defaults(r), variants)}]"
                groups[gkey] = Group(exp, point, r["params"], label, r["estimator"], r["hparams"], [],
                                     r["estimator_label"])
            groups[gkey].runs.append(r)
    return list(groups.values()), info


def _variants(exp_runs: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> list[dict[str, Any] | None]:
    """The distinct estimator defaults among the runs of ``run``'s estimator choice."""
    same = [r for r in exp_runs if r["estimator"] == run["estimator"] and _key(r["hparams"]) == _key(run["hparams"])]
    return list({_key(_defaults(r)): _defaults(r) for r in same}.values())


def _defaults_diff(mine: dict[str, Any] | None, variants: Sequence[dict[str, Any] | None]) -> str:
    if mine is None:
        return "defaults unknown"
    keys = sorted({k for v in variants if v is not None for k in v if v.get(k) != mine.get(k)})
    return ", ".join(f"{k}={mine.get(k)}" for k in keys) or "defaults as planned"


def _metrics_of(info: Mapping[str, Any], groups: Sequence[Group]) -> dict[str, bool | None]:
    """Metric -> lower_is_better: the experiment's declared metrics, else what the runs returned."""
    if info.get("metrics"):
        return dict(info["metrics"])
    seen: dict[str, bool | None] = {}
    for g in groups:
        for r in g.runs:
            for m in r["metrics"]:
                seen.setdefault(m, None)
    return seen


def summarize(store: Store) -> list[dict[str, Any]]:
    """One record per experiment x setting x estimator x metric (the ``report --json`` output)."""
    groups, info = load_groups(store)
    records = []
    for exp in dict.fromkeys(g.experiment for g in groups):
        exp_groups = [g for g in groups if g.experiment == exp]
        exp_info = info.get(exp, {})
        protocol = protocol_of(exp, exp_info)
        for metric, lower in _metrics_of(exp_info, exp_groups).items():
            for g in exp_groups:
                values = [r["metrics"][metric] for r in g.finished if r["metrics"].get(metric) is not None]
                mean, std = mean_std(values)
                paper_mean, paper_std, fixed = paper_number(exp_info, g.choice_label or g.estimator, g.params, metric)
                records.append({
                    "experiment": exp, "estimator": g.estimator, "estimator_name": g.estimator_name,
                    "hparams": g.hparams, "grid": g.point, "params": g.params, "metric": metric,
                    "lower_is_better": lower, "mean": mean, "std": std, "n_seeds": len(values),
                    "n_diverged": g.count("diverged"), "n_failed": g.count("failed"),
                    "seeds": sorted(r["seed"] for r in g.finished if r["metrics"].get(metric) is not None),
                    "paper_mean": paper_mean, "paper_std": paper_std,
                    "protocol_deviations": deviations(protocol, g.params, fixed),
                })
    return records


def declared_artifacts(exp: str, info: Mapping[str, Any]) -> list[Artifact]:
    """The artifacts experiment ``exp`` declares (:attr:`Experiment.artifacts`): as stored with
    its runs, else (a store written before the declaration was stored) as the registered
    experiment of that name declares them now, else none."""
    if "artifacts" in info:
        return [Artifact.from_json(a) for a in info["artifacts"]]
    try:
        return list(get_experiment(exp).artifacts)
    except ValueError:  # not registered here (a plugin that is not loaded)
        return []


def artifact_rows(store: Store, groups: Sequence[Group], artifact: Artifact, experiment: str) -> list[dict[str, Any]]:
    """Rows of one declared artifact of ``experiment``: per group, the mean over finished runs of
    each column, and its ratio to the row of ``artifact.baseline`` (estimator name) at the same
    setting (the plain choice of that name first)."""
    rows = []
    for g in groups:
        if g.experiment != experiment:
            continue
        arts = [store.artifacts(r["run_id"]).get(artifact.name) for r in g.finished]
        arts = [a for a in arts if isinstance(a, Mapping)]
        if not arts:
            continue
        row = {"experiment": g.experiment, "artifact": artifact.name, "grid": g.point, "params": g.params,
               "estimator": g.estimator, "estimator_name": g.estimator_name, "n_runs": len(arts)}
        for key, _ in artifact.columns:
            vals = [float(a[key]) for a in arts if isinstance(a.get(key), (int, float))]
            row[key] = sum(vals) / len(vals) if vals else None
        rows.append(row)
    for row in rows:
        same = [b for b in rows if _key(b["params"]) == _key(row["params"]) and b["estimator_name"] == artifact.baseline]
        base = min(same, key=lambda b: (b["estimator"] != artifact.baseline, b["estimator"])) if same else None
        for key, _ in artifact.columns:
            ok = base is not None and row[key] is not None and base[key]
            row[key + "_ratio"] = row[key] / base[key] if ok else None
        row["baseline"] = base["estimator"] if base else None
    return rows


def efficiency(store: Store, groups: Sequence[Group] | None = None) -> list[dict[str, Any]]:
    """Rows of every experiment's declared ``efficiency`` artifact (see :func:`artifact_rows`)."""
    if groups is None:
        groups, info = load_groups(store)
    else:
        info = store.experiment_info()
    rows = []
    for exp in dict.fromkeys(g.experiment for g in groups):
        for artifact in declared_artifacts(exp, info.get(exp, {})):
            if artifact.name == EFFICIENCY.name:
                rows += artifact_rows(store, groups, artifact, exp)
    return rows


# ----------------------------------------------------------------------------- markdown

def _fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _artifact_table(artifact: Artifact, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    title = artifact.name[:1].upper() + artifact.name[1:]
    ratios = artifact.baseline is not None
    header, cells = ["estimator"], []
    for _, head in artifact.columns:
        header += [head, "ratio"] if ratios else [head]
    for e in rows:
        row = [f"`{e['estimator']}`"]
        for key, _ in artifact.columns:
            row.append(format_mean_std(e[key], None))
            if ratios:
                row.append(_fmt_ratio(e[key + "_ratio"]))
        cells.append(row + [str(e["n_runs"])])
    what = f"; ratios to `{rows[0]['baseline'] or artifact.baseline}` at this setting" if ratios else ""
    return [f"{title} (mean over finished runs{what}):", markdown_table(header + ["runs"], cells)]


def to_markdown(records: Sequence[Mapping[str, Any]], info: Mapping[str, Mapping[str, Any]],
                art_rows: Sequence[Mapping[str, Any]] = (), images: Mapping[tuple[str, str], list[str]] | None = None,
                selections: Sequence[Mapping[str, Any]] = ()) -> str:
    """The tables of ``summarize`` records (and the declared artifacts' rows), one section per
    experiment and one table per setting, then the experiment's selected runs
    (:func:`discretegrad.harness.selection.selected`), if any.
    ``images`` maps (experiment, setting name) to relative image paths."""
    out = []
    images = images or {}
    for exp in dict.fromkeys(r["experiment"] for r in records):
        recs = [r for r in records if r["experiment"] == exp]
        ei = info.get(exp, {})
        out.append(f"## {exp}" + (f" — {ei['paper']}" if ei.get("paper") else ""))
        metrics = list(dict.fromkeys(r["metric"] for r in recs))
        lower = {r["metric"]: r["lower_is_better"] for r in recs}
        with_paper = {m for m in metrics if any(r["paper_mean"] is not None for r in recs if r["metric"] == m)}
        desc = ", ".join(f"`{m}`" + ("" if lower[m] is None else (" (lower is better)" if lower[m] else
                                                                  " (higher is better)")) for m in metrics)
        out.append(f"Metrics: {desc}. Cells: mean ± std (ddof=1) of the final value over the finished seeds; "
                   "best mean in bold only where it beats every other row by more than their combined standard "
                   "error, sqrt(se₁² + se₂²) with se = std/√n_seeds; X: every run diverged; n_seeds counts "
                   "finished runs. A paper number says where this run's protocol differs from the paper's "
                   "(`setting=ours vs paper`).")
        for name in dict.fromkeys(setting_name(r["grid"]) for r in recs):
            srecs = [r for r in recs if setting_name(r["grid"]) == name]
            out.append(f"### {name}")
            header = ["estimator"]
            for m in metrics:
                header.append(m)
                if m in with_paper:
                    header.append(f"{m} (paper)")
            header += ["n_seeds", "n_diverged", "n_failed"]
            best = {m: clear_best([r for r in srecs if r["metric"] == m], lower[m]) for m in metrics
                    if lower[m] is not None}
            rows = []
            for est in dict.fromkeys(r["estimator"] for r in srecs):
                erecs = {r["metric"]: r for r in srecs if r["estimator"] == est}
                row = [f"`{est}`"]
                first = next(iter(erecs.values()))
                for m in metrics:
                    r = erecs.get(m)
                    if r is None:
                        row.append("–")
                    elif r["mean"] is None and r["n_diverged"] > 0:
                        row.append("X")
                    else:
                        cell = format_mean_std(r["mean"], r["std"])
                        row.append(f"**{cell}**" if best.get(m) is r else cell)
                    if m in with_paper:
                        row.append(paper_cell(r) if r else "–")
                row += [str(max(r["n_seeds"] for r in erecs.values())), str(first["n_diverged"]),
                        str(first["n_failed"])]
                rows.append(row)
            out.append(markdown_table(header, rows))
            for artifact in declared_artifacts(exp, ei):
                arows = [e for e in art_rows if e["experiment"] == exp and e["artifact"] == artifact.name
                         and setting_name(e["grid"]) == name]
                if arows:
                    out += _artifact_table(artifact, arows)
            for img in images.get((exp, name), []):
                out.append(f"![{exp} {name}]({img})")
        picked = [r for r in selections if r["experiment"] == exp]
        if picked:
            out += selection_table(picked, selection_of(exp, ei) or {})
    return "\n\n".join(out) + "\n"


def _environment_md(store: Store) -> str:
    runs = store.runs()
    keys = ("python", "torch", "numpy", "device", "gpu", "git_commit", "git_dirty", "hostname", "torch_threads")
    lines = []
    for k in keys:
        vals = sorted({str(r["environment"].get(k)) for r in runs if r["environment"].get(k) is not None})
        if vals:
            lines.append(f"- {k}: {', '.join(vals)}")
    cmds = list(dict.fromkeys(s["command"] for s in store.sweeps()))
    if cmds:
        lines.append("- commands:")
        lines += [f"    - `{c}`" for c in cmds]
    return "\n".join(lines)


def write_report(directory: str | os.PathLike[str]) -> Path:
    """Write ``DIR/report/report.md`` and its PNG plots from the store in ``DIR``; return the path."""
    from discretegrad._extras import require
    from discretegrad.harness import plots

    require("matplotlib", plots.PURPOSE)  # one message before anything is written if the extra is missing
    d = Path(directory)
    with Store(d) as store:
        groups, info = load_groups(store)
        records = summarize(store)
        art_rows = [row for exp in dict.fromkeys(g.experiment for g in groups)
                    for artifact in declared_artifacts(exp, info.get(exp, {}))
                    for row in artifact_rows(store, groups, artifact, exp)]
        out = safe_dir(d, "report")  # never through a link: everything stays inside DIR
        images: dict[tuple[str, str], list[str]] = {}
        for exp in dict.fromkeys(g.experiment for g in groups):
            for name in dict.fromkeys(setting_name(g.point) for g in groups if g.experiment == exp):
                sgroups = [g for g in groups if g.experiment == exp and setting_name(g.point) == name]
                curves = {g.estimator: [store.epochs(r["run_id"]) for r in g.finished] for g in sgroups}
                rel = Path(path_component(exp)) / path_component(name)  # names from the store: sanitised
                safe_dir(out, rel.parent.name)
                images[(exp, name)] = [str(p.relative_to(out)) for p in
                                       plots.plot_setting(curves, f"{exp}: {name}", out / rel)]
        n_runs = len(store.runs())
        body = to_markdown(records, info, art_rows, images, selected(groups, info))
        header = (f"# Results: {d}\n\nGenerated by `discretegrad report` on "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {n_runs} stored runs.\n\n"
                  f"## Environment\n\n{_environment_md(store)}\n\n")
        path = out / "report.md"
        atomic_write_text(path, header + body)
        atomic_write_text(out / "summary.json", dumps(records, indent=2) + "\n")
    return path
