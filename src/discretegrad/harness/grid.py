"""Sweep expansion: experiment x estimator choices x grid points x seeds -> :class:`RunConfig`s.

Pure functions, no I/O. The command-line syntax they parse:

* estimators: ``stgs,gst:gap=1.2,gumbel_rao:k=100`` -- comma-separated names, each optionally
  followed by ``:key=value`` hyperparameters (several: ``gst:gap=0.8:tau=0.5``). The table
  label form ``gst(gap=1.2)`` is accepted too (quote it for the shell).
* seeds: ``0-9`` (inclusive range), ``0,3,5``, or a mix ``0-2,7``.
* settings: ``key=value``; the value is read by :func:`parse_value` (Python literals through
  :func:`ast.literal_eval`, ``true``/``false``/``none`` in any case, anything else a plain
  string) -- never ``eval``.

The settings of one run are the settings dataclass's defaults, then ``quick`` (with
``--quick``), then the ``--set`` overrides, then the grid point. A ``--set`` of a grid key
fixes it (the grid no longer sweeps it). Values are checked once, here, against the settings
dataclass (:mod:`discretegrad.harness.settings`); each run also records its estimator's
registry defaults, so that its id hashes the fully resolved configuration.
"""

from __future__ import annotations

import ast
import itertools
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from discretegrad.harness import settings as _settings
from discretegrad.harness.contract import EstimatorChoice, Experiment, RunConfig
from discretegrad.registry import estimators as all_estimators
from discretegrad.registry import get as get_estimator

__all__ = [
    "parse_value",
    "parse_assignment",
    "parse_seeds",
    "parse_estimator",
    "parse_estimators",
    "grid_keys",
    "grid_point",
    "check_overrides",
    "estimator_defaults",
    "make_config",
    "resolve_estimators",
    "expand",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_value(text: str) -> Any:
    """A setting's value from the command line: a Python literal (``0.5``, ``1e-3``, ``[1, 2]``,
    ``'a'``), ``true``/``false``/``none``/``null`` in any case, else the text itself."""
    s = text.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return s


def parse_assignment(text: str, what: str = "--set") -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, parse_value(value))``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _NAME.match(key):
        raise ValueError(f"Expected {what} to look like key=value, but got {text!r}")
    return key, parse_value(value)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-9"``, ``"0,3,5"`` or ``"0-2,7"`` -> sorted-as-given unique seeds (ranges inclusive)."""
    seeds: list[int] = []
    parts = text.split(",") if isinstance(text, str) else []
    for part in parts:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise ValueError(f"Expected --seeds to be non-negative integers and ranges like 0-9 or 0,3,5 "
                             f"(ranges increasing), but got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ValueError(f"Expected --seeds to name at least one seed (e.g. 0-9 or 0,3,5), but got {text!r}")
    return tuple(dict.fromkeys(seeds))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses/brackets."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parse_estimator(text: str) -> EstimatorChoice:
    """``"gst:gap=1.2"`` or ``"gst(gap=1.2)"`` -> ``EstimatorChoice("gst", {"gap": 1.2})``."""
    s = text.strip()
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)", s)
    if m:
        name, items = m.group(1), [a for a in _split_top_level(m.group(2)) if a.strip()]
    else:
        name, *items = s.split(":")
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(f"Expected an estimator like stgs or gst:gap=1.2, but got {text!r}")
    hparams: dict[str, Any] = {}
    for item in items:
        key, value = parse_assignment(item, what=f"hyperparameter of estimator {name!r}")
        hparams[key] = value
    return EstimatorChoice(name, hparams)


def parse_estimators(text: str) -> tuple[EstimatorChoice, ...]:
    """Comma-separated :func:`parse_estimator` items (commas inside parentheses kept)."""
    items = [t for t in _split_top_level(text) if t.strip()]
    if not items:
        raise ValueError(f"Expected --estimators to name at least one estimator, but got {text!r}")
    return tuple(parse_estimator(t) for t in items)


def grid_keys(experiment: Experiment) -> tuple[str, ...]:
    """The keys that identify a grid point (those of ``grid`` and ``quick_grid``), sorted."""
    return tuple(sorted(set(experiment.grid) | set(experiment.quick_grid or {})))


def grid_point(experiment: Experiment, params: Mapping[str, Any]) -> dict[str, Any]:
    """The grid keys' values in ``params`` (how tables and ``paper_results`` name a setting)."""
    return {k: params[k] for k in grid_keys(experiment) if k in params}


def check_overrides(experiment: Experiment, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``--set`` keys and values against the experiment's settings dataclass (the one
    place settings are checked); return the coerced values."""
    return _settings.coerce_all(experiment.settings, overrides, experiment=experiment.name)


def estimator_defaults(experiment: Experiment, name: str) -> dict[str, Any]:
    """The registry's default of every hyperparameter of estimator ``name`` (for the experiment's
    distribution), as JSON values (a required one without default: ``"REQUIRED"``)."""
    spec = get_estimator(name, distribution=experiment.distribution)
    return {k: (v if v is None or isinstance(v, (bool, int, float, str)) else str(v))
            for k, v in sorted(spec.hyperparameters.items())}


def make_config(experiment: Experiment, estimator: EstimatorChoice | str, seed: int,
                values: Mapping[str, Any] | None = None) -> RunConfig:
    """One run's config: ``values`` (validated and coerced) over the settings' defaults, and the
    estimator's registry defaults (part of the run's identity)."""
    choice = parse_estimator(estimator) if isinstance(estimator, str) else estimator
    typed = _settings.build(experiment.settings, check_overrides(experiment, values or {}))
    return RunConfig(experiment.name, choice, int(seed), typed, estimator_defaults(experiment, choice.name))


def resolve_estimators(experiment: Experiment, choices: Iterable[EstimatorChoice | str]) -> tuple[EstimatorChoice, ...]:
    """Parse string items and check each name and hyperparameter name against the registry for
    the experiment's distribution. Duplicates are dropped (first kept)."""
    out: dict[tuple[str, str], EstimatorChoice] = {}
    for c in choices:
        choice = parse_estimator(c) if isinstance(c, str) else c
        if not isinstance(choice, EstimatorChoice):
            raise TypeError(f"Expected estimators to be EstimatorChoice or str items, but got {type(c).__name__}")
        others = sorted(s.distribution for s in all_estimators() if s.name == choice.name)
        if others and experiment.distribution not in others:
            raise ValueError(f"Expected an estimator registered for distribution {experiment.distribution!r} "
                             f"(experiment {experiment.name!r}), but got {choice.name!r}, which is registered "
                             f"for {others}")
        spec = get_estimator(choice.name, distribution=experiment.distribution)
        spec.check_hparam_names(dict(choice.hparams))
        choice = EstimatorChoice(choice.name, dict(choice.hparams))
        out.setdefault((choice.name, repr(sorted(choice.hparams.items()))), choice)
    if not out:
        raise ValueError("Expected at least one estimator, but got none")
    return tuple(out.values())


def expand(
    experiment: Experiment,
    *,
    estimators: Sequence[EstimatorChoice | str] | None = None,
    seeds: Sequence[int] | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    quick: bool = False,
) -> list[RunConfig]:
    """All runs of one sweep, in order estimator x grid point x seed, without duplicates.

    ``None`` for ``estimators`` / ``seeds`` means the experiment's defaults (``quick_*`` ones
    with ``quick``). Raises ``ValueError`` on an unknown estimator, hyperparameter or setting.
    """
    if estimators is None:
        estimators = experiment.quick_estimators if quick else experiment.estimators
    choices = resolve_estimators(experiment, estimators)
    if seeds is None:
        seeds = experiment.quick_seeds if quick else experiment.seeds
    elif isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    for s in seeds:
        if not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 0:
            raise ValueError(f"Expected seeds to be non-negative ints, but got {s!r}")
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("Expected at least one seed, but got none")
    fixed = check_overrides(experiment, overrides or {})

    base = check_overrides(experiment, experiment.quick) if quick else {}
    base.update(fixed)
    grid = experiment.quick_grid if (quick and experiment.quick_grid is not None) else experiment.grid
    swept = {k: [_settings.coerce(experiment.settings, k, v) for v in vs] for k, vs in grid.items() if k not in fixed}
    keys = sorted(swept)
    points = [dict(zip(keys, vals)) for vals in itertools.product(*(swept[k] for k in keys))]

    configs: dict[str, RunConfig] = {}
    for choice in choices:
        hp_defaults = estimator_defaults(experiment, choice.name)
        for point in points:
            typed = _settings.build(experiment.settings, {**base, **point})
            for seed in seeds:
                cfg = RunConfig(experiment.name, choice, seed, typed, hp_defaults)
                configs.setdefault(cfg.run_id, cfg)
    return list(configs.values())
