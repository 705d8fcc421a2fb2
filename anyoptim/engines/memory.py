"""Which arrays share memory: what an engine that writes in place must know before it writes.

A step that updates ``params["a"]`` in place while ``params["b"]`` is a view of
the same memory updates it twice; one that reads a gradient after writing the
parameter it aliases reads the new value.  :func:`overlapping` finds such pairs
among NumPy, CuPy and torch arrays; the optimizers refuse overlapping
parameters and copy aliased gradients before any engine runs.  :func:`untracked`
gives the memory of a torch tensor without autograd, for code that copies values
into arrays of its own.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.lib.array_utils import byte_bounds

__all__ = ["byte_range", "overlapping", "untracked"]


def byte_range(leaf: Any) -> tuple[int, int] | None:
    """The first and one-past-the-last byte an array may touch, where known (NumPy, CuPy, torch), else None.

    None also for an empty array (it touches nothing).
    """
    if isinstance(leaf, np.ndarray):
        if leaf.size == 0:
            return None
        return byte_bounds(leaf)
    library = type(leaf).__module__.partition(".")[0]
    if library == "cupy" and leaf.size:
        start = leaf.data.ptr
        low = sum(min(0, (length - 1) * stride) for length, stride in zip(leaf.shape, leaf.strides, strict=True))
        high = sum(max(0, (length - 1) * stride) for length, stride in zip(leaf.shape, leaf.strides, strict=True))
        return start + low, start + high + leaf.itemsize
    if library == "torch" and leaf.numel():
        start = leaf.data_ptr()
        if leaf.is_contiguous():  # a gradient's usual case: its bytes, back to back
            return start, start + leaf.nbytes
        reach = sum((length - 1) * stride for length, stride in zip(leaf.shape, leaf.stride(), strict=True))
        return start, start + (reach + 1) * leaf.element_size()
    return None


def overlapping(leaves: list[Any], among: range) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of ``leaves`` that share memory, at least one of them in ``among``.

    Byte ranges find the candidates (sorted, so the usual case costs a sort);
    NumPy's :func:`numpy.shares_memory` confirms them (views that interleave
    share nothing); for torch an overlap of ranges counts.
    """
    ranges = sorted((found[0], found[1], i) for i, leaf in enumerate(leaves) if (found := byte_range(leaf)))
    pairs, active = [], []
    for start, end, i in ranges:
        active = [(other_end, j) for other_end, j in active if other_end > start]
        for _, j in active:
            if (i in among or j in among) and _share(leaves[i], leaves[j]):
                pairs.append((min(i, j), max(i, j)))
        active.append((end, i))
    return pairs


def _share(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.shares_memory(a, b))
    if type(a).__module__.startswith("cupy") and type(b).__module__.startswith("cupy"):
        return bool(sys.modules["cupy"].shares_memory(a, b))  # exact: views that interleave share nothing
    return True


def untracked(leaf: Any) -> Any:
    """``leaf``'s memory without autograd: a torch tensor detached (its values are copied, not its history).

    ``state[...] = param`` records an autograd operation when ``param`` requires grad (a ``torch.nn.Parameter``):
    the copy drags the parameter's graph along, or fails if the target is a leaf that requires grad.  Writing
    ``untracked(param)`` copies the values only.  Other libraries' arrays are returned as they are.

    Parameters
    ----------
    leaf : array
        An array of any library.

    Returns
    -------
    array
        ``leaf.detach()`` for a torch tensor (the same memory), else ``leaf``.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.memory import untracked
    >>> x = np.ones(2)
    >>> untracked(x) is x
    True
    """
    if type(leaf).__module__.partition(".")[0] == "torch":
        return leaf.detach()
    return leaf
