"""Flat storage: parameters as views of one contiguous buffer per dtype.

A fused engine updates a run of parameters that lie back to back in memory with
one pass (one CUDA kernel, one blocked NumPy loop) instead of one per array, and
a data-parallel trainer can all-reduce one gradient buffer instead of many.
:func:`flatten` lays a tree out that way; the optimizers' state follows the
parameters' layout automatically.
"""

from __future__ import annotations

from typing import Any

from ._namespace import check_leaves, is_mutable
from .engines.memory import untracked
from .engines.spans import flat_views
from .tree import tree_flatten, tree_unflatten

__all__ = ["flatten"]


def flatten(params: Any) -> Any:
    """Copy a tree into one flat buffer per dtype and return the same structure of views into it.

    Parameters
    ----------
    params : tree of arrays
        A dict, list or tuple (nested to any depth, see :mod:`anyoptim.tree`)
        of real floating-point arrays of one library on one device, of any
        shapes; dtypes may be mixed.  Only read: the values are copied.

    Returns
    -------
    tree of arrays
        The same structure, shapes, dtypes and values; every leaf a view of a
        new 1-D buffer shared by all leaves of its dtype, back to back in leaf
        order (dict keys sorted).  On libraries whose arrays are immutable (JAX)
        views cannot exist, and ``params`` itself is returned unchanged.  torch
        tensors come back as plain tensors (``requires_grad=False``), also for
        ``torch.nn.Parameter`` leaves: their values are copied, not their
        autograd history.

    Raises
    ------
    TypeError
        If a leaf is not an array, not of a real floating dtype, or of another
        array library than the first leaf.
    ValueError
        If the tree has no leaves, or its leaves lie on different devices.

    Notes
    -----
    Writing through a leaf writes the buffer, so in-place updates keep the
    layout; operations that replace a leaf (``params["W"] = params["W"] * 2``)
    break it for that leaf, which then takes a slower path until flattened again.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> params = anyoptim.flatten({"W": np.ones((2, 3)), "b": np.zeros(3)})
    >>> params["W"].base is params["b"].base
    True
    >>> params["W"].base.tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    names, leaves, treedef = tree_flatten(params)
    xp, _ = check_leaves(names, leaves, what="params")
    if not is_mutable(xp):
        return params
    views = flat_views(xp, leaves)
    for view, leaf in zip(views, leaves, strict=True):
        view[...] = untracked(leaf)  # the values: a torch Parameter's copy records no autograd graph
    return tree_unflatten(treedef, views)
