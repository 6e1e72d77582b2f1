"""The pieces of a categorical straight-through step at one shape, timed in one process (issue 10, P1).

What bounds st/gst/reinmax (the inverse-CDF sample: softmax, ``cumsum``, ``searchsorted``)
and STGS (one ``torch.rand`` of the logits' shape, since its backward needs a Gumbel per entry)
against a plain softmax forward+backward. Interleaved repeats (rotating order, one warm-up each),
each repeat ``--calls`` calls (default one, as ``bench_categorical.py`` times them: on this machine a
tight loop of the sampling ops ran up to 2.5x slower per call than single calls, measured, while the
softmax did not); medians and minima per call, ratios of minima to the softmax.

    python benchmarks/bench_categorical_floors.py [--shape 32x16x100] [--reps 101] [--calls 1]
        [--out results/benchmarks/categorical_floors.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment, interleaved, write_report  # noqa: E402


def pieces(x: torch.Tensor, v: torch.Tensor, gen: torch.Generator) -> dict:
    leaf = x.clone().requires_grad_(True)

    def fwd_bwd(fn):
        def run():
            fn(leaf).backward(v)
            leaf.grad = None
        return run

    rows = x.shape[:-1] + (1,)
    return {
        "softmax forward+backward (the baseline)": fwd_bwd(lambda t: torch.softmax(t, -1)),
        "softmax forward": lambda: torch.softmax(x, -1),
        "torch.rand of the logits' shape (STGS's noise)": lambda: torch.rand(x.shape, generator=gen),
        "Gumbel-max sample (gumbel_perturb + max)": lambda: dg.noise.gumbel_perturb(x, generator=gen).max(-1),
        "inverse-CDF sample (softmax, cumsum, rand per row, searchsorted)":
            lambda: dg.noise.categorical_inverse_cdf(x, generator=gen),
        "  of which cumsum": lambda: x.cumsum(-1),
        "  of which rand per row": lambda: torch.rand(rows, generator=gen),
        "dg.categorical.st forward+backward": fwd_bwd(lambda t: dg.categorical.st(t, generator=gen)),
        "dg.categorical.stgs forward+backward": fwd_bwd(lambda t: dg.categorical.stgs(t, generator=gen)),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="32x16x100")
    p.add_argument("--reps", type=int, default=101)
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/benchmarks/categorical_floors.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(int(a) for a in args.shape.split("x"))
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    loops = {}
    for name, fn in pieces(x, v, torch.Generator().manual_seed(1)).items():
        def loop(fn=fn):
            for _ in range(args.calls):
                fn()
        loops[name] = loop
    times = interleaved(loops, args.reps)
    base = times["softmax forward+backward (the baseline)"][1]
    rows = [[n, f"{m / args.calls * 1e3:.4f}", f"{lo / args.calls * 1e3:.4f}", f"{lo / base:.2f}"]
            for n, (m, lo) in times.items()]
    cmd = " ".join(["python benchmarks/bench_categorical_floors.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"# The pieces of a categorical straight-through step, logits {list(shape)}, float32\n",
             f"Command: `{cmd}`\n", f"Environment: {environment('cpu')}\n",
             f"Per call, over {args.reps} interleaved repeats of {args.calls} calls each; 'x softmax' = ratio of "
             "minima to the softmax forward+backward timed in the same rounds.\n",
             markdown_table(["piece", "median ms", "min ms", "x softmax (minima)"], rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
