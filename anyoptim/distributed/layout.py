"""Where a flat tree's leaves lie: one 1-D buffer per dtype, and each process's shard of it.

:func:`anyoptim.flatten` lays a tree out as views of one buffer per dtype, back
to back in leaf order.  A data-parallel step moves those buffers whole (one
collective per dtype), so it must find them; :class:`FlatLayout` does, and
refuses trees that are not laid out that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._namespace import check_leaves
from ..engines.spans import leaves_by_dtype
from ..tree import tree_flatten
from .bounds import shard_bounds

__all__ = ["FlatLayout", "LayoutCache", "Segment"]


def _address(array: Any) -> int:
    interface = getattr(array, "__cuda_array_interface__", None) or getattr(array, "__array_interface__", None)
    if interface is None:
        raise TypeError(
            f"data-parallel training moves NumPy or CuPy arrays, got {type(array).__module__}.{type(array).__name__}"
        )
    return int(interface["data"][0])


@dataclass(frozen=True)
class Segment:
    """One leaf's place in its dtype's buffer: ``buffer[start:stop]`` is the leaf, flattened.

    Parameters
    ----------
    leaf : int
        The leaf's index in tree order.
    start, stop : int
        Its elements in the buffer.

    Examples
    --------
    >>> from anyoptim.distributed.layout import Segment
    >>> Segment(leaf=0, start=0, stop=6).stop
    6
    """

    leaf: int
    start: int
    stop: int


class FlatLayout:
    """The buffers of a flat tree: per dtype, the 1-D buffer and each leaf's segment of it.

    Parameters
    ----------
    tree : tree of arrays
        NumPy or CuPy arrays laid out by :func:`anyoptim.flatten` (or by the
        optimizers' state): for each dtype, its leaves in tree order tile one
        1-D contiguous buffer from its first element to its last.

    Attributes
    ----------
    names : list of str
        The leaf names, in tree order.
    buffers : list of array
        One 1-D buffer per dtype, in the order the dtypes first appear.
    segments : list of list of Segment
        For each buffer, its leaves' segments in buffer order.

    Raises
    ------
    ValueError
        If the tree is not flat (a leaf is not a view of its dtype's buffer,
        the leaves leave gaps or overlap, or do not fill the buffer), naming the leaf.
    TypeError
        If a leaf is not a NumPy or CuPy array.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.distributed.layout import FlatLayout
    >>> layout = FlatLayout(anyoptim.flatten({"W": np.ones((2, 3)), "b": np.zeros(3)}))
    >>> [buffer.shape for buffer in layout.buffers], layout.shards(2)[0]
    ([(9,)], [(0, 4), (4, 9)])
    """

    def __init__(self, tree: Any):
        names, leaves, _ = tree_flatten(tree)
        check_leaves(names, leaves, what="params")
        for leaf in leaves:
            _address(leaf)
        self.names = names
        self.leaves = leaves
        self.buffers: list[Any] = []
        self.segments: list[list[Segment]] = []
        for indices in leaves_by_dtype(leaves):  # the buffers of anyoptim.flatten, in its order
            dtype = leaves[indices[0]].dtype
            buffer = self._buffer_of(names, leaves, indices)
            segments, offset = [], 0
            base = _address(buffer)
            for i in indices:
                leaf = leaves[i]
                if leaf.size and _address(leaf) != base + offset * leaf.itemsize:  # an empty leaf holds nothing
                    raise ValueError(
                        f"params[{names[i]!r}] does not follow the leaf before it in its buffer: the tree is not "
                        "flat (lay it out with anyoptim.flatten)"
                    )
                segments.append(Segment(i, offset, offset + leaf.size))
                offset += leaf.size
            if offset != buffer.shape[0]:
                raise ValueError(f"the {dtype} leaves fill {offset} of their buffer's {buffer.shape[0]} elements")
            self.buffers.append(buffer)
            self.segments.append(segments)

    @staticmethod
    def _buffer_of(names: list[str], leaves: list[Any], indices: list[int]) -> Any:
        first = next((leaves[i] for i in indices if leaves[i].size), leaves[indices[0]])
        buffer = getattr(first, "base", None)
        if buffer is None and len(indices) == 1 and first.ndim == 1:
            buffer = first  # a lone 1-D leaf is its own buffer
        if buffer is None or getattr(buffer, "ndim", None) != 1 or buffer.dtype != first.dtype:
            raise ValueError(
                f"params[{names[indices[0]]!r}] is not a view of a flat 1-D buffer: the tree is not flat "
                "(lay it out with anyoptim.flatten; the gradients too)"
            )
        _address(buffer)
        for i in (i for i in indices if leaves[i].size):
            owner = getattr(leaves[i], "base", None)
            if owner is not buffer and leaves[i] is not buffer:
                raise ValueError(
                    f"params[{names[i]!r}] lies in another buffer than the other {first.dtype} leaves: "
                    "the tree is not flat (lay it out with anyoptim.flatten)"
                )
            if not leaves[i].flags.c_contiguous:
                raise ValueError(f"params[{names[i]!r}] is not contiguous: the tree is not flat")
        return buffer

    def shards(self, size: int) -> list[list[tuple[int, int]]]:
        """Each buffer's shard bounds for ``size`` processes (:func:`~anyoptim.distributed.shard_bounds`).

        Parameters
        ----------
        size : int
            The number of processes.

        Returns
        -------
        list of list of (int, int)
            Per buffer, per rank, ``(start, stop)``.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed.layout import FlatLayout
        >>> FlatLayout(anyoptim.flatten({"w": np.zeros(5)})).shards(2)
        [[(0, 2), (2, 5)]]
        """
        return [shard_bounds(buffer.shape[0], size) for buffer in self.buffers]

    def pieces(self, rank: int, size: int) -> list[tuple[int, int, Segment]]:
        """The parts of leaves inside this rank's shards, in buffer order.

        Parameters
        ----------
        rank, size : int
            This process and the number of processes.

        Returns
        -------
        list of (int, int, int, Segment)
            ``(buffer index, start, stop, segment)``, where ``[start, stop)``
            is the part of the segment's leaf that falls in the shard; empty parts
            are left out.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed.layout import FlatLayout
        >>> layout = FlatLayout(anyoptim.flatten({"a": np.zeros(3), "b": np.zeros(3)}))
        >>> [(start, stop, segment.leaf) for _, start, stop, segment in layout.pieces(0, 2)]
        [(0, 3, 0)]
        """
        found = []
        for index, (segments, bounds) in enumerate(zip(self.segments, self.shards(size), strict=True)):
            low, high = bounds[rank]
            for segment in segments:
                start, stop = max(low, segment.start), min(high, segment.stop)
                if start < stop:
                    found.append((index, start, stop, segment))
        return found


class LayoutCache:
    """The :class:`FlatLayout` of the tree a loop passes again and again, found once.

    A training loop hands the same gradient tree to every step; its layout is
    recomputed only when a leaf is not the very array of the last call.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.distributed.layout import LayoutCache
    >>> cache, grads = LayoutCache(), anyoptim.flatten({"w": np.zeros(2)})
    >>> cache.of(grads) is cache.of(grads)
    True
    """

    def __init__(self) -> None:
        self._leaves: list[Any] = []
        self._layout: FlatLayout | None = None

    def of(self, tree: Any) -> FlatLayout:
        """Get the layout of ``tree`` (:class:`FlatLayout`), cached while its leaves stay the same arrays.

        Parameters
        ----------
        tree : tree of arrays
            A flat tree.

        Returns
        -------
        FlatLayout
            Its buffers and segments.

        Raises
        ------
        ValueError
            If the tree is not flat.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed.layout import LayoutCache
        >>> len(LayoutCache().of(anyoptim.flatten({"w": np.zeros(2)})).buffers)
        1
        """
        _, leaves, _ = tree_flatten(tree)
        cached = self._layout
        if (
            cached is None
            or len(leaves) != len(self._leaves)
            or any(a is not b for a, b in zip(leaves, self._leaves, strict=True))
        ):
            cached = FlatLayout(tree)
            self._layout, self._leaves = cached, leaves
        return cached
