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

__all__ = ["Schedule", "Constant", "ExponentialDecay", "MixedTemperature", "Stepped", "SCHEDULES"]


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


class Stepped:
    """A schedule and the step a training loop has reached: the object a ``dg.nn`` layer reads.

    ``float(stepped)`` (or ``stepped()``) is ``schedule(step)``; ``stepped.step()`` advances it by one
    (``n``) steps and returns the new temperature. The state is the step alone (``state_dict`` /
    ``load_state_dict`` for checkpoints), so a resumed run continues with the same temperatures::

        tau = dg.schedules.Stepped(dg.schedules.MixedTemperature(tau=0.1))
        layer = dg.nn.StraightThrough(distribution="categorical", estimator="gst", tau=tau)
        for batch in batches:
            loss = f(layer(logits)); loss.backward(); opt.step(); tau.step()
    """

    def __init__(self, schedule: Schedule, step: int = 0) -> None:
        if not callable(schedule):
            raise TypeError(f"Expected schedule to be callable as schedule(step), but got {type(schedule).__name__}")
        self.schedule = schedule
        self.current = _step(step)
        schedule(self.current)  # checks the schedule accepts the step

    def __call__(self) -> float:
        return float(self.schedule(self.current))

    def __float__(self) -> float:
        return self()

    def step(self, n: int = 1) -> float:
        self.current += V.positive_int("n", n)
        return self()

    def state_dict(self) -> dict[str, int]:
        return {"step": self.current}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.current = _step(state.get("step") if isinstance(state, dict) else state)

    def __repr__(self) -> str:
        return f"Stepped({self.schedule!r}, step={self.current})"


SCHEDULES = {"constant": Constant, "exponential_decay": ExponentialDecay, "mixed_temperature": MixedTemperature}
"""Name -> schedule class."""
