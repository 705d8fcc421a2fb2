"""The seam between :func:`anyoptim.fit` and data-parallel training: what fit asks of its team of processes.

:func:`~anyoptim.fit` lives below :mod:`anyoptim.distributed` and never imports
it.  It asks a *team* (duck-typed) for everything that differs when several
processes train together: the optimizer to drive, the gradient of this
process's share of each batch, sums over processes, and what to do when this
process fails.  ``fit(..., comm=c)`` takes its team from
``c.data_parallel(optimizer)`` (:class:`anyoptim.distributed.MPICommunicator`,
:class:`anyoptim.distributed.DataParallel`); without ``comm`` the team is
:class:`SerialTeam`, one process, where every answer is the identity.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["SerialTeam", "ending_every_process_on_failure", "team_of"]


class SerialTeam:
    """The team of one process: what :func:`anyoptim.fit` does without ``comm``.

    A data-parallel team answers the same questions for its process (see
    :class:`anyoptim.distributed.parallel.FitTeam`).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer fit drives, returned as :attr:`optimizer`.

    Attributes
    ----------
    rank : int
        0: this process shows progress.
    optimizer : Optimizer
        What fit calls ``init`` and ``step`` on.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.nn.parallel import SerialTeam
    >>> team = SerialTeam(anyoptim.SGD(0.1))
    >>> team.rank, team.total(2.5), team.agree(False)
    (0, 2.5, False)
    """

    rank = 0

    def __init__(self, optimizer: Any):
        self.optimizer = optimizer

    def value_and_grad(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Get the function fit calls for a batch's loss and gradients: ``function`` itself, on the whole batch.

        Parameters
        ----------
        function : callable
            ``function(xp, params, X_batch, targets, out=grads) -> (loss, grads)``.

        Returns
        -------
        callable
            ``function``.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.nn.parallel import SerialTeam
        >>> SerialTeam(anyoptim.SGD(0.1)).value_and_grad(print) is print
        True
        """
        return function

    def broadcast(self, params: Any, run: Any = None) -> Any:
        """Get the parameters every process starts from: ``params`` itself.

        Parameters
        ----------
        params : tree of arrays
            The starting parameters.
        run : mapping of str to int, optional
            What every process of a team must agree on (rows, epochs, ...): one process agrees with itself.

        Returns
        -------
        tree of arrays
            ``params``.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.nn.parallel import SerialTeam
        >>> SerialTeam(anyoptim.SGD(0.1)).broadcast({"w": 1})
        {'w': 1}
        """
        return params

    def total(self, value: Any) -> float:
        """Sum ``value`` over the processes: ``float(value)``.

        Parameters
        ----------
        value : float or 0-D array
            This process's part.

        Returns
        -------
        float
            The sum over processes.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.nn.parallel import SerialTeam
        >>> SerialTeam(anyoptim.SGD(0.1)).total(3)
        3.0
        """
        return float(value)

    def agree(self, flag: bool) -> bool:
        """Whether any process says ``flag`` (to stop training together): ``flag``.

        Parameters
        ----------
        flag : bool
            This process's answer.

        Returns
        -------
        bool
            True when any process said True.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.nn.parallel import SerialTeam
        >>> SerialTeam(anyoptim.SGD(0.1)).agree(True)
        True
        """
        return bool(flag)

    def gathered(self, state: Any, wanted: bool = True) -> Any:
        """Get the whole optimizer state, as one process holds it: ``state``.

        Parameters
        ----------
        state : OptimizerState
            The state fit drives.
        wanted : bool, default True
            Whether this process needs it (a team of processes gathers when any does).

        Returns
        -------
        OptimizerState
            ``state``.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.nn.parallel import SerialTeam
        >>> SerialTeam(anyoptim.SGD(0.1)).gathered("state")
        'state'
        """
        return state

    def failed(self, error: BaseException) -> None:
        """Act on an exception raised while training: nothing (fit re-raises it).

        Parameters
        ----------
        error : BaseException
            What was raised.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.nn.parallel import SerialTeam
        >>> SerialTeam(anyoptim.SGD(0.1)).failed(ValueError("bad"))
        """


def team_of(comm: Any, optimizer: Any) -> Any:
    """The team :func:`anyoptim.fit` trains with: ``comm.data_parallel(optimizer)``, or one process.

    Parameters
    ----------
    comm : object or None
        None, or a communicator with a ``data_parallel(optimizer)`` method
        (:class:`anyoptim.distributed.MPICommunicator`, :class:`anyoptim.distributed.DataParallel`).
    optimizer : Optimizer
        The optimizer to train with.

    Returns
    -------
    SerialTeam or team
        What fit asks for its optimizer, batches, sums and failures.

    Raises
    ------
    TypeError
        If ``comm`` has no ``data_parallel`` method.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.nn.parallel import team_of
    >>> type(team_of(None, anyoptim.SGD(0.1))).__name__
    'SerialTeam'
    """
    if comm is None:
        return SerialTeam(optimizer)
    if not callable(getattr(comm, "data_parallel", None)):
        raise TypeError(
            f"comm must be an anyoptim.distributed communicator (with data_parallel), got {type(comm).__name__}"
        )
    return comm.data_parallel(optimizer)


def ending_every_process_on_failure(fit: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap :func:`anyoptim.fit` so that an exception on one process of a data-parallel run ends every process.

    The others would otherwise wait in their next collective forever, whether the
    exception came while training or in a check before it that this process
    alone failed (its own ``initial_epoch``, ``params`` or ``state``).  The
    team's :meth:`~anyoptim.distributed.parallel.FitTeam.failed` prints the error
    and aborts the job (MPI's way); one process alone, or no ``comm``, re-raises.

    Parameters
    ----------
    fit : callable
        The function with a ``comm`` and an ``optimizer`` argument.

    Returns
    -------
    callable
        ``fit``, wrapped (its name, signature and docstring kept).

    Examples
    --------
    >>> from anyoptim.nn.parallel import ending_every_process_on_failure
    >>> def fit(optimizer, comm=None):
    ...     raise ValueError("bad")
    >>> ending_every_process_on_failure(fit)(None)
    Traceback (most recent call last):
    ...
    ValueError: bad
    """
    signature = inspect.signature(fit)

    @functools.wraps(fit)
    def fit_ending_every_process_on_failure(*args: Any, **kwargs: Any) -> Any:
        try:
            return fit(*args, **kwargs)
        except BaseException as error:
            try:
                arguments = signature.bind(*args, **kwargs).arguments
                team = None if arguments.get("comm") is None else team_of(arguments["comm"], arguments["optimizer"])
            except Exception:  # a call fit refused for its arguments or its comm: no team to end
                team = None
            if team is not None:
                team.failed(error)
            raise

    return fit_ending_every_process_on_failure
