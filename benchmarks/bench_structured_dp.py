"""The log-space semiring chain DP (``discretegrad.structures.semiring``) against the hand-written
forward-backward and back-pointer passes it replaced (``_structures.py`` at ``--baseline-rev``, loaded
from git, so the comparison stays reproducible after that module's removal).

Cases, float32 logits ``[1000, 100]``, ``k = 10``, interleaved repeats (every rep runs every variant,
in rotating order), median and min:

* the hard top-k op with the entropy relaxation, ``dg.subsets.topk(x, k)``, forward + backward;
* the hard correlated top-k op, ``dg.subsets.topk(x, k, relaxation="corr", pair_logits=φ)``, forward + backward;
* the correlated maximiser alone (the evaluation path, no relaxation): back-pointers, autograd
  through the max DP (``∂ max / ∂ u``), and the max-semiring traceback ``chain_argmax``.

    python benchmarks/bench_structured_dp.py [--reps 30] [--threads 1] [--out results/benchmarks/structured_dp.md]
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad import structures
from discretegrad.structures.logspace import gradient
from discretegrad.structures.semiring import chain_argmax, chain_score
from discretegrad.structures.topk import corr_topk_marginals_reference, topk_marginals_reference

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, interleaved, module_at, write_report  # noqa: E402

N_ITEMS, BATCH, K = 100, 1000, 10
FAST = "fast paths (used): count-centred scans for top-k, posterior pass for correlated top-k, closed-form backward"


def hand_written(rev: str) -> types.ModuleType:
    """The former ``discretegrad._structures`` at git revision ``rev`` as a module."""
    return module_at(rev, "src/discretegrad/_structures.py", "hand_written_structures")


def op_variants(old: types.ModuleType) -> dict[str, dict[str, object]]:
    """Implementations of the functions ``dg.subsets.topk`` calls, patched in per variant."""
    names = ("topk_marginals", "corr_topk_marginals", "corr_topk_hard")
    semiring = {n: getattr(structures, n) for n in names}
    # the log-space chain DP with autograd, kept as the reference of both fast paths
    semiring.update(topk_marginals=topk_marginals_reference, corr_topk_marginals=corr_topk_marginals_reference)
    return {"semiring (autograd)": semiring, "hand-written": {n: getattr(old, n) for n in names},
            FAST: {n: getattr(structures, n) for n in names}}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baseline-rev", default="7036b7e", help="git revision holding the hand-written _structures.py")
    p.add_argument("--out", default="results/benchmarks/structured_dp.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    old = hand_written(args.baseline_rev)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, N_ITEMS, generator=gen).requires_grad_(True)
    phi = torch.randn(BATCH, N_ITEMS - 1, generator=gen)
    v = torch.randn(BATCH, N_ITEMS, generator=gen)
    u = x.detach() + dg.noise.gumbel(x.shape, generator=gen)

    def op(relaxation, impl):
        def run():
            for name, fn in impl.items():
                setattr(structures, name, fn)  # dg.subsets calls structures.<name>
            out = dg.subsets.topk(x, K, relaxation=relaxation, pair_logits=phi if relaxation == "corr" else None,
                                  generator=torch.Generator().manual_seed(1))
            (out * v).sum().backward()
        return run

    impls = op_variants(old)
    original = {name: getattr(structures, name) for name in impls["semiring (autograd)"]}
    cases = {
        "hard top-k op, entropy relaxation: forward + backward": {
            name: op("entropy", impl) for name, impl in impls.items()},
        "hard correlated top-k op: forward + backward": {
            name: op("corr", impl) for name, impl in impls.items()},
        "correlated maximiser alone (evaluation path)": {
            "hand-written back-pointers": lambda: old.corr_topk_hard(u, phi, K),
            "autograd through the max DP": lambda: gradient(
                lambda a, b: chain_score(a, K, b, semiring="max"), u, phi),
            "max-semiring traceback (chain_argmax, used)": lambda: chain_argmax(u, K, phi),
        },
        "top-k maximiser alone (evaluation path)": {
            "torch.topk (topk_hard, used)": lambda: structures.topk_hard(u, K),
            "max-semiring traceback (chain_argmax)": lambda: chain_argmax(u, K),
        },
    }
    lines = ["# Chain DPs: log-space semiring + autograd vs hand-written passes\n",
             f"Command: `python benchmarks/bench_structured_dp.py --reps {args.reps} --threads {args.threads} "
             f"--baseline-rev {args.baseline_rev}`\n",
             f"Environment: {environment()}\n",
             f"float32 logits [{BATCH}, {N_ITEMS}], k = {K}; pair logits [{BATCH}, {N_ITEMS - 1}] for the correlated "
             f"cases; 'hand-written' is `_structures.py` at {args.baseline_rev}. Interleaved repeats ({args.reps} "
             "rounds, each running every variant in rotating order, after one warm-up each). The machine is "
             "shared, so the minimum is the better estimate of the intrinsic cost.\n",
             "The library uses, per case, the row marked 'used': the top-k marginals by the count-centred "
             "scans (`structures/topk_scan.py`), the correlated marginals by a posterior pass down the "
             "semiring DP (`structures/corr_marginals.py`), both with a closed-form SST backward (the "
             "semiring DP with autograd is kept as `topk_marginals_reference` / `corr_topk_marginals_reference`), "
             "the correlated maximiser by the max-semiring traceback (autograd through the max DP is slower), "
             "the top-k maximiser by `torch.topk`.\n"]
    try:
        for title, variants in cases.items():
            res = interleaved(variants, args.reps)
            ref_med, ref_min = next(iter(res.values()))
            lines += [f"\n## {title}\n", "| variant | median ms | min ms | median / first row |", "|---|---|---|---|"]
            for name, (med, mn) in res.items():
                lines.append(f"| {name} | {med * 1e3:.2f} | {mn * 1e3:.2f} | {med / ref_med:.2f} |")
            print(title, {n: f"{m * 1e3:.2f} ms" for n, (m, _) in res.items()}, flush=True)
    finally:
        for name, fn in original.items():
            setattr(structures, name, fn)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
