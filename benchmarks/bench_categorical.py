"""Forward+backward time and memory saved for backward of every categorical estimator.

Reported as ratios to ``torch.nn.functional.gumbel_softmax(hard=True)`` measured in the same
run (never as absolute targets), plus a naive GR-MCK (K copies of the logits kept for
backward, as public reference code does) to show what our GR-MCK saves.

    python benchmarks/bench_categorical.py [--device cuda] [--out results/benchmarks/categorical.md]
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


def naive_gumbel_rao(logits, *, tau=1.0, mc_samples=100, generator=None):
    """GR-MCK as usually written: K perturbed copies of the logits stay alive for backward."""
    _, index = dg.noise.gumbel_max(logits.detach(), generator=generator)
    hard = torch.zeros_like(logits).scatter_(-1, index.unsqueeze(-1), 1.0)
    z = dg.noise.conditional_gumbel(logits, index, mc_samples, generator=generator)
    soft = torch.softmax((logits + (z - logits.detach())) / tau, -1).mean(0)
    return hard + soft - soft.detach()


def torch_stgs(logits, *, tau=1.0, generator=None):
    return torch.nn.functional.gumbel_softmax(logits, tau=tau, hard=True)


def measure(fn, shape, device, reps):
    logits = torch.randn(*shape, device=device, requires_grad=True)
    v = torch.randn(*shape, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    storages = {}

    def pack(t):  # count each storage once; the input itself costs nothing extra
        if t.untyped_storage().data_ptr() != logits.untyped_storage().data_ptr():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(logits, generator=gen)
    saved = sum(storages.values())
    (out * v).sum().backward()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(logits, generator=gen)
        (out * v).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), saved


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out", default="results/benchmarks/categorical.md")
    args = p.parse_args(argv)
    cases = {"baseline: torch gumbel_softmax(hard=True)": torch_stgs}
    cases.update({f"dg.categorical.{s.name}": s.fn for s in dg.estimators("categorical") if s.kind == "op"})
    cases["naive GR-MCK (K copies kept)"] = naive_gumbel_rao
    shapes = [(100, 30, 10), (32, 16, 100)]
    lines = ["# Categorical estimators: forward+backward time and memory saved for backward\n",
             f"Command: `python benchmarks/bench_categorical.py --device {args.device} --reps {args.reps}`\n",
             f"Environment: {environment()}\n",
             "Time = median over reps of one forward+backward; ratios are to the baseline row measured in "
             "the same run. 'saved' = bytes of the distinct storages autograd keeps for backward, the input "
             "logits excluded (saved-tensor hooks).\n"]
    for shape in shapes:
        rows, base_t, base_m = [], None, None
        for name, fn in cases.items():
            t, m = measure(fn, shape, args.device, args.reps)
            base_t, base_m = (t, m) if base_t is None else (base_t, base_m)
            rows.append([name, f"{t * 1e3:.3f}", f"{t / base_t:.2f}", f"{m / 1024:.0f}", f"{m / base_m:.2f}"])
        lines += [f"\n## logits {list(shape)}\n",
                  markdown_table(["estimator", "ms", "time ratio", "saved KiB", "memory ratio"], rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
