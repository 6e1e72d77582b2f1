"""Typed experiment settings: a frozen dataclass per experiment, validated once by the harness.

An experiment declares its protocol settings as a dataclass whose fields are made with
:func:`setting` (default, help text, allowed values, bounds); the annotation is the type::

    @dataclasses.dataclass(frozen=True)
    class Settings:
        epochs: int = setting(100, "training epochs", ge=1)
        lr: float = setting(0.01, "Adam learning rate", gt=0)
        loss: str = setting("bce", "GAN losses", choices=("bce", "linear"))
        tau: float | None = setting(None, "temperature (none: the estimator's default)", gt=0)

Supported types: ``bool``, ``int``, ``float``, ``str`` and ``T | None``; anything else (a
list) is taken as given. :func:`coerce` checks one value: unknown key, type, allowed values and
bounds, each with the message "Expected --set <key> <what>, but got <value>"; an int for a
float setting becomes a float (``lr=1`` and ``lr=1.0`` are the same run). :func:`build` makes
the typed object from a dict of already coerced values; experiments read it by attribute.

A run's identity (its id in the store) is the full settings dict, defaults included, so that a
changed default is a new run. A setting added after runs were stored would therefore change
every stored run's id; declare it with ``in_id_at_default=False`` and a default that is the
behaviour before it existed, and :func:`identity` leaves it out of the id while it has that
default (the stored runs keep their ids; a run that changes it is a new run). Never change such
a setting's default: runs with the old and the new behaviour would share an id.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["setting", "SettingInfo", "fields", "defaults", "coerce", "coerce_all", "build", "describe", "identity"]

_META = "discretegrad.setting"


def setting(default: Any, help: str, *, choices: Sequence[Any] | None = None, ge: float | None = None,
            gt: float | None = None, protocol: bool = True, in_id_at_default: bool = True) -> Any:
    """A dataclass field for a setting: ``default``, one line of ``help``, optional allowed
    ``choices`` and bounds ``ge`` (>=) / ``gt`` (>) for numbers. ``protocol=False`` marks a
    setting that only changes what is measured (a probe, a timer), not the paper's protocol:
    reports do not flag a run that changes it. ``in_id_at_default=False`` leaves the setting out
    of a run's identity while it has its default (a setting added after runs were stored; module
    docstring)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError(f"Expected setting default to be immutable, but got {default!r}")
    if not isinstance(in_id_at_default, bool):
        raise TypeError(f"Expected in_id_at_default to be a bool, but got {in_id_at_default!r}")
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "ge": ge, "gt": gt,
            "protocol": bool(protocol), "in_id_at_default": in_id_at_default}
    return dataclasses.field(default=default, metadata={_META: meta})


@dataclasses.dataclass(frozen=True)
class SettingInfo:
    """One setting as the harness and ``discretegrad list`` see it."""

    name: str
    type: str  # "int", "float", "bool", "str", "any"
    optional: bool  # None allowed
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    ge: float | None
    gt: float | None
    in_id_at_default: bool = True

    def constraint(self) -> str:
        """``int >= 1``, ``one of ['bce', 'linear']``, ``float > 0 or None``."""
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        else:
            text = "any value" if self.type == "any" else self.type
            if self.ge is not None:
                text += f" >= {self.ge:g}"
            if self.gt is not None:
                text += f" > {self.gt:g}"
        return text + (" or None" if self.optional and (self.choices is None or None not in self.choices) else "")


def _type_name(tp: Any) -> tuple[str, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (_type_name(rest[0])[0] if len(rest) == 1 else "any"), True
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(tp, "any"), False


@functools.lru_cache(maxsize=None)
def fields(cls: type) -> tuple[SettingInfo, ...]:
    """The settings of a settings dataclass, in declaration order."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"Expected settings to be a dataclass type, but got {cls!r}")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META)
        if meta is None or f.default is dataclasses.MISSING:
            raise TypeError(f"Expected every field of {cls.__name__} to be made with setting(...), but got "
                            f"{f.name!r}")
        kind, optional = _type_name(hints[f.name])
        out.append(SettingInfo(f.name, kind, optional, f.default, meta["help"], meta["choices"], meta["ge"],
                               meta["gt"], meta.get("in_id_at_default", True)))
    for info in out:  # the declaration itself must hold
        _check(info, info.default, f"{cls.__name__}.{info.name} default")
    return tuple(out)


def defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


def protocol_defaults(cls: type) -> dict[str, Any]:
    """The defaults of the settings that make the protocol (not those marked ``protocol=False``)."""
    fields(cls)  # checks the declaration
    return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata[_META].get("protocol", True)}


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def coerce(cls: type, key: str, value: Any, *, what: str | None = None, experiment: str | None = None) -> Any:
    """Check ``value`` for setting ``key`` of ``cls``; return it coerced (int -> float for a
    float setting). ``what`` names the argument in messages (default ``--set <key>``)."""
    by_name = {f.name: f for f in fields(cls)}
    if key not in by_name:
        where = f" for experiment {experiment!r}" if experiment else ""
        raise ValueError(f"Expected --set key to be one of {sorted(by_name)}{where}, but got {key!r}")
    return _check(by_name[key], value, what or f"--set {key}")


def _check(info: SettingInfo, value: Any, what: str) -> Any:
    if value is None and info.optional:
        return None
    got = _kind(value)
    if info.type != "any" and got != info.type:
        if info.type == "float" and got == "int":
            value = float(value)
        else:
            like = "" if info.default is None else f" (like {info.default!r})"
            raise ValueError(f"Expected {what} to be of type {info.type}{like}"
                            f"{' or None' if info.optional else ''}, but got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Expected {what} to be finite, but got {value!r}")
    if info.choices is not None and value not in info.choices:
        raise ValueError(f"Expected {what} to be one of {list(info.choices)}, but got {value!r}")
    if (info.ge is not None and value < info.ge) or (info.gt is not None and value <= info.gt):
        raise ValueError(f"Expected {what} to be {info.constraint()}, but got {value!r}")
    return value


def coerce_all(cls: type, values: Mapping[str, Any], *, what: str = "--set", experiment: str | None = None
               ) -> dict[str, Any]:
    """:func:`coerce` every item; messages name ``<what> <key>``."""
    return {k: coerce(cls, k, v, what=f"{what} {k}", experiment=experiment) for k, v in values.items()}


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """The typed settings object: defaults, then ``values`` (already coerced by the harness)."""
    return cls(**{**defaults(cls), **values})


def identity(obj: Any) -> dict[str, Any]:
    """The settings object as the plain dict that identifies a run: every setting, except those
    declared ``in_id_at_default=False`` while they have their default."""
    infos = {f.name: f for f in fields(type(obj))}
    return {k: v for k, v in dataclasses.asdict(obj).items()
            if infos[k].in_id_at_default or v != infos[k].default}


def describe(cls: type) -> list[dict[str, Any]]:
    """Plain records of the settings (for ``discretegrad list --json``)."""
    return [{"name": f.name, "type": f.type + (" | None" if f.optional else ""), "default": f.default,
             "constraint": f.constraint(), "choices": None if f.choices is None else list(f.choices),
             "help": f.help} for f in fields(cls)]
