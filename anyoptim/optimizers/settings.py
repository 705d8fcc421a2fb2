"""An optimizer's settings as they are at one moment, for what reads them once and must know when they change.

A step compiled by ``jax.jit`` holds the settings it was traced with (the rate,
the betas, the decay) as constants, and a sharded step runs a copy of the
optimizer made when it was built.  Settings may be assigned at any time
(``opt.learning_rate = 0.01`` in a callback of :func:`anyoptim.fit`), so such a
holder takes a :func:`settings_of` snapshot when it reads them and compares it
with :func:`same_settings` before each use, to trace or copy again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["same_settings", "settings_of"]

#: Values compared by value (a rate assigned again, equal, is the same setting); anything else by identity.
_BY_VALUE = (int, float, bool, str, type(None))


def settings_of(optimizer: Any) -> tuple[tuple[str, Any], ...]:
    """Take a snapshot of an optimizer's settings: its public attributes, by name, as the very objects they are now.

    Parameters
    ----------
    optimizer : object
        An optimizer (any object; one without a ``__dict__`` has no settings to watch).

    Returns
    -------
    tuple of (str, object)
        The public attributes in their order.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.optimizers.settings import settings_of
    >>> dict(settings_of(anyoptim.SGD(0.1)))["learning_rate"]
    0.1
    """
    fields = getattr(optimizer, "__dict__", {})
    return tuple((name, value) for name, value in fields.items() if not name.startswith("_"))


def same_settings(before: tuple[tuple[str, Any], ...], now: tuple[tuple[str, Any], ...]) -> bool:
    """Tell whether two snapshots of :func:`settings_of` hold the same settings.

    Numbers, strings, booleans and None compare by value; other values (a
    schedule, a mask, an engine object) by identity, so a mask changed in place
    is not seen: assign a new one.

    Parameters
    ----------
    before, now : tuple of (str, object)
        Two snapshots.

    Returns
    -------
    bool
        True when every setting is the same.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.optimizers.settings import same_settings, settings_of
    >>> opt = anyoptim.Adam(0.1)
    >>> before = settings_of(opt)
    >>> opt.learning_rate = 0.1
    >>> same_settings(before, settings_of(opt))
    True
    >>> opt.learning_rate = 0.01
    >>> same_settings(before, settings_of(opt))
    False
    """
    if len(before) != len(now):
        return False
    for (name, value), (name_now, value_now) in zip(before, now, strict=True):
        if name != name_now:
            return False
        if value is value_now:
            continue
        if not (type(value) is type(value_now) and isinstance(value, _BY_VALUE) and value == value_now):
            return False
    return True
