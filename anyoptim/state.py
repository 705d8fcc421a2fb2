"""The state an optimizer carries from one step to the next, and its registration as a JAX pytree."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from .tree import TreeDef

__all__ = ["OptimizerState", "register_with_jax"]


@dataclass(frozen=True, init=False)
class OptimizerState:
    """What an optimizer carries from one step to the next.

    Immutable: a step returns a new state (whose slot arrays may be the old
    ones, updated in place on mutable libraries).  Optimizers make it
    (:meth:`Optimizer.init <anyoptim.Optimizer.init>`,
    :meth:`Optimizer.step <anyoptim.Optimizer.step>`); each parameter is kept
    as the attribute of the same name.

    Parameters
    ----------
    count : int
        Optimizer steps taken (skipped steps not included).
    learning_rate : float
        The learning rate the last step used (the first step's rate before any step).
    slots : dict of str to tree of arrays
        One tree per state slot, shaped like the parameters (``slots["m"]["W1"]``),
        each array of its parameter's shape, dtype and device.
    skipped : int, default 0
        Steps skipped by ``on_nonfinite="skip"``.
    structure : TreeDef, optional
        The parameters' tree structure, to check every later call against.
    optimizer : str, optional
        The class name of the optimizer that made the state: another optimizer
        refuses it (Adagrad's running sum is not RMSprop's average).  None (a
        state built by hand) is accepted by any optimizer whose slots it has.

    Notes
    -----
    A JAX pytree (registered as soon as JAX is loaded and a state is made; anyoptim never imports JAX itself), so
    ``jax.jit(opt.step)(params, grads, state)`` traces it: ``count``, ``learning_rate``, ``slots`` and ``skipped``
    are its children (the count and the rate become 0-D arrays under ``jax.jit``, see :mod:`anyoptim.count_math`),
    ``structure``, ``optimizer`` and the slots' names its static data.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Adam()
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> state.count, state.learning_rate, sorted(state.slots), state.slots["m"]["w"]
    (0, 0.001, ['m', 'v'], array([0., 0.]))
    >>> params, state = opt.step(params, {"w": np.array([0.5, 0.5])}, state)
    >>> state.count, state.skipped
    (1, 0)
    """

    count: int
    learning_rate: float
    slots: dict[str, Any]
    skipped: int = 0
    structure: TreeDef | None = field(default=None, repr=False)
    optimizer: str | None = field(default=None, repr=False)

    def __init__(
        self,
        count: int,
        learning_rate: float,
        slots: dict[str, Any],
        skipped: int = 0,
        structure: TreeDef | None = None,
        optimizer: str | None = None,
    ) -> None:
        # The dataclass's own __init__ of a frozen class sets each field with object.__setattr__;
        # storing them in the instance's dict is the same, at half the cost (every step makes a state).
        fields = self.__dict__
        fields["count"] = count
        fields["learning_rate"] = learning_rate
        fields["slots"] = slots
        fields["skipped"] = skipped
        fields["structure"] = structure
        fields["optimizer"] = optimizer
        if _JAX_PENDING and "jax" in sys.modules:
            register_with_jax()


_JAX_PENDING = True
_JAX_LOCK = threading.Lock()
_FIELDS = ("count", "learning_rate", "slots", "skipped")


def register_with_jax() -> None:
    """Register :class:`OptimizerState` as a JAX pytree, once (idempotent, thread-safe; imports JAX).

    Children: ``count``, ``learning_rate``, ``slots`` and ``skipped`` (traced by ``jax.jit``); static data: the
    slots' names in their order (JAX rebuilds a dict with sorted keys), ``structure`` and ``optimizer``.
    """
    global _JAX_PENDING
    with _JAX_LOCK:
        if not _JAX_PENDING:
            return
        from jax import tree_util

        def flatten_with_keys(state: OptimizerState) -> tuple[tuple, tuple]:
            children = tuple((tree_util.GetAttrKey(name), getattr(state, name)) for name in _FIELDS)
            return children, (tuple(state.slots), state.structure, state.optimizer)

        def flatten(state: OptimizerState) -> tuple[tuple, tuple]:
            return (state.count, state.learning_rate, state.slots, state.skipped), (
                tuple(state.slots),
                state.structure,
                state.optimizer,
            )

        def unflatten(static: tuple, children: Any) -> OptimizerState:
            slot_names, structure, optimizer = static
            count, learning_rate, slots, skipped = children
            if isinstance(slots, dict):
                slots = {name: slots[name] for name in slot_names}
            return OptimizerState(count, learning_rate, slots, skipped, structure, optimizer)

        tree_util.register_pytree_with_keys(OptimizerState, flatten_with_keys, unflatten, flatten)
        _JAX_PENDING = False


if "jax" in sys.modules:  # JAX came first: register now (without JAX loaded, the first state made after it does)
    register_with_jax()
