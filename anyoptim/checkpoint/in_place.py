"""What :func:`~anyoptim.load` with ``in_place=True`` checks of ``like`` before it opens the file."""

from __future__ import annotations

from typing import Any

from .._namespace import check_leaves, is_mutable
from ..optimizers.validation import check_distinct
from ..tree import tree_flatten

__all__ = ["check_in_place_target"]


def check_in_place_target(like: Any) -> None:
    """Refuse a ``like`` that ``load(..., in_place=True)`` could not write in full, before anything is read.

    Parameters
    ----------
    like : tree of arrays or None
        The arrays the saved parameters are to be copied into.

    Raises
    ------
    TypeError
        If ``like`` is None, not a tree of floating-point arrays, or of a library without in-place writes (JAX).
    ValueError
        If a leaf is read-only (a NumPy array with ``writeable=False``), an inference or expanded torch tensor,
        or shares memory with another leaf (one would be written twice).

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.checkpoint.in_place import check_in_place_target
    >>> check_in_place_target({"W": np.zeros(2)})
    >>> frozen = np.zeros(2)
    >>> frozen.flags.writeable = False
    >>> check_in_place_target({"W": frozen})
    Traceback (most recent call last):
    ...
    ValueError: load(in_place=True): like['W'] is read-only
    """
    if like is None:
        raise TypeError("load(in_place=True) needs like=: the arrays to copy the saved parameters into")
    names, leaves, _ = tree_flatten(like)
    xp, _ = check_leaves(names, leaves, what="like")
    if not is_mutable(xp):
        raise TypeError(
            "load(in_place=True): like's arrays cannot be written in place (JAX arrays are immutable); "
            "use the returned params instead"
        )
    for name, leaf in zip(names, leaves, strict=True):
        if not getattr(getattr(leaf, "flags", None), "writeable", True):
            raise ValueError(f"load(in_place=True): like[{name!r}] is read-only")
    try:
        check_distinct(names, leaves)
    except ValueError as error:
        raise ValueError(f"load(in_place=True): {str(error).replace('params[', 'like[')}") from None
