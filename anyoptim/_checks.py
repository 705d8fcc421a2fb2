"""Validation of hyperparameters: each check returns the value as a float or raises a ValueError naming it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "check_beta",
    "check_choice",
    "check_finite",
    "check_learning_rate",
    "check_non_negative",
    "check_positive",
]


def check_finite(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_non_negative(name: str, value: Any) -> float:
    number = check_finite(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def check_positive(name: str, value: Any) -> float:
    number = check_finite(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def check_beta(name: str, value: Any) -> float:
    number = check_finite(name, value)
    if not 0 <= number < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return number


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_learning_rate(value: Any) -> float | Callable[[int], float]:
    if callable(value):
        return value
    return check_non_negative("learning_rate", value)
