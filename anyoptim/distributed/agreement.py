"""Numbers the processes of a data-parallel run reduce together: sums, flags, and the run's shape they must share.

Every process of :func:`anyoptim.fit` with ``comm=`` runs the same loop, so each
must take the same number of steps: a process given other data (its own rows
instead of the whole set), another batch size or another first epoch (a
checkpoint it could not see) would call the collectives a different number of
times, and the others would wait forever or add up the wrong buffers.
:func:`check_same_run` finds that out before training, on every process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._namespace import array_namespace
from .layout import FlatLayout

__all__ = ["check_same_run", "reduce_numbers"]


def reduce_numbers(comm: Any, like: Any, values: list[float], op: str) -> list[float]:
    """Reduce a few numbers over the processes with one all-reduce, in float64 (exact for integers below 2**53).

    Parameters
    ----------
    comm : Communicator
        The processes.
    like : tree of arrays
        Flat parameters: their library and device carry the numbers.
    values : list of float
        This process's numbers.
    op : {"sum", "max", "min"}
        The reduction.

    Returns
    -------
    list of float
        The reduced numbers, the same on every process.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.distributed import MPICommunicator
    >>> from anyoptim.distributed.agreement import reduce_numbers
    >>> reduce_numbers(MPICommunicator(), anyoptim.flatten({"w": np.ones(2)}), [1.5, 2.0], "sum")
    [1.5, 2.0]
    """
    first = FlatLayout(like).buffers[0]
    xp = array_namespace(first)
    buffer = xp.asarray(values, dtype=xp.float64, device=first.device)
    comm.allreduce(buffer, op=op)
    return [float(value) for value in buffer]


def check_same_run(comm: Any, params: Any, run: Mapping[str, int]) -> None:
    """Make sure every process trains the same run: equal ``run`` numbers and parameter sizes (one all-reduce).

    Parameters
    ----------
    comm : Communicator
        The processes.
    params : tree of arrays
        This process's flat parameters, before rank 0's are broadcast.
    run : mapping of str to int
        What must be equal everywhere (fit: rows, features, epochs, batch size, first epoch, steps taken).

    Raises
    ------
    ValueError
        On every process, naming what differs and its smallest and largest values; its ``every_process``
        attribute is True (the processes raise it together, so :func:`anyoptim.fit` does not abort the job).

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.distributed import MPICommunicator
    >>> from anyoptim.distributed.agreement import check_same_run
    >>> check_same_run(MPICommunicator(), anyoptim.flatten({"w": np.ones(2)}), {"rows": 40, "epochs": 3})
    """
    layout = FlatLayout(params)
    numbers = {**run, "parameters": sum(buffer.shape[0] for buffer in layout.buffers)}
    values = [float(value) for value in numbers.values()]
    found = reduce_numbers(comm, params, [*values, *(-value for value in values)], "max")
    largest, smallest = found[: len(values)], [-value for value in found[len(values) :]]
    differ = [
        f"{name} ({low:.0f} to {high:.0f})"
        for name, low, high in zip(numbers, smallest, largest, strict=True)
        if low != high
    ]
    if differ:
        error = ValueError(
            f"the {comm.size} processes of this data-parallel fit disagree on {', '.join(differ)}: every process "
            "must be given the whole data set and the same settings (each takes its own rows of every batch), and "
            "every process must see the checkpoint it resumes from"
        )
        error.every_process = True  # raised by all together: none is left waiting, nothing to abort
        raise error
