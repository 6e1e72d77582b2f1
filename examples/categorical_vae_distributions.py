"""A categorical VAE written only with the torch.distributions objects (no Pyro, no functional ops).

The ELBO of a VAE with ``V`` categorical latents of ``N`` classes, uniform prior, Bernoulli decoder::

    q = dg.Categorical(logits=encoder(x), estimator="gst", tau=0.5, gap=1.0)   # q(z | x)
    z = q.rsample(generator=g)                                                   # one-hot, GST gradient
    log_px = torch.distributions.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)
    kl = torch.distributions.kl_divergence(q, prior).sum(-1)                    # closed form, registered
    loss = (kl - log_px).mean()

Data: binarised MNIST when it is already cached (``discretegrad`` reads the cache, never
downloads here), otherwise synthetic binary "images" (noisy copies of 10 random prototypes).
Every random draw comes from an explicit generator.

    python examples/categorical_vae_distributions.py                  # ~10 s on one core
    python examples/categorical_vae_distributions.py --estimator stgs --steps 500
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import discretegrad as dg
from discretegrad.experiments.common.nets import mlp


@dataclasses.dataclass(frozen=True)
class Config:
    estimator: str = "gst"
    tau: float = 0.5
    latents: int = 20
    classes: int = 10
    hidden: int = 128
    batch: int = 64
    steps: int = 300
    lr: float = 1e-3
    pixels: int = 784
    seed: int = 0


def cached_mnist(n: int, generator: torch.Generator) -> torch.Tensor | None:
    """``n`` dynamically binarised MNIST training images ``[n, 784]`` if the cache holds them, else ``None``."""
    from discretegrad.experiments.data import mnist

    cache = mnist.mnist_cache_dir()
    if not all(any(cache.glob(f"train-{part}-idx*")) for part in ("images", "labels")):
        return None  # not cached: load_mnist would try to download it
    images, _ = mnist.load_mnist("train")
    pixels = images[:n].flatten(1).double() / 255
    return (torch.rand(pixels.shape, generator=generator, dtype=pixels.dtype) < pixels).float()


def synthetic(n: int, pixels: int, generator: torch.Generator) -> torch.Tensor:
    prototypes = (torch.rand(10, pixels, generator=generator) < 0.5).float()
    index = torch.randint(0, 10, (n,), generator=generator)
    flip = (torch.rand(n, pixels, generator=generator) < 0.05).float()
    return (prototypes[index] + flip) % 2


def train(config: Config, data: torch.Tensor | None = None) -> dict[str, float]:
    """Train on ``data`` (default: cached MNIST or synthetic); returns the first and last mean ELBO."""
    g = torch.Generator().manual_seed(config.seed)
    if data is None:
        data = cached_mnist(4096, g) if config.pixels == 784 else None
        data = synthetic(4096, config.pixels, g) if data is None else data
    v, n = config.latents, config.classes
    encoder = mlp([data.shape[1], config.hidden, v * n], "relu", g)
    decoder = mlp([v * n, config.hidden, data.shape[1]], "relu", g)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=config.lr)
    prior = dg.Categorical(logits=torch.zeros(v, n))  # uniform; kl_divergence is closed form
    hparams = {"tau": config.tau} if "tau" in dg.get_estimator(config.estimator, distribution="categorical").hyperparameters else {}
    elbos = []
    for _ in range(config.steps):
        x = data[torch.randint(0, data.shape[0], (config.batch,), generator=g)]
        q = dg.Categorical(logits=encoder(x).view(-1, v, n), estimator=config.estimator, **hparams)
        z = q.rsample(generator=g)
        log_px = torch.distributions.Bernoulli(logits=decoder(z.flatten(1))).log_prob(x).sum(-1)
        elbo = log_px - torch.distributions.kl_divergence(q, prior).sum(-1)
        opt.zero_grad()
        (-elbo.mean()).backward()
        opt.step()
        elbos.append(float(elbo.detach().mean()))
    window = max(1, min(20, len(elbos) // 5))
    return {"first_elbo": sum(elbos[:window]) / window, "last_elbo": sum(elbos[-window:]) / window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", default=Config.estimator)
    parser.add_argument("--tau", type=float, default=Config.tau)
    parser.add_argument("--steps", type=int, default=Config.steps)
    parser.add_argument("--seed", type=int, default=Config.seed)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = train(Config(estimator=args.estimator, tau=args.tau, steps=args.steps, seed=args.seed))
    print(f"{args.estimator}: mean ELBO {out['first_elbo']:.1f} (first steps) -> {out['last_elbo']:.1f} "
          f"(last steps), {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
