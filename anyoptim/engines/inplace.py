"""Array operations that write into arrays that already exist, for the libraries whose functions take ``out=``.

The Array API has no ``out=`` argument: a portable network computes every
product and every activation into a new array.  On NumPy that costs passes over
memory that the math does not need (a gradient computed, then copied into the
flat gradient buffer; an activation computed from a slope array, then
multiplied).  :func:`in_place_ops` gives code that wants fewer passes the
operations that write where they are told, for the namespaces known to accept
``out=`` (NumPy); elsewhere it answers None and the code stays functional.

This is the only place outside ``engines/`` that would otherwise have to ask
which library an array belongs to: :class:`anyoptim.MLP`'s backward pass asks
here (:func:`anyoptim.nn.inplace.backprop_into`).  CuPy is left out on purpose:
its products must go through :func:`anyoptim.engines.matmul` while a CUDA graph
is recorded.
"""

from __future__ import annotations

from typing import Any

from .._namespace import backend_name

__all__ = ["in_place_ops"]


_OPS: dict[Any, Any] = {}


def in_place_ops(xp: Any) -> Any:
    """The operations that write into given arrays for namespace ``xp``, or None where it has no ``out=``.

    Parameters
    ----------
    xp : namespace
        An Array API namespace (NumPy itself or array-api-compat's wrapper of it,
        torch, JAX, CuPy, array-api-strict, ...).

    Returns
    -------
    anyoptim.engines.numpy.inplace.NumpyOutOps or None
        For NumPy, the operations (one object, whatever the call); None for
        every other library, whose code then computes into new arrays.

    Examples
    --------
    >>> import math, numpy as np
    >>> from anyoptim.engines.inplace import in_place_ops
    >>> in_place_ops(np) is in_place_ops(np), in_place_ops(math)  # math: a module that is no array library
    (True, None)
    """
    try:
        return _OPS[xp]  # a namespace is a module: hashable, and asked about once per batch
    except KeyError:
        pass
    except TypeError:  # an unhashable namespace object: ask every time
        return _ops_for(xp)
    return _OPS.setdefault(xp, _ops_for(xp))  # two threads asking at once get the same answer


def _ops_for(xp: Any) -> Any:
    if backend_name(xp) != "numpy":
        return None
    from .numpy.inplace import NUMPY_OUT_OPS

    return NUMPY_OUT_OPS
