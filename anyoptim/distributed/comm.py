"""Communicators: one interface over MPI (mpi4py) and NCCL (CuPy) for data-parallel training.

Every collective works on a flat 1-D buffer, in place, the way a data-parallel
trainer moves the one buffer per dtype that :func:`anyoptim.flatten` lays a
model out in.  :class:`MPICommunicator` wraps an mpi4py communicator: NumPy
arrays go to MPI directly; CuPy arrays go directly too when the MPI library is
CUDA-aware (``cuda_aware=True``), and are staged through host memory otherwise.
:class:`~anyoptim.distributed.nccl.NCCLCommunicator` runs the same interface on
NCCL for CuPy arrays.  mpi4py is imported when a communicator is made, never at
``import anyoptim``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .bounds import shard_bounds
from .threads import warn_if_oversubscribed

__all__ = ["ABORT_GRACE", "OPS", "Communicator", "MPICommunicator", "hand_output_to_launcher", "launched_by_mpi"]

#: The reductions every communicator offers.
OPS = ("sum", "max", "min")
#: Seconds a process that aborts the job waits after flushing its output, so that the launcher forwards it first.
ABORT_GRACE = 0.5


def hand_output_to_launcher(grace: float = ABORT_GRACE) -> None:
    """Flush this process's stdout and stderr and give the launcher ``grace`` seconds to forward them.

    ``MPI_Abort`` makes the launcher end every process at once; MPICH's Hydra can do that before it has read
    what the aborting process wrote last, its error message, which is then lost (seen in about one run in
    twenty).  Called just before an abort.

    Parameters
    ----------
    grace : float, default ``ABORT_GRACE`` (0.5)
        Seconds to wait after flushing.

    Examples
    --------
    >>> from anyoptim.distributed.comm import hand_output_to_launcher
    >>> hand_output_to_launcher(0.0)
    """
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(grace)


#: Environment variables that MPI launchers set in every process they start (MPICH/Hydra, Open MPI, Slurm's PMI).
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def launched_by_mpi(environ: Any = None) -> bool:
    """Tell from the environment, without importing mpi4py, whether ``mpiexec`` started this process with others.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default :data:`os.environ`).

    Returns
    -------
    bool
        True when a launcher variable (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``,
        ``MV2_COMM_WORLD_SIZE`` or ``PMIX_SIZE``) says more than one process.

    Examples
    --------
    >>> from anyoptim.distributed import launched_by_mpi
    >>> launched_by_mpi({"PMI_SIZE": "4"}), launched_by_mpi({"PMI_SIZE": "1"}), launched_by_mpi({})
    (True, False, False)
    """
    environ = os.environ if environ is None else environ
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return True
    return False


def _check_buffer(buffer: Any, what: str = "buffer") -> None:
    shape = getattr(buffer, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {shape}")
    interface = getattr(buffer, "__cuda_array_interface__", None) or getattr(buffer, "__array_interface__", None)
    if interface is None:
        raise TypeError(f"{what} must be a NumPy or CuPy array, got {type(buffer).__name__}")
    strides = interface.get("strides")
    if strides is not None and strides[0] != buffer.itemsize:
        raise ValueError(f"{what} must be contiguous")


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")


class Communicator:
    """The interface every communicator offers: size, rank and in-place collectives of flat buffers.

    Subclasses implement the five collectives; this class checks their
    arguments (each a 1-D contiguous array; for the sharded collectives a
    buffer of ``sum(shard lengths)`` elements, split by :func:`shard_bounds`)
    before anything moves.

    Attributes
    ----------
    rank : int
        This process's index, ``0 <= rank < size``.
    size : int
        The number of processes.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.distributed import MPICommunicator
    >>> comm = MPICommunicator()  # MPI.COMM_WORLD; one process here
    >>> buffer = np.array([1.0, 2.0])
    >>> comm.allreduce(buffer); buffer, comm.rank, comm.size
    (array([1., 2.]), 0, 1)
    """

    rank: int
    size: int

    def allreduce(self, buffer: Any, op: str = "sum") -> None:
        """Reduce ``buffer`` elementwise over all processes and leave the result in every process's ``buffer``.

        Parameters
        ----------
        buffer : array, shape (n,)
            A 1-D contiguous NumPy or CuPy array, the same shape and dtype on every process.
        op : {"sum", "max", "min"}, default "sum"
            The reduction.

        Raises
        ------
        ValueError
            If ``buffer`` is not 1-D and contiguous, or ``op`` is unknown.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.distributed import MPICommunicator
        >>> flags = np.array([0.0, 3.0]); MPICommunicator().allreduce(flags, op="max"); flags
        array([0., 3.])
        """
        _check_buffer(buffer)
        _check_op(op)
        self._allreduce(buffer, op)

    def reduce_scatter(self, buffer: Any, out: Any) -> None:
        """Sum ``buffer`` over all processes and keep only this process's shard of the sum, in ``out``.

        Parameters
        ----------
        buffer : array, shape (n,)
            The whole buffer, 1-D contiguous, the same shape and dtype on every process.
        out : array, shape (stop - start,)
            Receives elements ``start:stop`` of the sum, where ``(start, stop) =
            shard_bounds(n, size)[rank]``.

        Raises
        ------
        ValueError
            If a buffer is not 1-D and contiguous, or ``out`` is not this shard's length.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.distributed import MPICommunicator
        >>> out = np.empty(3); MPICommunicator().reduce_scatter(np.array([1.0, 2.0, 3.0]), out); out
        array([1., 2., 3.])
        """
        _check_buffer(buffer)
        _check_buffer(out, "out")
        bounds = shard_bounds(buffer.shape[0], self.size)
        start, stop = bounds[self.rank]
        if out.shape[0] != stop - start:
            raise ValueError(f"out must hold this process's shard, {stop - start} elements, got {out.shape[0]}")
        self._reduce_scatter(buffer, out, bounds)

    def allgather(self, buffer: Any) -> None:
        """Fill every process's ``buffer`` with each process's own shard of it (the inverse of the scatter).

        Parameters
        ----------
        buffer : array, shape (n,)
            1-D contiguous; on entry this process's elements ``start:stop``
            (:func:`shard_bounds`) hold its shard, on return every shard is there.

        Raises
        ------
        ValueError
            If ``buffer`` is not 1-D and contiguous.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.distributed import MPICommunicator
        >>> buffer = np.array([5.0, 6.0]); MPICommunicator().allgather(buffer); buffer
        array([5., 6.])
        """
        _check_buffer(buffer)
        self._allgather(buffer, shard_bounds(buffer.shape[0], self.size))

    def broadcast(self, buffer: Any, root: int = 0) -> None:
        """Copy process ``root``'s ``buffer`` into every process's ``buffer``.

        Parameters
        ----------
        buffer : array, shape (n,)
            1-D contiguous, the same shape and dtype on every process.
        root : int, default 0
            The rank whose values everyone gets.

        Raises
        ------
        ValueError
            If ``buffer`` is not 1-D and contiguous, or ``root`` is not a rank.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.distributed import MPICommunicator
        >>> buffer = np.array([7.0]); MPICommunicator().broadcast(buffer); buffer
        array([7.])
        """
        _check_buffer(buffer)
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self.size:
            raise ValueError(f"root must be a rank from 0 to {self.size - 1}, got {root!r}")
        self._broadcast(buffer, root)

    def abort(self, code: int = 1) -> None:
        """End every process of the job (MPI's ``Abort``): the way out when one process fails mid-collective.

        This base class can end only this process (``SystemExit``); communicators
        over MPI end the whole job.

        Parameters
        ----------
        code : int, default 1
            The exit status the launcher reports.

        Examples
        --------
        >>> from anyoptim.distributed import MPICommunicator
        >>> callable(MPICommunicator().abort)  # not called here: it would end this process
        True
        """
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(code)

    def data_parallel(self, optimizer: Any) -> Any:
        """The data-parallel team :func:`anyoptim.fit` drives with ``comm=self``: replicated optimizer state.

        Parameters
        ----------
        optimizer : Optimizer
            The optimizer every process runs.

        Returns
        -------
        anyoptim.distributed.parallel.FitTeam
            What :func:`~anyoptim.fit` asks for its batches, steps and reductions.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.distributed import MPICommunicator
        >>> MPICommunicator().data_parallel(anyoptim.Adam()).rank
        0
        """
        from .parallel import DataParallel

        return DataParallel(self).data_parallel(optimizer)

    # -- what subclasses implement, on checked arguments

    def _allreduce(self, buffer: Any, op: str) -> None:
        raise NotImplementedError

    def _reduce_scatter(self, buffer: Any, out: Any, bounds: Sequence[tuple[int, int]]) -> None:
        raise NotImplementedError

    def _allgather(self, buffer: Any, bounds: Sequence[tuple[int, int]]) -> None:
        raise NotImplementedError

    def _broadcast(self, buffer: Any, root: int) -> None:
        raise NotImplementedError


class MPICommunicator(Communicator):
    """A :class:`Communicator` over an mpi4py communicator.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The processes to work with; default ``MPI.COMM_WORLD``.
    cuda_aware : bool, default False
        Whether the MPI library reads and writes GPU memory itself (a CUDA-aware
        build of Open MPI, MVAPICH2 or MPICH).  Then CuPy buffers go to MPI
        directly; otherwise each collective copies a CuPy buffer to the host and
        back.  NumPy buffers always go directly.

    Raises
    ------
    ImportError
        If mpi4py is not installed (``pip install anyoptim[distributed]``).
    TypeError
        If ``comm`` is not an mpi4py intracommunicator.

    Warns
    -----
    OversubscriptionWarning
        When several processes of the launch share this machine and their BLAS
        threads together exceed its cores (:mod:`anyoptim.distributed.threads`):
        set ``OMP_NUM_THREADS`` as the message says.

    Examples
    --------
    Run under ``mpiexec -n 2 python script.py``; alone it is one process:

    >>> import numpy as np
    >>> from anyoptim.distributed import MPICommunicator
    >>> comm = MPICommunicator()
    >>> grads = np.array([1.0, 2.0]); comm.allreduce(grads); grads / comm.size
    array([1., 2.])
    """

    def __init__(self, comm: Any = None, *, cuda_aware: bool = False):
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError("MPICommunicator needs mpi4py: pip install anyoptim[distributed]") from None
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator, got {type(comm).__name__}")
        if not isinstance(cuda_aware, bool):
            raise TypeError(f"cuda_aware must be True or False, got {cuda_aware!r}")
        self.comm = comm
        self.cuda_aware = cuda_aware
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._mpi = MPI
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        if self.size > 1:
            warn_if_oversubscribed()

    def __repr__(self) -> str:
        return f"MPICommunicator(rank={self.rank}, size={self.size}, cuda_aware={self.cuda_aware})"

    def _host(self, buffer: Any) -> Any:
        """The buffer MPI works on: the array itself, or a host copy of a GPU array MPI cannot read."""
        if self.cuda_aware or not hasattr(buffer, "__cuda_array_interface__"):
            return buffer
        return buffer.get()

    @staticmethod
    def _back(buffer: Any, host: Any) -> None:
        if host is not buffer:
            buffer.set(host)

    def _synchronize(self, buffer: Any) -> None:
        # MPI reads device memory outside CuPy's stream order: finish the work that writes it first.
        if self.cuda_aware and hasattr(buffer, "__cuda_array_interface__"):
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def _allreduce(self, buffer: Any, op: str) -> None:
        host = self._host(buffer)
        self._synchronize(buffer)
        self.comm.Allreduce(self._mpi.IN_PLACE, host, op=self._ops[op])
        self._back(buffer, host)

    def _reduce_scatter(self, buffer: Any, out: Any, bounds: Sequence[tuple[int, int]]) -> None:
        host, host_out = self._host(buffer), self._host(out)
        self._synchronize(buffer)
        counts = [stop - start for start, stop in bounds]
        self.comm.Reduce_scatter(host, host_out, counts, op=self._mpi.SUM)
        self._back(out, host_out)

    def _allgather(self, buffer: Any, bounds: Sequence[tuple[int, int]]) -> None:
        host = self._host(buffer)
        self._synchronize(buffer)
        counts = [stop - start for start, stop in bounds]
        displacements = [start for start, _ in bounds]
        self.comm.Allgatherv(self._mpi.IN_PLACE, [host, (counts, displacements)])
        self._back(buffer, host)

    def _broadcast(self, buffer: Any, root: int) -> None:
        host = self._host(buffer)
        self._synchronize(buffer)
        self.comm.Bcast(host, root=root)
        self._back(buffer, host)

    def abort(self, code: int = 1) -> None:
        """End every process of the MPI job (``MPI_Abort``), after handing this one's output to the launcher.

        The output is flushed and the launcher given :data:`ABORT_GRACE` seconds to forward it
        (:func:`hand_output_to_launcher`): this process's error message is what the user needs to see.

        Parameters
        ----------
        code : int, default 1
            The exit status the launcher reports.

        Examples
        --------
        >>> from anyoptim.distributed import MPICommunicator
        >>> callable(MPICommunicator().abort)  # not called here: it would end this process
        True
        """
        hand_output_to_launcher()
        self.comm.Abort(code)
