"""The scalar table of a captured step: where its kernels read their host scalars while a graph is recorded.

A CUDA graph fixes its kernels' arguments at capture, so a captured step's
kernels read their scalars (learning rate, bias corrections) from one float64
device table, which the host refills before each replay.  While
:func:`scalars_on_device` is active in a context (a thread), every step the CuPy
engine prepares there reads its scalars from that :class:`ScalarPlan`'s table;
the engine object itself keeps no such state.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

try:
    import cupy
except ImportError:  # pragma: no cover - the module stays importable (docs, CPU tests of its logic)
    cupy = None

from ..trace import Trace

__all__ = ["ScalarPlan", "active_scalar_plan", "scalars_on_device"]


class ScalarPlan:
    """Where each kernel of a captured step reads its host scalars: slices of one float64 device table.

    While warming up, every launch is recorded (trace, leaf, offset) and gets a
    table of its own; once frozen, launches must come in the same order and
    read their slice of the shared table, which the host refills before each
    replay with :meth:`fill`.

    Parameters
    ----------
    leaf_index : mapping of int to int
        ``id(leaf) -> position`` of each parameter leaf of the captured step in
        the optimizer's leaf list (the position of its scalars in ``hps``).
    """

    def __init__(self, leaf_index: Mapping[int, int]):
        self.leaf_index = dict(leaf_index)  # id(parameter leaf) -> its index in the optimizer's leaf list
        # (trace, its scalar folder, leaf index, offset, count) per launch, in launch order
        self.entries: list[tuple[Trace, Callable[..., list[Any]], int, int, int]] = []
        self.size = 0
        self.table: Any = None
        self._cursor = 0

    def table_for(self, trace: Trace, fold: Callable[..., list[Any]], first_param: Any, values: Sequence[float]) -> Any:
        """The device table a launch of ``trace`` on the run starting at ``first_param`` reads its scalars from.

        While warming up, a table of its own holding ``values``; once frozen,
        its slice of the shared table.

        Raises
        ------
        ValueError
            If ``first_param`` is not one of the captured step's parameters.
        RuntimeError
            If the launches after :meth:`freeze` differ from those before it.
        """
        index = self.leaf_index.get(id(first_param))
        if index is None:
            raise ValueError("a captured step updated an array that is not one of the parameters it was given")
        if self.table is None:
            self.entries.append((trace, fold, index, self.size, len(values)))
            self.size += len(values)
            return cupy.asarray(np.asarray(values, dtype=np.float64))
        entry = self.entries[self._cursor] if self._cursor < len(self.entries) else None
        if entry is None or entry[0] is not trace or entry[2] != index:
            raise RuntimeError("the step launched other kernels while captured than while warming up")
        _, _, _, offset, count = entry
        self._cursor += 1
        return self.table[offset : offset + count]

    def freeze(self) -> None:
        """End the warm-up: allocate the shared float64 table (:attr:`size` entries, at least one)."""
        self.table = cupy.zeros((max(self.size, 1),), dtype=np.float64)
        self._cursor = 0

    def fill(self, row: np.ndarray, hps: Sequence[Mapping[str, Any]]) -> None:
        """Write every launch's host scalars for a step's ``hps`` into ``row`` (a float64 host row of the table)."""
        for _, fold, index, offset, count in self.entries:
            row[offset : offset + count] = fold(hps[index])


_ACTIVE_PLAN: contextvars.ContextVar[ScalarPlan | None] = contextvars.ContextVar("anyoptim_scalar_plan", default=None)


def active_scalar_plan() -> ScalarPlan | None:
    """The plan of the step being captured in this context, or None (kernels then take their scalars by value)."""
    return _ACTIVE_PLAN.get()


@contextlib.contextmanager
def scalars_on_device(plan: ScalarPlan) -> Iterator[None]:
    """While active, kernels prepared in this context read their scalars from ``plan``'s device table.

    Raises
    ------
    RuntimeError
        If a step is already being captured in this context.
    """
    if _ACTIVE_PLAN.get() is not None:
        raise RuntimeError("a step is already being captured")
    token = _ACTIVE_PLAN.set(plan)
    try:
        yield
    finally:
        _ACTIVE_PLAN.reset(token)
