"""The ``torch.distributions.Distribution`` base class of :mod:`discretegrad.distributions`.

:class:`DiscreteDistribution` adapts a registered :class:`~discretegrad.family.Family` (its law:
``sample``, ``log_prob``, ``support``, ``mean``) and one registered estimator (its ``rsample``) to
the ``torch.distributions`` interface. It holds no law code of its own: every number comes from
the family or the estimator, so the objects and the functional API cannot disagree. The public
classes (``dg.Categorical``, ...) only translate their constructor arguments and add what torch
asks of a distribution that the family does not declare (``support``, ``mode``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch.distributions import Distribution, constraints

from discretegrad import _validation as V
from discretegrad.registry import EstimatorSpec, get, get_family
from discretegrad.trees import is_arborescence, is_spanning_tree

__all__ = ["DiscreteDistribution", "KHot", "MAX_ENUMERATION", "Trees", "check_probs", "one_of", "resolve_validate",
           "xlogy_logspace"]

MAX_ENUMERATION = 1 << 16
"""Largest number of atoms per variable :meth:`DiscreteDistribution.entropy` enumerates."""


def resolve_validate(validate_args: object) -> bool:
    """``validate_args`` of a constructor: ``None`` follows :func:`discretegrad.get_default_validate_args`."""
    if validate_args is None:
        return V.get_default_validate_args()
    if not isinstance(validate_args, bool):
        raise TypeError(f"Expected validate_args to be a bool or None, but got {type(validate_args).__name__}")
    return validate_args


def one_of(probs: object, logits: object) -> None:
    if (probs is None) == (logits is None):
        raise ValueError(f"Expected exactly one of probs or logits, but got "
                         f"{'both' if probs is not None else 'neither'}")


def check_probs(probs: object, *, simplex: bool, validate: bool) -> torch.Tensor:
    """``probs`` checked: a float tensor, entries in [0, 1] and (``simplex``) summing to 1 over the last dim."""
    t = V.float_tensor("probs", probs, min_ndim=1 if simplex else 0)
    with V.validate_args(validate):
        V.in_range("probs", t, 0.0, 1.0, "in [0, 1]")
        if simplex and V.checking():
            sums = t.detach().sum(-1)
            tol = 1e-6 if t.dtype in (torch.float32, torch.float64) else 1e-2
            if not bool(((sums - 1).abs() <= tol).all()):
                raise ValueError(f"Expected probs to sum to 1 over the last dim, but got sums in "
                                 f"[{float(sums.min()):.6g}, {float(sums.max()):.6g}]")
    return t


class KHot(constraints.Constraint):
    is_discrete, event_dim = True, 1

    def __init__(self, k: int) -> None:
        self.k = k
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return ((value == 0) | (value == 1)).all(-1) & (value.sum(-1) == self.k)


class Trees(constraints.Constraint):
    is_discrete, event_dim = True, 2

    def __init__(self, root: int | None = None) -> None:
        self.root = root
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return is_spanning_tree(value) if self.root is None else is_arborescence(value, self.root)


def xlogy_logspace(log_p: torch.Tensor) -> torch.Tensor:
    """``p log p`` from ``log p``: 0 (value and gradient) where ``p = 0``."""
    safe = torch.where(log_p > -math.inf, log_p, 0.0)
    return torch.where(log_p > -math.inf, safe.exp() * safe, 0.0)


class DiscreteDistribution(Distribution):
    """A family of :mod:`discretegrad` as a ``torch.distributions.Distribution`` with an estimator.

    ``rsample`` is the registered drop-in op of ``estimator`` (an exact sample whose gradient is
    that estimator's; a relaxed sample for the relaxed ops), so ``rsample(sample_shape,
    generator=g)`` equals ``op(params.expand(*sample_shape, *params.shape), generator=g, **hparams)``
    for the same generator state. ``sample`` is the family's exact sampler (no gradient).
    ``generator=`` (on ``sample``/``rsample``, which ``torch.distributions`` does not have) is the
    ``torch.Generator`` every draw uses; ``None`` is torch's global generator.
    """

    family_name: ClassVar[str]
    param_name: ClassVar[str] = "logits"
    _no_enumeration: ClassVar[str] = "its support is not enumerable"

    def __init__(self, param: torch.Tensor, *, estimator: str, options: dict[str, Any], hparams: dict[str, Any],
                 validate_args: object = None) -> None:
        family = get_family(self.family_name)
        validate = resolve_validate(validate_args)
        with V.validate_args(validate):
            family.check(param)
            options = family.check_options(options, param)
        if not isinstance(estimator, str):
            raise TypeError(f"Expected estimator to be a str, but got {type(estimator).__name__}")
        spec = get(estimator, distribution=self.family_name)
        spec.check_hparam_names({**options, **hparams})
        self._family, self._spec, self._options, self._hparams = family, spec, options, dict(hparams)
        self._param = param
        batch_shape = family.var_shape(param)
        super().__init__(batch_shape, param.shape[len(batch_shape):], validate_args=False)
        self._validate_args = validate

    # ------------------------------------------------------------------ what it is

    @property
    def estimator(self) -> str:
        """The name of the estimator ``rsample`` uses."""
        return self._spec.name

    @property
    def spec(self) -> EstimatorSpec:
        """The registry entry of the estimator."""
        return self._spec

    @property
    def hparams(self) -> dict[str, Any]:
        """The estimator's hyperparameters given to the constructor (defaults not filled in)."""
        return dict(self._hparams)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        """Whether ``rsample`` is available: the estimator is a pathwise drop-in op (not score-function)."""
        return self._spec.kind == "op"

    def _kwargs(self) -> dict[str, Any]:
        return {**self._options, **self._hparams}

    # ------------------------------------------------------------------ sampling

    def _expanded(self, sample_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return self._param.expand(torch.Size(sample_shape) + self._param.shape)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(),  # type: ignore[override]
                generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample ``[*sample_shape, *batch_shape, *event_shape]`` with the estimator's gradient."""
        if not self.has_rsample:
            raise ValueError(
                f"Expected a pathwise estimator for rsample, but got estimator={self.estimator!r}, which needs the "
                f"cost function f (kind {self._spec.kind!r}): use dg.surrogate(f, params, "
                f"distribution={self.family_name!r}, estimator={self.estimator!r}, ...) or sample() and log_prob()")
        return self._spec.fn(self._expanded(sample_shape), generator=generator, **self._kwargs())

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(),  # type: ignore[override]
               generator: torch.Generator | None = None) -> torch.Tensor:
        """An exact sample from the family's sampler, without gradient."""
        with torch.no_grad():
            return self._family.sample(self._expanded(sample_shape), V.generator_for("generator", generator, self._param),
                                       **self._options)

    # ------------------------------------------------------------------ the law

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(value)``, shape ``value.shape[:value.dim() - len(event_shape)]`` (broadcasting)."""
        if self._validate_args:
            self._validate_sample(value)
        return self._family.log_prob(self._param, value, **self._options)

    def _support_size(self) -> int | None:
        """Atoms per variable of the family's support, when known before enumerating (else ``None``)."""
        return None

    def _enumerated(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = self._support_size()
        if size is not None and size > MAX_ENUMERATION:
            raise ValueError(f"Expected at most MAX_ENUMERATION={MAX_ENUMERATION} atoms per variable to enumerate, "
                             f"but got {size} ({type(self).__name__}{self._options or ''})")
        return self._family.support(self._param, **self._options)

    def entropy(self) -> torch.Tensor:
        """``-Σ p log p`` by enumeration of the family's support (subclasses with a closed form override it)."""
        _, log_table = self._enumerated()
        return -torch.where(log_table > -math.inf, log_table.exp() * log_table, 0.0).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        return self._family.mean(self._param, **self._options)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """Every atom ``[S, *batch_shape, *event_shape]`` (``expand=False``: ``[S, 1, ..., 1, *event_shape]``)."""
        if not self.has_enumerate_support:
            raise NotImplementedError(f"{type(self).__name__} does not define enumerate_support: {self._no_enumeration}")
        atoms, _ = self._enumerated()
        atoms = atoms.reshape(atoms.shape[0], *(1,) * len(self.batch_shape), *self.event_shape)
        return atoms.expand(atoms.shape[0], *self.batch_shape, *self.event_shape) if expand else atoms

    # ------------------------------------------------------------------ torch.distributions plumbing

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance: Any = None) -> DiscreteDistribution:
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        event = self._param.shape[len(self.batch_shape):]
        new._family, new._spec, new._options, new._hparams = self._family, self._spec, self._options, self._hparams
        new._param = self._param.expand(batch_shape + event)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def __repr__(self) -> str:
        hp = "".join(f", {k}={v!r}" for k, v in {**self._options, **self._hparams}.items())
        return (f"{type(self).__name__}({self.param_name}: {tuple(self._param.shape)}, "
                f"estimator={self.estimator!r}{hp})")
