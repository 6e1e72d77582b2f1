"""GST Table 5 in one process: time per training step and peak step memory of the categorical-vae
model (30 x 10, batch 100, MNIST grey levels) for STGS, GST-1.0, GR-MC100 and GR-MC1000.

The estimators are timed in interleaved rounds (A B C D A B C D ...) so that a machine shared
with other jobs slows them alike; the median per-step time of each is reported, times 600 steps
= one epoch of 60k images, with its ratio to STGS. Peak memory: one training step measured with
:func:`discretegrad.experiments.common.profiling.step_peak_memory_mb` (CUDA allocator on a GPU, the
profiler's allocation events on a CPU).

With ``--before REV`` a fifth trainer runs GR-MC100 through revision ``REV``'s GR-MCK backward
(``bench_rao.swapped``), interleaved with the others: the before/after of a change to it in one process.

    python benchmarks/bench_categorical_vae_efficiency.py [--device cpu] [--rounds 3] [--before main] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment, write_report  # noqa: E402
from bench_rao import former_gumbel_rao, swapped  # noqa: E402

import discretegrad as dg  # noqa: E402
from discretegrad._format import estimator_label, markdown_table  # noqa: E402
from discretegrad.experiments import categorical_vae  # noqa: E402
from discretegrad.experiments.common.profiling import step_peak_memory_mb  # noqa: E402
from discretegrad.experiments.data import load_pixels  # noqa: E402

CHOICES = [("stgs", {}), ("gst", {"gap": 1.0}), ("gumbel_rao", {"mc_samples": 100}),
           ("gumbel_rao", {"mc_samples": 1000})]
STEPS = {100: 4, 1000: 1}  # steps per round for GR-MCK (K -> steps); 20 for the others


def trainer(name: str, hparams: dict, x: torch.Tensor, device: torch.device):
    p = categorical_vae.resolve_params(categorical_vae.Settings())
    model = categorical_vae.build_model(p, seed=0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    state = {"i": 0}

    def step() -> torch.Tensor:
        i = state["i"] = (state["i"] + 1) % (x.shape[0] // 100)
        xb = x[i * 100:(i + 1) * 100]
        opt.zero_grad(set_to_none=True)
        logits = model.logits(xb)
        rec = dg.surrogate(lambda z: model.reconstruction(z, xb), logits, distribution="categorical",
                           estimator=name, generator=gen, tau=1.0, **hparams)
        loss = (rec + model.kl(logits)).mean()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default=None, help="also GR-MC100 with this git revision's GR-MCK backward")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    x = load_pixels("mnist", "train", "continuous", None, 6000, device)
    steps = {label: trainer(n, h, x, device) for n, h in CHOICES for label in [estimator_label(n, h)]}
    per_round = {label: STEPS.get(h.get("mc_samples"), 20) for n, h in CHOICES for label in [estimator_label(n, h)]}
    if args.before:
        former, inner = former_gumbel_rao(args.before), trainer("gumbel_rao", {"mc_samples": 100}, x, device)

        def before_step(inner=inner) -> torch.Tensor:
            with swapped(former):
                return inner()

        label = f"{estimator_label('gumbel_rao', {'mc_samples': 100})} with {args.before}'s backward"
        steps[label], per_round[label] = before_step, STEPS[100]
    memory, times = {}, {label: [] for label in steps}
    for label, step in steps.items():  # warm up (Adam state), then measure the memory of one step
        step(), step()
        memory[label] = step_peak_memory_mb(step, device)[0][0]
    for _ in range(args.rounds):
        for label, step in steps.items():
            k = per_round[label]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(k):
                step()
            sync(device)
            times[label].append((time.perf_counter() - t0) / k)
    base_t, base_m = statistics.median(times["stgs"]), memory["stgs"]
    rows = []
    for label in steps:
        t = statistics.median(times[label])
        rows.append([f"`{label}`", f"{t:.4f}", f"{600 * t:.1f}", f"{t / base_t:.2f}x", f"{memory[label]:.2f}",
                     f"{memory[label] / base_m:.2f}x"])
    lines = [f"Environment: {environment(args.device)}", "",
             f"Command: `python benchmarks/bench_categorical_vae_efficiency.py --device {args.device} "
             f"--rounds {args.rounds}" + (f" --before {args.before}" if args.before else "") + "`", "",
             f"Load average (1, 5, 15 min) at the end: {', '.join(f'{a:.1f}' for a in os.getloadavg())}", "",
             markdown_table(["estimator", "s / step (median)", "s / epoch (x600)", "ratio", "peak step memory (MB)",
                             "ratio"], rows)]
    if args.out:
        write_report(lines, args.out)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
