"""Binomial variables: the family (``total_count`` trials, log-odds ``logits``) and its estimators.

``z ~ Binomial(n, σ(θ))`` with ``n = total_count`` (an option of the family, required: it defines
the support ``{0, ..., n}``) and ``θ = logits`` of any shape. The exact sample is drawn by
``torch.binomial`` with the given ``generator`` (half precision computed in float32 and cast back).
Estimators: the drop-in straight-through op :func:`st`, and the generic score-function
estimators REINFORCE, RLOO and MuProp (:mod:`discretegrad.score_function`) through
``dg.surrogate(f, logits, distribution="binomial", estimator="rloo", total_count=n)``;
``dg.exact`` enumerates its ``n + 1`` atoms per variable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from discretegrad import _validation as V
from discretegrad import score_function
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad.family import Example, Family, Option, Param
from discretegrad.registry import register, register_family

__all__ = ["check_logits", "check_total_count", "family", "log_pmf", "st"]


def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Binomial log-odds: a float tensor of any shape, finite when validating."""
    return V.finite_float_tensor(name, logits)


def check_total_count(total_count: object, logits: object = None) -> int:
    """``total_count`` must be an integer-like value ``>= 1`` (returned as an int)."""
    return V.integer("total_count", total_count, 1, hint="the number of trials")


def log_pmf(logits: torch.Tensor, z: torch.Tensor, total_count: int) -> torch.Tensor:
    """``log C(n, z) + z log σ(θ) + (n - z) log σ(-θ)``, in log space (finite for extreme logits)."""
    n = float(total_count)
    log_comb = torch.lgamma(torch.full_like(z, n + 1)) - torch.lgamma(z + 1) - torch.lgamma(n - z + 1)
    return log_comb + z * F.logsigmoid(logits) + (n - z) * F.logsigmoid(-logits)


def _draw(logits: torch.Tensor, total_count: int, generator: torch.Generator | None) -> torch.Tensor:
    x = logits.detach().to(compute_dtype(logits.dtype))
    count = torch.full_like(x, float(total_count))
    return torch.binomial(count, torch.sigmoid(x), generator=generator)


def _sample(logits: torch.Tensor, generator: torch.Generator | None, *, total_count: int) -> torch.Tensor:
    return _draw(logits, total_count, generator).to(logits.dtype)


def _log_prob(logits: torch.Tensor, z: torch.Tensor, *, total_count: int) -> torch.Tensor:
    return log_pmf(logits, z, total_count)


def _support(logits: torch.Tensor, *, total_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    atoms = torch.arange(total_count + 1, dtype=logits.dtype, device=logits.device)
    return atoms, log_pmf(logits.unsqueeze(-1), atoms, total_count)


def _mean(logits: torch.Tensor, *, total_count: int) -> torch.Tensor:
    return total_count * torch.sigmoid(logits)


def _example() -> Example:
    g = torch.Generator().manual_seed(5)
    v, n = 3, 4
    logits = torch.randn(1, v, generator=g, dtype=torch.float64)
    w = torch.randn(v, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z @ w) + 0.1 * (z.sum(-1) - 5.0) ** 2

    return Example(f"{v} Binomial({n}, σ(θ)) variables, f(z) = sin(w . z) + 0.1 (sum z - 5)^2", logits, f,
                   {"total_count": n})


family = register_family(
    Family(
        name="binomial",
        params=(Param("logits", constraints.real, check_logits),),
        event_ndim=0,
        sample_fn=_sample,
        log_prob_fn=_log_prob,
        support_fn=_support,
        mean_fn=_mean,
        options=(Option("total_count", check_total_count),),
        example=_example,
        support_size_fn=lambda logits, *, total_count: total_count + 1,
    )
)
score_function.register_for("binomial")


@register("st", distribution="binomial", reference="Bengio et al. 2013 (straight-through through the mean)")
def st(logits: torch.Tensor, *, total_count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through: forward ``z ~ Binomial(n, σ(θ))``, backward through the mean ``n σ(θ)``.

    ``z + nσ(θ) - sg(nσ(θ))``: the gradient is ``n σ(θ)(1 - σ(θ)) f'(z)`` where the exact one is
    ``n σ(θ)(1 - σ(θ)) E[f(z' + 1) - f(z')]`` with ``z' ~ Binomial(n - 1, σ(θ))``. Biased, exact
    for ``f`` linear.
    """
    check_logits(logits)
    total_count = check_total_count(total_count)
    generator = V.generator_for("generator", generator, logits)
    x = logits.to(compute_dtype(logits.dtype))
    hard = _draw(x, total_count, generator)
    return straight_through(hard, total_count * torch.sigmoid(x)).to(logits.dtype)
