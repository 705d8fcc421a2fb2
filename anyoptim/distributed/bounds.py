"""How a flat buffer is split into the shards of the processes: contiguous, lengths differing by at most one."""

from __future__ import annotations

__all__ = ["shard_bounds"]


def shard_bounds(length: int, size: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into ``size`` contiguous shards whose lengths differ by at most one.

    Shard ``r`` is ``[r * length // size, (r + 1) * length // size)``: no padding, so a
    gathered buffer is the buffer itself.

    Parameters
    ----------
    length : int
        Elements to split (>= 0).
    size : int
        Number of shards (>= 1).

    Returns
    -------
    list of (int, int)
        ``(start, stop)`` of each shard, in rank order; empty shards when ``length < size``.

    Examples
    --------
    >>> from anyoptim.distributed import shard_bounds
    >>> shard_bounds(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    return [(rank * length // size, (rank + 1) * length // size) for rank in range(size)]
