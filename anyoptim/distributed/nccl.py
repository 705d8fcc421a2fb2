"""A :class:`~anyoptim.distributed.Communicator` over NCCL, for CuPy arrays on several GPUs.

It wraps ``cupy.cuda.nccl.NcclCommunicator``.  The processes agree on NCCL's
unique id either through MPI (:meth:`NCCLCommunicator.from_mpi`) or, for
launchers without MPI (torchrun-style rank/size/address), through a TCP
connection to rank 0 (:meth:`NCCLCommunicator.from_address`).  Collectives run
on CuPy's current stream; shards of unequal length (a buffer that does not
divide by the number of processes) are staged through a padded buffer, since
NCCL's reduce-scatter and all-gather move equal parts.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from .._namespace import array_namespace
from .comm import Communicator, hand_output_to_launcher

__all__ = ["NCCLCommunicator"]

_NCCL_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}
_NCCL_OPS = {"sum": "NCCL_SUM", "max": "NCCL_MAX", "min": "NCCL_MIN"}
_ID_BYTES = 128


def _pointer(buffer: Any) -> int:
    interface = getattr(buffer, "__cuda_array_interface__", None) or buffer.__array_interface__
    return int(interface["data"][0])


def _current_stream() -> int:
    import cupy

    return cupy.cuda.get_current_stream().ptr


def _nccl_module() -> Any:
    try:
        from cupy.cuda import nccl
    except ImportError:
        raise ImportError("NCCLCommunicator needs CuPy built with NCCL (pip install cupy-cuda12x)") from None
    return nccl


class NCCLCommunicator(Communicator):
    """A :class:`~anyoptim.distributed.Communicator` over an NCCL communicator (CuPy arrays).

    Make one with :meth:`from_mpi` or :meth:`from_address`; each process must
    have chosen its GPU first (``cupy.cuda.Device(local_rank).use()``).

    Parameters
    ----------
    nccl_comm : cupy.cuda.nccl.NcclCommunicator
        The NCCL communicator.
    rank, size : int
        This process and the number of processes.
    nccl : module, optional
        The module with NCCL's constants (default ``cupy.cuda.nccl``; tests pass a fake).
    stream : callable, optional
        Returns the CUDA stream to run on (default CuPy's current stream).
    mpi_comm : mpi4py.MPI.Comm, optional
        The MPI communicator it was made from: :meth:`abort` ends the job through it.

    Examples
    --------
    >>> from anyoptim.distributed import NCCLCommunicator
    >>> NCCLCommunicator.from_mpi  # doctest: +ELLIPSIS
    <bound method NCCLCommunicator.from_mpi of <class '...NCCLCommunicator'>>
    """

    def __init__(
        self, nccl_comm: Any, rank: int, size: int, *, nccl: Any = None, stream: Any = None, mpi_comm: Any = None
    ):
        self.nccl_comm = nccl_comm
        self.rank = int(rank)
        self.size = int(size)
        self._nccl = _nccl_module() if nccl is None else nccl
        self._stream = _current_stream if stream is None else stream
        self._mpi_comm = mpi_comm

    @classmethod
    def from_mpi(cls, mpi_comm: Any = None, **kwargs: Any) -> NCCLCommunicator:
        """Make an NCCL communicator over the processes of an MPI communicator (rank 0's id broadcast by MPI).

        Parameters
        ----------
        mpi_comm : mpi4py.MPI.Comm, optional
            Default ``MPI.COMM_WORLD``.
        **kwargs
            ``nccl`` and ``stream``, as for the constructor.

        Returns
        -------
        NCCLCommunicator
            With MPI's ranks.

        Examples
        --------
        >>> from anyoptim.distributed import NCCLCommunicator
        >>> callable(NCCLCommunicator.from_mpi)  # needs a GPU per process
        True
        """
        if mpi_comm is None:
            from mpi4py import MPI

            mpi_comm = MPI.COMM_WORLD
        nccl = kwargs.get("nccl") or _nccl_module()
        rank, size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        unique_id = mpi_comm.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)
        return cls(nccl.NcclCommunicator(size, unique_id, rank), rank, size, mpi_comm=mpi_comm, **kwargs)

    @classmethod
    def from_address(
        cls, rank: int, size: int, address: str, *, timeout: float = 60.0, **kwargs: Any
    ) -> NCCLCommunicator:
        """Make an NCCL communicator without MPI: rank 0 serves NCCL's unique id at ``address``.

        Parameters
        ----------
        rank, size : int
            This process and the number of processes (from the launcher: ``RANK``, ``WORLD_SIZE``).
        address : str
            ``"host:port"`` where rank 0 listens (``MASTER_ADDR:MASTER_PORT``).
        timeout : float, default 60
            Seconds to wait for rank 0 (or, on rank 0, for the others) before giving up.
        **kwargs
            ``nccl`` and ``stream``, as for the constructor.

        Returns
        -------
        NCCLCommunicator
            The communicator.

        Raises
        ------
        ValueError
            If ``rank`` is not in ``range(size)`` or ``address`` is not ``host:port``.
        TimeoutError
            If the processes do not all connect within ``timeout``.

        Examples
        --------
        >>> from anyoptim.distributed import NCCLCommunicator
        >>> NCCLCommunicator.from_address(2, 2, "localhost:29500")
        Traceback (most recent call last):
        ...
        ValueError: rank must be in range(2), got 2
        """
        if not (isinstance(size, int) and size >= 1 and isinstance(rank, int) and 0 <= rank < size):
            raise ValueError(f"rank must be in range({size}), got {rank}")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address must be 'host:port', got {address!r}")
        nccl = kwargs.get("nccl") or _nccl_module()
        if rank == 0:
            unique_id = nccl.get_unique_id()
            _serve_id(bytes(b % 256 for b in unique_id), (host, int(port)), size - 1, timeout)
        else:
            unique_id = tuple(b if b < 128 else b - 256 for b in _fetch_id((host, int(port)), timeout))
        return cls(nccl.NcclCommunicator(size, unique_id, rank), rank, size, **kwargs)

    def __repr__(self) -> str:
        return f"NCCLCommunicator(rank={self.rank}, size={self.size})"

    def _dtype(self, buffer: Any) -> Any:
        name = _NCCL_DTYPES.get(str(buffer.dtype))
        if name is None:
            raise TypeError(f"NCCL collectives here move float16, float32 or float64, got {buffer.dtype}")
        return getattr(self._nccl, name)

    def _allreduce(self, buffer: Any, op: str) -> None:
        pointer = _pointer(buffer)
        op_code = getattr(self._nccl, _NCCL_OPS[op])
        self.nccl_comm.allReduce(pointer, pointer, buffer.shape[0], self._dtype(buffer), op_code, self._stream())

    def _broadcast(self, buffer: Any, root: int) -> None:
        pointer = _pointer(buffer)
        self.nccl_comm.broadcast(pointer, pointer, buffer.shape[0], self._dtype(buffer), root, self._stream())

    def _reduce_scatter(self, buffer: Any, out: Any, bounds: Sequence[tuple[int, int]]) -> None:
        chunk = max(stop - start for start, stop in bounds)
        dtype = self._dtype(buffer)
        if chunk == 0:
            return
        if all(stop - start == chunk for start, stop in bounds):
            self.nccl_comm.reduceScatter(
                _pointer(buffer), _pointer(out), chunk, dtype, self._nccl.NCCL_SUM, self._stream()
            )
            return
        xp = array_namespace(buffer)
        padded = xp.zeros((chunk * self.size,), dtype=buffer.dtype, device=buffer.device)
        for rank, (start, stop) in enumerate(bounds):
            padded[rank * chunk : rank * chunk + stop - start] = buffer[start:stop]
        received = xp.empty((chunk,), dtype=buffer.dtype, device=buffer.device)
        self.nccl_comm.reduceScatter(
            _pointer(padded), _pointer(received), chunk, dtype, self._nccl.NCCL_SUM, self._stream()
        )
        out[...] = received[: out.shape[0]]

    def _allgather(self, buffer: Any, bounds: Sequence[tuple[int, int]]) -> None:
        chunk = max(stop - start for start, stop in bounds)
        dtype = self._dtype(buffer)
        if chunk == 0:
            return
        if all(stop - start == chunk for start, stop in bounds):
            send = _pointer(buffer) + bounds[self.rank][0] * buffer.itemsize  # in place, as NCCL allows
            self.nccl_comm.allGather(send, _pointer(buffer), chunk, dtype, self._stream())
            return
        xp = array_namespace(buffer)
        start, stop = bounds[self.rank]
        mine = xp.zeros((chunk,), dtype=buffer.dtype, device=buffer.device)
        mine[: stop - start] = buffer[start:stop]
        gathered = xp.empty((chunk * self.size,), dtype=buffer.dtype, device=buffer.device)
        self.nccl_comm.allGather(_pointer(mine), _pointer(gathered), chunk, dtype, self._stream())
        for rank, (start, stop) in enumerate(bounds):
            buffer[start:stop] = gathered[rank * chunk : rank * chunk + stop - start]

    def abort(self, code: int = 1) -> None:
        """End every process: NCCL's communicator is aborted, then the MPI job (or this process).

        Parameters
        ----------
        code : int, default 1
            The exit status.

        Examples
        --------
        >>> from anyoptim.distributed import NCCLCommunicator
        >>> callable(NCCLCommunicator.abort)
        True
        """
        try:
            self.nccl_comm.abort()
        finally:
            if self._mpi_comm is not None:
                hand_output_to_launcher()
                self._mpi_comm.Abort(code)
            super().abort(code)


def _serve_id(unique_id: bytes, address: tuple[str, int], peers: int, timeout: float) -> None:
    """Rank 0: accept ``peers`` connections at ``address`` and send each the id."""
    with socket.create_server(address, reuse_port=False) as server:
        server.settimeout(timeout)
        for _ in range(peers):
            try:
                connection, _ = server.accept()
            except TimeoutError:
                raise TimeoutError(f"not every process connected to {address[0]}:{address[1]} in {timeout} s") from None
            with connection:
                connection.sendall(unique_id)


def _fetch_id(address: tuple[str, int], timeout: float) -> bytes:
    """Other ranks: connect to rank 0 (retrying until it listens) and read the id."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(address, timeout=max(deadline - time.monotonic(), 0.1)) as connection:
                data = b""
                while len(data) < _ID_BYTES:
                    part = connection.recv(_ID_BYTES - len(data))
                    if not part:
                        break
                    data += part
                return data
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank 0 did not serve at {address[0]}:{address[1]} within {timeout} s") from None
            time.sleep(0.05)
