"""What :func:`discretegrad.leaderboard.run_leaderboard` writes: a markdown table per problem
(ranked by MSE), a Pareto plot of MSE against time per distribution (PNG), ``leaderboard.json``
with every number, and a README with the command and the environment.

Plots use an explicit ``matplotlib.figure.Figure`` on an Agg canvas (no global backend switch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discretegrad._extras import agg_figure
from discretegrad._format import markdown_table

if TYPE_CHECKING:
    from discretegrad.leaderboard_records import Budget, Entry, ProblemResult, Row

__all__ = ["write_problem", "summary_line", "write_all", "problem_table", "pareto_front"]

_HEAD = ["rank", "estimator", "kind", "unbiased", "relaxed", "samples", "draws", "MSE", "bias", "bias SE", "rel. bias",
         "variance", "cos(mean, exact)", "mean cos", "ms/grad"]


def _g(x: float | None, spec: str = ".4g") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def problem_table(result: ProblemResult) -> str:
    """The ranked markdown table of one problem (skipped estimators are listed after it)."""
    head = [*_HEAD, f"time × {result.baseline}" if result.baseline else "time ratio"]
    rows, rank = [], 0
    for r in result.rows:
        if r.report is None:
            continue
        rank += 1
        rep = r.report
        rows.append([str(rank), f"`{r.estimator}`", "op" if r.kind == "op" else "needs f",
                     "yes" if r.unbiased else "no", "yes" if r.relaxed else "no", str(r.n_samples), str(rep.draws),
                     _g(rep.mse),
                     _g(rep.bias), _g(rep.bias_se, ".2g"), _g(rep.relative_bias, ".3f"), _g(rep.variance),
                     _g(rep.cosine, ".4f"), _g(rep.mean_cosine, ".4f"), _g(r.ms_per_gradient, ".3f"),
                     _g(r.time_ratio, ".2f")])
    text = markdown_table(head, rows)
    skipped = [r for r in result.rows if r.report is None]
    if skipped:
        text += "\n\nSkipped (registered for this distribution, not ranked here):\n\n"
        text += "\n".join(f"- `{r.estimator}`: {r.skipped}" for r in skipped)
    return text


def _samples_note(result: ProblemResult) -> str:
    multi = [f"{r.estimator}: {r.n_samples}" for r in result.rows if r.n_samples > 1]
    return "one sample per gradient" + (f" ({', '.join(multi)} samples, their `min_samples`)" if multi else "")


def write_problem(result: ProblemResult, out: Path, *, budget: Budget, seed: int, command: str | None) -> Path:
    """``<out>/<problem>.md``."""
    p = result.problem
    lines = [f"# Leaderboard: {p.name} ({p.distribution})", "", f"{p.description}."]
    if p.notes:
        lines += ["", p.notes]
    lines += ["", f"Exact gradient by enumeration, norm {result.exact_norm:.4g}. {budget.draws} gradient draws per "
              f"estimator (fewer, at least {budget.min_draws}, for one whose draws would take more than "
              f"{budget.seconds:g} s: see `draws`), {_samples_note(result)}, seed {seed}. Time: median over {budget.rounds} rounds of "
              f"{budget.block} gradients, the estimators in a fresh random order each round; "
              f"{result.baseline_note}, the median of the ratios within a round. Ranked by MSE = mean ‖ĝ − g‖² "
              "(= variance + bias²); bias is ‖mean ĝ − g‖ with its Monte Carlo standard error (bias SE); "
              "a relaxed estimator's forward value is not a discrete sample."]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += ["", problem_table(result), ""]
    path = out / f"{p.name}.md"
    path.write_text("\n".join(lines))
    return path


def summary_line(result: ProblemResult) -> str:
    ranked = [r for r in result.rows if r.report is not None]
    best = ranked[0].estimator if ranked else "none"
    return (f"{result.problem.name}: {len(ranked)} ranked, {len(result.rows) - len(ranked)} skipped, "
            f"lowest MSE {best}, {result.seconds:.1f} s")


# ----------------------------------------------------------------------------- JSON

def _row_record(r: Row) -> dict[str, Any]:
    rec: dict[str, Any] = {"estimator": r.estimator, "kind": r.kind, "unbiased": r.unbiased, "relaxed": r.relaxed,
                           "n_samples": r.n_samples, "skipped": r.skipped, "ms_per_gradient": r.ms_per_gradient,
                           "time_ratio": r.time_ratio, "ms_rounds": list(r.ms_rounds),
                           "ratio_rounds": list(r.ratio_rounds)}
    if r.report is not None:
        rec["diagnostics"] = r.report.as_dict()
    return rec


def _problem_record(result: ProblemResult) -> dict[str, Any]:
    p = result.problem
    return {"name": p.name, "distribution": p.distribution, "description": p.description, "notes": p.notes,
            "options": dict(p.options), "relaxed_inputs": p.relaxed_inputs, "exact_norm": result.exact_norm,
            "baseline": result.baseline, "baseline_note": result.baseline_note, "seconds": result.seconds,
            "build_seconds": result.build_seconds, "rows": [_row_record(r) for r in result.rows]}


# ----------------------------------------------------------------------------- plots

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(time, mse)`` no other point beats in both (lower is better), by time."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def _plot_distribution(distribution: str, results: Sequence[ProblemResult], path: Path) -> None:
    cols = min(3, len(results))
    nrows = math.ceil(len(results) / cols)
    fig = agg_figure("the leaderboard's Pareto plots", figsize=(5.2 * cols, 4.4 * nrows))
    for k, res in enumerate(results):
        ax = fig.add_subplot(nrows, cols, k + 1)
        rows = [r for r in res.rows if r.report is not None and r.report.mse > 0 and math.isfinite(r.report.mse)]
        use_ratio = all(r.time_ratio is not None for r in rows)
        pts = [((r.time_ratio if use_ratio else r.ms_per_gradient) or math.nan, r.report.mse) for r in rows]
        for r, (x, y) in zip(rows, pts, strict=True):
            color = "tab:green" if r.unbiased else "tab:red"
            ax.scatter([x], [y], marker="o" if r.unbiased else "^", s=36, edgecolors=color,
                       facecolors="none" if r.relaxed else color, zorder=3)
            ax.annotate(r.estimator, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        front = pareto_front(pts)
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="0.5", lw=1, ls="--", zorder=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"time per gradient / {res.baseline}" if use_ratio else "ms per gradient")
        ax.set_ylabel("MSE to the exact gradient")
        ax.set_title(res.problem.name, fontsize=9)
        ax.grid(True, which="both", alpha=0.2)
    fig.suptitle(f"{distribution}: MSE against time (circle unbiased, triangle biased, hollow relaxed; "
                 "dashed: Pareto front)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- README

def _environment_lines(env: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    keys = ["python", "torch", "numpy", "discretegrad", "platform", "cpu_count", "git_commit", "git_dirty"]
    lines = [f"- {k}: {env[k]}" for k in keys if k in env]
    lines.append(f"- torch threads: {meta['torch_threads']}")
    return lines


def _readme(results: Sequence[ProblemResult], unavailable: Sequence[tuple[Entry, str]], no_problem: Sequence[str],
            meta: Mapping[str, Any]) -> str:
    budget = meta["budget"]
    lines = ["# Estimator leaderboard", ""]
    if meta.get("command"):
        lines += [f"Command: `{meta['command']}`", ""]
    lines += [
        "Every estimator the registry holds for a distribution is compared, on each problem below, against the "
        "exact gradient of E[f(z)] (by enumeration) with `dg.diagnostics.compare`: "
        f"{budget['draws']} gradient draws per estimator (fewer, at least {budget['min_draws']}, for one whose "
        f"draws would take more than {budget['seconds']:g} s; estimators with `min_samples` > 1 get that many "
        "samples per gradient), seed "
        f"{meta['seed']}; each estimator's draws come from its own generator, so its numbers do not depend on "
        "which other estimators are registered. Time per gradient is measured in the same run: "
        f"{budget['rounds']} rounds of {budget['block']} gradients per estimator, the estimators in a fresh random "
        "order each round; the ratio to the family's baseline (STGS; ST where the family has no STGS; the SST "
        "straight-through `entropy` for top-k and trees) is taken within each round and its median reported. "
        "Tables are ranked by MSE; relaxed estimators (forward value not a discrete sample) are ranked and "
        "flagged; an estimator that cannot run on a problem is listed under it with the reason.", "",
        "## Problems", ""]
    head = ["problem", "distribution", "ranked", "skipped", "lowest MSE", "lowest MSE (unbiased)", "time baseline",
            "build s", "measure s"]
    rows = []
    for res in results:
        ranked = [r for r in res.rows if r.report is not None]
        unbiased = [r for r in ranked if r.unbiased]
        rows.append([f"[{res.problem.name}]({res.problem.name}.md)", res.problem.distribution, str(len(ranked)),
                     str(len(res.rows) - len(ranked)), f"`{ranked[0].estimator}`" if ranked else "–",
                     f"`{unbiased[0].estimator}`" if unbiased else "–", f"`{res.baseline}`" if res.baseline else "–",
                     f"{res.build_seconds:.1f}", f"{res.seconds:.1f}"])
    lines += [markdown_table(head, rows), ""]
    lines += [f"- **{res.problem.name}**: {res.problem.description}." + (f" {res.problem.notes}" if res.problem.notes
                                                                            else "") for res in results]
    if unavailable or no_problem:
        lines += ["", "## Not ranked", ""]
        lines += [f"- problem `{e.name}` ({e.distribution}): {reason}" for e, reason in unavailable]
        lines += [f"- distribution `{d}`: no problem with an enumerable exact gradient in the suite" for d in no_problem]
    dists = sorted({res.problem.distribution for res in results})
    if dists:
        lines += ["", "## MSE against time", ""]
        lines += [f"![{d}](pareto_{d}.png)" for d in dists]
    lines += ["", "## Environment", "", *_environment_lines(meta.get("environment", {}), meta),
              f"- time of the whole run: {meta['wall_seconds']:.0f} s wall, {meta['cpu_seconds']:.0f} s CPU of this "
              f"process; load average at the end {meta.get('load_average')} (other processes on the machine "
              "stretch the wall time)", "",
              "All numbers, with the timing of every round: `leaderboard.json`.", ""]
    return "\n".join(lines)


def write_all(results: Sequence[ProblemResult], unavailable: Sequence[tuple[Entry, str]], no_problem: Sequence[str],
              out: Path, meta: Mapping[str, Any]) -> None:
    """``leaderboard.json``, ``pareto_<distribution>.png`` and ``README.md`` under ``out``."""
    record = {"meta": dict(meta), "problems": [_problem_record(r) for r in results],
              "unavailable": [{"name": e.name, "distribution": e.distribution, "reason": why} for e, why in unavailable],
              "no_problem": list(no_problem)}
    (out / "leaderboard.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    by_dist: dict[str, list[ProblemResult]] = {}
    for r in results:
        by_dist.setdefault(r.problem.distribution, []).append(r)
    for d, rs in by_dist.items():
        _plot_distribution(d, rs, out / f"pareto_{d}.png")
    (out / "README.md").write_text(_readme(results, unavailable, no_problem, meta))
