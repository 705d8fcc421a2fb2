"""Master weights: the state of ``master_weights=True``, a float32 copy of each parameter and float32 slots.

Every engine computes the step of a float16 or bfloat16 parameter in float32
and rounds each result once on store (:mod:`anyoptim.engines.precision`).  That
keeps zero, tiny and huge gradients from giving NaN, but a bfloat16 parameter
still cannot move by less than half its spacing: ``1.0 - 1e-4`` rounds back to
``1.0``, so small steps are lost.  With ``master_weights=True`` the state holds
the parameter itself in float32, in the slot ``"master"``; each step updates the
master and stores it, rounded, into the parameter, so small updates accumulate.
The other slots of a narrow parameter are float32 as well.

The slot exists for every leaf, so that a state is one tree per slot: a float32
or float64 parameter's master is a copy in its own dtype (the step writes the
same value to both).  Memory per parameter element, Adam (two moments):

=========================  ===========================  ==============================
parameter                  ``master_weights=False``      ``master_weights=True``
=========================  ===========================  ==============================
bfloat16 / float16         2 + 2 + 2 = 6 bytes           2 + 4 + 4 + 4 = 14 bytes
float32                    4 + 4 + 4 = 12 bytes          4 + 4 + 4 + 4 = 16 bytes
=========================  ===========================  ==============================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._namespace import is_mutable
from ..engines.memory import untracked
from ..engines.precision import MASTER, compute_dtype

__all__ = ["MASTER", "init_slots", "state_slot_fills"]


def state_slot_fills(rule_fills: Mapping[str, float], master_weights: bool) -> dict[str, float | None]:
    """The state's slots and their fills: the rule's, then ``"master"`` (fill None: the parameter) if asked.

    Parameters
    ----------
    rule_fills : mapping of str to float
        The rule's slots and the value each starts at.
    master_weights : bool
        The optimizer's setting.

    Returns
    -------
    dict of str to float or None
        Slot name -> initial value; None for the master copy, which starts as the parameter.

    Raises
    ------
    ValueError
        If the rule has a slot named ``"master"`` of its own and master weights are asked for.

    Examples
    --------
    >>> from anyoptim.optimizers.precision import state_slot_fills
    >>> state_slot_fills({"m": 0.0, "v": 0.0}, True)
    {'m': 0.0, 'v': 0.0, 'master': None}
    """
    if not master_weights:
        return dict(rule_fills)
    if MASTER in rule_fills:
        raise ValueError(f"master_weights=True needs the slot name {MASTER!r}, which the rule uses for its own slot")
    return {**rule_fills, MASTER: None}


def init_slots(engine: Any, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float | None]) -> dict[str, list[Any]]:
    """Make the state slots of ``leaves`` on ``engine``: in each leaf's dtype, or float32 with master weights.

    Parameters
    ----------
    engine : Engine
        The engine the optimizer runs on (its ``init_slots`` lays the slots out).
    xp : namespace
        The leaves' Array API namespace.
    leaves : sequence of arrays
        The parameters.
    fills : mapping of str to float or None
        :func:`state_slot_fills`: with ``"master"`` (fill None) in it, every
        slot of a float16 or bfloat16 leaf is float32 and the master slot
        holds a copy of each leaf in its compute dtype.

    Returns
    -------
    dict of str to list of arrays
        Slot name -> one array per leaf.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines import GenericEngine
    >>> from anyoptim.optimizers.precision import init_slots
    >>> slots = init_slots(GenericEngine(), np, [np.ones(2, np.float16)], {"m": 0.0, "master": None})
    >>> slots["m"][0].dtype, slots["master"][0]
    (dtype('float32'), array([1., 1.], dtype=float32))
    """
    if MASTER not in fills:
        return engine.init_slots(xp, leaves, fills)
    leaves = [untracked(leaf) for leaf in leaves]  # values only: a torch Parameter's copy records no graph
    templates = [xp.astype(leaf, compute_dtype(xp, [leaf.dtype])) for leaf in leaves]
    slots = engine.init_slots(xp, templates, {name: 0.0 if fill is None else fill for name, fill in fills.items()})
    if is_mutable(xp):
        for master, leaf in zip(slots[MASTER], leaves, strict=True):
            master[...] = leaf  # exact: into the same or a wider dtype, in the engine's layout
    else:
        slots[MASTER] = templates  # already new arrays of the leaves' values
    return slots
