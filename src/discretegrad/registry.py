"""The estimator registry.

An estimator is one function plus one :func:`register` decorator. Two kinds exist:

``"op"``
    a drop-in op ``fn(params, *, generator=None, **hparams) -> sample`` whose forward value
    is a sample of the distribution (or a relaxed sample, when ``relaxed=True``) and whose
    backward pass is the estimator's surrogate gradient. :func:`discretegrad.surrogate`
    evaluates ``f`` on it.
``"surrogate"``
    an estimator that needs the cost function (score-function family):
    ``fn(f, params, *, distribution, n_samples, generator=None, **hparams) -> Tensor[*batch_shape]``
    whose value is the Monte Carlo estimate of ``E[f(z)]`` and whose gradient is the estimator;
    :func:`discretegrad.surrogate` passes the distribution it was called for, so one function
    can be registered for several distributions (one ``@register`` line each).

Hyperparameters and their defaults are read from the function's keyword-only arguments
(everything but ``distribution``, ``generator`` and ``n_samples``), so the signature is the single source of
truth; the function validates its own arguments. A keyword-only argument without a default
is refused unless ``register(..., required=(name,))`` declares it: a *required* argument such as
the subset size ``k`` of the ``"topk"`` family, which defines the support and has no sensible
default. It is listed in ``hyperparameters`` with the value :data:`REQUIRED`, and every call must
pass it (``dg.surrogate(f, logits, distribution="topk", estimator="entropy", k=3)``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["EstimatorSpec", "register", "get", "estimators", "REQUIRED"]

Kind = Literal["op", "surrogate"]
_RESERVED = {"generator", "n_samples", "distribution"}


class _Required:
    """Marker for a hyperparameter that has no default and must be passed (e.g. ``k``)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
"""The ``hyperparameters`` value of a required argument."""


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """Metadata of one registered estimator.

    Attributes:
        name: registry name, unique per distribution (``"gst"``).
        distribution: the distribution it estimates gradients for (``"categorical"``).
        fn: the implementation (see module docstring for the two signatures).
        kind: ``"op"`` (drop-in op) or ``"surrogate"`` (needs ``f``).
        unbiased: whether ``E[gradient]`` equals the exact gradient of ``E[f(z)]``.
        relaxed: whether the forward value is a relaxed (non-discrete) sample.
        hyperparameters: mapping from hyperparameter name to its default (:data:`REQUIRED` for a
            required argument such as ``k``).
        reference: the paper (and equation) the estimator comes from.
        summary: one line on what it does.
        min_samples: the fewest samples per parameter it works with (RLOO: 2);
            :func:`discretegrad.surrogate` refuses fewer.
    """

    name: str
    distribution: str
    fn: Callable[..., Any]
    kind: Kind
    unbiased: bool
    relaxed: bool
    hyperparameters: dict[str, Any]
    reference: str
    summary: str
    min_samples: int = 1

    @property
    def needs_f(self) -> bool:
        """Whether the estimator needs the cost function (usable only through ``surrogate``)."""
        return self.kind == "surrogate"

    @property
    def required(self) -> tuple[str, ...]:
        """Hyperparameters without a default that every call must pass."""
        return tuple(k for k, v in self.hyperparameters.items() if v is REQUIRED)

    def check_hparam_names(self, hparams: dict[str, Any]) -> None:
        unknown = sorted(set(hparams) - set(self.hyperparameters))
        if unknown:
            raise ValueError(
                f"Expected hyperparameters of estimator {self.name!r} ({self.distribution}) among "
                f"{sorted(self.hyperparameters)}, but got {unknown}"
            )
        missing = [k for k in self.required if k not in hparams]
        if missing:
            raise ValueError(
                f"Expected the required hyperparameters {missing} of estimator {self.name!r} ({self.distribution}) "
                f"to be given, but got {sorted(hparams)}"
            )

    def describe(self) -> dict[str, Any]:
        """A plain-dict record (for listing and JSON)."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "kind": self.kind,
            "unbiased": self.unbiased,
            "relaxed": self.relaxed,
            "needs_f": self.needs_f,
            "hyperparameters": {k: ("REQUIRED" if v is REQUIRED else v) for k, v in self.hyperparameters.items()},
            "reference": self.reference,
            "summary": self.summary,
            "min_samples": self.min_samples,
        }


_REGISTRY: dict[tuple[str, str], EstimatorSpec] = {}


def _hyperparameters(fn: Callable[..., Any], kind: Kind, required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RESERVED:
            if p.default is inspect.Parameter.empty:
                if p.name not in required:
                    raise TypeError(f"hyperparameter {p.name!r} of {fn.__qualname__} needs a default")
                out[p.name] = REQUIRED
            else:
                out[p.name] = p.default
    extra = [r for r in required if out.get(r) is not REQUIRED]
    if extra:
        raise TypeError(f"required hyperparameters {extra} of {fn.__qualname__} must be keyword-only without a default")
    return out


def register(
    name: str,
    *,
    distribution: str,
    kind: Kind = "op",
    unbiased: bool = False,
    relaxed: bool = False,
    reference: str = "",
    required: tuple[str, ...] = (),
    min_samples: int = 1,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers ``fn`` as estimator ``name`` for ``distribution``.

    The summary is the first line of the function's docstring. ``required`` names keyword-only
    arguments of ``fn`` without a default (see the module docstring).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = (distribution, name)
        if key in _REGISTRY:
            raise ValueError(f"estimator {name!r} is already registered for {distribution!r}")
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[key] = EstimatorSpec(
            name=name,
            distribution=distribution,
            fn=fn,
            kind=kind,
            unbiased=unbiased,
            relaxed=relaxed,
            hyperparameters=_hyperparameters(fn, kind, tuple(required)),
            reference=reference,
            summary=doc.splitlines()[0] if doc else "",
            min_samples=min_samples,
        )
        return fn

    return deco


def _load_all() -> None:
    # Importing the estimator modules fills the registry (no side effects beyond that).
    from discretegrad import _estimator_modules  # noqa: F401


def estimators(distribution: str | None = None) -> list[EstimatorSpec]:
    """Registered estimators, optionally for one distribution, sorted by (distribution, name)."""
    _load_all()
    if distribution is not None:
        from discretegrad.distributions import get_distribution

        get_distribution(distribution)  # raises on an unknown name
    specs = [s for (d, _), s in _REGISTRY.items() if distribution is None or d == distribution]
    return sorted(specs, key=lambda s: (s.distribution, s.name))


def get(name: str, *, distribution: str) -> EstimatorSpec:
    """The spec of ``name`` for ``distribution``; ``ValueError`` listing known names otherwise."""
    _load_all()
    if not isinstance(name, str) or (distribution, name) not in _REGISTRY:
        known = sorted(n for (d, n) in _REGISTRY if d == distribution)
        raise ValueError(f"Expected estimator to be one of {known} for distribution {distribution!r}, but got {name!r}")
    return _REGISTRY[(distribution, name)]
