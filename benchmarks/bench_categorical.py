"""Forward+backward time and memory saved for backward of the categorical estimators.

Two baselines are measured in the same process, interleaved with the estimators (rotating order,
one warm-up each): ``torch.nn.functional.gumbel_softmax(hard=True)`` and a plain softmax
forward+backward over the same logits. Every time is reported as median and minimum over the
repeats and as ratios to both baselines (never as an absolute target). Three sections:

* single-sample ops (st, stgs, gst, reinmax and the other ops) at ``--shapes`` in ``--dtypes``;
* GR-MCK against STGS at ``--rao-shape`` for ``--rao-k`` values, plus a naive GR-MCK that keeps K
  perturbed copies of the logits for backward (what public reference code does);
* with ``--compile``: ``torch.compile(fullgraph=True)`` of each single-sample op against its eager
  version (compile time excluded: the warm-up call compiles).

'saved' = bytes of the distinct storages autograd keeps for backward (saved-tensor hooks; custom
``autograd.Function``s save through ``save_for_backward`` and are counted), the input included when
an op saves it.

    python benchmarks/bench_categorical.py [--device cuda] [--reps 15] [--threads 1] [--compile]
        [--out results/benchmarks/categorical.md]
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

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
SINGLE = ["st", "stgs", "gst", "reinmax", "gumbel_softmax", "nz_gst", "decoupled_stgs"]


def naive_gumbel_rao(logits, *, tau=1.0, mc_samples=100, generator=None):
    """GR-MCK as usually written: K perturbed copies of the logits stay alive for backward."""
    _, index = dg.noise.gumbel_max(logits.detach(), generator=generator)
    hard = torch.zeros_like(logits).scatter_(-1, index.unsqueeze(-1), 1.0)
    z = dg.noise.conditional_gumbel(logits, index, mc_samples, generator=generator)
    soft = torch.softmax((logits + (z - logits.detach())) / tau, -1).mean(0)
    return hard + soft - soft.detach()


def torch_gumbel_softmax(logits, *, generator=None):
    """The baseline; it takes no generator (torch's global RNG, reseeded once by the script)."""
    return torch.nn.functional.gumbel_softmax(logits, tau=1.0, hard=True)


def plain_softmax(logits, *, generator=None):
    return torch.softmax(logits, -1)


def saved_bytes(fn, logits, gen) -> int:
    """Bytes of the distinct storages saved for backward by one call, the input's included when an op
    saves it (it then outlives the caller's own use of it)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(logits, generator=gen)
    return sum(storages.values())


def step(fn, logits, v, gen, device):
    def run():
        out = fn(logits, generator=gen)
        out.backward(v)
        logits.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return run


def table(variants, shape, dtype, device, reps, baselines):
    """Rows [name, median ms, min ms, ratio to each baseline (medians), saved KiB, saved ratio to the first]."""
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(*shape, generator=g, device=device).to(dtype).requires_grad_(True)
    v = torch.randn(*shape, generator=g, device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(1)
    times = interleaved({n: step(f, logits, v, gen, device) for n, f in variants.items()}, reps)
    saved = {n: saved_bytes(f, logits, gen) for n, f in variants.items()}
    rows = []
    for n in variants:
        med, low = times[n]
        rows.append([n, f"{med * 1e3:.3f}", f"{low * 1e3:.3f}",
                     *[f"{med / times[b][0]:.2f}" for b in baselines],
                     f"{saved[n] / 1024:.0f}", f"{saved[n] / max(1, saved[baselines[0]]):.2f}"])
    return rows, times, saved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--shapes", default="1000x300x10,32x16x100")
    p.add_argument("--rao-shape", default="100x30x10")
    p.add_argument("--rao-k", default="100,1000")
    p.add_argument("--rao-reps", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile(fullgraph=True) of each op")
    p.add_argument("--skip-rao", action="store_true")
    p.add_argument("--out", default="results/benchmarks/categorical.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the torch baseline draws from the global RNG
    device = torch.device(args.device)
    parse = lambda s: tuple(int(a) for a in s.split("x"))  # noqa: E731
    shapes = [parse(s) for s in args.shapes.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    cmd = " ".join(["python benchmarks/bench_categorical.py", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Categorical estimators: forward+backward time and memory saved for backward\n",
             f"Command: `{cmd}`\n", f"Environment: {environment(args.device)}\n",
             "Forward+backward (`out.backward(v)`) of one call; median and minimum over "
             f"{args.reps} interleaved repeats (rotating order, one warm-up each); ratios are of medians, to the "
             "baselines measured in the same run: `F.gumbel_softmax(hard=True)` (gs) and a plain "
             "`torch.softmax` forward+backward (softmax) over the same logits. 'saved' = bytes of the distinct "
             "storages autograd keeps for backward, the input included when an op saves it (saved-tensor hooks), ratio to gs.\n"]
    head = ["op", "median ms", "min ms", "/ gs", "/ softmax", "saved KiB", "saved / gs"]
    base = {"baseline: F.gumbel_softmax(hard=True)": torch_gumbel_softmax, "baseline: softmax": plain_softmax}
    names = list(base)
    for dtype in dtypes:
        for shape in shapes:
            ops = {**base, **{f"dg.categorical.{n}": dg.registry.get(n, distribution="categorical").fn for n in SINGLE}}
            rows, _, _ = table(ops, shape, DTYPES[dtype], device, args.reps, names)
            lines += [f"\n## Single-sample ops, logits {list(shape)}, {dtype}\n", markdown_table(head, rows)]
    if not args.skip_rao:
        shape = parse(args.rao_shape)
        ops = {"dg.categorical.stgs": dg.categorical.stgs}
        for k in (int(a) for a in args.rao_k.split(",")):
            ops[f"dg.categorical.gumbel_rao K={k}"] = lambda x, k=k, **kw: dg.categorical.gumbel_rao(x, mc_samples=k, **kw)
        ops["naive GR-MCK K=100 (K copies kept)"] = naive_gumbel_rao
        rows, _, _ = table(ops, shape, torch.float32, device, args.rao_reps, ["dg.categorical.stgs"])
        lines += [f"\n## GR-MCK against STGS, logits {list(shape)}, float32, {args.rao_reps} repeats\n",
                  markdown_table(["op", "median ms", "min ms", "/ stgs", "saved KiB", "saved / stgs"], rows)]
    if args.compile:
        for dtype in dtypes:
            shape = shapes[0]
            ops = {}
            for n in SINGLE[:4]:  # no generator under compile (torch cannot trace one): both draw from torch's
                fn = dg.registry.get(n, distribution="categorical").fn
                compiled = torch.compile(fn, fullgraph=True)
                ops[f"{n} eager"] = lambda x, generator=None, fn=fn: fn(x)
                ops[f"{n} compiled"] = lambda x, generator=None, fn=compiled: fn(x)
            rows, _, _ = table(ops, shape, DTYPES[dtype], device, args.reps, ["st eager"])
            lines += [f"\n## torch.compile(fullgraph=True) against eager, logits {list(shape)}, {dtype} "
                      "(inductor; compile time excluded: the warm-up call compiles)\n",
                      markdown_table(["op", "median ms", "min ms", "/ st eager", "saved KiB", "saved / st eager"],
                                     rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
