"""The structured relaxations under ``torch.compile(fullgraph=True)`` against eager (issue 10, P5).

Forward+backward of ``sum(v * op(x))`` for the hard SST ops whose marginals compile through the
paths written for it (top-k: autograd through the count-centred scans; trees: the written-out reverse
pass of the log-space elimination; Edmonds: fixed rounds). Compiled and eager calls draw from torch's
default generator (a passed generator cannot be traced). The compile time (the first call) is
reported on its own; the timed calls are interleaved repeats (rotating order, one warm-up each),
medians and minima, with a plain softmax over the same logits timed in the same rounds.

    python benchmarks/bench_compile_structured.py [--reps 11] [--threads 1] [--backend inductor]
        [--out results/benchmarks/structured_compile.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment, interleaved, write_report  # noqa: E402

CASES = [
    ("topk entropy (hard), logits [1000, 100], k = 10", "entropy", "topk", lambda: torch.randn(1000, 100), {"k": 10}),
    ("spanning_tree entropy (hard), n = 10, batch 128", "entropy", "spanning_tree",
     lambda: (lambda w: w + w.transpose(-1, -2))(torch.randn(128, 10, 10)), {}),
    ("arborescence entropy (hard), n = 10, batch 128", "entropy", "arborescence", lambda: torch.randn(128, 10, 10), {}),
]


def step(fn, x, v):
    def run():
        (fn(x) * v).sum().backward()
        x.grad = None
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--out", default="results/benchmarks/structured_compile.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cmd = " ".join(["python benchmarks/bench_compile_structured.py", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Structured SST ops: torch.compile(fullgraph=True) against eager\n", f"Command: `{cmd}`\n",
             f"Environment: {environment('cpu')}\n",
             f"Backend `{args.backend}`; forward+backward of `sum(v * op(x))`, float32, torch's default generator; "
             f"median and minimum over {args.reps} interleaved repeats; 'compile s' = the first compiled call "
             "(tracing, compilation and one run); ratios of minima.\n"]
    rows = []
    for title, name, dist, make, hp in CASES:
        op = dg.registry.get(name, distribution=dist).fn
        x = make().requires_grad_(True)
        v = torch.randn(x.shape)
        torch._dynamo.reset()
        compiled = torch.compile(lambda t, op=op, hp=hp: op(t, **hp), fullgraph=True, backend=args.backend)
        t0 = time.perf_counter()
        step(compiled, x, v)()
        compile_s = time.perf_counter() - t0
        variants = {"eager": step(lambda t, op=op, hp=hp: op(t, **hp), x, v), "compiled": step(compiled, x, v),
                    "softmax": step(lambda t: torch.softmax(t.flatten(1), -1).reshape(t.shape), x, v)}
        times = interleaved(variants, args.reps)
        (em, el), (cm, cl), (_, sl) = times["eager"], times["compiled"], times["softmax"]
        rows.append([title, f"{em * 1e3:.2f}", f"{el * 1e3:.2f}", f"{cm * 1e3:.2f}", f"{cl * 1e3:.2f}",
                     f"{cl / el:.2f}", f"{el / sl:.0f}", f"{cl / sl:.0f}", f"{compile_s:.0f}"])
        print(title, rows[-1], flush=True)
    lines.append(markdown_table(["op", "eager median ms", "eager min ms", "compiled median ms", "compiled min ms",
                                 "compiled / eager", "eager x softmax", "compiled x softmax", "compile s"], rows))
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
