"""``torch.nn`` layers that sample a discrete variable in training mode and take its mode in eval mode.

>>> model = torch.nn.Sequential(
...     torch.nn.Linear(784, 20 * 10), torch.nn.Unflatten(-1, (20, 10)),
...     dg.nn.StraightThrough(distribution="categorical", estimator="gst", tau=0.5, gap=1.0),
...     torch.nn.Flatten(), torch.nn.Linear(20 * 10, 784))

:class:`StraightThrough` takes the parameters of a family (logits, Poisson rates, edge logits)
from the previous layer. In training mode it returns ``rsample`` of the matching
:mod:`discretegrad.distributions` object, i.e. the registered drop-in op of ``estimator`` (an
exact sample with that estimator's gradient); in eval mode the noise-free mode: one-hot argmax
(categorical), ``1[logit > 0]`` (Bernoulli), the top-k of the logits, the maximum spanning tree
or arborescence. Noise comes from ``self.generator`` (a ``torch.Generator`` attribute, or the
``generator=`` argument of ``forward``; ``None`` is torch's global generator).

Temperature: ``tau`` is a number or an object the training loop steps. The layer reads it at
every forward call: a number is used as it is; a callable is called with no arguments
(:class:`discretegrad.schedules.Stepped`, which pairs a schedule of :mod:`discretegrad.schedules`
with the step the loop has reached, or any ``lambda: ...``); any other object is converted with
``float(tau)``. The layer never steps it: the loop calls ``tau.step()``. The schedules are
re-exported here (``dg.nn.Stepped``, ``dg.nn.Constant``, ``dg.nn.ExponentialDecay``,
``dg.nn.MixedTemperature``).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from discretegrad.distributions import make
from discretegrad.registry import get
from discretegrad.schedules import Constant, ExponentialDecay, MixedTemperature, Stepped

__all__ = ["StraightThrough", "GumbelSoftmax", "current_tau", "Stepped", "Constant", "ExponentialDecay",
           "MixedTemperature"]


def current_tau(tau: Any) -> float:
    """The temperature now: ``tau`` itself, ``tau()`` for a callable, ``float(tau)`` otherwise."""
    if isinstance(tau, numbers.Real) and not isinstance(tau, bool):
        return float(tau)
    value = tau() if callable(tau) else tau
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"Expected tau to be a float, a callable returning one or an object with __float__, "
                        f"but got {type(tau).__name__}") from None


class StraightThrough(torch.nn.Module):
    """Sample (training) or take the mode (eval) of ``distribution`` given its parameters.

    Args:
        distribution: a family name (``"categorical"``, ``"bernoulli"``, ``"poisson"``, ``"binomial"``,
            ``"topk"``, ``"spanning_tree"``, ``"arborescence"``).
        estimator: a registered drop-in op of that family (``dg.estimators(distribution)`` with
            ``kind == "op"``); score-function estimators need the cost, see :func:`discretegrad.surrogate`.
        tau: the temperature (number or stepped object, see the module docstring); ``None`` for an
            estimator without one (or to use its default).
        generator: the ``torch.Generator`` of the training-mode draws.
        **hparams: the estimator's other hyperparameters and the family's options (``gap=1.0``,
            ``k=3``, ``total_count=10``, ``root=0``).
    """

    def __init__(self, distribution: str = "categorical", estimator: str = "gst", *, tau: Any = None,
                 generator: torch.Generator | None = None, **hparams: Any) -> None:
        super().__init__()
        spec = get(estimator, distribution=distribution)
        if spec.kind != "op":
            raise ValueError(f"Expected a drop-in (pathwise) estimator, but got estimator={estimator!r} of kind "
                             f"{spec.kind!r}, which needs the cost function: use dg.surrogate")
        spec.check_hparam_names({**hparams, **({"tau": 1.0} if tau is not None else {})})
        if tau is not None:
            current_tau(tau)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"Expected generator to be a torch.Generator or None, but got {type(generator).__name__}")
        self.distribution, self.estimator, self.tau, self.generator = distribution, estimator, tau, generator
        self.hparams = dict(hparams)

    def posterior(self, params: torch.Tensor) -> Any:
        """The :mod:`discretegrad.distributions` object at ``params`` with the current temperature."""
        hp = dict(self.hparams)
        if self.tau is not None:
            hp["tau"] = current_tau(self.tau)
        return make(self.distribution, params, estimator=self.estimator, **hp)

    def forward(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        q = self.posterior(params)
        if self.training:
            return q.rsample(generator=generator if generator is not None else self.generator)
        return q.mode

    def extra_repr(self) -> str:
        hp = "".join(f", {k}={v!r}" for k, v in self.hparams.items())
        return f"distribution={self.distribution!r}, estimator={self.estimator!r}, tau={self.tau!r}{hp}"


class GumbelSoftmax(StraightThrough):
    """The layer form of ``F.gumbel_softmax``: ``hard=False`` the relaxed sample, ``hard=True`` STGS;
    the one-hot argmax in eval mode. Categories on the last dim."""

    def __init__(self, tau: Any = 1.0, hard: bool = False, *, generator: torch.Generator | None = None) -> None:
        if not isinstance(hard, bool):
            raise TypeError(f"Expected hard to be a bool, but got {type(hard).__name__}")
        super().__init__("categorical", "stgs" if hard else "gumbel_softmax", tau=tau, generator=generator)
