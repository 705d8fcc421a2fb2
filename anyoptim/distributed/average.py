"""Gradient averaging across processes: one all-reduce per dtype buffer of a flat tree."""

from __future__ import annotations

from typing import Any

from .layout import FlatLayout

__all__ = ["average_gradients", "sum_buffers"]


def sum_buffers(comm: Any, buffers: list[Any], weight: float) -> None:
    """Multiply each buffer by ``weight`` (unless it is 1) and all-reduce it (sum), in place.

    Parameters
    ----------
    comm : Communicator
        The processes.
    buffers : list of array
        1-D buffers (a :class:`~anyoptim.distributed.layout.FlatLayout`'s).
    weight : float
        This process's factor before the sum.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.distributed import MPICommunicator, sum_buffers
    >>> buffer = np.array([2.0, 4.0]); sum_buffers(MPICommunicator(), [buffer], 0.5); buffer
    array([1., 2.])
    """
    for buffer in buffers:
        if weight != 1.0:
            buffer *= weight
        comm.allreduce(buffer)


def average_gradients(comm: Any, grads: Any, weight: float | None = None) -> Any:
    """Replace every process's gradients by their weighted sum over processes: one all-reduce per dtype.

    Parameters
    ----------
    comm : Communicator
        The processes (:class:`~anyoptim.distributed.MPICommunicator`, ...).
    grads : tree of arrays
        This process's gradients, laid out flat (:func:`anyoptim.flatten`), NumPy or CuPy; updated in place.
    weight : float, optional
        This process's factor; default ``1 / comm.size``, the mean of equal shares.  Give ``n_r / n``
        when process ``r`` averaged ``n_r`` of a batch's ``n`` examples.

    Returns
    -------
    tree of arrays
        ``grads``, now :math:`\\sum_r w_r g_r` on every process.

    Raises
    ------
    ValueError
        If ``grads`` is not flat (nothing is changed then).

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.distributed import MPICommunicator, average_gradients
    >>> grads = anyoptim.flatten({"W": np.ones((2, 2)), "b": np.zeros(2)})
    >>> average_gradients(MPICommunicator(), grads)["W"]  # one process: the mean is itself
    array([[1., 1.],
           [1., 1.]])
    """
    sum_buffers(comm, FlatLayout(grads).buffers, 1.0 / comm.size if weight is None else float(weight))
    return grads
