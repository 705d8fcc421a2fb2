"""What the fused engines (NumPy, CuPy) share: flat state, and a one-off step as a prepared step run once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .program import Program
from .spans import flat_slots

__all__ = ["FusedEngine"]


class FusedEngine:
    """Base of the engines that bind a traced program to flat spans of these very arrays.

    A subclass implements :meth:`prepare`, which returns a step object callable
    with each step's scalars (and, for the optimizer's fast path, its
    ``update(hps)`` and ``in_place``).  State slots are laid out like the
    parameters (:func:`~anyoptim.engines._spans.flat_slots`), so a flattened
    model and its state form one span.
    """

    def init_slots(self, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
        """State slots as views of one flat buffer per slot and dtype, laid out like ``leaves``."""
        return flat_slots(xp, leaves, fills)

    def prepare(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> Any:
        """Bind ``program`` to these very arrays; the result, called with each step's ``hps``, runs a step."""
        raise NotImplementedError

    def apply(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run ``program`` once over every leaf; fused leaves are updated in place and returned."""
        return self.prepare(program, xp, params, grads, slots, hps)(hps)
