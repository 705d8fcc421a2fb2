"""What GraphedStep does on the host, simulated on NumPy, shared by the CuPy engine's CPU tests.

:func:`warm_up_for_capture` runs the warm-up step in scalar-table mode and undoes
it, as ``GraphedStep`` does before a capture; the test then records the launches
its stand-in engine makes; :func:`check_replays` refills the frozen table from
the optimizer's own step scalars before each replay and compares the result
with the generic engine stepping the same gradients.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import anyoptim
import anyoptim.engines.cupy.scalar_table as scalar_table
from anyoptim.tree import tree_flatten
from tests.helpers import RTOL_SAME_BACKEND, load_namespace

XP = load_namespace("numpy")


@dataclass
class Capture:
    """A model after the undone warm-up: its arrays, the frozen scalar plan, and the run to compare with."""

    optimizer: Any
    reference: Any
    initial: dict[str, np.ndarray]
    gradients: list[dict[str, np.ndarray]]
    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    state: Any
    names: list[str]
    leaves: list[Any]
    treedef: Any
    plan: Any


def warm_up_for_capture(monkeypatch: Any, make: Callable[[str], Any], *, seed: int, extra: int) -> Capture:
    """Nine gradient steps' worth of data for a small flat model, warmed up and undone in scalar-table mode.

    ``make(engine)`` makes the optimizer; the test's stand-in engine must be the one ``engine="fused"`` selects.
    """
    monkeypatch.setattr(scalar_table, "cupy", types.SimpleNamespace(asarray=np.asarray, zeros=np.zeros))
    rng = np.random.default_rng(seed)
    initial = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2), "z": rng.normal(size=extra)}
    gradients = [{name: rng.normal(size=value.shape) for name, value in initial.items()} for _ in range(9)]
    optimizer, reference = make("fused"), make("generic")
    params = anyoptim.flatten({name: np.array(value, copy=True) for name, value in initial.items()})
    grads = anyoptim.flatten({name: np.array(value, copy=True) for name, value in gradients[0].items()})
    state = optimizer.init(params)
    names, leaves, treedef = tree_flatten(params)
    plan = scalar_table.ScalarPlan({id(leaf): i for i, leaf in enumerate(leaves)})
    arrays = [*leaves, *(leaf for tree in state.slots.values() for leaf in tree_flatten(tree)[1])]
    saved = [np.array(array, copy=True) for array in arrays]
    with scalar_table.scalars_on_device(plan):
        optimizer.step(params, grads, state)  # the warm-up, really computed ...
    for array, value in zip(arrays, saved, strict=True):
        array[...] = value  # ... and undone
    plan.freeze()
    return Capture(optimizer, reference, initial, gradients, params, grads, state, names, leaves, treedef, plan)


def check_replays(capture: Capture, replay: Callable[[], None]) -> None:
    """Replay the recorded launches once per gradient step, the table refilled first, and compare with generic."""
    host = capture.optimizer.host_scalars(capture.params)
    row = np.zeros(capture.plan.table.shape)
    reference = capture.reference
    copy = {name: np.array(value, copy=True) for name, value in capture.initial.items()}
    ref_params, ref_state = copy, reference.init(copy)
    for count, step_grads in enumerate(capture.gradients):
        for name, value in step_grads.items():
            capture.grads[name][...] = value
        hps, learning_rate = host(count)
        assert learning_rate == reference.learning_rate_at(count)
        capture.plan.fill(row, hps)
        capture.plan.table[...] = row  # the host-to-device copy before a replay
        replay()
        ref_params, ref_state = reference.step(ref_params, step_grads, ref_state)
    for name in capture.initial:
        _assert_same(capture.params[name], ref_params[name], name)
    for slot, tree in ref_state.slots.items():
        for name in tree:
            _assert_same(capture.state.slots[slot][name], tree[name], f"{slot}[{name}]")


def _assert_same(actual: Any, expected: Any, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=RTOL_SAME_BACKEND["float64"], atol=0, err_msg=what
    )
