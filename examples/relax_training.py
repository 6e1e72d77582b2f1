"""RELAX with a learned control variate in a training loop (Grathwohl et al. 2018, Alg. 2).

A small binary-latent autoencoder on synthetic binary "images" (noisy copies of 4 random
prototypes, 24 pixels; 8 Bernoulli latents). Each step:

1. ``est = relax_estimate(f, logits, ..., control_variate=cv, create_graph=True)``: ``est.surrogate``
   is what every estimator returns (value = Monte Carlo reconstruction cost), ``est.grad`` the
   RELAX gradient with respect to the logits, differentiable in the control variate's parameters;
2. the control variate minimises ``E[ĝ²]`` (= the variance plus a term that does not depend on
   it, since ĝ is unbiased for every control variate): ``torch.autograd.grad`` on ``(est.grad**2).sum()``;
3. encoder and decoder train on ``est.surrogate.mean() + KL`` with one ``backward()``.

The control variate is REBAR's ``f(σ(z/τ))`` with a learned temperature plus a small network
``r_ρ(z)``, as in the paper's experiments. At the end the script measures the variance of the
logits gradient for the learned control variate, the untrained default (REBAR with η = 1, τ = 0.5)
and REINFORCE on the same batch.

    python examples/relax_training.py      # a few seconds on one core
"""

from __future__ import annotations

import torch

import discretegrad as dg
from discretegrad.relax import relax_estimate

torch.manual_seed(0)
torch.set_num_threads(1)
PIXELS, LATENT, BATCH, STEPS = 24, 8, 32, 300

prototypes = (torch.rand(4, PIXELS) < 0.5).float()


def data(gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, 4, (BATCH,), generator=gen)
    flip = torch.rand(BATCH, PIXELS, generator=gen) < 0.05
    return (prototypes[idx] + flip.float()) % 2


encoder = torch.nn.Sequential(torch.nn.Linear(PIXELS, 64), torch.nn.Tanh(), torch.nn.Linear(64, LATENT))
decoder = torch.nn.Sequential(torch.nn.Linear(LATENT, 64), torch.nn.Tanh(), torch.nn.Linear(64, PIXELS))


class ControlVariate(torch.nn.Module):
    """c(z) = f(σ(z/τ)) + r_ρ(z): REBAR's relaxation with a learned τ plus a learned residual."""

    def __init__(self) -> None:
        super().__init__()
        self.log_tau = torch.nn.Parameter(torch.tensor(0.5).log())
        self.net = torch.nn.Sequential(torch.nn.Linear(LATENT, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        self.f = None  # the current cost, set every step (it depends on the batch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.f(torch.sigmoid(z / self.log_tau.exp())) + self.net(torch.sigmoid(z)).squeeze(-1)


def cost(x: torch.Tensor):
    """Reconstruction cost -log p(x | z) per example: z [n, B, LATENT] -> [n, B]."""
    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(
            decoder(z), x.expand(z.shape[0], *x.shape), reduction="none").sum(-1)
    return f


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(Bern(σ(θ)) || Bern(1/2)) summed over the latents (analytic, deterministic gradient)."""
    p = torch.sigmoid(logits)
    logp, log1p = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    return (p * logp + (1 - p) * log1p + torch.log(torch.tensor(2.0))).sum(-1)


def logits_gradient_variance(x, make_grad, draws=200):
    grads = torch.stack([make_grad(i) for i in range(draws)])
    return float(grads.var(0).sum())


def main() -> None:
    cv = ControlVariate()
    model_opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=3e-3)
    cv_opt = torch.optim.Adam(cv.parameters(), lr=3e-3)
    data_gen, noise_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    for step in range(STEPS):
        x = data(data_gen)
        logits = encoder(2 * x - 1)
        f = cost(x)
        cv.f = f
        est = relax_estimate(f, logits, distribution="bernoulli", control_variate=cv, generator=noise_gen,
                             create_graph=True)
        variance_loss = (est.grad**2).sum() / BATCH
        cv_grads = torch.autograd.grad(variance_loss, list(cv.parameters()), retain_graph=True)
        loss = (est.surrogate + kl_to_uniform(logits)).mean()  # negative ELBO, one sample
        model_opt.zero_grad()
        loss.backward()
        model_opt.step()
        for p, g in zip(cv.parameters(), cv_grads):
            p.grad = g
        cv_opt.step()
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step:4d}  -ELBO {loss.item():7.3f}  E[g^2] {variance_loss.item():9.3f}  "
                  f"tau {cv.log_tau.exp().item():.3f}")

    x = data(torch.Generator().manual_seed(99))
    logits = encoder(2 * x - 1).detach().requires_grad_(True)
    f = cost(x)
    cv.f = f

    def relax_learned(i):
        return relax_estimate(f, logits, distribution="bernoulli", control_variate=cv,
                              generator=torch.Generator().manual_seed(i)).grad

    def relax_default(i):
        return relax_estimate(f, logits, distribution="bernoulli", generator=torch.Generator().manual_seed(i)).grad

    def reinforce(i):
        v = dg.surrogate(f, logits, distribution="bernoulli", estimator="reinforce",
                         generator=torch.Generator().manual_seed(i))
        return torch.autograd.grad(v.sum(), logits)[0]

    for name, fn in [("RELAX, learned control variate", relax_learned),
                     ("RELAX, default control variate (REBAR, eta=1, tau=0.5)", relax_default),
                     ("REINFORCE", reinforce)]:
        print(f"variance of the logits gradient, {name}: {logits_gradient_variance(x, fn):.3f}")


if __name__ == "__main__":
    main()
