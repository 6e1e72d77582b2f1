"""GST Sec. 5.1.2's entropy claim: the entropy of the estimators' soft samples in the first 100 steps.

The paper: "For the first 100 steps at temperature 0.1, the entropy of GR-MC100, STGS, and
GST-1.2 are 0.36, 0.15, 0.0007" (the entropy of the probability vector of its Eq. (19), the
surrogate whose gradient each estimator backpropagates). This script trains the categorical-vae
model of the paper's protocol (30 x 10 latent, ReLU on the logits, continuous MNIST, Adam 1e-3,
batch 100) for ``--steps`` steps with each estimator and, at every step, on that step's batch
and logits, measures

* ``soft``: the mean entropy (nats, per latent variable) of the estimator's soft sample:
  STGS ``softmax((θ + G)/τ)``, GR-MCK the average over K conditional draws of the same, GST and
  NZ-GST ``softmax(θ'/τ)`` with the gapped logits θ' (NZ-GST's soft sample has the same value as
  GST's; only its Jacobian differs, so the two differ only through the training trajectory);
* ``posterior``: the mean entropy of the encoder's categorical ``softmax(θ)`` (the law every
  estimator samples from).

The soft samples are drawn with a probe generator of their own (fresh noise, the same law as the
op's), so measuring does not change training. Writes ``results/gst-entropy/{table.md, raw.json}``.

    OMP_NUM_THREADS=1 python benchmarks/gst_entropy.py [--steps 100] [--seeds 0,1,2] [--taus 0.1,0.5,1.0]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment, write_report  # noqa: E402

import discretegrad as dg  # noqa: E402
from discretegrad._format import estimator_label, markdown_table  # noqa: E402
from discretegrad.categorical import _gapped_logits  # noqa: E402  (the GST target values, read only)
from discretegrad.experiments import categorical_vae  # noqa: E402
from discretegrad.registry import get_family  # noqa: E402
from discretegrad.experiments.common.seeding import derived_generator  # noqa: E402
from discretegrad.experiments.data import load_pixels  # noqa: E402
from discretegrad.noise import conditional_gumbel, gumbel_like  # noqa: E402

CHOICES = [("stgs", {}), ("gumbel_rao", {"mc_samples": 100}), ("gst", {"gap": 1.2}), ("gst", {"gap": 1.0}),
           ("nz_gst", {"gap": 1.0}), ("gst", {"gap": 0.0})]
PAPER = {("stgs", 0.1): 0.15, ("gumbel_rao", 0.1): 0.36, ("gst(gap=1.2)", 0.1): 0.0007}
OUT = Path("results/gst-entropy")


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy over all leading dims of probability vectors on the last dim (0 log 0 = 0)."""
    return -(torch.special.xlogy(p, p)).sum(-1).mean()


def soft_sample(name: str, hp: dict, logits: torch.Tensor, tau: float, g: torch.Generator) -> torch.Tensor:
    """The estimator's soft sample for fresh noise (values only, no gradient)."""
    x = logits.detach()
    if name == "stgs":
        return torch.softmax((x + gumbel_like(x, generator=g)) / tau, -1)
    index = get_family("categorical").sample(x, g).argmax(-1)
    if name == "gumbel_rao":
        z = conditional_gumbel(x, index, hp["mc_samples"], generator=g)
        return torch.softmax(z / tau, -1).mean(0)
    hard = torch.nn.functional.one_hot(index, x.shape[-1]).to(x.dtype)
    return torch.softmax(_gapped_logits(x, index, hard, hp["gap"]) / tau, -1)


def measure(name: str, hp: dict, tau: float, seed: int, steps: int, x: torch.Tensor) -> dict:
    p = categorical_vae.resolve_params(categorical_vae.Settings(tau=tau))
    model = categorical_vae.build_model(p, seed)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    g_data, g_noise = derived_generator(seed, "data"), derived_generator(seed, "noise")
    g_probe = derived_generator(seed, "entropy-probe")
    perm = torch.randperm(x.shape[0], generator=g_data)
    soft, post, losses = [], [], []
    start = time.perf_counter()
    for step in range(steps):
        xb = x[perm[step * p.batch_size:(step + 1) * p.batch_size]]
        logits = model.logits(xb)
        soft.append(float(entropy(soft_sample(name, hp, logits, tau, g_probe))))
        post.append(float(entropy(torch.softmax(logits.detach(), -1))))
        rec = dg.surrogate(lambda z: model.reconstruction(z, xb), logits, distribution="categorical",
                           estimator=name, generator=g_noise, tau=tau, **hp)
        loss = (rec + model.kl(logits)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"estimator": estimator_label(name, hp), "tau": tau, "seed": seed, "soft": sum(soft) / steps,
            "posterior": sum(post) / steps, "soft_first": soft[0], "soft_last": soft[-1],
            "loss_last": losses[-1], "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--taus", default="0.1,0.5,1.0")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    taus = [float(t) for t in a.taus.split(",")]
    x = load_pixels("mnist", "train", "continuous", None, None, torch.device("cpu"))
    rows = [measure(n, hp, tau, s, a.steps, x) for tau in taus for n, hp in CHOICES for s in seeds]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = []
    for tau in taus:
        for n, hp in CHOICES:
            label = estimator_label(n, hp)
            r = [row for row in rows if row["estimator"] == label and row["tau"] == tau]
            mean = lambda k: sum(v[k] for v in r) / len(r)  # noqa: E731
            sd = lambda k: math.sqrt(sum((v[k] - mean(k)) ** 2 for v in r) / max(1, len(r) - 1))  # noqa: E731
            paper = PAPER.get((n if n != "gst" else label, tau))
            table.append([f"{tau:g}", label, f"{mean('soft'):.4g} ± {sd('soft'):.2g}",
                          "–" if paper is None else f"{paper:g}", f"{mean('posterior'):.4f}",
                          f"{mean('soft_first'):.4g}", f"{mean('soft_last'):.4g}", f"{mean('seconds'):.1f}"])
    lines = [f"# GST Sec. 5.1.2: mean entropy of the soft sample over the first {a.steps} training steps", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/gst_entropy.py --steps {a.steps} --seeds {a.seeds} "
             f"--taus {a.taus}`", "", f"Environment: {environment('cpu')}", "",
             f"Mean ± sd over seeds {a.seeds}; entropies in nats per latent variable (maximum log 10 = 2.303).", "",
             markdown_table(["tau", "estimator", "soft sample", "paper", "posterior softmax(θ)",
                              "soft, step 1", f"soft, step {a.steps}", "seconds"], table)]
    write_report(lines, str(out / "table.md"))


if __name__ == "__main__":
    main()
