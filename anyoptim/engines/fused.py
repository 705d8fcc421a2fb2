"""What the fused engines (NumPy, CuPy) share: flat state, and a one-off step as a prepared step run once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .program import Program
from .spans import flat_slots

__all__ = ["FusedEngine"]


class FusedEngine:
    """Base of the engines that bind a traced program to flat spans of these very arrays.

    A :class:`~anyoptim.engines.PreparingEngine`: a subclass implements
    :meth:`prepare`, which returns a :class:`~anyoptim.engines.PreparedRun`.
    State slots are laid out like the parameters
    (:func:`~anyoptim.engines.spans.flat_slots`), so a flattened model and its
    state form one span.
    """

    def init_slots(self, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
        """Slots as views of one flat buffer per slot and dtype: see :meth:`anyoptim.engines.Engine.init_slots`."""
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
        """See :meth:`anyoptim.engines.PreparingEngine.prepare`."""
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
        """See :meth:`anyoptim.engines.Engine.apply`: ``prepare(...)(hps)``, fused leaves updated in place."""
        return self.prepare(program, xp, params, grads, slots, hps)(hps)
