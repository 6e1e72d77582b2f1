"""Distribution families: what the surrogate API, the exact oracle and the score-function
estimators need to know about a distribution.

A :class:`Family` declares

* its **parameters** (:class:`Param`): one or more tensors, each with a name, a constraint in
  the sense of ``torch.distributions.constraints`` (as ``arg_constraints``) and a check that
  gives the library's error messages. The first parameter fixes the *variable shape*:
  ``params.shape[:params.dim() - event_ndim]``. A one-parameter family takes the tensor itself
  everywhere; a family with several takes a tuple in declaration order.
* its **options** (:class:`Option`): non-tensor arguments that define the support (the subset
  size ``k`` of ``"topk"``, ``total_count`` of ``"binomial"``, ``root`` of ``"arborescence"``),
  with a default or :data:`~discretegrad.registry.REQUIRED`. Options are hyperparameters of
  every estimator of the family and flow through :func:`discretegrad.surrogate`,
  :mod:`discretegrad.exact`, :mod:`discretegrad.diagnostics` and every estimator kind.
* pure functions of ``(params, ..., **options)``: an exact ``sample`` (no gradient),
  ``log_prob`` per variable, a (possibly truncated) ``support`` ``(atoms [S, *event],
  log_table [*var_shape, S])`` for enumeration, and the ``mean`` (MuProp's linearisation point).
  A family whose law has no closed form passes functions that raise with the reason.
* optional hooks: ``relaxation`` (the reparameterised draws REBAR/RELAX need),
  ``gibbs`` (atoms and scores of the Gibbs distribution over structures, for
  :func:`discretegrad.exact.marginals`), ``example`` (a small problem with an enumerable
  exact gradient, which ``discretegrad demo`` runs) and ``support_size_fn`` (the number of atoms
  ``support`` would build, so :func:`discretegrad.exact.expectation` can refuse a support too large
  to enumerate before allocating it: a Poisson rate of 1e12, ``C(100, 50)`` subsets).

The methods check the options (names, defaults, values) once and call the functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Union

import torch
from torch.distributions import constraints

from discretegrad._validation import REQUIRED

__all__ = ["Family", "Param", "Option", "Relaxation", "Example", "Params"]

Params = Union[torch.Tensor, tuple[torch.Tensor, ...]]


@dataclasses.dataclass(frozen=True)
class Param:
    """One tensor parameter of a family.

    Attributes:
        name: its argument name (``"logits"``, ``"rate"``).
        constraint: the set its values lie in (``constraints.real``, ``constraints.positive``).
        check: ``check(value, name) -> tensor``: type and shape checks (always) and value checks
            against the constraint (when validation is on), raising ``TypeError``/``ValueError``
            in the form "Expected <name> ..., but got ...".
        event_ndim: trailing dims of the parameter that belong to one random variable.
    """

    name: str
    constraint: constraints.Constraint
    check: Callable[[object, str], torch.Tensor]
    event_ndim: int = 0


@dataclasses.dataclass(frozen=True)
class Option:
    """A non-tensor argument that defines the support.

    ``check(value, params) -> value`` validates it against the parameters (``k <= n``);
    ``default`` is :data:`~discretegrad.registry.REQUIRED` when there is none.
    """

    name: str
    check: Callable[[Any, Any], Any]
    default: Any = REQUIRED


class Relaxation(NamedTuple):
    """What REBAR/RELAX need of a family (:mod:`discretegrad.relax`).

    ``draw(x, generator) -> (z, z_tilde, b)``: the relaxed variable ``z``, reparameterised in the
    parameters ``x``; the hard sample ``b = H(z)``; and ``z_tilde ~ p(z | b)``, reparameterised.
    ``soften(z, tau)``: the continuous relaxation of ``H`` at temperature ``tau``.
    """

    draw: Callable[[torch.Tensor, torch.Generator | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    soften: Callable[[torch.Tensor, float], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Example:
    """A small problem whose exact gradient is enumerable (run by ``discretegrad demo``)."""

    description: str
    params: Params
    f: Callable[[torch.Tensor], torch.Tensor]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """A distribution family (see the module docstring)."""

    name: str
    params: tuple[Param, ...]
    event_ndim: int
    sample_fn: Callable[..., torch.Tensor]
    log_prob_fn: Callable[..., torch.Tensor]
    support_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    mean_fn: Callable[..., torch.Tensor]
    options: tuple[Option, ...] = ()
    relaxation: Relaxation | None = None
    gibbs: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    example: Callable[[], Example] | None = None
    support_size_fn: Callable[..., int] | None = None

    def __post_init__(self) -> None:
        if not self.params:
            raise ValueError(f"Expected family {self.name!r} to declare at least one parameter")

    # ------------------------------------------------------------------ declarations

    @property
    def param_name(self) -> str:
        """Name of the first parameter (the one that fixes the variable shape)."""
        return self.params[0].name

    @property
    def arg_constraints(self) -> dict[str, constraints.Constraint]:
        """``{parameter name: constraint}``, as ``torch.distributions.Distribution.arg_constraints``."""
        return {p.name: p.constraint for p in self.params}

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def option_defaults(self) -> dict[str, Any]:
        """``{option name: default or REQUIRED}``."""
        return {o.name: o.default for o in self.options}

    # ------------------------------------------------------------------ checks

    def split(self, params: Params) -> tuple[torch.Tensor, ...]:
        """The parameters as a tuple in declaration order (a bare tensor for one-parameter families)."""
        if len(self.params) == 1:
            return (params,)  # type: ignore[return-value]
        if not isinstance(params, tuple) or len(params) != len(self.params):
            names = [p.name for p in self.params]
            raise TypeError(f"Expected params of distribution {self.name!r} to be a tuple of tensors {names}, "
                            f"but got {type(params).__name__}")
        return params

    def join(self, parts: tuple[torch.Tensor, ...]) -> Params:
        """Inverse of :meth:`split`."""
        return parts[0] if len(self.params) == 1 else tuple(parts)

    def check(self, params: Params) -> Params:
        """Type checks (always) and value checks (when validating) of every parameter; returns ``params``."""
        parts = self.split(params)
        for p, t in zip(self.params, parts, strict=True):
            p.check(t, p.name)
        if len(parts) > 1:
            shape = self.var_shape(params)
            for p, t in zip(self.params[1:], parts[1:], strict=True):
                if tuple(t.shape[: t.dim() - p.event_ndim]) != tuple(shape):
                    raise ValueError(f"Expected parameter {p.name} to have variable shape {tuple(shape)} "
                                     f"(that of {self.param_name}), but got shape {tuple(t.shape)}")
        return params

    def check_options(self, options: Mapping[str, Any], params: Params | None = None) -> dict[str, Any]:
        """The options with defaults filled in and, given ``params``, values checked; ``ValueError`` on an
        unknown or a missing required option."""
        names = sorted(self.option_names)
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f"Expected the options {names} of distribution {self.name!r}, but got {sorted(options)}")
        out: dict[str, Any] = {}
        for o in self.options:
            if o.name in options:
                out[o.name] = o.check(options[o.name], params) if params is not None else options[o.name]
            elif o.default is REQUIRED:
                raise ValueError(f"Expected {o.name} to be given (distribution {self.name!r} takes the options "
                                 f"{names}), but got options {sorted(options)}")
            else:
                out[o.name] = o.default
        return out

    def var_shape(self, params: Params) -> torch.Size:
        """Shape of the variables: the first parameter's shape without its event dims."""
        first = self.split(params)[0]
        return first.shape[: first.dim() - self.params[0].event_ndim]

    def check_costs(self, costs: object, n_samples: int, params: Params) -> torch.Tensor:
        """``costs`` if it is ``[n_samples, *batch_shape]`` with ``batch_shape`` a prefix of the variable
        shape; ``TypeError``/``ValueError`` otherwise (the cost contract of every estimator)."""
        var_shape = tuple(self.var_shape(params))
        if not isinstance(costs, torch.Tensor):
            raise TypeError(f"Expected f to return a torch.Tensor, but got {type(costs).__name__}")
        shape = tuple(costs.shape)
        ok = len(shape) >= 1 and shape[0] == n_samples and shape[1:] == var_shape[: len(shape) - 1]
        if not ok:
            raise ValueError(
                f"Expected f to return costs of shape [n_samples={n_samples}, *batch_shape] with batch_shape "
                f"a prefix of {var_shape} (the {self.param_name} shape without event dims), but got {shape}")
        return costs

    # ------------------------------------------------------------------ tensors

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], params: Params) -> Params:
        """``fn`` applied to every parameter tensor."""
        return self.join(tuple(fn(t) for t in self.split(params)))

    def expand(self, params: Params, n: int) -> Params:
        """Every parameter with a new leading dim of size ``n`` (a view)."""
        return self.map(lambda t: t.expand(n, *t.shape), params)

    # ------------------------------------------------------------------ the law

    def sample(self, params: Params, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """An exact sample ``[*params.shape]`` (no gradient)."""
        return self.sample_fn(params, generator, **self.check_options(options, params))

    def log_prob(self, params: Params, z: torch.Tensor, **options: Any) -> torch.Tensor:
        """``log p(z)`` per variable: ``z.shape[:z.dim() - event_ndim]`` (broadcasting ``params``)."""
        return self.log_prob_fn(params, z, **self.check_options(options, params))

    def support(self, params: Params, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(atoms [S, *event_shape], log_table [*var_shape, S])`` for exact enumeration."""
        return self.support_fn(params, **self.check_options(options, params))

    def support_size(self, params: Params, **options: Any) -> int | None:
        """The number of atoms :meth:`support` would enumerate, computed without enumerating them
        (``None`` when the family does not say; its support is then small enough to build)."""
        if self.support_size_fn is None:
            return None
        return int(self.support_size_fn(params, **self.check_options(options, params)))

    def mean(self, params: Params, **options: Any) -> torch.Tensor:
        """``E[z]``, differentiable in the parameters."""
        return self.mean_fn(params, **self.check_options(options, params))
