"""The lesson's one error type and the checks of its counts.

Every way an experiment's input can be wrong (an unknown backend, a missing
library, a device that is not there, a count that is not a positive integer)
ends in one :class:`ExperimentError` whose message is a single line for the user.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExperimentError", "check_positive_int"]


class ExperimentError(ValueError):
    """Bad input to an experiment (backend, device, dtype, counts): a one-line message for the user."""


def check_positive_int(name: str, value: Any) -> int:
    """``value``, checked to be a positive ``int`` (``bool`` excluded).

    Parameters
    ----------
    name : str
        What the value counts, for the message (e.g. ``"epochs"``).
    value : object
        The value to check.

    Returns
    -------
    int
        ``value`` itself.

    Raises
    ------
    ExperimentError
        If ``value`` is not an ``int``, is a ``bool``, or is not above zero.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ExperimentError(f"{name} must be a positive integer, got {value!r}")
    return value
