"""The floor of the hard top-k entropy op: its pieces that no rewrite of the scans removes, timed against
``torch.softmax`` over the same logits in the same interleaved rounds (issue 10, P4: "within 30x a softmax").

At logits ``[1000, 100]``, k = 10, float32, one thread: the Gumbel noise, one ``torch.topk`` (the hard
sample and the scan's count centres share it), the ``4 (k - 1)`` cumulative sums over ``[1000, k + n]``
that the forward and the closed-form backward need (``structures/topk_scan.py``; torch's CPU ``cumsum``
is a serial loop per row), and, for comparison, the marginals' forward + backward and the whole op.

    python benchmarks/bench_topk_floor.py [--reps 30] [--out results/benchmarks/topk_floor.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad._format import markdown_table
from discretegrad.structures.topk_scan import scan_marginals

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, interleaved, write_report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out", default="results/benchmarks/topk_floor.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    b, n, k = 1000, 100, 10
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, generator=gen).requires_grad_(True)
    v = torch.randn(b, n, generator=gen)
    seq = torch.rand(b, k + n, generator=gen)

    def cumsums():
        for _ in range(4 * (k - 1)):
            seq.cumsum(-1)

    def marginals():
        (scan_marginals(x, k) * v).sum().backward()

    variants = {
        "torch.softmax, forward + backward": lambda: (torch.softmax(x, -1) * v).sum().backward(),
        "Gumbel noise": lambda: dg.noise.gumbel_like(x, generator=gen),
        "torch.topk (k = 10)": lambda: x.detach().topk(k, -1),
        f"{4 * (k - 1)} cumsums over [1000, 110]": cumsums,
        "the marginals' forward + closed-form backward (scan_marginals)": marginals,
        "the hard op: dg.subsets.topk, forward + backward": lambda: (dg.subsets.topk(x, k, generator=gen) * v)
        .sum().backward(),
    }
    results = interleaved(variants, args.reps)
    base = results["torch.softmax, forward + backward"][1]
    rows = [[name, f"{med * 1e3:.3f}", f"{low * 1e3:.3f}", f"{low / base:.1f}"] for name, (med, low) in results.items()]
    lines = ["# The floor of the hard top-k entropy op\n",
             f"Command: `python benchmarks/bench_topk_floor.py --reps {args.reps} --out {args.out}`\n",
             f"Environment: {environment('cpu')}\n",
             "Logits [1000, 100], k = 10, float32, one thread; interleaved rounds (`benchmarks/_env.py`), "
             "'x softmax' divides the minima.\n",
             markdown_table(["piece", "median ms", "min ms", "x softmax (minima)"], rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
