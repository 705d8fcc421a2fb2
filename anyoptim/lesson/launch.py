"""The command line under ``mpiexec``: every process trains its share, one process prints and writes.

``mpiexec -n 4 anyoptim train ...`` and ``mpiexec -n 4 anyoptim compare``
start four copies of the command.  :func:`launch_comm` tells from the launcher's
environment (before importing mpi4py) that this happened and gives the
communicator the lesson's training passes to :func:`anyoptim.fit` as ``comm=``;
:func:`only_rank_0_speaks` silences the other processes and stops them writing
figures, so one table and one set of files come out.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..distributed import MPICommunicator, launched_by_mpi
from .arguments import UsageError

__all__ = ["launch_comm", "only_rank_0_speaks"]

#: The backends whose arrays the communicators move.
PARALLEL_BACKENDS = ("numpy", "cupy")


@functools.cache
def launch_comm() -> MPICommunicator | None:
    """The communicator of this MPI launch (``MPI.COMM_WORLD``), or None when the command runs alone.

    Returns
    -------
    MPICommunicator or None
        None unless ``mpiexec`` started several processes (:func:`anyoptim.distributed.launched_by_mpi`).

    Examples
    --------
    >>> from anyoptim.lesson.launch import launch_comm
    >>> launch_comm() is None  # not started by mpiexec here
    True
    """
    return MPICommunicator() if launched_by_mpi() else None


@contextlib.contextmanager
def only_rank_0_speaks(args: Any) -> Iterator[None]:
    """Run a command so that only rank 0 of an MPI launch prints and writes files.

    Rank 0 says on its standard error how many processes train.  Other ranks
    train (they take part in every collective) with their standard output
    discarded, ``--no-plots`` set and ``predict --output`` unset (their
    predictions go to the discarded output); errors still reach their standard
    error.  Outside an MPI launch nothing changes.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (changed on ranks other than 0).

    Yields
    ------
    None
        Inside, the command runs.

    Raises
    ------
    UsageError
        Under MPI, for a backend the communicators cannot move (only NumPy and
        CuPy).

    Examples
    --------
    >>> import argparse
    >>> from anyoptim.lesson.launch import only_rank_0_speaks
    >>> with only_rank_0_speaks(argparse.Namespace(command="compare")):
    ...     print("alone: rank 0")
    alone: rank 0
    """
    comm = launch_comm()
    if comm is None:
        yield
        return
    backend = getattr(args, "backend", "numpy")
    if backend not in PARALLEL_BACKENDS:
        raise UsageError(f"under mpiexec the backend must be one of {PARALLEL_BACKENDS}, got {backend!r}")
    if comm.rank == 0:
        print(f"anyoptim: data-parallel over {comm.size} MPI processes; this one (rank 0) prints", file=sys.stderr)
        yield
        return
    if hasattr(args, "no_plots"):
        args.no_plots = True
    if getattr(args, "command", None) == "predict":
        args.output = None  # predictions go to the silenced standard output, not a file every rank would write
    with open(os.devnull, "w") as silent, contextlib.redirect_stdout(silent):
        yield
