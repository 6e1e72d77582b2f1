"""The records the leaderboard passes around: problems, suite entries, the measuring budget, and
the ranked results. Plain frozen dataclasses, shared by :mod:`discretegrad.leaderboard` (which
measures) and :mod:`discretegrad.leaderboard_report` (which writes), so neither imports the other
back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from discretegrad import _validation as V
from discretegrad.diagnostics import GradientReport
from discretegrad.exact import DEFAULT_MAX_CONFIGS
from discretegrad.family import Example, Params

__all__ = ["Budget", "Entry", "Problem", "ProblemResult", "Row", "Unavailable"]


class Unavailable(Exception):
    """A problem that cannot be built here (its data set is absent); reported with the reason."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """A problem with an enumerable exact gradient.

    ``relaxed_inputs``: whether ``f`` is defined on relaxed (non-discrete) values; when it is not,
    relaxed estimators are skipped. ``notes``: provenance (data, how a model was trained).
    """

    name: str
    distribution: str
    description: str
    params: Params
    f: Callable[[torch.Tensor], torch.Tensor]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    relaxed_inputs: bool = True
    notes: str = ""
    max_configs: int = DEFAULT_MAX_CONFIGS

    @classmethod
    def from_example(cls, name: str, distribution: str, example: Example) -> Problem:
        return cls(name, distribution, example.description, example.params, example.f, dict(example.options))


@dataclasses.dataclass(frozen=True)
class Entry:
    """A problem of the suite: ``build(quick) -> Problem`` (may raise :class:`Unavailable`)."""

    name: str
    distribution: str
    build: Callable[[bool], Problem]


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much is measured: gradient draws per estimator, the timing protocol (``rounds`` rounds
    of ``block`` gradients per estimator), and ``seconds``, the most time the draws of one
    estimator on one problem may take: a slower estimator gets fewer draws (``min_draws`` at
    least), which its row says."""

    draws: int = 1000
    rounds: int = 5
    block: int = 20
    seconds: float = 60.0
    min_draws: int = 100

    @classmethod
    def of(cls, quick: bool, draws: int | None) -> Budget:
        base = cls(draws=20, rounds=2, block=2) if quick else cls()
        return base if draws is None else dataclasses.replace(base, draws=V.positive_int("draws", draws, minimum=2))

    def draws_for(self, ms_per_gradient: float) -> int:
        """Draws for an estimator that takes ``ms_per_gradient``: ``draws`` unless that exceeds ``seconds``."""
        affordable = int(self.seconds * 1e3 / max(ms_per_gradient, 1e-9))
        return self.draws if affordable >= self.draws else max(min(self.draws, self.min_draws), affordable)


@dataclasses.dataclass(frozen=True)
class Row:
    """One estimator on one problem: its diagnostics and timing, or why it was skipped."""

    estimator: str
    kind: str
    unbiased: bool
    relaxed: bool
    n_samples: int
    report: GradientReport | None = None
    skipped: str | None = None
    ms_per_gradient: float | None = None  # median over the timing rounds
    time_ratio: float | None = None  # median over rounds of (this / baseline) within the round
    ms_rounds: tuple[float, ...] = ()
    ratio_rounds: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProblemResult:
    problem: Problem
    rows: tuple[Row, ...]  # ranked by MSE, skipped last
    baseline: str | None
    baseline_note: str
    exact_norm: float
    seconds: float  # wall time of the measurement (build excluded)
    build_seconds: float
