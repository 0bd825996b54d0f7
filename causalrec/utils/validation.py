"""The one door for bad parameters: constraints declared once per estimator, checked at fit.

Every public estimator declares ``_parameter_constraints`` (parameter -> list of allowed kinds,
any of which may match); ``validate_params`` raises a ``ValueError`` that names the parameter,
the allowed values and what it got. Bad *logs* are rejected by ``causalrec.schema``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["Options", "Interval", "Boolean", "Integer", "InstanceOf", "Callable", "validate_params"]


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, None, ...)."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", values)

    def is_satisfied_by(self, value) -> bool:
        return any(value is v or (type(value) is type(v) and value == v) for v in self.values)

    def __str__(self):
        if len(self.values) == 1:
            return repr(self.values[0])
        return "one of (" + ", ".join(repr(v) for v in self.values) + ")"


@dataclass(frozen=True)
class Interval:
    """A real (or, with ``integer=True``, whole) number in an interval; ``closed`` names
    the ends that belong to it: "both", "left", "right" or "neither"."""

    low: float | None
    high: float | None
    closed: str = "both"
    integer: bool = False

    def is_satisfied_by(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return False
        kind = numbers.Integral if self.integer else numbers.Real
        if not isinstance(value, kind) or (not self.integer and not np.isfinite(value)):
            return False
        left_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        right_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return bool(left_ok and right_ok)

    def __str__(self):
        if self.integer and self.high is None and self.low in (0, 1) and self.closed in ("both", "left"):
            return "a positive integer" if self.low == 1 else "a non-negative integer"
        kind = "an integer" if self.integer else "a number"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        return f"{kind} in {left}{lo}, {hi}{right}"


def Integer(low=None, high=None, closed="both") -> Interval:
    return Interval(low, high, closed, integer=True)


@dataclass(frozen=True)
class _Boolean:
    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, (bool, np.bool_))

    def __str__(self):
        return "True or False"


def Boolean() -> _Boolean:
    return _Boolean()


@dataclass(frozen=True)
class InstanceOf:
    """An instance of one of ``types`` (given as classes or a description and a predicate)."""

    types: tuple
    description: str = ""

    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, self.types)

    def __str__(self):
        return self.description or " or ".join(f"a {t.__name__}" for t in self.types)


@dataclass(frozen=True)
class Callable:
    """Anything the ``check`` predicate accepts, described by ``description``."""

    check: object
    description: str

    def is_satisfied_by(self, value) -> bool:
        try:
            return bool(self.check(value))
        except Exception:
            return False

    def __str__(self):
        return self.description


def validate_params(params: dict, constraints: dict, owner: str) -> None:
    """Raise ``ValueError`` for the first parameter no constraint of which is satisfied."""
    for name, allowed in constraints.items():
        value = params[name]
        if not any(c.is_satisfied_by(value) for c in allowed):
            shown = " or ".join(str(c) for c in allowed)
            raise ValueError(f"{name} must be {shown}, got {value!r} ({owner})")
