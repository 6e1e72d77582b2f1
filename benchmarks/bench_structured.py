"""Forward+backward time of the structured SMT/SST ops (k-subsets, spanning trees, arborescences).

Each time is reported as a ratio to a plain ``torch.softmax`` over the same number of logits
(same batch), measured in the same run (never as an absolute target). Sizes from issue 5:
top-k n = 100, k = 10, batch 1000; trees n = 10, batch 128 and n = 50, batch 32.

    python benchmarks/bench_structured.py [--device cuda] [--reps 20] [--out results/benchmarks/structured.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, write_report  # noqa: E402


def _softmax(x, generator=None):
    return torch.softmax(x, -1)


def _sym(x):
    return (x + x.transpose(-1, -2)) / 2


def measure(fn, make, device, reps, budget_s):
    """(median, min) seconds of one forward + backward of ``sum(v * fn(x))`` and the number of reps
    (at most ``budget_s`` seconds of reps, at least 3)."""
    x = make().to(device).requires_grad_(True)
    v = torch.randn(x.shape, device=device, generator=torch.Generator(device=device).manual_seed(1))
    gen = torch.Generator(device=device).manual_seed(0)
    (fn(x, gen) * v).sum().backward()  # warm-up
    times, spent = [], 0.0
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(x, gen)
        (out * v).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
        if spent > budget_s and len(times) >= 3:
            break
    return statistics.median(times), min(times), len(times)


def topk_cases(k):
    s = dg.subsets
    return {
        "topk entropy (hard, SST grad)": lambda x, g: s.topk(x, k, generator=g),
        "topk entropy (relaxed)": lambda x, g: s.topk(x, k, hard=False, generator=g),
        "topk binary_entropy (hard)": lambda x, g: s.topk(x, k, relaxation="binary_entropy", generator=g),
        "topk corr (hard, zero pair logits)": lambda x, g: s.topk(
            x, k, relaxation="corr", pair_logits=torch.zeros_like(x[..., 1:]), generator=g),
        "l2x": lambda x, g: s.l2x(x, k, generator=g),
        "softsub": lambda x, g: s.softsub(x, k, generator=g),
    }


def tree_cases(n):
    t = dg.trees
    i, j = torch.triu_indices(n, n, 1)

    def v_minus_1(x, g):  # the SST paper's "|V|-1 edges" baseline: top-(n-1) over undirected edges
        xs = _sym(x)
        sel = dg.subsets.topk(xs[..., i, j], n - 1, generator=g)
        adj = torch.zeros_like(x)
        adj[..., i, j] = sel
        return adj + adj.transpose(-1, -2)

    return {
        "spanning_tree (hard: Kruskal + SST grad)": lambda x, g: t.spanning_tree(_sym(x), generator=g),
        "spanning_tree (relaxed)": lambda x, g: t.spanning_tree(_sym(x), hard=False, generator=g),
        "arborescence (hard: Chu-Liu/Edmonds + SST grad)": lambda x, g: t.arborescence(x, generator=g),
        "arborescence (relaxed)": lambda x, g: t.arborescence(x, hard=False, generator=g),
        "V-1 edges baseline (topk entropy over the edges, k = n-1)": v_minus_1,
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--budget", type=float, default=10.0, help="seconds of reps per case at most")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/benchmarks/structured.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["# Structured SMT/SST ops: forward+backward time\n",
             f"Command: `python benchmarks/bench_structured.py --device {args.device} --reps {args.reps} "
             f"--budget {args.budget} --threads {args.threads}`\n",
             f"Environment: {environment()}\n",
             "Time of one forward and backward of `sum(v * op(x))`, float32, over `--reps` reps (fewer, but at "
             "least 3, when they exceed `--budget` seconds); ratios are to `torch.softmax` over the same logits "
             "tensor measured in the same run. The machine is shared (2 cores, other jobs running), so the minimum "
             "is the better estimate of the intrinsic cost and the median shows the contention.\n"]
    groups = [
        ("top-k: logits [1000, 100], k = 10", lambda: torch.randn(1000, 100), topk_cases(10)),
        ("trees: n = 10, batch 128 (edge logits [128, 10, 10])", lambda: torch.randn(128, 10, 10), tree_cases(10)),
        ("trees: n = 50, batch 32 (edge logits [32, 50, 50])", lambda: torch.randn(32, 50, 50), tree_cases(50)),
    ]
    for title, make, cases in groups:
        flat = lambda x, g: _softmax(x.flatten(1), g).reshape(x.shape)  # noqa: E731
        base, base_min, base_reps = measure(flat, make, args.device, args.reps * 5, args.budget)
        rows = [["baseline: torch.softmax over the same logits", f"{base * 1e3:.3f}", f"{base_min * 1e3:.3f}", "1", "1",
                 str(base_reps)]]
        for name, fn in cases.items():
            t, t_min, r = measure(fn, make, args.device, args.reps, args.budget)
            rows.append([name, f"{t * 1e3:.3f}", f"{t_min * 1e3:.3f}", f"{t / base:.0f}", f"{t_min / base_min:.0f}",
                         str(r)])
            print(title, name, f"{t * 1e3:.3f} ms", flush=True)
        lines += [f"\n## {title}\n", markdown_table(["op", "median ms", "min ms", "ratio of medians",
                                                      "ratio of minima", "reps"], rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
