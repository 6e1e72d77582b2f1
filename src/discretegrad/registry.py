"""The registries: distribution families and estimators. Imports only `_validation` from the package (the ``REQUIRED`` marker).

A *family* (:class:`discretegrad.family.Family`) is registered once by the module that defines
it (``register_family``); an *estimator* is one function plus one :func:`register` decorator,
registered after its family. Registration happens when the package is imported: the package's
``__init__`` imports the family modules, the one list of them. Nothing here imports them back.

Two estimator kinds exist:

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
    can be registered for several distributions (one ``register`` call each).

Hyperparameters and their defaults are read from the function's keyword-only arguments
(everything but ``distribution``, ``generator``, ``n_samples`` and ``dim``), so the signature is the single
source of truth; the function validates its own arguments. The family's *options* (the subset
size ``k`` of ``"topk"``, the ``total_count`` of ``"binomial"``) are hyperparameters of every
estimator of that family: an op names them in its signature (an option without a default, such
as ``k``, is keyword-only without a default there and listed with the value :data:`REQUIRED`); a
generic estimator that takes ``**options`` gets them from the family. Any other keyword-only
argument without a default is refused.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from discretegrad._validation import REQUIRED

if TYPE_CHECKING:
    from discretegrad.family import Family

__all__ = ["EstimatorSpec", "register", "get", "estimators", "REQUIRED", "register_family", "get_family", "families"]

Kind = Literal["op", "surrogate"]
_RESERVED = {"generator", "n_samples", "distribution", "dim"}
"""Keyword arguments that are not hyperparameters: ``dim`` (the categorical ops' category dim, as in
``F.gumbel_softmax``) is a calling convention of the drop-in op, not part of the estimator (the
surrogate API and the families put the event dims last), so it never enters run ids."""


# REQUIRED (the hyperparameters value of a required argument) lives on the ground floor, in
# _validation, so that family.py can use it without importing the registry.



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


def _hyperparameters(fn: Callable[..., Any], family: Family) -> dict[str, Any]:
    """Keyword-only arguments of ``fn`` with their defaults, plus the family's options."""
    options = family.option_defaults()
    out: dict[str, Any] = {}
    takes_options = False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            takes_options = True
        elif p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RESERVED:
            if p.default is not inspect.Parameter.empty:
                out[p.name] = p.default
            elif p.name in options and options[p.name] is REQUIRED:
                out[p.name] = REQUIRED
            else:
                raise TypeError(f"hyperparameter {p.name!r} of {fn.__qualname__} needs a default")
    for name, default in options.items():
        if name not in out:
            if not takes_options:
                raise TypeError(f"{fn.__qualname__} must take the option {name!r} of distribution "
                                f"{family.name!r} (keyword-only, or through **options)")
            out[name] = default
    return out


def register(
    name: str,
    *,
    distribution: str,
    kind: Kind = "op",
    unbiased: bool = False,
    relaxed: bool = False,
    reference: str = "",
    min_samples: int = 1,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers ``fn`` as estimator ``name`` for the registered family ``distribution``.

    The summary is the first line of the function's docstring; hyperparameters come from the
    signature and the family's options (see the module docstring).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = (distribution, name)
        if key in _REGISTRY:
            raise ValueError(f"estimator {name!r} is already registered for {distribution!r}")
        if kind not in ("op", "surrogate"):
            raise ValueError(f"Expected kind to be one of ['op', 'surrogate'], but got {kind!r}")
        family = get_family(distribution)
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[key] = EstimatorSpec(
            name=name,
            distribution=distribution,
            fn=fn,
            kind=kind,
            unbiased=unbiased,
            relaxed=relaxed,
            hyperparameters=_hyperparameters(fn, family),
            reference=reference,
            summary=doc.splitlines()[0] if doc else "",
            min_samples=min_samples,
        )
        return fn

    return deco


def estimators(distribution: str | None = None) -> list[EstimatorSpec]:
    """Registered estimators, optionally for one distribution, sorted by (distribution, name)."""
    if distribution is not None:
        get_family(distribution)  # raises on an unknown name
    specs = [s for (d, _), s in _REGISTRY.items() if distribution is None or d == distribution]
    return sorted(specs, key=lambda s: (s.distribution, s.name))


def get(name: str, *, distribution: str) -> EstimatorSpec:
    """The spec of ``name`` for ``distribution``; ``ValueError`` listing known names otherwise."""
    if not isinstance(name, str) or (distribution, name) not in _REGISTRY:
        get_family(distribution)
        known = sorted(n for (d, n) in _REGISTRY if d == distribution)
        raise ValueError(f"Expected estimator to be one of {known} for distribution {distribution!r}, but got {name!r}")
    return _REGISTRY[(distribution, name)]


# ----------------------------------------------------------------------------- families

_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register a distribution family under ``family.name`` (once); returns it."""
    if family.name in _FAMILIES:
        raise ValueError(f"distribution {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` listing the known names otherwise."""
    if not isinstance(name, str) or name not in _FAMILIES:
        raise ValueError(f"Expected distribution to be one of {sorted(_FAMILIES)}, but got {name!r}")
    return _FAMILIES[name]


def families() -> list[str]:
    """Names of the registered distribution families, sorted."""
    return sorted(_FAMILIES)
