"""Low precision: a program on float16 or bfloat16 arrays runs in float32, and each result is rounded once on store.

An optimizer's rule is written once, in the dtype of the arrays it is given.  On
float16 that is unsafe: ``epsilon = 1e-8`` rounds to 0, so an exactly zero
gradient gives the update ``0 / (sqrt(0) + 0) = NaN``, and ``v = g**2`` of a
gradient of 300 overflows to inf.  On bfloat16 (8 bits of mantissa) the small
terms of ``beta * m + (1 - beta) * g`` are rounded away.  So the engines run a
program on *narrow* arrays (fewer than 32 bits: float16, bfloat16) in their
*compute dtype*, float32: every input is widened exactly, the rule runs in
float32 (its constants and scalars then are float32 ones), and each result is
rounded once, into the dtype of the array it is stored in.  This is what torch's
fused optimizers do for half-precision parameters.

The state of a narrow parameter may be kept in float32 (``master_weights=True``
makes all of it float32 and adds a float32 copy of the parameter, the slot
:data:`MASTER`); a program's arrays may then be of mixed dtypes, and the compute
dtype is the widest of their compute dtypes.  Arrays of 32 bits or more run in
their own dtype, as before: nothing changes for float32 and float64.

This module is the one place that says so, for every engine: the generic engine
and the NumPy engine's out-of-place leaves call :func:`run_widened`; the NumPy
engine's in-place spans widen cache-sized blocks and run the float32 plan on
them (:mod:`anyoptim.engines.numpy.widened`).  Standard library only: it works
on any Array API namespace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .program import Program

__all__ = ["MASTER", "compute_dtype", "is_narrow", "run_widened", "widens"]

#: The state slot that holds the float32 master copy of a parameter (``master_weights=True``).
MASTER = "master"


def is_narrow(xp: Any, dtype: Any) -> bool:
    """Whether ``dtype`` is a floating dtype narrower than 32 bits (float16, bfloat16): computed in float32.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``dtype``.
    dtype : dtype
        A real floating dtype of ``xp``.

    Returns
    -------
    bool
        True for float16 and bfloat16 (16 bits), False for float32 and float64.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.precision import is_narrow
    >>> is_narrow(np, np.float16), is_narrow(np, np.float32)
    (True, False)
    """
    return xp.finfo(dtype).bits < 32


def compute_dtype(xp: Any, dtypes: Sequence[Any]) -> Any:
    """The dtype a program on arrays of ``dtypes`` computes in: the widest of float32 and each non-narrow dtype.

    Parameters
    ----------
    xp : namespace
        The arrays' Array API namespace.
    dtypes : sequence of dtype
        The dtypes of the program's arrays (parameter, gradient, slots), at least one.

    Returns
    -------
    dtype
        ``dtypes[0]`` when every dtype is that one and it is not narrow;
        else float32, or float64 if one of them is float64.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.precision import compute_dtype
    >>> compute_dtype(np, [np.float16, np.float16]), compute_dtype(np, [np.float64])
    (<class 'numpy.float32'>, <class 'numpy.float64'>)
    >>> compute_dtype(np, [np.float16, np.float32, np.float64])
    <class 'numpy.float64'>
    """
    first = dtypes[0]
    if all(dtype == first for dtype in dtypes) and not is_narrow(xp, first):
        return first
    wide = [dtype for dtype in dtypes if not is_narrow(xp, dtype)]
    return xp.float64 if any(dtype == xp.float64 for dtype in wide) else xp.float32


def widens(xp: Any, arrays: Sequence[Any]) -> bool:
    """Whether a program on ``arrays`` runs in another dtype than theirs (one is narrow, or they differ).

    Parameters
    ----------
    xp : namespace
        The arrays' Array API namespace.
    arrays : sequence of arrays
        A leaf's parameter, gradient and slots.

    Returns
    -------
    bool
        False when every array has one dtype of 32 bits or more.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.precision import widens
    >>> widens(np, [np.zeros(2, np.float16)]), widens(np, [np.zeros(2), np.zeros(2)])
    (True, False)
    """
    first = arrays[0].dtype
    return is_narrow(xp, first) or any(array.dtype != first for array in arrays)


def run_widened(
    program: Program, xp: Any, p: Any, g: Any, slots: Mapping[str, Any], hp: Mapping[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Run ``program`` on one leaf in its compute dtype and round each result once into its array's dtype.

    Parameters
    ----------
    program : Program
        The step (:class:`~anyoptim.engines.program.Program`).
    xp : namespace
        The arrays' Array API namespace.
    p, g : array
        The parameter and its gradient (float16, bfloat16, float32 or float64).
    slots : mapping of str to array
        The leaf's state slots, each in the parameter's dtype or a wider one.
    hp : mapping of str to scalar
        The step's scalars (Python numbers keep the compute dtype; a 0-D array,
        such as the global-norm scale, is at least float32).

    Returns
    -------
    new_p : array
        The new parameter, in ``p``'s dtype.
    new_slots : dict of str to array
        The new slots, each in the dtype of the slot it replaces.

    Examples
    --------
    A sign-like step ``g / (|g| + 1e-8)`` with a zero gradient: in float16
    ``1e-8`` rounds to 0 and the step is ``0 / 0``; in float32 it is 0.

    >>> import numpy as np
    >>> from anyoptim.engines.precision import run_widened
    >>> from anyoptim.engines.program import Program
    >>> def rule(xp, p, g, slots, hp):
    ...     return p - hp["learning_rate"] * g / (xp.abs(g) + 1e-8), {}
    >>> p, g = np.ones(2, np.float16), np.array([0.0, 1.0], np.float16)
    >>> new_p, _ = run_widened(Program(rule), np, p, g, {}, {"learning_rate": 0.5})
    >>> new_p
    array([1. , 0.5], dtype=float16)
    """
    wide = compute_dtype(xp, [p.dtype, g.dtype, *(slot.dtype for slot in slots.values())])
    new_p, new_slots = program(
        xp,
        xp.astype(p, wide, copy=False),
        xp.astype(g, wide, copy=False),
        {name: xp.astype(slot, wide, copy=False) for name, slot in slots.items()},
        hp,
    )
    return (
        xp.astype(xp.asarray(new_p), p.dtype, copy=False),
        {name: xp.astype(xp.asarray(new_slots[name]), slot.dtype, copy=False) for name, slot in slots.items()},
    )
