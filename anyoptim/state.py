"""The state an optimizer carries from one step to the next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tree import TreeDef

__all__ = ["OptimizerState"]


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
