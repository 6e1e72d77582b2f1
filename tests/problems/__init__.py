"""Per-distribution fixtures that drive the generic estimator suite.

Every registered distribution needs a module ``tests/problems/<distribution>.py`` (a test in
``test_registry.py`` fails otherwise) that defines a :class:`Case` called ``CASE``:

* ``problems()``: small problems (float64 params) whose exact expectation is enumerable, with a
  cost ``f`` that is nonlinear and keeps a batch dim (``z [n, *params.shape] -> [n, B]``);
* ``law_params()`` and ``law_pvalue(params, samples)``: a goodness-of-fit p-value for hard
  samples ``[M, *params.shape]`` (the generic law test fails below ``LAW_ALPHA``);
* ``is_valid(z)``: whether every hard sample is in the support;
* ``extreme_params(dtype)``: inputs with extreme values (outputs and gradients must stay finite);
* ``bad_params()``: ``(value, exception type)`` pairs that every estimator must reject;
* ``bad_hparams``: invalid values per hyperparameter name. Every hyperparameter of every
  registered estimator must appear here (``test_registry.py`` enforces it), so adding an
  estimator with a new hyperparameter means saying what an invalid value is;
* ``test_hparams``: hyperparameters passed in every generic test (e.g. a required ``k``);
* ``law_hparams``: per op name, the hyperparameters under which its forward sample follows the
  family's law, for an op whose default forward sample only approximates it (I-MLE's sum-of-Gamma
  noise); the generic law test uses them, a dedicated test must cover the default;
* ``references``: for biased estimators, ``name -> ref(params, out, v, generator, **hparams)``
  returning the expected gradient of ``sum(v * out)`` with respect to ``params``, written from
  the paper's formula; ``generator`` is a copy of the generator as it was before the call, so a
  reference can replay the noise;
* ``reference_params(generator)``: the (valid) parameters the reference test uses, and
  ``reference_grid``: values per hyperparameter name; the test runs every combination of the
  values of the hyperparameters an estimator has (at least the empty combination);
* ``masked_params(dtype)``: for families that accept masked (``-inf``) parameters (categorical, topk),
  inputs with masked entries (enough finite per row: one, or ``k``); ``tests/test_conventions.py`` checks
  that every estimator of the family never samples a masked entry and gives it a zero, finite
  gradient (with validation on and off);
* ``covered_by``: for biased estimators checked by a dedicated test instead,
  ``name -> "test_module::test_function"``; ``test_registry.py`` checks that the named test
  calls the estimator (its function or the public op it wraps).

Every biased estimator needs an entry in ``references`` or ``covered_by``; every unbiased one is
checked against ``discretegrad.exact`` automatically.

* ``soak``: a :class:`Soak`, what the property-based soak (``tests/test_soak.py``) needs to draw
  random valid problems of the family and to check relaxed outputs; ``is_valid`` takes the
  family's options as keywords (``is_valid(z, k=3)``), defaulting to ``test_hparams``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import torch

LAW_ALPHA = 1e-4  # false-failure rate of one goodness-of-fit test (fixed seeds: deterministic)


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    params: torch.Tensor
    f: Callable[[torch.Tensor], torch.Tensor]


def _no_refusal(spec: object, size: int, options: dict) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Soak:
    """Random valid problems of a family, for the property-based soak.

    * ``sizes``: the range ``(lo, hi)`` of the event size (items, classes, vertices; ``(1, 1)`` for
      scalar events) and ``event_shape(size)`` the parameter's event shape;
    * ``to_params(x)``: float64 reals (logits up to 1e4 in magnitude, with ties) to valid parameters
      of the same shape (Poisson rates, symmetric spanning-tree logits);
    * ``options(size)``: every valid setting of the family's options at that size (every ``k``,
      every ``root``), as keyword dicts;
    * ``in_hull(z, tol, **options)``: whether a relaxed output lies in the convex hull of the support
      (within ``tol`` per constraint); ``outside_hull``: relaxed estimators documented not to lie in
      it, each with the weaker set it does lie in (same signature);
    * ``refused(spec, size, options)``: the documented limit (a message) under which the estimator
      must refuse the call with a ``ValueError`` (the Gumbel-top-k law's ``k! <= 5040``), else None.
    """

    sizes: tuple[int, int]
    event_shape: Callable[[int], tuple[int, ...]]
    in_hull: Callable[..., bool] | None = None
    to_params: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    options: Callable[[int], list[dict]] = lambda size: [{}]
    outside_hull: dict[str, Callable[..., bool]] = dataclasses.field(default_factory=dict)
    refused: Callable[[object, int, dict], str | None] = _no_refusal


def bounded(z: torch.Tensor, tol: float, low: float = 0.0, high: float = 1.0) -> bool:
    """Every entry in ``[low - tol, high + tol]`` (and finite)."""
    z = z.double()
    return bool(torch.isfinite(z).all() and (z >= low - tol).all() and (z <= high + tol).all())


@dataclasses.dataclass(frozen=True)
class Case:
    distribution: str
    problems: Callable[[], list[Problem]]
    law_params: Callable[[], torch.Tensor]
    law_pvalue: Callable[[torch.Tensor, torch.Tensor], float]
    is_valid: Callable[[torch.Tensor], bool]
    extreme_params: Callable[[torch.dtype], list[torch.Tensor]]
    bad_params: Callable[[], list[tuple[object, type[Exception]]]]
    bad_hparams: dict[str, list[object]]
    test_hparams: dict[str, object] = dataclasses.field(default_factory=dict)
    law_hparams: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)
    references: dict[str, Callable[..., torch.Tensor]] = dataclasses.field(default_factory=dict)
    reference_params: Callable[[torch.Generator], torch.Tensor] | None = None
    reference_grid: dict[str, list[object]] = dataclasses.field(default_factory=dict)
    reference_atol: float = 1e-12
    covered_by: dict[str, str] = dataclasses.field(default_factory=dict)
    masked_params: Callable[[torch.dtype], list[torch.Tensor]] | None = None
    soak: Soak | None = None


def case_for(distribution: str) -> Case | None:
    try:
        module = importlib.import_module(f"problems.{distribution}")
    except ModuleNotFoundError:
        return None
    return module.CASE
