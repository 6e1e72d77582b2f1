"""Temperature schedules: plain, immutable objects with ``schedule(step) -> tau``.

A schedule is a pure function of the (0-based) global training step: no state to carry, save or
restore, so a resumed run gets the same temperatures by passing the same step. Use it where the
temperature is handed to an estimator::

    schedule = dg.schedules.ExponentialDecay(initial=1.0, rate=1e-4, minimum=0.5, every=500)
    for step, batch in enumerate(batches):
        loss = dg.surrogate(f, logits, distribution="categorical", estimator="stgs", tau=schedule(step))

Every schedule is a frozen dataclass (hashable, printable, picklable) that checks its fields when
it is built and the step when it is called ("Expected step to be an int >= 0, but got ...").
:data:`SCHEDULES` maps the names to the classes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

from discretegrad import _validation as V

__all__ = ["Schedule", "Constant", "ExponentialDecay", "MixedTemperature", "SCHEDULES"]


class Schedule(Protocol):
    """Anything callable as ``schedule(step: int) -> float``."""

    def __call__(self, step: int) -> float: ...


def _step(step: object) -> int:
    return V.positive_int("step", step, minimum=0)


@dataclasses.dataclass(frozen=True)
class Constant:
    """``tau`` at every step."""

    tau: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", V.positive_float("tau", self.tau))

    def __call__(self, step: int) -> float:
        _step(step)
        return self.tau


@dataclasses.dataclass(frozen=True)
class ExponentialDecay:
    """Jang, Gu and Poole 2017 (Gumbel-softmax), Sec. 4: ``τ = max(minimum, initial · exp(-rate · t))``.

    ``t = every · floor(step / every)``: the temperature is updated every ``every`` steps and held
    in between. The paper's settings: ``initial = 1``, ``minimum = 0.5``, ``rate`` in ``{1e-5, 1e-4}``,
    ``every`` in ``{500, 1000}``.
    """

    initial: float = 1.0
    rate: float = 1e-4
    minimum: float = 0.5
    every: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", V.positive_float("initial", self.initial))
        object.__setattr__(self, "rate", V.nonnegative_float("rate", self.rate))
        object.__setattr__(self, "minimum", V.positive_float("minimum", self.minimum))
        object.__setattr__(self, "every", V.positive_int("every", self.every))

    def __call__(self, step: int) -> float:
        t = self.every * (_step(step) // self.every)
        return max(self.minimum, self.initial * math.exp(-self.rate * t))


@dataclasses.dataclass(frozen=True)
class MixedTemperature:
    """GST (Fan et al. 2022), App. A.3: ``tau`` at every ``period``-th step (``step mod period == 0``),
    ``mid_tau`` at the others (the paper: period M = 20, mid 0.5)."""

    tau: float
    mid_tau: float = 0.5
    period: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", V.positive_float("tau", self.tau))
        object.__setattr__(self, "mid_tau", V.positive_float("mid_tau", self.mid_tau))
        object.__setattr__(self, "period", V.positive_int("period", self.period))

    def __call__(self, step: int) -> float:
        return self.tau if _step(step) % self.period == 0 else self.mid_tau


SCHEDULES = {"constant": Constant, "exponential_decay": ExponentialDecay, "mixed_temperature": MixedTemperature}
"""Name -> schedule class."""
