"""The generic engine: one program call per leaf, on the arrays' own namespace.

Correct on every Array API library, immutable ones (JAX) and the strict
reference implementation included; it allocates new arrays for every result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .precision import run_widened, widens
from .program import Program

__all__ = ["GenericEngine"]


class GenericEngine:
    """Apply a program leaf by leaf and return new arrays: an :class:`~anyoptim.engines.Engine`.

    The engine of every library without a fused one (JAX, array-api-strict)
    and of ``engine="generic"`` (except for torch tensors, which
    :class:`~anyoptim.engines.torch_bridge.TorchEngine` updates in place, outside
    autograd, for "auto", "fused" and "generic" alike; a ``GenericEngine`` object pinned for torch
    tensors returns new ones, recorded by autograd where they require grad):
    each optimizer step evaluates
    the rule on each leaf with the arrays' own namespace, so it runs wherever the
    Array API does, immutable arrays included, at the cost of a few temporaries
    per leaf and per operator.  A leaf of float16 or bfloat16 (or with state in
    a wider dtype) is computed in float32, each result rounded once into its
    array's dtype (:func:`~anyoptim.engines.precision.run_widened`).  Nothing is written in place: the given
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
    Pin an optimizer to it (``engine="generic"`` does the same, but on torch):

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
        """Make new state slots, one new array per leaf, as :meth:`anyoptim.engines.Engine.init_slots` says.

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
            Slot name -> one array per leaf, ``xp.full_like(leaf, fill)``.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines import GenericEngine
        >>> GenericEngine().init_slots(np, [np.zeros(2)], {"m": 0.0, "s": 0.1})
        {'m': [array([0., 0.])], 's': [array([0.1, 0.1])]}
        """
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
        """Run ``program`` once on every leaf, returning new arrays: :meth:`anyoptim.engines.Engine.apply`.

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
            The updated parameters, in leaf order.
        new_slots : dict of str to list of arrays
            The updated slots, with the keys of ``slots``, in leaf order.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines import GenericEngine
        >>> from anyoptim.engines.program import Program
        >>> def sgd(xp, p, g, slots, hp):
        ...     return p - hp["learning_rate"] * g, {}
        >>> params = [np.array([1.0, 2.0])]
        >>> new_params, _ = GenericEngine().apply(Program(sgd), np, params, [np.array([0.5, -1.0])], {},
        ...                                       [{"learning_rate": 0.1}])
        >>> new_params, params  # a new array; the given one is unchanged
        ([array([0.95, 2.1 ])], [array([1., 2.])])
        """
        new_params: list[Any] = []
        new_slots: dict[str, list[Any]] = {name: [] for name in slots}
        for index, (p, g) in enumerate(zip(params, grads, strict=False)):
            leaf_slots = {name: values[index] for name, values in slots.items()}
            if widens(xp, [p, g, *leaf_slots.values()]):  # float16, bfloat16: computed in float32
                new_p, updated = run_widened(program, xp, p, g, leaf_slots, hps[index])
            else:
                new_p, updated = program(xp, p, g, leaf_slots, hps[index])
            if p.ndim == 0:
                # NumPy turns 0-D results into scalars (np.float64); keep them arrays.
                new_p = xp.asarray(new_p, dtype=p.dtype)
                updated = {name: xp.asarray(value, dtype=leaf_slots[name].dtype) for name, value in updated.items()}
            new_params.append(new_p)
            for name in slots:
                new_slots[name].append(updated[name])
        return new_params, new_slots
