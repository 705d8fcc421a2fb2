r"""Arithmetic of the step count: one formula, on the host for a Python number, on the device for a traced array.

An optimizer's step scalars (bias corrections :math:`1-\beta^t`, RAdam's rectification) and a schedule's rate are
functions of the step count.  Eagerly the count is a Python int and they are computed on the host in double
precision, exactly as Python's own arithmetic does.  Under ``jax.jit`` the count is a *traced* 0-D integer array: its
value is not known while the step is traced, so the same formula runs on the device.  The operators
(``+ - * / ** < >``) work on both kinds of value; the functions here do the rest (:func:`sqrt`, :func:`cos`,
:func:`floor`, :func:`minimum`), each the Python operation itself on the host (results do not change by a bit), and
:func:`select` replaces an ``if``: the host evaluates one branch, the device both, and keeps one with ``where``.

:func:`evaluate` runs an optimizer's scalar formula in double precision on the device even where JAX computes in
single precision (without ``jax_enable_x64``): ``1 - 0.999 ** t`` in float32 is off by 1e-5 at the first step (0.999
itself rounds), and RAdam's :math:`\rho_t` loses four digits to cancellation.  In double precision XLA's ``pow`` of
an integer exponent equals Python's to the bit, so a jitted step's scalars are the eager ones.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ._namespace import array_namespace

__all__ = ["cos", "evaluate", "floor", "is_traced", "minimum", "select", "sqrt"]

T = TypeVar("T")
_HOST_NUMBERS = frozenset({int, float, bool})


def is_traced(x: Any) -> bool:
    """Tell whether ``x`` is a traced JAX value, whose number is not known until the compiled code runs.

    Never imports JAX: without it loaded, nothing is traced.

    Parameters
    ----------
    x : object
        Anything.

    Returns
    -------
    bool
        True for a JAX tracer (inside ``jax.jit``, ``jax.grad``, ``jax.vmap``, ...).

    Examples
    --------
    >>> from anyoptim.count_math import is_traced
    >>> is_traced(3), is_traced(0.5)
    (False, False)
    """
    if type(x) in _HOST_NUMBERS:
        return False
    jax = sys.modules.get("jax")
    tracer = getattr(getattr(jax, "core", None), "Tracer", None)
    return tracer is not None and isinstance(x, tracer)


def _device(*values: Any) -> Any:
    """The namespace of the first traced value, or None when every value is a host number."""
    for value in values:
        if is_traced(value):
            return array_namespace(value)
    return None


def sqrt(x: Any) -> Any:
    """Take the square root: :func:`math.sqrt` on the host, ``xp.sqrt`` on the device.

    Parameters
    ----------
    x : float or 0-D array
        A number >= 0.

    Returns
    -------
    float or 0-D array
        :math:`\\sqrt{x}`.

    Examples
    --------
    >>> from anyoptim.count_math import sqrt
    >>> sqrt(2.25)
    1.5
    """
    xp = _device(x)
    return math.sqrt(x) if xp is None else xp.sqrt(x)


def cos(x: Any) -> Any:
    """Take the cosine: :func:`math.cos` on the host, ``xp.cos`` on the device.

    Parameters
    ----------
    x : float or 0-D array
        An angle in radians.

    Returns
    -------
    float or 0-D array
        :math:`\\cos x`.

    Examples
    --------
    >>> from anyoptim.count_math import cos
    >>> cos(0.0)
    1.0
    """
    xp = _device(x)
    return math.cos(x) if xp is None else xp.cos(x)


def floor(x: Any) -> Any:
    """Round down: :func:`math.floor` (an int) on the host, ``xp.floor`` on the device.

    Parameters
    ----------
    x : float or 0-D array
        A number.

    Returns
    -------
    int or 0-D array
        :math:`\\lfloor x \\rfloor`.

    Examples
    --------
    >>> from anyoptim.count_math import floor
    >>> floor(2.5)
    2
    """
    xp = _device(x)
    return math.floor(x) if xp is None else xp.floor(x)


def minimum(x: Any, y: Any) -> Any:
    """Take the smaller of two numbers: :func:`min` on the host, ``xp.minimum`` on the device.

    Parameters
    ----------
    x, y : int, float or 0-D array
        The numbers.

    Returns
    -------
    int, float or 0-D array
        The smaller one.

    Examples
    --------
    >>> from anyoptim.count_math import minimum
    >>> minimum(7, 5.0)
    5.0
    """
    xp = _device(x, y)
    return min(x, y) if xp is None else xp.minimum(x, y)


def select(condition: Any, if_true: Callable[[], T], if_false: Callable[[], T]) -> T:
    """Choose between two values by a condition: an ``if`` on the host, ``where`` on the device.

    The branches are functions, so the host computes only the one it takes (a branch may be meaningless on the other
    side of the condition, such as a square root of a negative number); the device computes both and keeps one.

    Parameters
    ----------
    condition : bool or 0-D bool array
        The condition, such as ``count < boundary``.
    if_true, if_false : callable
        ``f() -> value``: the value for each side.

    Returns
    -------
    object
        ``if_true()`` where ``condition`` holds, else ``if_false()``.

    Examples
    --------
    >>> from anyoptim.count_math import select, sqrt
    >>> x = -4.0
    >>> select(x > 0, lambda: sqrt(x), lambda: 0.0)
    0.0
    """
    xp = _device(condition)
    if xp is None:
        return if_true() if condition else if_false()
    return xp.where(condition, if_true(), if_false())


def evaluate(formula: Callable[[Any], T], count: Any) -> T:
    """Call ``formula(count)``: as it is on the host, in double precision on the device for a 32-bit traced count.

    JAX without ``jax_enable_x64`` computes in single precision; a formula of a traced int32 count then runs in JAX's
    64-bit scope, with the count widened to int64, so its floats are float64 as on the host.  Every array it returns
    must leave that scope in the dtype its user computes in (an optimizer's scalars are cast to each parameter's
    dtype there): a float64 array outside the scope is not what JAX expects.  Where JAX has no 64-bit scope, or the
    default device is a TPU (whose float64 is emulated, if at all), the formula runs in the count's precision.

    Parameters
    ----------
    formula : callable
        ``formula(count) -> value``.
    count : int or array
        The step count: a Python int, or a 0-D integer array.

    Returns
    -------
    object
        What ``formula`` returns.

    Examples
    --------
    >>> from anyoptim.count_math import evaluate
    >>> evaluate(lambda count: 1.0 - 0.999 ** (count + 1), 0)
    0.0010000000000000009
    """
    if not is_traced(count) or count.dtype.itemsize >= 8:
        return formula(count)
    jax = sys.modules["jax"]
    wide = getattr(jax, "enable_x64", None)  # a config State: never test it for truth
    if wide is None:
        wide = getattr(getattr(jax, "experimental", None), "enable_x64", None)
    if wide is None or jax.default_backend() == "tpu":
        return formula(count)
    with wide(True):
        return formula(count.astype("int64"))
