"""Oversubscription: several processes of one launch on one machine, each with a BLAS thread per core.

NumPy's BLAS starts one thread per core in every process.  Four processes of
``mpiexec -n 4`` on a four-core machine then run sixteen threads that take
turns on four cores, and a training step that all of them must finish together
(the all-reduce waits for the slowest) becomes 10-50 times slower.  torch's
launcher sets ``OMP_NUM_THREADS=1`` for this reason; anyoptim does not change a
process's threads behind its back, but :class:`~anyoptim.distributed.MPICommunicator`
warns (:func:`oversubscription`) when it sees the risk.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["THREAD_VARIABLES", "OversubscriptionWarning", "oversubscription", "warn_if_oversubscribed"]

#: The environment variables that set the thread pools of the BLAS libraries NumPy and SciPy use.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
#: The variables in which launchers say how many of their processes run on this machine.
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


class OversubscriptionWarning(RuntimeWarning):
    """Processes of one launch on one machine ask for more threads than it has cores.

    Examples
    --------
    Silence it where oversubscription is intended:

    >>> import warnings
    >>> from anyoptim.distributed import OversubscriptionWarning
    >>> warnings.filterwarnings("ignore", category=OversubscriptionWarning)
    """


def oversubscription(environ: Mapping[str, str] | None = None, cores: int | None = None) -> str | None:
    """Say why the processes of this launch oversubscribe the machine's cores, or return None.

    Parameters
    ----------
    environ : mapping of str to str, optional
        The environment to read (default :data:`os.environ`): how many processes
        the launcher started on this machine (``MPI_LOCALNRANKS`` of MPICH,
        ``OMPI_COMM_WORLD_LOCAL_SIZE`` of Open MPI, ...) and the thread variables
        :data:`THREAD_VARIABLES`.
    cores : int, optional
        The cores this process may run on (default: its CPU affinity).

    Returns
    -------
    str or None
        A one-line explanation with the fix, when the local processes times the
        threads each may start (the smallest thread variable set, else one per
        core) exceed ``cores``; None when they fit or the launcher did not say
        how many processes share the machine.

    Examples
    --------
    >>> from anyoptim.distributed.threads import oversubscription
    >>> message = oversubscription({"MPI_LOCALNRANKS": "2"}, cores=2)
    >>> message.split(":")[0]
    '2 processes on this machine may each start 2 BLAS threads on 2 cores (OMP_NUM_THREADS is not set)'
    >>> message.split("; ")[-1]
    'launch with mpiexec -n 2 env OMP_NUM_THREADS=1 ...'
    >>> oversubscription({"MPI_LOCALNRANKS": "2", "OMP_NUM_THREADS": "1"}, cores=2) is None
    True
    """
    environ = os.environ if environ is None else environ
    local = next((environ[name] for name in LOCAL_SIZE_VARIABLES if environ.get(name, "").isdigit()), None)
    if local is None or int(local) < 2:
        return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limits = [int(environ[name]) for name in THREAD_VARIABLES if environ.get(name, "").strip().isdigit()]
    threads = min(limits) if limits else cores
    processes = int(local)
    if processes * threads <= cores:
        return None
    fix = max(1, cores // processes)
    unset = "" if limits else " (OMP_NUM_THREADS is not set)"
    return (
        f"{processes} processes on this machine may each start {threads} BLAS threads on {cores} cores{unset}: "
        f"steps wait for the slowest process and run many times slower; launch with "
        f"mpiexec -n {processes} env OMP_NUM_THREADS={fix} ..."
    )


def warn_if_oversubscribed(environ: Mapping[str, str] | None = None, cores: int | None = None) -> None:
    """Warn (:class:`OversubscriptionWarning`) when :func:`oversubscription` finds a reason.

    Parameters
    ----------
    environ : mapping of str to str, optional
        As :func:`oversubscription`.
    cores : int, optional
        As :func:`oversubscription`.

    Warns
    -----
    OversubscriptionWarning
        With :func:`oversubscription`'s explanation.

    Examples
    --------
    >>> import warnings
    >>> from anyoptim.distributed.threads import warn_if_oversubscribed
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_oversubscribed({"MPI_LOCALNRANKS": "4", "OMP_NUM_THREADS": "2"}, cores=4)
    >>> str(caught[0].message).split("; ")[-1]
    'launch with mpiexec -n 4 env OMP_NUM_THREADS=1 ...'
    """
    message: Any = oversubscription(environ, cores)
    if message is not None:
        warnings.warn(message, OversubscriptionWarning, stacklevel=3)
