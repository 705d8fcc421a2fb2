"""Data-parallel optimizer steps: gradients summed over processes, the same update everywhere.

Every process holds the model and computes the gradient of its share of the
batch; :class:`ParallelOptimizer` sums the weighted gradients with one
all-reduce per dtype buffer and runs the optimizer on every process
(replicated state), or, with ``shard_state=True``, keeps each process's shard of
the state only (:mod:`anyoptim.distributed.sharded`, ZeRO stage 1).
:class:`DataParallel` is what :func:`anyoptim.fit` takes as ``comm=``.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

from ..optimizers.base import Optimizer
from ..state import OptimizerState
from .agreement import check_same_run, reduce_numbers
from .average import sum_buffers
from .layout import FlatLayout, LayoutCache
from .sharded import ShardedState, ShardedStep

__all__ = ["DataParallel", "FitTeam", "ParallelOptimizer"]


class ParallelOptimizer:
    """An optimizer run by every process of a communicator on the sum of their weighted gradients.

    Parameters
    ----------
    optimizer : Optimizer
        Any anyoptim optimizer; every process must pass an equal one.
    comm : Communicator
        The processes (:class:`~anyoptim.distributed.MPICommunicator`, ...).
    shard_state : bool, default False
        Keep on each process only the optimizer state of its 1/N of every flat
        buffer (ZeRO stage 1): reduce-scatter, update the shard, all-gather.
    weight : float, optional
        What each process's gradient is multiplied by before the sum; default
        ``1 / comm.size`` (each ``grads`` is the mean over an equal share, and
        the sum is the mean over the whole batch).  1 when the gradients come
        weighted already.

    Raises
    ------
    TypeError
        If ``optimizer`` lacks ``init`` / ``step`` (or is no :class:`anyoptim.Optimizer` and ``shard_state`` is
        True), or ``shard_state`` is not a bool.

    Notes
    -----
    ``params`` and ``grads`` must be flat (:func:`anyoptim.flatten`), NumPy or
    CuPy.  :meth:`init` broadcasts rank 0's parameters.  :meth:`step`
    overwrites ``grads`` with the summed gradient (replicated; a scratch buffer
    when sharded).  Results equal a one-process run's on the whole batch up to
    the order of summation.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.distributed import MPICommunicator, ParallelOptimizer
    >>> opt = ParallelOptimizer(anyoptim.Adam(0.1), MPICommunicator(), shard_state=True)
    >>> params = anyoptim.flatten({"w": np.array([1.0, -1.0])})
    >>> state = opt.init(params)  # rank 0's params everywhere
    >>> params, state = opt.step(params, anyoptim.flatten({"w": np.array([0.5, -0.5])}), state)
    >>> params["w"], state.count
    (array([ 0.9, -0.9]), 1)
    """

    def __init__(self, optimizer: Any, comm: Any, *, shard_state: bool = False, weight: float | None = None):
        if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "step", None))):
            raise TypeError(f"optimizer must have init(params) and step(params, grads, state), got {optimizer!r}")
        if not isinstance(shard_state, bool):
            raise TypeError(f"shard_state must be True or False, got {shard_state!r}")
        if shard_state and not isinstance(optimizer, Optimizer):  # its state and settings are split across shards
            raise TypeError(f"shard_state=True needs an anyoptim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.comm = comm
        self.shard_state = shard_state
        self.weight = 1.0 / comm.size if weight is None else float(weight)
        self._sharded: ShardedStep | None = None
        self._grads = LayoutCache()
        self._params = LayoutCache()

    def broadcast(self, params: Any) -> Any:
        """Copy rank 0's parameters into every process's, in place: one broadcast per dtype buffer.

        Parameters
        ----------
        params : tree of arrays
            Flat parameters (:func:`anyoptim.flatten`).

        Returns
        -------
        tree of arrays
            ``params``, now rank 0's values.

        Raises
        ------
        ValueError
            If ``params`` is not flat.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ParallelOptimizer
        >>> opt = ParallelOptimizer(anyoptim.SGD(0.1), MPICommunicator())
        >>> opt.broadcast(anyoptim.flatten({"w": np.ones(2)}))
        {'w': array([1., 1.])}
        """
        for buffer in FlatLayout(params).buffers:
            self.comm.broadcast(buffer, 0)
        return params

    def init(self, params: Any) -> Any:
        """Broadcast rank 0's ``params`` and create the state (this process's shard when sharding).

        Parameters
        ----------
        params : tree of arrays
            Flat parameters, updated in place to rank 0's.

        Returns
        -------
        OptimizerState or ShardedState
            The optimizer's state, or this process's part of it.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ParallelOptimizer
        >>> ParallelOptimizer(anyoptim.SGD(0.1), MPICommunicator()).init(anyoptim.flatten({"w": np.ones(2)})).count
        0
        """
        self.broadcast(params)
        if self.shard_state:
            self._sharded = ShardedStep(self.optimizer, self.comm, params)
            return self._sharded.init()
        return self.optimizer.init(params)

    def _sharded_for(self, params: Any) -> ShardedStep:
        sharded = self._sharded
        if sharded is None or self._params.of(params).buffers[0] is not sharded.layout.buffers[0]:
            sharded = self._sharded = ShardedStep(self.optimizer, self.comm, params)
        return sharded

    def step(self, params: Any, grads: Any, state: Any) -> tuple[Any, Any]:
        """Sum the processes' weighted gradients and take the optimizer's step on every process.

        Parameters
        ----------
        params : tree of arrays
            Flat parameters, equal on every process.
        grads : tree of arrays
            This process's gradient, flat like ``params`` (overwritten).
        state : OptimizerState or ShardedState
            What :meth:`init` or the last step returned (a whole
            :class:`~anyoptim.OptimizerState` is split into shards when sharding).

        Returns
        -------
        params : tree of arrays
            The updated parameters, equal on every process.
        state : OptimizerState or ShardedState
            The new state.

        Raises
        ------
        ValueError
            If ``params`` or ``grads`` is not flat; anything the optimizer's step raises.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ParallelOptimizer
        >>> opt, params = ParallelOptimizer(anyoptim.SGD(1.0), MPICommunicator()), anyoptim.flatten({"w": np.ones(1)})
        >>> opt.step(params, anyoptim.flatten({"w": np.array([0.5])}), opt.init(params))[0]
        {'w': array([0.5])}
        """
        layout = self._grads.of(grads)
        if self.shard_state:
            if self.weight != 1.0:
                for buffer in layout.buffers:
                    buffer *= self.weight
            return self._sharded_for(params).step(params, grads, state)
        sum_buffers(self.comm, layout.buffers, self.weight)
        return self.optimizer.step(params, grads, state)

    def gather_state(self, state: Any, params: Any) -> OptimizerState:
        """Get the whole optimizer state, as a one-process run holds it (all-gathered when sharded).

        Parameters
        ----------
        state : OptimizerState or ShardedState
            This process's state.
        params : tree of arrays
            The parameters it belongs to.

        Returns
        -------
        OptimizerState
            The whole state on every process: what :mod:`anyoptim.checkpoint` saves.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ParallelOptimizer
        >>> opt, params = ParallelOptimizer(anyoptim.Adam(), MPICommunicator(), shard_state=True), {"w": np.zeros(2)}
        >>> params = anyoptim.flatten(params)
        >>> opt.gather_state(opt.init(params), params).slots["m"]
        {'w': array([0., 0.])}
        """
        if isinstance(state, ShardedState):
            return self._sharded_for(params).gather(state, params)
        return state


class FitTeam:
    """What :func:`anyoptim.fit` asks of the processes training together (the team of :mod:`anyoptim.nn.parallel`).

    Each process takes rows ``[r * n // N, (r + 1) * n // N)`` of every global
    batch of ``n`` rows, so the batches are a one-process run's; its gradient and
    loss are weighted by its share of the rows (the sum over processes is the
    batch mean, also when ``n`` does not divide by N); a process without rows
    contributes zeros and still takes part in every collective.

    Parameters
    ----------
    parallel : ParallelOptimizer
        The steps, made with ``weight=1`` (the team weights the gradients).

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.distributed import DataParallel, MPICommunicator
    >>> team = DataParallel(MPICommunicator()).data_parallel(anyoptim.Adam())
    >>> team.rank, team.total(1.5)
    (0, 1.5)
    """

    def __init__(self, parallel: ParallelOptimizer):
        self.parallel = parallel
        self.optimizer = parallel
        self.rank, self.size = parallel.comm.rank, parallel.comm.size
        self._grads = LayoutCache()
        self._params: Any = None

    def value_and_grad(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``function`` to compute this process's weighted share of a global batch's loss and gradient.

        Parameters
        ----------
        function : callable
            ``function(xp, params, X, targets, out=grads) -> (loss, grads)``, the mean over ``X``'s rows.

        Returns
        -------
        callable
            The same signature, given the whole global batch.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> callable(DataParallel(MPICommunicator()).data_parallel(anyoptim.SGD(0.1)).value_and_grad(print))
        True
        """
        rank, size = self.rank, self.size

        def share(xp: Any, params: Any, X: Any, targets: Any, out: Any = None) -> tuple[Any, Any]:
            rows = X.shape[0]
            start, stop = rank * rows // size, (rank + 1) * rows // size
            if start == stop:
                for buffer in self._grads.of(out).buffers:
                    buffer[...] = 0
                return xp.zeros((), dtype=X.dtype, device=X.device), out
            loss, grads = function(xp, params, X[start:stop, ...], targets[start:stop, ...], out=out)
            if stop - start != rows:
                weight = (stop - start) / rows
                for buffer in self._grads.of(grads).buffers:
                    buffer *= weight
                loss = loss * weight
            return loss, grads

        return share

    def broadcast(self, params: Any, run: Any = None) -> Any:
        """Rank 0's parameters on every process (in place; see :meth:`ParallelOptimizer.broadcast`).

        Parameters
        ----------
        params : tree of arrays
            Flat NumPy or CuPy parameters.
        run : mapping of str to int, optional
            What every process must agree on, checked first (:func:`~.agreement.check_same_run`).

        Returns
        -------
        tree of arrays
            ``params``.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> team = DataParallel(MPICommunicator()).data_parallel(anyoptim.SGD(0.1))
        >>> team.broadcast(anyoptim.flatten({"w": np.ones(1)}))
        {'w': array([1.])}
        """
        if run is not None and self.size > 1:
            check_same_run(self.parallel.comm, params, run)
        self._params = self.parallel.broadcast(params)
        return params

    def _reduce(self, value: float, op: str) -> float:
        if self._params is None:
            raise RuntimeError("broadcast(params) comes first: it fixes the array library of the reductions")
        return reduce_numbers(self.parallel.comm, self._params, [value], op)[0]

    def total(self, value: Any) -> float:
        """Sum ``value`` over the processes (an epoch's weighted losses): one all-reduce.

        Parameters
        ----------
        value : float or 0-D array
            This process's part.

        Returns
        -------
        float
            The sum, the same on every process.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> team = DataParallel(MPICommunicator()).data_parallel(anyoptim.SGD(0.1))
        >>> params = team.broadcast(anyoptim.flatten({"w": np.ones(1)})); team.total(2.0)
        2.0
        """
        if self.size == 1:
            return float(value)
        return self._reduce(float(value), "sum")

    def agree(self, flag: bool) -> bool:
        """Whether any process says ``flag`` (a callback asking to stop): every process stops together.

        Parameters
        ----------
        flag : bool
            This process's answer.

        Returns
        -------
        bool
            True on every process when any said True.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> team = DataParallel(MPICommunicator()).data_parallel(anyoptim.SGD(0.1))
        >>> params = team.broadcast(anyoptim.flatten({"w": np.ones(1)})); team.agree(True)
        True
        """
        if self.size == 1:
            return bool(flag)
        return self._reduce(1.0 if flag else 0.0, "max") > 0

    def gathered(self, state: Any, wanted: bool = True) -> Any:
        """The whole optimizer state (:meth:`ParallelOptimizer.gather_state`), for callbacks and the result.

        Gathering a sharded state is a collective: every process takes part when
        any process wants it (callbacks on rank 0 only, a logger say, are fine).

        Parameters
        ----------
        state : OptimizerState or ShardedState
            This process's state.
        wanted : bool, default True
            Whether this process needs the whole state (fit: whether it has callbacks).

        Returns
        -------
        OptimizerState or ShardedState
            The state a one-process run would hold; ``state`` itself when no process wanted it.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> team = DataParallel(MPICommunicator()).data_parallel(anyoptim.SGD(0.1))
        >>> team.gathered(None) is None
        True
        """
        if not isinstance(state, ShardedState) or not (wanted if self.size == 1 else self.agree(wanted)):
            return state
        return self.parallel.gather_state(state, self._params)

    def failed(self, error: BaseException) -> None:
        """Print this process's error and end every process (``comm.abort``), so that none waits forever.

        One process alone, or an error that every process raised together (``error.every_process``), re-raises.

        Parameters
        ----------
        error : BaseException
            What this process raised.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> DataParallel(MPICommunicator()).data_parallel(anyoptim.SGD(0.1)).failed(ValueError("x"))  # one process
        """
        if self.size == 1 or getattr(error, "every_process", False):
            return
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        print(f"anyoptim: process {self.rank} of {self.size} failed; ending all:\n{''.join(lines)}", file=sys.stderr)
        self.parallel.comm.abort(1)


class DataParallel:
    """Data-parallel training over a communicator: the ``comm=`` of :func:`anyoptim.fit`.

    Parameters
    ----------
    comm : Communicator
        The processes (:class:`~anyoptim.distributed.MPICommunicator` or
        :class:`~anyoptim.distributed.NCCLCommunicator`).
    shard_state : bool, default False
        ZeRO stage 1: each process keeps only its shard of the optimizer state.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.distributed import DataParallel, MPICommunicator
    >>> X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    >>> model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
    >>> comm = DataParallel(MPICommunicator(), shard_state=True)
    >>> result = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=3, batch_size=20, progress=False, comm=comm)
    >>> [round(cost, 3) for cost in result.history.cost]
    [0.646, 0.508, 0.422]
    """

    def __init__(self, comm: Any, *, shard_state: bool = False):
        if not all(hasattr(comm, name) for name in ("rank", "size", "allreduce", "allgather", "reduce_scatter")):
            raise TypeError(f"comm must be an anyoptim.distributed communicator, got {type(comm).__name__}")
        if not isinstance(shard_state, bool):
            raise TypeError(f"shard_state must be True or False, got {shard_state!r}")
        self.comm = comm
        self.shard_state = shard_state
        self.rank = comm.rank
        self.size = comm.size

    def wrap(self, optimizer: Any) -> ParallelOptimizer:
        """Get ``optimizer`` run by every process on the mean of their gradients (:class:`ParallelOptimizer`).

        Parameters
        ----------
        optimizer : Optimizer
            The optimizer.

        Returns
        -------
        ParallelOptimizer
            With this object's communicator and ``shard_state``.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> DataParallel(MPICommunicator()).wrap(anyoptim.SGD(0.1)).weight
        1.0
        """
        return ParallelOptimizer(optimizer, self.comm, shard_state=self.shard_state)

    def data_parallel(self, optimizer: Any) -> FitTeam:
        """Get the team :func:`anyoptim.fit` trains with (see :mod:`anyoptim.nn.parallel`).

        Parameters
        ----------
        optimizer : Optimizer
            The optimizer.

        Returns
        -------
        FitTeam
            Its steps, batch shares and reductions.

        Examples
        --------
        >>> import anyoptim
        >>> from anyoptim.distributed import DataParallel, MPICommunicator
        >>> DataParallel(MPICommunicator()).data_parallel(anyoptim.SGD(0.1)).size
        1
        """
        return FitTeam(ParallelOptimizer(optimizer, self.comm, shard_state=self.shard_state, weight=1.0))
