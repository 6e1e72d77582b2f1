"""Where the time of the hard correlated top-k op goes, and its floor (issue 10, P4).

At logits ``[1000, 100]``, k = 10, float32, one thread, timed in the same interleaved rounds as
``torch.softmax``: the op's sequential passes over the items alone (``structures/semiring.py``:
the max DP and the traceback of the hard sample; ``structures/corr_marginals.py``: the sum DP, the
posterior pass, the two passes of the closed-form SST backward), the Gumbel noise and the whole op;
and the cost of one kernel of each kind the passes run, on the shape of one step (``[2, k + 1, B]``
or ``[k + 1, B]``), which is the floor of a pass: ``n - 1`` steps of a fixed list of kernels.

    python benchmarks/bench_corr_floor.py [--reps 30] [--out results/benchmarks/corr_floor.md]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad._format import markdown_table
from discretegrad.structures import corr_marginals as cm
from discretegrad.structures import semiring

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, interleaved, write_report  # noqa: E402

KERNEL = "one kernel, "


def _kernels(b: int, k: int, reps: int) -> dict:
    """One call of each kernel kind the passes run, on one step's shapes, repeated ``reps`` times per call."""
    gen = torch.Generator().manual_seed(3)
    a, c, out = (torch.randn(2, k + 1, b, generator=gen) for _ in range(3))
    w = torch.rand(2, k + 1, b, generator=gen)
    row, flat = torch.randint(0, 2 * (k + 1), (1, b), generator=gen), torch.randn(2 * (k + 1), b, generator=gen)
    found = torch.empty(1, b)
    a0, c0, out0 = a[0], c[0], out[0]  # views made once, as in the passes

    def many(fn):
        def run():
            for _ in range(reps):
                fn()
        return run

    return {
        KERNEL + "torch.add [2, k+1, B]": many(lambda: torch.add(a, c, out=out)),
        KERNEL + "torch.add [k+1, B]": many(lambda: torch.add(a0, c0, out=out0)),
        KERNEL + "torch.maximum [2, k+1, B]": many(lambda: torch.maximum(a, c, out=out)),
        KERNEL + "torch.sigmoid [2, k+1, B]": many(lambda: torch.sigmoid(a, out=out)),
        KERNEL + "torch.log [2, k+1, B]": many(lambda: torch.log(w, out=out)),
        KERNEL + "torch.logaddexp [2, k+1, B] (not used)": many(lambda: torch.logaddexp(a, c, out=out)),
        KERNEL + "torch.lerp [2, k+1, B]": many(lambda: torch.lerp(a0, c0, w, out=out)),
        KERNEL + "torch.gather [2(k+1), B] -> [1, B]": many(lambda: torch.gather(flat, 0, row, out=found)),
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out", default="results/benchmarks/corr_floor.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    b, n, k, per_call = 1000, 100, 10, 100
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, generator=gen).requires_grad_(True)
    g = torch.randn(b, n, generator=gen)
    zero_pairs = torch.zeros(b, n - 1)
    u = x.detach() + dg.noise.gumbel_like(x, generator=gen)
    v = dg.noise.gumbel_like(zero_pairs, generator=gen)
    unary, pair, run_cost, _ = semiring.centre(u, v, k)
    _, gamma, weights = cm._forward(u, v, k)
    mu = gamma[:, :-1].sum(1).t()
    g_items = g.t().contiguous()
    prefix = cm._prefix_means(g_items, weights)
    mean = (g * mu).sum(-1)

    def marginals():
        leaf = u.clone().requires_grad_(True)
        (cm.corr_marginals(leaf, v, k, dg.structures.topk.corr_topk_marginals_reference) * g).sum().backward()

    variants = {
        "torch.softmax, forward + backward": lambda: (torch.softmax(x, -1) * g).sum().backward(),
        "Gumbel noise (items and pairs)": lambda: (dg.noise.gumbel_like(x, generator=gen),
                                                   dg.noise.gumbel_like(zero_pairs, generator=gen)),
        "hard sample: max DP (semiring._max_gaps)": lambda: semiring._max_gaps(unary, pair, run_cost, k),
        "hard sample: max DP + traceback (chain_argmax)": lambda: semiring.chain_argmax(u, k, v),
        "marginals: sum DP (corr_marginals._log_weights)": lambda: cm._log_weights(unary, pair, run_cost, k),
        "marginals: sum DP + posterior pass (corr_marginals._forward)": lambda: cm._forward(u, v, k),
        "SST backward: prefix pass (_prefix_means)": lambda: cm._prefix_means(g_items, weights),
        "SST backward: suffix pass and sums (_covariances)": lambda: cm._covariances(gamma, weights, prefix, g_items,
                                                                                    mean, False),
        "marginals, forward + backward (corr_marginals)": marginals,
        "the hard op: dg.subsets.topk(relaxation='corr'), forward + backward": lambda: (dg.subsets.topk(
            x, k, relaxation="corr", pair_logits=zero_pairs, generator=gen) * g).sum().backward(),
    }
    kernels = _kernels(b, k, per_call)
    results = interleaved({**variants, **kernels}, args.reps)
    base = results["torch.softmax, forward + backward"][1]
    rows = [[name, f"{med * 1e3:.3f}", f"{low * 1e3:.3f}", f"{low / base:.1f}"] for name, (med, low) in results.items()
            if name in variants]
    kernel_rows = [[name[len(KERNEL):], f"{med / per_call * 1e6:.2f}", f"{low / per_call * 1e6:.2f}"]
                   for name, (med, low) in results.items() if name in kernels]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = ["# The floor of the hard correlated top-k op\n",
             f"Command: `python benchmarks/bench_corr_floor.py --reps {args.reps} --out {args.out}`\n",
             f"Environment: {environment('cpu')}; load average (1 min) at the end {load:.2f}\n",
             f"Logits [{b}, {n}], k = {k}, float32, one thread; interleaved rounds (`benchmarks/_env.py`), "
             "'x softmax' divides the minima. Each pass runs n - 1 = 99 sequential steps of a fixed list of "
             "kernels on [2, k + 1, B] or [k + 1, B] (see the modules' docstrings).\n",
             markdown_table(["piece", "median ms", "min ms", "x softmax (minima)"], rows),
             f"\nOne kernel on one step's shapes (B = {b}), from Python, "
             f"{per_call} calls per round (microseconds a call):\n",
             markdown_table(["kernel", "median us", "min us"], kernel_rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
