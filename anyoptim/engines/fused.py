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
        """Make slots as views of one flat buffer per slot and dtype: :meth:`anyoptim.engines.Engine.init_slots`.

        Parameters
        ----------
        xp : namespace
            The Array API namespace of ``leaves``.
        leaves : sequence of arrays
            The parameters.
        fills : mapping of str to float
            Slot name -> the value its elements start at.

        Returns
        -------
        dict of str to list of arrays
            Slot name -> one array per leaf, shaped and typed like it: views,
            back to back in leaf order, of one buffer per slot and dtype.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.numpy import NumpyEngine
        >>> slots = NumpyEngine().init_slots(np, [np.zeros((2, 2)), np.zeros(3)], {"m": 0.5})
        >>> [m.shape for m in slots["m"]], slots["m"][0].base is slots["m"][1].base
        ([(2, 2), (3,)], True)
        """
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
        """Run ``program`` once on every leaf, in place where it can: ``prepare(...)(hps)``.

        See :meth:`anyoptim.engines.Engine.apply`.

        Parameters
        ----------
        program : Program
            The step to run (:class:`~anyoptim.engines.program.Program`).
        xp : namespace
            The arrays' Array API namespace.
        params, grads : sequence of arrays
            One parameter and its gradient per leaf (gradients are only read).
        slots : mapping of str to sequence of arrays
            Each slot's arrays, one per leaf, of its parameter's shape and dtype.
        hps : sequence of mapping of str to scalar
            Each leaf's scalars for this step.

        Returns
        -------
        new_params : list of arrays
            The updated parameters, in leaf order: the arrays given, for the leaves
            updated in place (C-contiguous, writeable).
        new_slots : dict of str to list of arrays
            The updated slots, with the keys of ``slots``, in leaf order.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.numpy import NumpyEngine
        >>> from anyoptim.engines.program import Program
        >>> def sgd(xp, p, g, slots, hp):
        ...     return p - hp["learning_rate"] * g, {}
        >>> params = [np.array([1.0, 2.0])]
        >>> new_params, _ = NumpyEngine().apply(Program(sgd), np, params, [np.array([0.5, -1.0])], {},
        ...                                     [{"learning_rate": 0.1}])
        >>> new_params[0] is params[0], params[0]  # written in place
        (True, array([0.95, 2.1 ]))
        """
        return self.prepare(program, xp, params, grads, slots, hps)(hps)
