"""Running a step's programs on an engine: every program prepared before any of them runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .program import Program

__all__ = ["run_programs"]


def run_programs(
    engine: Any,
    xp: Any,
    groups: Sequence[tuple[Program, Sequence[int]]],
    params: Sequence[Any],
    grads: Sequence[Any],
    slots: Mapping[str, Sequence[Any]],
    hps: Sequence[Mapping[str, Any]],
) -> tuple[list[Any], dict[str, list[Any]], list[tuple[Any, Sequence[int]]] | None]:
    """Run each group of leaves with its program on ``engine``, and gather the results in leaf order.

    Every program is prepared (and may raise) before any of them runs, so a
    failure leaves every array as it was.

    Parameters
    ----------
    engine : Engine
        The engine (:class:`anyoptim.engines.Engine`); one with ``prepare``
        binds each program to its leaves first.
    xp : namespace
        The arrays' Array API namespace.
    groups : sequence of (Program, sequence of int)
        Each program with the indices of the leaves it runs on; every leaf in
        exactly one group.
    params, grads : sequence of arrays
        One array per leaf.
    slots : mapping of str to sequence of arrays
        Each state slot's arrays, one per leaf.
    hps : sequence of mapping
        Each leaf's scalars for this step.

    Returns
    -------
    new_params : list of arrays
        One per leaf (the same arrays where the engine updated them in place).
    new_slots : dict of str to list of arrays
        Each slot's new arrays, one per leaf.
    runs : list of (prepared run, indices) or None
        What ``engine.prepare`` returned for each group, for a later step on
        the same arrays; None for an engine without ``prepare``, or when it
        returned None for some group.

    Examples
    --------
    Plain gradient descent on one leaf, with decay on the other:

    >>> import numpy as np
    >>> from anyoptim.engines import GenericEngine, run_programs
    >>> from anyoptim.engines.program import Program
    >>> def sgd(xp, p, g, slots, hp):
    ...     return p - hp["learning_rate"] * g, {}
    >>> groups = [(Program(sgd), [0]), (Program(sgd, decoupled_decay=True), [1])]
    >>> params, grads = [np.array([1.0]), np.array([1.0])], [np.array([0.5]), np.array([0.5])]
    >>> hps = [{"learning_rate": 0.1}, {"learning_rate": 0.1, "decay": 0.01}]
    >>> new_params, new_slots, runs = run_programs(GenericEngine(), np, groups, params, grads, {}, hps)
    >>> new_params, runs
    ([array([0.95]), array([0.94])], None)
    """
    prepare = getattr(engine, "prepare", None)
    new_params = list(params)
    new_slots = {slot: list(values) for slot, values in slots.items()}
    work = []
    for program, indices in groups:
        arguments = (
            program,
            xp,
            [params[i] for i in indices],
            [grads[i] for i in indices],
            {slot: [values[i] for i in indices] for slot, values in slots.items()},
            [hps[i] for i in indices],
        )
        work.append((None if prepare is None else prepare(*arguments), arguments, indices))
    for run, arguments, indices in work:
        updated_p, updated_slots = engine.apply(*arguments) if run is None else run(arguments[-1])
        for position, i in enumerate(indices):
            new_params[i] = updated_p[position]
            for slot in new_slots:
                new_slots[slot][i] = updated_slots[slot][position]
    if prepare is None or any(run is None for run, _, _ in work):
        return new_params, new_slots, None  # a later step can reuse the runs only if every group has one
    return new_params, new_slots, [(run, indices) for run, _, indices in work]
