"""Distribution families: what the surrogate API, the exact oracle and the score-function
estimators need to know about a distribution, as small pure functions.

A family is parametrised by one tensor ``params`` of shape ``[*var_shape, *event_shape]``
(``event_ndim`` trailing dims form one random variable). Each family provides:

* ``check(params)``: type checks (always) and value checks (when validation is on);
* ``sample(params, generator)``: an exact hard sample, no gradient;
* ``log_prob(params, z)``: log-probability per variable, shape ``z.shape[:z.dim()-event_ndim]``;
* ``support(params)``: ``(atoms, log_table)`` with ``atoms`` of shape ``[S, *event_shape]``
  and ``log_table[..., s] = log p(atoms[s])`` of shape ``[*var_shape, S]`` (finite or
  truncated support) for exact enumeration;
* ``mean(params)``: ``E[z]`` (the mean-field point MuProp linearises around).

A family whose support depends on an argument besides ``params`` (the subset size ``k`` of
``"topk"``) names it in ``options``; ``sample``, ``log_prob``, ``support`` and ``mean`` then take it
as a keyword argument, and :func:`discretegrad.exact.expectation` and
:func:`discretegrad.diagnostics.compare` forward it (``dg.exact.expectation(f, logits,
distribution="topk", k=3)``). Families without options are called exactly as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from discretegrad import _validation as V
from discretegrad._autograd import compute_dtype
from discretegrad.noise import gumbel_max

__all__ = ["Family", "register_distribution", "get_distribution", "distributions"]


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    param_name: str
    event_ndim: int
    check: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    support: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    mean: Callable[[torch.Tensor], torch.Tensor]
    options: tuple[str, ...] = ()

    def check_options(self, options: dict) -> dict:
        """``options`` if their names are exactly this family's ``options``; ``ValueError`` otherwise."""
        if set(options) != set(self.options):
            raise ValueError(
                f"Expected the options {sorted(self.options)} of distribution {self.name!r}, but got {sorted(options)}"
            )
        return options

    def var_shape(self, params: torch.Tensor) -> torch.Size:
        return params.shape[: params.dim() - self.event_ndim]


_FAMILIES: dict[str, Family] = {}


def register_distribution(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"distribution {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_distribution(name: str) -> Family:
    """The family called ``name``; ``ValueError`` listing the known names otherwise."""
    from discretegrad import _estimator_modules  # noqa: F401  (families register on import)

    if not isinstance(name, str) or name not in _FAMILIES:
        raise ValueError(f"Expected distribution to be one of {sorted(_FAMILIES)}, but got {name!r}")
    return _FAMILIES[name]


def distributions() -> list[str]:
    from discretegrad import _estimator_modules  # noqa: F401

    return sorted(_FAMILIES)


# ----------------------------------------------------------------------------- categorical

def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Categorical logits ``[..., N]``: a float tensor with ``N >= 1``, finite when validating."""
    t = V.float_tensor(name, logits, min_ndim=1)
    if t.shape[-1] < 1:
        raise ValueError(
            f"Expected {name} to have at least one category (last dim >= 1), but got shape {tuple(t.shape)}"
        )
    V.finite(name, t)
    return t


def one_hot_like(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One-hot of ``index`` (shape ``like.shape[:-1]``) with ``like``'s shape, dtype and device."""
    return torch.zeros_like(like).scatter_(-1, index.unsqueeze(-1), 1.0)


def _categorical_sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    x = logits.detach().to(compute_dtype(logits.dtype))
    _, index = gumbel_max(x, generator=generator)
    return one_hot_like(index, logits.detach())


def _categorical_log_prob(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (torch.log_softmax(logits, -1) * z).sum(-1)


def _categorical_support(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = logits.shape[-1]
    return torch.eye(n, dtype=logits.dtype, device=logits.device), torch.log_softmax(logits, -1)


categorical = register_distribution(
    Family(
        name="categorical",
        param_name="logits",
        event_ndim=1,
        check=check_logits,
        sample=_categorical_sample,
        log_prob=_categorical_log_prob,
        support=_categorical_support,
        mean=lambda logits: torch.softmax(logits, -1),
    )
)
