"""Pictures of the trees ``nri-graph-layout`` inferred, against the true ones.

Each finished run stores the artifact ``trees``: for the first ``n_pictures`` test graphs, the
last frame's vertex positions, the true edges and the edges of one hard sample of the inferred
structure (at the best validation ELBO). :func:`draw_trees` draws one row per run (one panel per
graph): true edges grey and wide, inferred edges on top, green where they are true edges and red
where they are not. :func:`write_pictures` reads the finished runs of a sweep's store
(``OUT/store.sqlite``, opened read-only with ``sqlite3``: the harness's store API is not an
experiment's to import, and ``runs/`` is not committed) and writes one PNG per ``(steps, seed)``::

    python -m discretegrad.experiments.nri_pictures results/nri-graph-layout

Needs matplotlib (the ``plots`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from discretegrad._extras import agg_figure

__all__ = ["draw_trees", "load_tree_records", "write_pictures", "main"]

_PURPOSE = "nri-graph-layout tree pictures"


def _connect(path: Path) -> sqlite3.Connection:
    """The store opened read-only (``immutable`` when no writer's files are there to share)."""
    if not path.is_file():
        raise ValueError(f"Expected a sweep's store at {path}, but got no such file")
    mode = "ro" if path.with_name(path.name + "-wal").exists() else "ro&immutable=1"
    return sqlite3.connect(f"file:{path}?mode={mode}", uri=True)


def load_tree_records(out: str | Path) -> list[dict[str, Any]]:
    """One record per finished ``nri-graph-layout`` run in the store of ``out``
    (``out/store.sqlite``, read only): its estimator label, seed, settings, final metrics and
    ``trees`` artifact, sorted by (steps, seed, structure, estimator)."""
    with contextlib.closing(_connect(Path(out) / "store.sqlite")) as db:
        rows = db.execute(
            "SELECT r.estimator_label, r.seed, r.params, r.metrics, a.data FROM runs r JOIN artifacts a "
            "ON a.run_id = r.run_id WHERE r.experiment = 'nri-graph-layout' AND r.status = 'finished' "
            "AND a.name = 'trees'").fetchall()
    records = [{"estimator": label, "seed": seed, "params": json.loads(params), "final": json.loads(metrics),
                "graphs": json.loads(data)["graphs"]} for label, seed, params, metrics, data in rows]
    order = {"spanning_tree": 0, "indep": 1, "topk": 2}
    records.sort(key=lambda r: (r["params"]["steps"], r["seed"], order.get(r["params"]["structure"], 9),
                                r["estimator"]))
    return records


def draw_trees(records: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Draw one row per record (a run), one panel per stored graph; save a PNG at ``path``."""
    if not records:
        raise ValueError("Expected at least one run with a 'trees' artifact, but got none")
    cols = max(len(r["graphs"]) for r in records)
    fig = agg_figure(_PURPOSE, figsize=(2.2 * cols + 1.6, 2.3 * len(records)))
    for row, rec in enumerate(records):
        for col, graph in enumerate(rec["graphs"]):
            ax = fig.add_subplot(len(records), cols, row * cols + col + 1)
            pos = graph["positions"]
            true = {tuple(e) for e in graph["true"]}
            for i, j in true:
                ax.plot([pos[i][0], pos[j][0]], [pos[i][1], pos[j][1]], color="0.8", lw=5, zorder=1)
            for i, j in graph["inferred"]:
                ax.plot([pos[i][0], pos[j][0]], [pos[i][1], pos[j][1]], lw=1.5, zorder=2,
                        color="tab:green" if (i, j) in true else "tab:red")
            ax.scatter([p[0] for p in pos], [p[1] for p in pos], s=14, color="black", zorder=3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal", adjustable="datalim")
            hits = len(true & {tuple(e) for e in graph["inferred"]})
            ax.set_title(f"{hits}/{len(true)} true edges", fontsize=8)
            if col == 0:
                p = rec["params"]
                label = f"{p['structure']}\n{rec['estimator']}"
                if "test_precision" in rec["final"]:
                    label += f"\nprec {rec['final']['test_precision']:.0f}%"
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


def write_pictures(out: str | Path, dest: str | Path | None = None) -> list[Path]:
    """One PNG ``trees_T<steps>_seed<seed>.png`` per (steps, seed) of the runs under ``out``,
    written into ``dest`` (default: ``out/report``)."""
    records = load_tree_records(out)
    if not records:
        raise ValueError(f"Expected finished nri-graph-layout runs with a 'trees' artifact under {out}, but got none")
    dest = Path(dest) if dest is not None else Path(out) / "report"
    dest.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["params"]["steps"], rec["seed"]), []).append(rec)
    written = []
    for (steps, seed), recs in sorted(groups.items()):
        title = (f"test graphs (last frame, T = {steps}, seed {seed}): true edges grey; inferred green if true, "
                 f"red if not")
        written.append(draw_trees(recs, dest / f"trees_T{steps}_seed{seed}.png", title))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m discretegrad.experiments.nri_pictures",
                                     description="Draw the inferred trees of nri-graph-layout runs.")
    parser.add_argument("out", help="a sweep's output directory (--out of discretegrad run)")
    parser.add_argument("--dest", default=None, help="where the PNGs go (default: OUT/report)")
    args = parser.parse_args(argv)
    try:
        paths = write_pictures(args.out, args.dest)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
