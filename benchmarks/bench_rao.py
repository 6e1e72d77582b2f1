"""GR-MCK (``gumbel_rao``) forward+backward against STGS, this tree's backward against a former
revision's, in one process (goal P2 of issue 10).

The former revision's ``GumbelRao`` Function (and the noise module it drew with) is loaded from git
(``--before``, default ``main``) and swapped into ``discretegrad._st_functions`` for its calls
(:func:`swapped`), so both versions run through the same op, the same forward pass and the same
sampler, interleaved (rotating order, one warm-up each; medians and minima, the load average
before and after). ``--chunks`` also times this tree's backward with other chunk sizes (numbers per
chunk, ``_st_functions._rao_blocks``).

    python benchmarks/bench_rao.py [--shape 100x30x10] [--k 100,1000] [--reps 15] [--before main]
        [--chunks 17,19] [--out results/benchmarks/categorical_rao.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

import discretegrad as dg
import discretegrad._st_functions as fn
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment, interleaved, module_at, write_report  # noqa: E402


def former_gumbel_rao(rev: str) -> type[torch.autograd.Function]:
    """``GumbelRao`` of revision ``rev``, drawing with that revision's noise module."""
    noise = module_at(rev, "src/discretegrad/noise.py", f"noise_at_{rev}")
    current = sys.modules["discretegrad.noise"]
    sys.modules["discretegrad.noise"] = noise  # its `from discretegrad.noise import ...` gets that revision's
    try:
        functions = module_at(rev, "src/discretegrad/_st_functions.py", f"st_functions_at_{rev}")
    finally:
        sys.modules["discretegrad.noise"] = current
    return functions.GumbelRao


@contextlib.contextmanager
def swapped(function: type[torch.autograd.Function] | None = None, chunk: int | None = None) -> Iterator[None]:
    """Within the block, ``dg.categorical.gumbel_rao`` backpropagates through ``function`` (when given)
    and draws ``2**chunk`` numbers per chunk (when given)."""
    saved = fn.GumbelRao, fn._rao_blocks
    if function is not None:
        fn.GumbelRao = function
    if chunk is not None:
        def blocks(rows: int, n: int, k_total: int) -> tuple[int, int]:
            k = max(1, min(k_total, (1 << chunk) // max(1, n)))
            return max(1, min(rows, (1 << chunk) // (k * n))), k
        fn._rao_blocks = blocks
    try:
        yield
    finally:
        fn.GumbelRao, fn._rao_blocks = saved


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="100x30x10")
    p.add_argument("--k", default="100,1000")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--before", default="main")
    p.add_argument("--chunks", default="", help="log2 of numbers per chunk, e.g. 17,19")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    shape = tuple(int(s) for s in args.shape.split("x"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen).requires_grad_(True)
    v = torch.randn(*shape, generator=gen)
    former = former_gumbel_rao(args.before)

    def call(op, function=None, chunk=None, **kw):
        def run():
            with swapped(function, chunk):
                op(x, generator=torch.Generator().manual_seed(1), **kw).backward(v)
        return run

    variants = {"dg.categorical.stgs": call(dg.categorical.stgs)}
    for k in (int(a) for a in args.k.split(",")):
        variants[f"gumbel_rao K={k}, {args.before}"] = call(dg.categorical.gumbel_rao, former, mc_samples=k)
        variants[f"gumbel_rao K={k}, this tree"] = call(dg.categorical.gumbel_rao, mc_samples=k)
        for c in (int(a) for a in args.chunks.split(",") if a):
            variants[f"gumbel_rao K={k}, this tree, 2^{c} per chunk"] = call(dg.categorical.gumbel_rao, None, c,
                                                                             mc_samples=k)
    load_before = os.getloadavg()
    times = interleaved(variants, args.reps)
    load_after = os.getloadavg()
    base_med, base_min = times["dg.categorical.stgs"]
    rows = [[name, f"{1e3 * med:.2f}", f"{1e3 * low:.2f}", f"{med / base_med:.1f}", f"{low / base_min:.1f}"]
            for name, (med, low) in times.items()]
    command = " ".join(["python benchmarks/bench_rao.py", *sys.argv[1:]])
    lines = ["# GR-MCK forward+backward against STGS: this tree and a former revision, one process", "",
             f"Command: `{command}`", "", f"Environment: {environment('cpu')}", "",
             f"Load average (1, 5, 15 min) before: {', '.join(f'{a:.1f}' for a in load_before)}; after: "
             f"{', '.join(f'{a:.1f}' for a in load_after)}", "",
             f"Logits {list(shape)} float32, `out.backward(v)`; {args.reps} interleaved repeats (rotating order, "
             "one warm-up each). Ratios are to STGS timed in the same rounds (median to median, minimum to "
             "minimum).", "",
             markdown_table(["op", "median ms", "min ms", "median / stgs", "min / stgs"], rows)]
    write_report(lines, args.out)  # printed; written too with --out


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
