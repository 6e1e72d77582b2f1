"""An estimator's keyword arguments and sample count for one run, from the registry and the run
config (every experiment calls :func:`discretegrad.surrogate` with these)."""

from __future__ import annotations

from typing import Any

import discretegrad as dg
from discretegrad.harness.contract import RunConfig

__all__ = ["estimator_kwargs", "samples_for"]


def samples_for(estimator: str, distribution: str, n_samples: int) -> int:
    """``n_samples`` raised to the estimator's registered minimum (RLOO: 2)."""
    return max(n_samples, dg.get_estimator(estimator, distribution=distribution).min_samples)


def estimator_kwargs(config: RunConfig, distribution: str, tau: float | None) -> dict[str, Any]:
    """The estimator's hyperparameters from the run config, plus the protocol's ``tau`` when the
    estimator has a temperature and the config does not fix one. (Names were checked against
    the registry when the sweep was planned.)"""
    spec = dg.get_estimator(config.estimator.name, distribution=distribution)
    kwargs = dict(config.estimator.hparams)
    if tau is not None and "tau" in spec.hyperparameters and "tau" not in config.estimator.hparams:
        kwargs["tau"] = tau
    return kwargs
