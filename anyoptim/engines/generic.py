"""The generic engine: one program call per leaf, on the arrays' own namespace.

Correct on every Array API library, immutable ones (JAX) and the strict
reference implementation included; it allocates new arrays for every result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .program import Program

__all__ = ["GenericEngine"]


class GenericEngine:
    """Apply a program leaf by leaf and return new arrays: an :class:`~anyoptim.engines.Engine`.

    The engine of every library without a fused one (torch, JAX,
    array-api-strict) and of ``engine="generic"``: each optimizer step evaluates
    the rule on each leaf with the arrays' own namespace, so it runs wherever the
    Array API does, immutable arrays included, at the cost of a few temporaries
    per leaf and per operator.  Nothing is written in place: the given
    parameters and slots stay as they were.  It holds no state; one instance
    serves every optimizer.

    Attributes
    ----------
    name : str
        ``"generic"``: it runs the arrays of any library.

    See Also
    --------
    anyoptim.engines.numpy.NumpyEngine : The fused, in-place engine of NumPy.
    anyoptim.engines.cupy.CupyEngine : The fused, in-place engine of CuPy.

    Examples
    --------
    Pin an optimizer to it (``engine="generic"`` does the same):

    >>> import numpy as np, anyoptim
    >>> from anyoptim.engines import GenericEngine
    >>> opt = anyoptim.Adam(0.1, engine=GenericEngine())
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> new_params, state = opt.step(params, {"w": np.array([0.5, -1.0])}, state)
    >>> new_params["w"], params["w"]
    (array([ 0.9, -1.9]), array([ 1., -2.]))
    """

    name = "generic"

    def init_slots(self, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
        """New state slots, one new array per leaf: see :meth:`anyoptim.engines.Engine.init_slots`."""
        return {slot: [xp.full_like(leaf, fill) for leaf in leaves] for slot, fill in fills.items()}

    def apply(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """See :meth:`anyoptim.engines.Engine.apply`; every result is a new array (nothing is written in place)."""
        new_params: list[Any] = []
        new_slots: dict[str, list[Any]] = {name: [] for name in slots}
        for index, (p, g) in enumerate(zip(params, grads, strict=False)):
            leaf_slots = {name: values[index] for name, values in slots.items()}
            new_p, updated = program(xp, p, g, leaf_slots, hps[index])
            if p.ndim == 0:
                # NumPy turns 0-D results into scalars (np.float64); keep them arrays.
                new_p = xp.asarray(new_p, dtype=p.dtype)
                updated = {name: xp.asarray(value, dtype=p.dtype) for name, value in updated.items()}
            new_params.append(new_p)
            for name in slots:
                new_slots[name].append(updated[name])
        return new_params, new_slots
