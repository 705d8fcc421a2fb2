"""How a schedule of :mod:`anyoptim.schedules` describes itself, and is rebuilt from that description.

Every schedule made by a function of :mod:`anyoptim.schedules` carries a
``spec`` attribute: a read-only mapping ``{"name": <function name>, "args":
{<parameter>: <value>}}`` with every argument of the call, defaults included,
as numbers, booleans, tuples of them, or the specs of nested schedules (for
:func:`~anyoptim.schedules.join`).  :func:`describe` gives it as plain JSON
data and :func:`from_spec` calls the function again with those arguments, so
the rebuilt schedule computes the same values, bit for bit.  A schedule
written by hand, or built from one that is, has no spec (``describe`` gives
None).  The schedule functions themselves are unchanged: :func:`described`
only records their arguments.

This module is public as :func:`anyoptim.schedules.describe` and
:func:`anyoptim.schedules.from_spec`; it imports nothing from
:mod:`anyoptim.schedules` (the functions register themselves here).
"""

from __future__ import annotations

import functools
import inspect
import numbers
import operator
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["describe", "described", "from_spec"]

#: The schedule functions that describe their schedules, by name (filled by :func:`described`).
BUILDERS: dict[str, Callable[..., Any]] = {}
_MAX_DEPTH = 32


class _NotDescribable(Exception):
    """An argument that a spec cannot hold (a hand-written schedule, an object)."""


def _frozen(value: Any) -> Any:
    """``value`` as immutable JSON-like data: bool, int, float, None, tuples of them, or a nested schedule's spec."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return operator.index(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return _frozen(value.item())  # a 0-d array of NumPy, torch...
    if isinstance(value, (list, tuple, range)) or getattr(value, "ndim", None) == 1:
        return tuple(_frozen(item) for item in value)
    spec = getattr(value, "spec", None) if callable(value) else None
    if isinstance(spec, MappingProxyType) and spec.get("name") in BUILDERS:
        return spec
    raise _NotDescribable


def described(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a function of :mod:`anyoptim.schedules` so that the schedules it returns carry their ``spec``.

    The function runs exactly as before; its result gets ``spec``, or ``spec =
    None`` when an argument cannot be described (a hand-written schedule given
    to ``join``).  The function is registered under its name for
    :func:`from_spec`, which calls no other function: only functions of
    :mod:`anyoptim.schedules` may be decorated.

    Parameters
    ----------
    function : callable
        A function of :mod:`anyoptim.schedules` returning a schedule.

    Returns
    -------
    callable
        The same function, with the same signature and docstring.

    Raises
    ------
    ValueError
        If ``function`` is not defined in :mod:`anyoptim.schedules`.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> dict(schedules.constant(0.1).spec)["name"], dict(schedules.constant(0.1).spec["args"])
    ('constant', {'value': 0.1})
    """
    if function.__module__ != "anyoptim.schedules":
        raise ValueError(f"only functions of anyoptim.schedules describe their schedules, not {function.__qualname__}")
    signature = inspect.signature(function)

    @functools.wraps(function)
    def build(*args: Any, **kwargs: Any) -> Any:
        schedule = function(*args, **kwargs)  # checks the arguments, as it always did
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        try:
            recorded = {name: _frozen(value) for name, value in bound.arguments.items()}
            spec = MappingProxyType({"name": function.__name__, "args": MappingProxyType(recorded)})
        except _NotDescribable:
            spec = None
        try:
            schedule.spec = spec
        except AttributeError:  # a result that takes no attributes is simply not described
            pass
        return schedule

    BUILDERS[function.__name__] = build
    return build


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def describe(schedule: Any) -> dict[str, Any] | None:
    """The description of a schedule made by :mod:`anyoptim.schedules`, as plain JSON data; None for any other.

    Parameters
    ----------
    schedule : callable or float
        A learning rate: a schedule, or anything else.

    Returns
    -------
    dict or None
        ``{"name": ..., "args": {...}}`` (lists for sequences, dicts for nested
        schedules), a new object each call; None if ``schedule`` was not made by
        a function of :mod:`anyoptim.schedules` (or joins a schedule that was not).

    See Also
    --------
    from_spec : The schedule again, from this description.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> schedules.describe(schedules.piecewise_constant([100], [0.1, 0.01]))
    {'name': 'piecewise_constant', 'args': {'boundaries': [100], 'values': [0.1, 0.01]}}
    >>> schedules.describe(lambda count: 0.1) is None
    True
    """
    spec = getattr(schedule, "spec", None) if callable(schedule) else None
    if not isinstance(spec, MappingProxyType) or spec.get("name") not in BUILDERS:
        return None
    return _plain(spec)


def _rebuilt(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping):
        return _from_spec(value, depth + 1)
    if isinstance(value, (list, tuple)):
        return [_rebuilt(item, depth) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise ValueError(f"schedule spec argument {value!r} is not a number, a list or a nested spec")


def _from_spec(spec: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError(f"schedule spec is nested more than {_MAX_DEPTH} deep")
    if not isinstance(spec, Mapping) or set(spec) != {"name", "args"} or not isinstance(spec["args"], Mapping):
        raise ValueError(f"a schedule spec is a mapping {{'name': str, 'args': mapping}}, got {spec!r}")
    name = spec["name"]
    if not isinstance(name, str) or name not in BUILDERS:
        raise ValueError(f"schedule spec names {name!r}, not one of anyoptim.schedules: {sorted(BUILDERS)}")
    builder = BUILDERS[name]
    args = {key: _rebuilt(value, depth) for key, value in spec["args"].items()}
    try:
        inspect.signature(builder).bind(**args)
    except TypeError as error:
        raise ValueError(f"schedule spec for {name} has arguments {sorted(args)} that do not fit: {error}") from None
    return builder(**args)


def from_spec(spec: Mapping[str, Any]) -> Callable[[int], float]:
    """The schedule a spec describes: its function called again with the recorded arguments.

    Parameters
    ----------
    spec : mapping
        ``{"name": ..., "args": {...}}``, as :func:`describe` gives it (or a
        schedule's ``spec`` attribute); nested schedules as nested specs.

    Returns
    -------
    callable
        ``schedule(count) -> float``, computing what the described schedule
        computes, bit for bit, and carrying the same spec.

    Raises
    ------
    ValueError
        If ``spec`` is not such a mapping, names no function of
        :mod:`anyoptim.schedules`, has arguments the function does not take, or
        values it refuses.

    See Also
    --------
    describe : The spec of a schedule.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> lr = schedules.join([schedules.constant(0.1), schedules.cosine_decay(0.1, 100)], [10])
    >>> again = schedules.from_spec(schedules.describe(lr))
    >>> [again(t) == lr(t) for t in (0, 10, 60, 500)]
    [True, True, True, True]
    """
    return _from_spec(spec, 0)
