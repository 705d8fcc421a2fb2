"""Validation of hyperparameters: each check returns the value as a float or raises a ValueError naming it."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

from ._namespace import array_namespace
from .count_math import is_traced

__all__ = [
    "SETTING_CHECKS",
    "check_beta",
    "check_choice",
    "check_count",
    "check_finite",
    "check_flag",
    "check_learning_rate",
    "check_non_negative",
    "check_positive",
]


def check_finite(name: str, value: Any) -> float:
    if isinstance(value, (bool, str, bytes)):
        # float() would take True as 1.0 and "0.1" as 0.1: almost always a mistake in a hyperparameter.
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int past float's range (10**400)
        raise ValueError(f"{name} must be finite, got an integer of {value.bit_length()} bits") from None
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


def check_flag(name: str, value: Any) -> bool:
    """An on/off option: True or False (a NumPy bool too), nothing else (``bool("False")`` is True)."""
    if isinstance(value, bool) or (type(value).__name__ == "bool" and type(value).__module__ == "numpy"):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def check_count(count: Any) -> Any:
    """A state's step count: a non-negative integer, returned as a Python int (which never wraps).

    A Python or NumPy integer, or a 0-D integer array (a jitted step's count).  A traced count (under ``jax.jit``)
    is returned as it is, after its dtype and shape are checked: its value is not known until the step runs.
    """
    if type(count) is int and count >= 0:  # every step's case, first
        return count
    if is_traced(count):
        dtype = getattr(count, "dtype", None)
        if count.shape != () or dtype is None or not array_namespace(count).isdtype(dtype, "integral"):
            raise ValueError(f"state.count must be a 0-D integer array under a trace, got {count!r}")
        return count
    try:
        if isinstance(count, bool) or str(getattr(count, "dtype", "")).endswith("bool"):
            raise TypeError
        number = operator.index(count)  # a 0-D integer array of any library too
    except TypeError:
        raise ValueError(f"state.count must be a non-negative integer, got {count!r}") from None
    if number < 0:
        raise ValueError(f"state.count must be a non-negative integer, got {count!r}")
    return number


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_learning_rate(value: Any) -> float | Callable[[int], float]:
    if callable(value):
        return value
    try:
        return check_non_negative("learning_rate", value)
    except ValueError as error:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise
        # torch.optim's Adam(model.parameters(), ...): the first thing a torch user may write
        raise ValueError(
            f"learning_rate must be a number or a schedule, got a {type(value).__name__}: an anyoptim optimizer "
            "holds no parameters (unlike torch.optim's); make it with its settings, Adam(1e-3), and pass the "
            "parameters to init(params) and step(params, grads, state)"
        ) from error


def check_optional_positive(name: str, value: Any) -> float | None:
    """None (the option is off) or a number > 0."""
    return None if value is None else check_positive(name, value)


def check_threshold(name: str, value: Any) -> float:
    """RAdam's rectification threshold: r_t has the factor (rho_t - 4), so it must be >= 4."""
    number = check_finite(name, value)
    if number < 4:
        raise ValueError(f"{name} must be >= 4, got {value!r}")
    return number


#: How each numeric optimizer setting is checked, whether it is set by a constructor or assigned later
#: (``opt.learning_rate = 0.01``): ``check(name, value) -> value to store``.
SETTING_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "learning_rate": lambda name, value: check_learning_rate(value),
    "weight_decay": check_non_negative,
    "clip_global_norm": check_optional_positive,
    "clip_value": check_optional_positive,
    "beta": check_beta,
    "beta1": check_beta,
    "beta2": check_beta,
    "momentum": check_beta,
    "epsilon": check_non_negative,
    "eps_root": check_non_negative,
    "initial_accumulator_value": check_non_negative,
    "threshold": check_threshold,
    "amsgrad": check_flag,
    "centered": check_flag,
    "eps_in_sqrt": check_flag,
    "nesterov": check_flag,
    "master_weights": check_flag,
}
