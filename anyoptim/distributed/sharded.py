"""ZeRO stage 1: each process keeps the optimizer state of its shard of the flat buffers only.

Rajbhandari et al. (2020), "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", SC20, arXiv:1910.02054.  A step reduce-scatters the
gradients (each process receives the sum over processes of its shard), runs
the same optimizer with the same engine on the pieces of leaves inside its
shard, and all-gathers the parameters.  Gradient processing that needs the
whole gradient is decided by all processes together: the global norm for
clipping from every shard's partial sums, a non-finite step from every shard's
flag.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from .._namespace import array_namespace
from ..optimizers.settings import same_settings, settings_of
from ..optimizers.validation import check_state, state_owner
from ..state import OptimizerState
from ..transforms import clip_factor, first_nonfinite, mask_values
from ..tree import tree_flatten
from .layout import FlatLayout, LayoutCache

__all__ = ["ShardedState", "ShardedStep"]


@dataclass(frozen=True)
class ShardedState:
    """The optimizer state of one process in a sharded run: its shard's slots and the shared counters.

    Parameters
    ----------
    count : int
        Optimizer steps taken (the same on every process).
    learning_rate : float
        The rate of the last step.
    skipped : int
        Steps skipped by ``on_nonfinite="skip"`` (decided by all processes together).
    local : OptimizerState or None
        The state of this process's pieces of the parameters (1-D, in buffer
        order); None when its shard is empty.

    Examples
    --------
    >>> from anyoptim.distributed import ShardedState
    >>> ShardedState(count=0, learning_rate=0.1, skipped=0, local=None).count
    0
    """

    count: int
    learning_rate: float
    skipped: int
    local: OptimizerState | None


class ShardedStep:
    """The sharded step of one optimizer over one flat parameter tree, on one process.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer every process runs (copied: copied again when a setting is assigned).
    comm : Communicator
        The processes.
    params : tree of arrays
        Flat parameters (:func:`anyoptim.flatten`); the shard's pieces are views of them.

    Raises
    ------
    ValueError
        If ``params`` is not flat.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.distributed import MPICommunicator, ShardedStep
    >>> params = anyoptim.flatten({"w": np.array([1.0, 2.0])})
    >>> sharded = ShardedStep(anyoptim.SGD(0.5), MPICommunicator(), params)
    >>> state = sharded.init()
    >>> params, state = sharded.step(params, anyoptim.flatten({"w": np.array([1.0, 1.0])}), state)
    >>> params["w"], state.count
    (array([0.5, 1.5]), 1)
    """

    def __init__(self, optimizer: Any, comm: Any, params: Any):
        self.optimizer = optimizer
        self.comm = comm
        self.layout = FlatLayout(params)
        self.xp = array_namespace(self.layout.leaves[0])
        self.pieces = self.layout.pieces(comm.rank, comm.size)
        self.bounds = [shards[comm.rank] for shards in self.layout.shards(comm.size)]
        self.treedef = tree_flatten(params)[2]
        self.local = self._local_optimizer()
        self.param_pieces = [self.layout.buffers[i][start:stop] for i, start, stop, _ in self.pieces]
        self.grad_shards = [
            self.xp.empty((stop - start,), dtype=buffer.dtype, device=buffer.device)
            for buffer, (start, stop) in zip(self.layout.buffers, self.bounds, strict=True)
        ]
        self.grad_pieces = [
            self.grad_shards[i][start - self.bounds[i][0] : stop - self.bounds[i][0]]
            for i, start, stop, _ in self.pieces
        ]
        self._grads = LayoutCache()

    def _local_optimizer(self) -> Any:
        """A copy of the optimizer for the shard's 1-D pieces: the whole-tree decisions are taken here, or by all."""
        optimizer, layout = self.optimizer, self.layout
        self._settings = settings_of(optimizer)
        decayed = [False] * len(layout.leaves)
        if optimizer.weight_decay:
            decayed = mask_values(optimizer.weight_decay_mask, layout.names, layout.leaves, self.treedef)
        local = copy.copy(optimizer)
        local.weight_decay_mask = [decayed[segment.leaf] for *_, segment in self.pieces]
        local.clip_global_norm = None
        local.on_nonfinite = "ignore"
        return local

    def init(self) -> ShardedState:
        """Create the state of a new run: this shard's slots, count 0.

        Returns
        -------
        ShardedState
            Count 0, the first step's rate, the shard's slots.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ShardedStep
        >>> params = anyoptim.flatten({"w": np.zeros(3)})
        >>> ShardedStep(anyoptim.Adam(), MPICommunicator(), params).init().local.slots["m"]
        [array([0., 0., 0.])]
        """
        local = self.local.init(self.param_pieces) if self.pieces else None
        return ShardedState(0, self.optimizer.learning_rate_at(0), 0, local)

    def scatter(self, state: OptimizerState) -> ShardedState:
        """Take this process's part of a whole state (a one-process run's, or a checkpoint's).

        Parameters
        ----------
        state : OptimizerState
            A state of ``optimizer`` for the whole parameter tree.

        Returns
        -------
        ShardedState
            Its counters, and the slots of this shard (copied).

        Raises
        ------
        ValueError, TypeError
            If ``state`` does not fit the parameters or the optimizer (as ``optimizer.step`` would say).

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ShardedStep
        >>> params, opt = anyoptim.flatten({"w": np.zeros(2)}), anyoptim.Adam()
        >>> ShardedStep(opt, MPICommunicator(), params).scatter(opt.init(params)).count
        0
        """
        names, leaves = self.layout.names, self.layout.leaves
        slot_names = tuple(self.optimizer.slot_fills())
        given = check_state(state_owner(type(self.optimizer)), slot_names, names, leaves, self.treedef, state)
        fresh = self.init()
        if fresh.local is not None:
            for slot, pieces in fresh.local.slots.items():
                for piece, (_, start, stop, segment) in zip(pieces, self.pieces, strict=True):
                    whole = self.xp.reshape(given[slot][segment.leaf], (-1,))
                    piece[...] = whole[start - segment.start : stop - segment.start]
            local = replace(fresh.local, count=state.count, learning_rate=state.learning_rate)
        else:
            local = None
        return ShardedState(state.count, state.learning_rate, state.skipped, local)

    def gather(self, state: ShardedState, params: Any) -> OptimizerState:
        """Get the whole state, as a one-process run holds it, on every process (one all-gather per slot and dtype).

        Parameters
        ----------
        state : ShardedState
            This process's state.
        params : tree of arrays
            The parameters (the whole state is laid out like them).

        Returns
        -------
        OptimizerState
            The same arrays a one-process run would hold, keyed by leaf names.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ShardedStep
        >>> params = anyoptim.flatten({"w": np.zeros(2)})
        >>> sharded = ShardedStep(anyoptim.Adam(), MPICommunicator(), params)
        >>> sharded.gather(sharded.init(), params).slots["v"]
        {'w': array([0., 0.])}
        """
        whole = self.optimizer.init(params)
        slots = {}
        for slot, tree in whole.slots.items():
            layout = FlatLayout(tree)
            if state.local is not None:
                for piece, (i, start, stop, _) in zip(state.local.slots[slot], self.pieces, strict=True):
                    layout.buffers[i][start:stop] = piece
            for buffer in layout.buffers:
                self.comm.allgather(buffer)
            slots[slot] = tree
        return replace(whole, count=state.count, learning_rate=state.learning_rate, skipped=state.skipped, slots=slots)

    def step(self, params: Any, grads: Any, state: Any) -> tuple[Any, ShardedState]:
        """Take one step: reduce-scatter ``grads``, update this shard, all-gather ``params``.

        Parameters
        ----------
        params : tree of arrays
            The flat parameters this step was made for (updated in place).
        grads : tree of arrays
            This process's part of the gradient, flat; the sum over processes is the step's gradient.
        state : ShardedState or OptimizerState
            This process's state (a whole state is scattered first).

        Returns
        -------
        params : tree of arrays
            ``params``, updated in place on every process.
        state : ShardedState
            The new state.

        Raises
        ------
        FloatingPointError
            Under ``on_nonfinite="raise"``, on every process, naming the first leaf
            whose summed gradient holds NaN or infinity.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> from anyoptim.distributed import MPICommunicator, ShardedStep
        >>> params = anyoptim.flatten({"w": np.array([1.0])})
        >>> sharded = ShardedStep(anyoptim.SGD(1.0), MPICommunicator(), params)
        >>> sharded.step(params, anyoptim.flatten({"w": np.array([0.25])}), sharded.init())[0]
        {'w': array([0.75])}
        """
        if not same_settings(self._settings, settings_of(self.optimizer)):  # assigned since (a lower rate, say)
            self.local = self._local_optimizer()
        if isinstance(state, OptimizerState):
            state = self.scatter(state)
        for buffer, shard in zip(self._grad_layout(grads).buffers, self.grad_shards, strict=True):
            self.comm.reduce_scatter(buffer, shard)
        if self.optimizer.on_nonfinite != "ignore":
            bad = self._first_nonfinite_leaf()
            if bad is not None:
                if self.optimizer.on_nonfinite == "raise":
                    name = self.layout.names[bad]
                    raise FloatingPointError(f"grads[{name!r}] holds NaN or infinity (on_nonfinite='raise')")
                return params, replace(state, skipped=state.skipped + 1)
        if self.optimizer.clip_global_norm is not None:
            factor = self._clip_factor()
            for shard in self.grad_shards:
                shard *= self.xp.astype(factor, shard.dtype)
        local = state.local
        if local is not None:
            new, local = self.local.step(self.param_pieces, self.grad_pieces, local)
            for piece, value in zip(self.param_pieces, new, strict=True):
                if value is not piece:
                    piece[...] = value
        for buffer in self.layout.buffers:
            self.comm.allgather(buffer)
        rate = self.optimizer.learning_rate_at(state.count)
        return params, ShardedState(state.count + 1, rate, state.skipped, local)

    def _grad_layout(self, grads: Any) -> FlatLayout:
        layout = self._grads.of(grads)
        if [b.shape for b in layout.buffers] != [b.shape for b in self.layout.buffers] or len(layout.leaves) != len(
            self.layout.leaves
        ):
            raise ValueError("grads are not laid out like params: flatten them the same way")
        return layout

    def _first_nonfinite_leaf(self) -> int | None:
        """The index of the first leaf whose summed gradient is not finite on any process, or None."""
        count = len(self.layout.names)
        bad = first_nonfinite(self.xp, [str(i) for i in range(len(self.grad_pieces))], self.grad_pieces)
        first = count if bad is None else self.pieces[int(bad)][3].leaf
        flag = self.xp.asarray([float(first)], dtype=self.xp.float64, device=self.grad_shards[0].device)
        self.comm.allreduce(flag, op="min")
        found = int(flag[0])
        return None if found >= count else found

    def _clip_factor(self) -> Any:
        """Global-norm clipping's factor from every shard: the largest magnitude, then the scaled sum of squares."""
        xp = self.xp
        wide = xp.result_type(xp.float32, *(shard.dtype for shard in self.grad_shards))
        device = self.grad_shards[0].device
        parts = xp.zeros((1,), dtype=wide, device=device)
        for shard in self.grad_shards:
            if shard.shape[0]:
                parts = xp.maximum(parts, xp.astype(xp.max(xp.abs(shard)), wide))
        self.comm.allreduce(parts, op="max")
        largest = parts[0]
        scale = xp.where(largest > 0, largest, xp.ones_like(largest))
        total = xp.zeros((1,), dtype=wide, device=device)
        for shard in self.grad_shards:
            if shard.shape[0]:
                scaled = xp.astype(shard, wide) / scale
                total = total + xp.vecdot(scaled, scaled)
        self.comm.allreduce(total)
        norm = xp.where(largest == xp.inf, largest, scale * xp.sqrt(total))
        # clip_factor of a one-element "gradient" whose norm is the global one: the rule of clipping, written once.
        return clip_factor(xp, [norm], self.optimizer.clip_global_norm)
