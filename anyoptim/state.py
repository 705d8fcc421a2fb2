"""The state an optimizer carries from one step to the next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tree import TreeDef

__all__ = ["OptimizerState"]


@dataclass(frozen=True)
class OptimizerState:
    """What an optimizer carries from one step to the next.

    Attributes
    ----------
    count : int
        Optimizer steps taken (skipped steps not included).
    learning_rate : float
        The learning rate the last step used (the first step's rate before any step).
    slots : dict
        One tree per state slot, shaped like the parameters (``slots["m"]["W1"]``).
    skipped : int
        Steps skipped by ``on_nonfinite="skip"``.
    structure : TreeDef
        The parameters' tree structure, to check every later call against.
    """

    count: int
    learning_rate: float
    slots: dict[str, Any]
    skipped: int = 0
    structure: TreeDef | None = field(default=None, repr=False)
