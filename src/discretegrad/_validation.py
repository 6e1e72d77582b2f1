"""Argument checks (always on) and tensor-value checks (switchable), in one place.

Messages follow the form "Expected <argument> <what was expected>, but got <what was given>".
Value checks on tensors (NaN/inf, ranges) cost a device sync, so like
``torch.distributions.Distribution.set_default_validate_args`` they can be switched off
globally with :func:`set_default_validate_args` or locally with :func:`validate_args`. They are
data-dependent (``bool(tensor)``), which ``torch.func.vmap`` and ``torch.compile`` cannot trace:
under those transforms (:func:`tracing`) they are skipped, and run eagerly everywhere else.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "set_default_validate_args",
    "get_default_validate_args",
    "validate_args",
    "tracing",
]


class _Required:
    """Marker for a hyperparameter that has no default and must be passed (e.g. ``k``)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
"""The ``hyperparameters`` value of a required argument."""


_VALIDATE = True


def set_default_validate_args(value: bool) -> None:
    """Switch tensor-value validation (NaN/inf and range checks) on or off globally."""
    if not isinstance(value, bool):
        raise TypeError(f"Expected value to be a bool, but got {type(value).__name__}")
    global _VALIDATE
    _VALIDATE = value


def get_default_validate_args() -> bool:
    """Whether tensor-value validation is currently on (default ``True``)."""
    return _VALIDATE


def tracing() -> bool:
    """Whether the code runs under ``torch.compile`` or a ``torch.func.vmap`` transform, where a
    data-dependent check (``bool(tensor)``) cannot run; tensor-value checks are skipped there."""
    if torch.compiler.is_compiling():
        return True
    stack = torch._C._functorch.get_interpreter_stack()
    return bool(stack) and any(i.key() == torch._C._functorch.TransformType.Vmap for i in stack)


def checking() -> bool:
    """Whether tensor-value checks run now: validation on and not :func:`tracing`."""
    return _VALIDATE and not tracing()


@contextlib.contextmanager
def validate_args(value: bool) -> Iterator[None]:
    """Context manager that sets tensor-value validation for the duration of a block."""
    old = _VALIDATE
    set_default_validate_args(value)
    try:
        yield
    finally:
        set_default_validate_args(old)


# ----------------------------------------------------------------------------- scalars

def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_float(name: str, value: Any) -> float:
    """A finite real number > 0."""
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"Expected {name} to be a finite float > 0, but got {value!r}")
    return float(value)


def nonnegative_float(name: str, value: Any) -> float:
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"Expected {name} to be a finite float >= 0, but got {value!r}")
    return float(value)


def as_int(value: Any) -> int | None:
    """``value`` as a Python int if it is integer-like, else ``None``.

    Integer-like: an ``int`` or any ``numbers.Integral`` (``numpy.int64``, ...), or a 0-dim tensor
    or NumPy array of an integer dtype. Never a ``bool`` (or bool array/tensor), a float (``2.0``)
    or a string: a count or an index given as one of those is a mistake, not a conversion.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, torch.Tensor):
        ok = value.dim() == 0 and not value.is_floating_point() and not value.is_complex() \
            and value.dtype != torch.bool and value.device.type != "meta"
        return int(value.item()) if ok else None
    dtype = getattr(value, "dtype", None)  # a 0-dim NumPy array (np.array(3)), without importing NumPy
    if getattr(value, "shape", None) == () and getattr(dtype, "kind", None) in ("i", "u"):
        return int(value)
    return None


def integer(name: str, value: Any, low: int | None = None, high: int | None = None, *, hint: str = "") -> int:
    """An integer-like value (:func:`as_int`) in ``[low, high]`` (either bound optional), as an int.

    The one integer check of the library: counts (``n_samples``, ``mc_samples``), options (``k``,
    ``total_count``, ``root``) and limits all go through it, so each accepts the same values.
    ``hint`` is added to the message in parentheses ("the number of items").
    """
    got = as_int(value)
    if got is None or (low is not None and got < low) or (high is not None and got > high):
        if low is not None and high is not None:
            what = f"an int in [{low}, {high}]"
        elif low is not None:
            what = f"an int >= {low}"
        elif high is not None:
            what = f"an int <= {high}"
        else:
            what = "an int"
        what = f"{what} ({hint})" if hint else what
        raise ValueError(f"Expected {name} to be {what}, but got {value!r}")
    return got


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer-like value ``>= minimum`` (:func:`integer`)."""
    return integer(name, value, low=minimum)


def probability(name: str, value: Any) -> float:
    if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"Expected {name} to be a float in [0, 1], but got {value!r}")
    return float(value)


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"Expected {name} to be one of {list(options)}, but got {value!r}")
    return value


# ----------------------------------------------------------------------------- tensors

def _describe(t: torch.Tensor) -> str:
    return f"Tensor of shape {tuple(t.shape)}"


def float_tensor(name: str, value: Any, *, min_ndim: int = 0) -> torch.Tensor:
    """A floating-point tensor with at least ``min_ndim`` dims (type checks, always on)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"Expected {name} to be a torch.Tensor, but got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"Expected {name} to be a floating-point tensor, but got dtype {value.dtype}")
    if value.device.type == "meta":
        raise ValueError(f"Expected {name} to be a tensor with data (on a CPU or accelerator device), "
                         f"but got a tensor on the 'meta' device of shape {tuple(value.shape)}")
    if value.dim() < min_ndim:
        raise ValueError(
            f"Expected {name} to have at least {min_ndim} dimension(s), but got {_describe(value)}"
        )
    return value


def finite_float_tensor(name: str, value: Any, *, min_ndim: int = 0) -> torch.Tensor:
    """:func:`float_tensor`, and finite when validating (log-odds, real parameters)."""
    t = float_tensor(name, value, min_ndim=min_ndim)
    finite(name, t)
    return t


def finite(name: str, value: torch.Tensor) -> None:
    """Raise if ``value`` has NaN or inf entries (only when validation is on)."""
    if checking() and not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"Expected {name} ({_describe(value)}) to be finite, but found NaN or inf values")


def masked_logits(name: str, value: torch.Tensor, dim: int = -1) -> None:
    """Logits where ``-inf`` masks a category: raise on NaN or ``+inf`` entries, or on a row (along
    ``dim``) with no finite entry (only when validation is on)."""
    if not checking():
        return
    v = value.detach()
    if v.numel() == 0:
        return
    top = v.amax(dim)  # one pass: a NaN propagates into its row's max, +inf is the max, an all -inf row's max is -inf
    if bool(torch.isfinite(top).all()):  # the common case: one reduction and one sync
        return
    if bool((torch.isnan(top) | (top == math.inf)).any()):
        raise ValueError(f"Expected {name} ({_describe(value)}) to be finite or -inf (masked), "
                         f"but found NaN or +inf values")
    if bool((top == -math.inf).any()):
        raise ValueError(f"Expected {name} ({_describe(value)}) to have at least one finite entry per row "
                         f"(-inf masks a category), but found a row with every entry -inf")


def in_range(name: str, value: torch.Tensor, low: float | None, high: float | None, what: str) -> None:
    """Raise if entries are outside [low, high] or NaN (only when validation is on)."""
    if not checking():
        return
    value = value.detach()
    ok = ~torch.isnan(value)
    if low is not None:
        ok &= value >= low
    if high is not None:
        ok &= value <= high
    if not bool(ok.all()):
        raise ValueError(f"Expected {name} ({_describe(value)}) to be {what}, but found invalid values")


def generator_for(name: str, generator: Any, tensor: torch.Tensor) -> torch.Generator | None:
    """``None`` or a ``torch.Generator`` on the same device type as ``tensor``."""
    if generator is None:
        return None
    if torch.compiler.is_compiling():
        raise TypeError(f"Expected {name}=None under torch.compile (torch {torch.__version__} cannot trace a "
                        f"torch.Generator: a draw that takes one breaks the graph; the compiled op draws from "
                        f"torch's default generator), but got a torch.Generator")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"Expected {name} to be a torch.Generator or None, but got {type(generator).__name__}")
    if generator.device.type != tensor.device.type:
        raise ValueError(
            f"Expected {name} on device type {tensor.device.type!r} (the input's), "
            f"but got a generator on {generator.device.type!r}"
        )
    return generator
