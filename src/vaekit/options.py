"""Typed, declarative options: the configuration of every section, family and estimator.

An options class is a dataclass whose fields are declared with :func:`option`: a default, a
help line (shown by ``vaekit train --help``) and the check its value must pass. The same
declaration drives type conversion of values read from JSON/TOML files and command-line
strings (:meth:`Options.from_values`), validation (:meth:`Options.validate`, the one place a
range or choice is checked) and the command line's options. A family or estimator declares
its own options class next to its code, so adding one never touches this module.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ConfigError, did_you_mean

Check = Callable[[str, Any], None]


def option(default: Any, help: str, *, check: Check | None = None) -> Any:
    """A dataclass field with a help line and a check (see :func:`positive` and friends)."""
    meta = {"help": help, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- checks
def positive(name: str, value: Any) -> None:
    """An integer > 0, or a finite number > 0."""
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    elif not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value}")


def off_or_positive(name: str, value: Any) -> None:
    """>= 0, where 0 turns the feature off."""
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be >= 0 (0 turns it off), got {value}")


def nonnegative(name: str, value: Any) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be >= 0, got {value}")


def interval(lo: float, hi: float, closed: str = "[]") -> Check:
    """A number in the interval ``lo``..``hi``; ``closed`` is ``"[]"``, ``"[)"``, ``"(]"`` or
    ``"()"``."""
    def check(name: str, value: Any) -> None:
        ok = ((value >= lo) if closed[0] == "[" else (value > lo)) and \
             ((value <= hi) if closed[1] == "]" else (value < hi))
        if not ok:
            raise ConfigError(f"{name} must lie in {closed[0]}{lo:g}, {hi:g}{closed[1]}, "
                              f"got {value}")
    return check


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]]) -> Check:
    """A string from ``choices`` (a sequence, or a callable returning one: a registry's names,
    read when the check runs, so that entries registered later count)."""
    def check(name: str, value: Any) -> None:
        allowed = list(choices() if callable(choices) else choices)
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}"
                              f"{did_you_mean(value, allowed)}")
    check.choices = choices             # read by the command line's help
    return check


def widths(*, allow_empty: bool) -> Check:
    """A list of positive integers (layer widths)."""
    def check(name: str, value: list[int]) -> None:
        if (not value and not allow_empty) or any(v <= 0 for v in value):
            raise ConfigError(f"{name} must be {'' if allow_empty else 'one or more '}"
                              f"positive widths, got {value}")
    return check


def choices_of(f: dataclasses.Field) -> list[str] | None:
    """The choices of a field checked by :func:`one_of`, else ``None``."""
    c = getattr(f.metadata.get("check"), "choices", None)
    if c is None:
        return None
    return list(c() if callable(c) else c)


# --------------------------------------------------------------------------- the base class
@dataclass
class Options:
    """Base of every options dataclass. Subclasses declare fields with :func:`option` and may
    override :meth:`check` for constraints between fields."""

    section: ClassVar[str] = "options"      # how errors name the owner ("model vqvae", ...)

    def check(self) -> None:
        """Constraints that involve several fields (raise :class:`ConfigError`)."""

    def validate(self):
        """Check every field's value and then :meth:`check`; return ``self``.

        Raises:
            ConfigError: naming the field, the bad value and what is allowed.
        """
        for f in dataclasses.fields(self):
            c = f.metadata.get("check")
            if c is not None:
                c(f.name, getattr(self, f.name))
        self.check()
        return self

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_values(cls, values: dict[str, Any], owner: str | None = None):
        """Build from ``name -> value`` (file values or command-line strings, converted to each
        field's type); fields not given keep their defaults. Not validated.

        Raises:
            ConfigError: a name that is not a field (the message lists the fields), or a value
                that cannot be read as the field's type.
        """
        types_ = field_types(cls)
        kwargs = {}
        for name, value in values.items():
            if name not in types_:
                raise ConfigError(f"{name!r} is not an option of {owner or cls.section}"
                                  f"{did_you_mean(name, types_)}; its options are "
                                  f"{', '.join(types_) or '(none)'}")
            kwargs[name] = coerce(name, types_[name], value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        """A copy with ``changes`` (converted to the fields' types), not validated."""
        return dataclasses.replace(self, **{k: coerce(k, field_types(type(self))[k], v)
                                            for k, v in changes.items()})


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# --------------------------------------------------------------------------- typing
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for ``X | None`` annotations."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (from JSON/TOML or a command-line string) to the type ``tp``.

    Raises:
        ConfigError: the value cannot be read as that type.
    """
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("", "none")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    try:
        if typing.get_origin(base) is list:
            if isinstance(value, str):
                items = [v for v in value.replace(" ", "").split(",") if v]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            else:
                raise TypeError
            (item_t,) = typing.get_args(base)
            return [_scalar(item_t, v) for v in items]
        return _scalar(base, value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {_type_name(base)}, got {value!r}") from None


def _scalar(tp: type, value: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        if isinstance(value, str):
            return int(value, 10)
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        v = float(value)
        if math.isnan(v):
            raise ValueError
        return v
    if tp is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "a comma-separated list of integers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp))
