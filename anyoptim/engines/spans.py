"""Finding runs of leaves that lie back to back in one buffer.

A fused engine wants to treat many parameters as one flat array: when leaf
``i + 1`` of every column (params, grads, each state slot) starts in memory
exactly where leaf ``i`` ends, inside the same owning buffer, the two leaves
can be processed as one 1-D span.  Parameters made by :func:`anyoptim.flatten`
and state made by the fused engines always lie this way; arbitrary user arrays
fall back to one span per leaf.  The functions here are backend-neutral: the
engine passes in how to read an array's address and owning buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["contiguous_runs", "flat_slots", "flat_views", "leaves_by_dtype"]


def _follows(previous: Any, current: Any, address: Callable[[Any], int], owner: Callable[[Any], Any]) -> bool:
    return (
        current.dtype == previous.dtype
        and owner(current) is owner(previous)
        and owner(current) is not None
        and address(current) == address(previous) + previous.size * previous.itemsize
    )


def contiguous_runs(
    columns: Sequence[Sequence[Any]],
    hps: Sequence[Mapping[str, Any]],
    *,
    address: Callable[[Any], int],
    owner: Callable[[Any], Any],
) -> list[tuple[int, int]]:
    """Split leaf indices into ``[start, stop)`` runs that can be processed as one span.

    Parameters
    ----------
    columns
        One sequence of leaves per array role (params, grads, slots), all of equal length.
        Every leaf must already be C-contiguous.
    hps
        The scalars of each leaf; a run never crosses a change of scalars (a
        weight-decay mask, say).  Leaves share scalars when they share the very
        same mapping object (scalars may be 0-D arrays, which do not compare).
    address, owner
        The data pointer of an array, and the array that owns its memory (or None).
    """
    count = len(columns[0])
    runs: list[tuple[int, int]] = []
    start = 0
    for index in range(1, count + 1):
        joined = (
            index < count
            and hps[index] is hps[index - 1]
            and all(_follows(column[index - 1], column[index], address, owner) for column in columns)
        )
        if not joined:
            runs.append((start, index))
            start = index
    return runs


def leaves_by_dtype(leaves: Sequence[Any]) -> list[list[int]]:
    """Group leaves by dtype: the leaves of each buffer :func:`flat_views` makes, in its order.

    Parameters
    ----------
    leaves : sequence of arrays
        Any arrays with a ``dtype``.

    Returns
    -------
    list of list of int
        One list of leaf indices per dtype, in leaf order; the dtypes in the
        order they first appear.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.spans import leaves_by_dtype
    >>> leaves_by_dtype([np.zeros(2), np.zeros(1, np.float32), np.zeros(3)])
    [[0, 2], [1]]
    """
    groups: dict[Any, list[int]] = {}
    for index, leaf in enumerate(leaves):
        groups.setdefault(leaf.dtype, []).append(index)
    return list(groups.values())


def flat_views(xp: Any, leaves: Sequence[Any], fill: float | None = None) -> list[Any]:
    """Views shaped like ``leaves`` into one new 1-D buffer per dtype, in leaf order.

    The buffers are created on the leaves' device, filled with ``fill`` (left
    uninitialised when None).  Needs a library with views (NumPy, CuPy, torch).
    """
    views: list[Any] = [None] * len(leaves)
    for indices in leaves_by_dtype(leaves):
        dtype = leaves[indices[0]].dtype
        sizes = [math.prod(leaves[i].shape) for i in indices]
        device = leaves[indices[0]].device
        total = (sum(sizes),)
        if fill is None:
            buffer = xp.empty(total, dtype=dtype, device=device)
        else:
            buffer = xp.full(total, fill, dtype=dtype, device=device)
        offset = 0
        for i, size in zip(indices, sizes, strict=True):
            views[i] = xp.reshape(buffer[offset : offset + size], tuple(leaves[i].shape))
            offset += size
    return views


def flat_slots(xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
    """State slots laid out as views of one flat buffer per slot and dtype, in the order of ``leaves``.

    Slots made this way lie back to back exactly where the parameters do, so a
    fused engine can join them into the same spans.
    """
    return {slot: flat_views(xp, leaves, fill) for slot, fill in fills.items()}
