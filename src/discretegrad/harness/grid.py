"""Sweep expansion: experiment x estimator choices x grid points x seeds -> :class:`RunConfig`s.

Pure functions, no I/O. The command-line syntax they parse:

* estimators: ``stgs,gst:gap=1.2,gumbel_rao:k=100`` -- comma-separated names, each optionally
  followed by ``:key=value`` hyperparameters (several: ``gst:gap=0.8:tau=0.5``). The table
  label form ``gst(gap=1.2)`` is accepted too (quote it for the shell).
* seeds: ``0-9`` (inclusive range), ``0,3,5``, or a mix ``0-2,7``.
* settings: ``key=value``; the value is read by :func:`parse_value` (Python literals through
  :func:`ast.literal_eval`, ``true``/``false``/``none`` in any case, anything else a plain
  string) -- never ``eval``.

Two checks guard a sweep before anything runs: every estimator's hyperparameter *values* are
tried in one tiny call (:func:`check_hparam_values`), and a sweep may plan at most
:data:`DEFAULT_MAX_RUNS` runs unless the caller raises the cap (``--max-runs``); the count is
checked before any run (or seed) is materialised.

The settings of one run are the settings dataclass's defaults, then ``quick`` (with
``--quick``), then the ``--set`` overrides, then the grid point. A ``--set`` of a grid key
fixes it (the grid no longer sweeps it). Values are checked once, here, against the settings
dataclass (:mod:`discretegrad.harness.settings`); each run also records its estimator's
registry defaults, so that its id hashes the fully resolved configuration.
"""

from __future__ import annotations

import ast
import itertools
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any

from discretegrad.harness import settings as _settings
from discretegrad.harness.contract import EstimatorChoice, Experiment, RunConfig
from discretegrad.registry import REQUIRED, get_family
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
    "setting_name",
    "check_overrides",
    "estimator_defaults",
    "make_config",
    "resolve_estimators",
    "check_hparam_values",
    "check_max_runs",
    "expand",
    "DEFAULT_MAX_RUNS",
]

DEFAULT_MAX_RUNS = 10_000
"""The most runs one sweep may plan unless raised (``--max-runs N``, ``max_runs=``): a typo such
as ``--seeds 0-100000000000`` is refused at once instead of exhausting memory."""

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


def parse_seeds(text: str, limit: int | None = DEFAULT_MAX_RUNS) -> tuple[int, ...]:
    """``"0-9"``, ``"0,3,5"`` or ``"0-2,7"`` -> unique seeds in the order given (ranges inclusive).

    More than ``limit`` distinct seeds are refused before any is materialised (a sweep has at
    least one run per seed; ``None``: no limit)."""
    ranges: list[tuple[int, int]] = []
    parts = text.split(",") if isinstance(text, str) else []
    for part in parts:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise ValueError(f"Expected --seeds to be non-negative integers and ranges like 0-9 or 0,3,5 "
                             f"(ranges increasing), but got {text!r}")
        lo = int(m.group(1))
        ranges.append((lo, int(m.group(2)) if m.group(2) is not None else lo))
    if not ranges:
        raise ValueError(f"Expected --seeds to name at least one seed (e.g. 0-9 or 0,3,5), but got {text!r}")
    count, end = 0, -1  # distinct seeds: the size of the union of the ranges
    for lo, hi in sorted(ranges):
        if hi > end:
            count += hi - max(lo, end + 1) + 1
            end = hi
    if limit is not None and count > limit:
        raise ValueError(f"Expected --seeds to name at most {limit} seeds (the run cap; raise it with "
                         f"--max-runs), but got {text!r}: {count} seeds")
    return tuple(dict.fromkeys(s for lo, hi in ranges for s in range(lo, hi + 1)))


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


def setting_name(point: Mapping[str, Any]) -> str:
    """How reports name a setting: ``"k1=v1, k2=v2"`` in key order, ``"default setting"`` for none."""
    return ", ".join(f"{k}={v}" for k, v in sorted(point.items())) or "default setting"


def check_overrides(experiment: Experiment, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``--set`` keys and values against the experiment's settings dataclass (the one
    place settings are checked); return the coerced values."""
    return _settings.coerce_all(experiment.settings, overrides, experiment=experiment.name)


def estimator_defaults(experiment: Experiment, name: str) -> dict[str, Any]:
    """The registry's default of every hyperparameter of estimator ``name`` (for the experiment's
    distribution), as JSON values (a required one without default: ``"REQUIRED"``); for one of the
    experiment's ``local_estimators``, the defaults it declares."""
    if name in experiment.local_estimators:
        defaults = experiment.local_estimators[name]
    else:
        defaults = get_estimator(name, distribution=experiment.distribution).hyperparameters
    return {k: (v if v is None or isinstance(v, (bool, int, float, str)) else str(v))
            for k, v in sorted(defaults.items())}


def _check_local_estimator(experiment: Experiment, choice: EstimatorChoice) -> None:
    """Hyperparameter names of one of the experiment's ``local_estimators`` (values: by the run)."""
    known = experiment.local_estimators[choice.name]
    unknown = sorted(set(choice.hparams) - set(known))
    if unknown:
        raise ValueError(f"Expected hyperparameters of estimator {choice.name!r} among {sorted(known)}, "
                         f"but got {unknown}")


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
        if choice.name in experiment.local_estimators:
            _check_local_estimator(experiment, choice)
            out.setdefault((choice.name, repr(sorted(choice.hparams.items()))),
                           EstimatorChoice(choice.name, dict(choice.hparams)))
            continue
        others = sorted(s.distribution for s in all_estimators() if s.name == choice.name)
        if others and experiment.distribution not in others:
            raise ValueError(f"Expected an estimator registered for distribution {experiment.distribution!r} "
                             f"(experiment {experiment.name!r}), but got {choice.name!r}, which is registered "
                             f"for {others}")
        spec = get_estimator(choice.name, distribution=experiment.distribution)
        supplied = sorted(set(choice.hparams) & set(experiment.family_options))
        if supplied:
            raise ValueError(f"Expected no {supplied} among the hyperparameters of estimator {choice.name!r}: "
                             f"experiment {experiment.name!r} sets them from its settings (--set), but got "
                             f"{choice.label!r}")
        # the run supplies these itself; only the ones this estimator takes count (an experiment
        # whose runs sample several families, as NRI's structures do, declares the union)
        supplied_by_run = dict.fromkeys(o for o in experiment.family_options if o in spec.hyperparameters)
        spec.check_hparam_names({**supplied_by_run, **choice.hparams})
        choice = EstimatorChoice(choice.name, dict(choice.hparams))
        key = (choice.name, repr(sorted(choice.hparams.items())))
        if key not in out:
            check_hparam_values(experiment.distribution, choice)
            out[key] = choice
    if not out:
        raise ValueError("Expected at least one estimator, but got none")
    return tuple(out.values())


def _probe_problem(distribution: str) -> tuple[Any, Any, dict[str, Any]] | None:
    """``(params, f, options)``: the family's :class:`~discretegrad.family.Example`, else params
    made from its declared parameters (``Family.params``: two variables, events of size three, a
    value inside each constraint) with a summing cost; ``None`` if neither is possible."""
    import torch

    family = get_family(distribution)
    if family.example is not None:
        ex = family.example()
        return ex.params, ex.f, dict(ex.options)
    if any(o.default is REQUIRED for o in family.options):
        return None
    parts = []
    for p in family.params:
        shape = (2,) + (3,) * p.event_ndim
        for value in (0.0, 1.0, 0.5):
            t = torch.full(shape, value, dtype=torch.float64)
            if bool(p.constraint.check(t).all()):
                parts.append(t)
                break
        else:
            return None
    params = family.join(tuple(parts))
    try:
        family.check(params)
    except (TypeError, ValueError):
        return None
    return params, (lambda z: z.reshape(z.shape[0], -1).sum(-1)), {}


def check_hparam_values(distribution: str, choice: EstimatorChoice) -> None:
    """Check the *values* of ``choice``'s hyperparameters by one tiny call of the estimator:
    :func:`discretegrad.surrogate` on the family's small example problem, two samples, under
    ``torch.no_grad()``, with a fixed explicit generator; a ``ValueError``/``TypeError`` becomes
    one message naming the estimator.

    Why this is sound: every estimator checks its own hyperparameters (with ``_validation``) when
    it is called, before and independently of what it computes, and the generic test suite
    (``tests/test_generic.py::test_bad_hyperparameters_raise``) asserts that each listed invalid
    value raises on exactly this kind of call; a value that passes here passes the same check at
    the start of every run. The call has no side effect: no gradient is built, the noise comes
    from its own generator (the global RNG is untouched), nothing is stored, and it costs
    milliseconds. What it cannot judge is left to the run: the family's *options* (``k`` of
    top-k, ``root``, ``total_count``) are valid or not for the experiment's parameter shape,
    which is unknown here, so the probe uses the example's options instead of the given ones.
    Errors that are not ``ValueError``/``TypeError`` (a numerical failure on the example) say
    nothing about the values and do not refuse the sweep.
    """
    import torch

    from discretegrad.surrogate import surrogate

    spec = get_estimator(choice.name, distribution=distribution)
    problem = _probe_problem(distribution)
    if problem is None:
        return  # no small problem to call it on: names were checked, values are checked by the run
    params, f, options = problem
    option_names = set(get_family(distribution).option_names)
    hparams = {k: v for k, v in choice.hparams.items() if k not in option_names}
    try:
        with torch.no_grad():
            surrogate(f, params, distribution=distribution, estimator=choice.name, n_samples=max(2, spec.min_samples),
                      generator=torch.Generator().manual_seed(0), **options, **hparams)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{e} (estimator {choice.label!r} of distribution {distribution!r})") from None
    except Exception:  # noqa: BLE001 - not a statement about the values (see the docstring)
        return


def check_max_runs(max_runs: object) -> int:
    if isinstance(max_runs, bool) or not isinstance(max_runs, numbers.Integral) or max_runs < 1:
        raise ValueError(f"Expected --max-runs to be an int >= 1, but got {max_runs!r}")
    return int(max_runs)


def expand(
    experiment: Experiment,
    *,
    estimators: Sequence[EstimatorChoice | str] | None = None,
    seeds: Sequence[int] | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    quick: bool = False,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> list[RunConfig]:
    """All runs of one sweep, in order estimator x grid point x seed, without duplicates.

    ``None`` for ``estimators`` / ``seeds`` means the experiment's defaults (``quick_*`` ones
    with ``quick``). Raises ``ValueError`` on an unknown estimator, hyperparameter or setting,
    an invalid hyperparameter value, or more than ``max_runs`` runs (counted before any is built).
    """
    max_runs = check_max_runs(max_runs)
    if estimators is None:
        estimators = experiment.quick_estimators if quick else experiment.estimators
    choices = resolve_estimators(experiment, estimators)
    if seeds is None:
        seeds = experiment.quick_seeds if quick else experiment.seeds
    elif isinstance(seeds, str):
        seeds = parse_seeds(seeds, limit=max_runs)
    if not isinstance(seeds, Sized):
        seeds = tuple(itertools.islice(seeds, max_runs + 1))
    if len(seeds) > max_runs:
        raise ValueError(f"Expected at most {max_runs} seeds (the run cap; raise it with --max-runs), but got "
                         f"{len(seeds)}")
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
    n_points = math.prod(len(swept[k]) for k in keys)
    n_runs = len(choices) * n_points * len(seeds)
    if n_runs > max_runs:
        raise ValueError(f"Expected a sweep of at most {max_runs} runs (the run cap; raise it with --max-runs), "
                         f"but got {len(choices)} estimators x {n_points} grid points x {len(seeds)} seeds = "
                         f"{n_runs} runs")
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
