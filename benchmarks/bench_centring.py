"""Cost of centring the log-space computations: the structures' DPs at this checkout against the same
modules at ``--baseline-rev`` (before centring; loaded from git), interleaved in one process.

Cases, float32, one CPU thread, forward + backward (the relaxed SST sample and its gradient, as the
ops compute them) unless noted: top-k entropy marginals and correlated top-k marginals ``[1000, 100]``,
``k = 10``; the correlated maximiser alone (max-semiring traceback, no gradient); the LML projection
``[1000, 100]``, ``k = 10``; spanning-tree and arborescence marginals, ``n = 10`` batch 128 and ``n = 50``
batch 32. Every round runs every variant (order rotating), after one warm-up each.

    python benchmarks/bench_centring.py [--reps 30] [--baseline-rev b105c4a] [--out results/reliability/centring_cost.md]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

import torch

from discretegrad.structures.logspace import gradient

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, interleaved, module_at, write_report  # noqa: E402

MODULES = {name: importlib.import_module(f"discretegrad.structures.{name}") for name in ("semiring", "matrix_tree", "lml")}


def at_revision(rev: str, name: str) -> types.ModuleType:
    """``discretegrad/structures/<name>.py`` at git revision ``rev`` as a module."""
    return module_at(rev, f"src/discretegrad/structures/{name}.py", f"{name}_at_{rev}")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--baseline-rev", default="b105c4a", help="git revision before the centring")
    p.add_argument("--out", default="results/reliability/centring_cost.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    old = {name: at_revision(args.baseline_rev, name) for name in MODULES}
    impls = {"before (" + args.baseline_rev + ")": old, "centred (this checkout)": MODULES}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 100, generator=gen)
    phi = torch.randn(1000, 99, generator=gen)
    v = torch.randn(1000, 100, generator=gen)
    trees = {n: torch.randn(b, n, n, generator=gen) for n, b in ((10, 128), (50, 32))}

    def chain(mods, pair):
        def run():
            w = x.clone().requires_grad_(True)
            ctx = () if pair is None else (pair,)
            mu = gradient(lambda a, *b: mods["semiring"].chain_score(a, 10, *(b or (None,))), w, *ctx)
            (mu * v).sum().backward()
        return run

    def argmax(mods):
        return lambda: mods["semiring"].chain_argmax(x, 10, phi)

    def proj(mods):
        def run():
            w = x.clone().requires_grad_(True)
            (mods["lml"].lml(w, 10) * v).sum().backward()
        return run

    def tree(mods, n, directed):
        def run():
            w = trees[n].clone().requires_grad_(True)
            mu = gradient(lambda a: mods["matrix_tree"].tree_log_partition(a, directed=directed), w)
            (mu * trees[n]).sum().backward()
        return run

    cases = {
        "top-k entropy marginals, forward + backward": {k: chain(m, None) for k, m in impls.items()},
        "correlated top-k marginals, forward + backward": {k: chain(m, phi) for k, m in impls.items()},
        "correlated maximiser (traceback, no gradient)": {k: argmax(m) for k, m in impls.items()},
        "LML projection, forward + backward": {k: proj(m) for k, m in impls.items()},
        **{f"{'arborescence' if d else 'spanning-tree'} marginals n = {n}, forward + backward":
           {k: tree(m, n, d) for k, m in impls.items()} for n in trees for d in (False, True)},
    }
    lines = ["# Cost of centring the structured relaxations' log-space computations\n",
             f"Command: `python benchmarks/bench_centring.py --reps {args.reps} --baseline-rev {args.baseline_rev}`\n",
             f"Environment: {environment('cpu')}\n",
             (__doc__ or "").split("\n\n")[1].replace("\n", " ") + " The machine is shared, so the minimum is "
             "the better estimate of the intrinsic cost.\n",
             "| case | before: median / min ms | centred: median / min ms | ratio of medians | ratio of minima |",
             "|---|---|---|---|---|"]
    for title, variants in cases.items():
        res = interleaved(variants, args.reps)
        (b_med, b_min), (c_med, c_min) = res.values()
        lines.append(f"| {title} | {b_med * 1e3:.1f} / {b_min * 1e3:.1f} | {c_med * 1e3:.1f} / {c_min * 1e3:.1f} | "
                     f"{c_med / b_med:.2f} | {c_min / b_min:.2f} |")
        print(lines[-1], flush=True)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
