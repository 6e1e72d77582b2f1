"""An estimator's keyword arguments and sample count for one run, from the registry and the run
config (every experiment calls :func:`discretegrad.surrogate` with these)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import discretegrad as dg
from discretegrad.harness.contract import Experiment, RunConfig
from discretegrad.registry import get_family

__all__ = ["estimator_kwargs", "samples_for", "family_options"]


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


def family_options(experiment: Experiment, family: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``family`` that ``experiment`` supplies from its settings
    (``experiment.family_options``), with their ``values`` for this run: only those ``family``
    declares (``k`` for ``"topk"``, nothing for ``"spanning_tree"``), so one call serves every
    family a run may sample. A declared option missing from ``values`` is a programming error
    (``KeyError``)."""
    declared = set(get_family(family).option_names)
    return {name: values[name] for name in experiment.family_options if name in declared}
