"""The promise of the public API, as one Hypothesis property (hardening issue).

Drawn: an optimizer of the table (tests/cases.py) with drawn hyperparameters and
options (clipping, weight decay, ``on_nonfinite``), sometimes a bad setting; a
tree of parameters of drawn names, shapes and dtypes; gradients; a state after
zero to two good steps; then at most one flaw (in a setting, a leaf, a gradient,
the state's count, slots or maker, or an alias between arrays).  The step then
either raises a ``ValueError``/``TypeError`` whose message names the problem,
with every parameter and state byte unchanged, or gives the generic engine's
step (within the tolerance of two paths on one backend).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import anyoptim
from tests.cases import CASES

NAMES = st.text("abcdefgh", min_size=1, max_size=3)
SHAPES = st.sampled_from([(), (1,), (3,), (2, 3), (4, 1), (0,), (5,)])
DTYPES = st.sampled_from([np.float32, np.float64])

#: A flaw and the words its error must contain (``{leaf}``: the flawed leaf's name).
FLAWS = {
    "none": None,
    "setting-learning-rate": "learning_rate",
    "setting-flag": "must be True or False",
    "grads-shape": "{leaf}",
    "grads-dtype": "{leaf}",
    "grads-missing": "structure",
    "params-integer": "{leaf}",
    "count-negative": "state.count",
    "count-float": "state.count",
    "slot-shape": "{leaf}",
    "state-of-another-optimizer": "state was made by",
    "params-view": "views of one memory",
    "grads-alias": None,  # allowed: the answer is the one with copied gradients
}


@st.composite
def problems(draw: Any) -> dict[str, Any]:
    case = draw(st.sampled_from(CASES))
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    dtype = draw(DTYPES)
    shapes = [draw(SHAPES) for _ in names]
    options = {
        "clip_global_norm": draw(st.none() | st.floats(0.1, 10.0)),
        "weight_decay": draw(st.sampled_from([0.0, 0.01])),
        "on_nonfinite": draw(st.sampled_from(["ignore", "skip"])),
    }
    return {
        "case": case,
        "hyper": draw(case.hyper),
        "learning_rate": draw(st.floats(1e-4, 0.5)),
        "options": options,
        "names": names,
        "dtype": dtype,
        "shapes": shapes,
        "steps": draw(st.integers(0, 2)),
        "flaw": draw(st.sampled_from(sorted(FLAWS))),
        "flawed": draw(st.integers(0, len(names) - 1)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _snapshot(params: dict[str, Any], state: Any) -> list[bytes]:
    leaves = [*params.values(), *(leaf for tree in state.slots.values() for leaf in tree.values())]
    return [np.asarray(leaf).tobytes() for leaf in leaves] + [repr((state.count, state.skipped)).encode()]


def _copied(params: dict[str, Any], state: Any) -> tuple[dict[str, Any], Any]:
    slots = {slot: {name: value.copy() for name, value in tree.items()} for slot, tree in state.slots.items()}
    return {name: value.copy() for name, value in params.items()}, dataclasses.replace(state, slots=slots)


def _flawed_call(problem: dict[str, Any], optimizer, params, grads, state):
    """The call's arguments with the problem's flaw (or the optimizer to use), and its expected words."""
    flaw, names = problem["flaw"], problem["names"]
    leaf = names[problem["flawed"]]
    words = FLAWS[flaw]
    words = None if words is None else words.format(leaf=leaf)
    grads = dict(grads)
    if flaw == "setting-learning-rate":
        return (lambda: problem["case"].make(-1.0)), words
    if flaw == "setting-flag":
        return (lambda: anyoptim.Adam(0.1, amsgrad="False")), words
    if flaw == "grads-shape":
        grads[leaf] = np.ones((*params[leaf].shape, 2), params[leaf].dtype)
    elif flaw == "grads-dtype":
        grads[leaf] = grads[leaf].astype(np.float16)
    elif flaw == "grads-missing":
        grads = {**grads, "zzzz": np.ones(2, problem["dtype"])}
    elif flaw == "params-integer":
        params = {**params, leaf: np.ones(params[leaf].shape, np.int64)}
    elif flaw == "count-negative":
        state = dataclasses.replace(state, count=-1 - state.count)
    elif flaw == "count-float":
        state = dataclasses.replace(state, count=float(state.count))
    elif flaw == "slot-shape" and state.slots:
        slot = next(iter(state.slots))
        tree = {**state.slots[slot], leaf: np.zeros((*params[leaf].shape, 2), problem["dtype"])}
        state = dataclasses.replace(state, slots={**state.slots, slot: tree})
    elif flaw == "state-of-another-optimizer":
        state = dataclasses.replace(state, optimizer="SomeOtherOptimizer")
    elif flaw == "params-view" and params[leaf].size:
        params = {**params, "zzzz": params[leaf].reshape(-1)[:1]}
        grads = {**grads, "zzzz": np.ones(1, problem["dtype"])}
    elif flaw == "grads-alias":
        grads[leaf] = params[names[(problem["flawed"] + 1) % len(names)]]
        if grads[leaf].shape != params[leaf].shape:
            grads[leaf] = np.ones(params[leaf].shape, problem["dtype"])
    else:
        words = None
    return (lambda: optimizer.step(params, grads, state)), words, params, grads, state


@settings(max_examples=60)
@given(problem=problems())
def test_a_step_is_a_clear_error_changing_nothing_or_the_generic_engines_step(problem: dict[str, Any]) -> None:
    note(f"{problem['case'].id} {problem['flaw']} {problem['names']} {problem['shapes']}")
    case, dtype = problem["case"], problem["dtype"]
    rng = np.random.default_rng(problem["seed"])

    def leaves() -> dict[str, Any]:
        return {
            name: rng.normal(size=shape).astype(dtype)
            for name, shape in zip(problem["names"], problem["shapes"], strict=True)
        }

    def make(engine: str):
        return case.optimizer(problem["learning_rate"], problem["hyper"], engine=engine, **problem["options"])

    optimizer = make("auto")
    params = leaves()
    state = optimizer.init(params)
    for _ in range(problem["steps"]):
        params, state = optimizer.step(params, leaves(), state)
    grads = leaves()
    built = _flawed_call(problem, optimizer, params, grads, state)
    if len(built) == 2:  # a bad setting: refused when it is made
        call, words = built
        with pytest.raises((ValueError, TypeError)) as raised:
            call()
        assert words in str(raised.value)
        return
    call, words, params, grads, state = built
    before = _snapshot(params, state)
    twin = make("generic")
    twin_params, twin_state = _copied(params, state)
    twin_grads = {name: np.array(value, copy=True) for name, value in grads.items()}
    try:
        new_params, new_state = call()
    except (ValueError, TypeError) as error:
        assert words is not None, f"an unexpected error: {error!r}"
        assert words in str(error), f"{words!r} not in {error}"
        assert _snapshot(params, state) == before, "a failed call changed params or state"
        return
    assert words is None, f"the flaw {problem['flaw']!r} was not refused"
    expected_params, expected_state = twin.step(twin_params, twin_grads, twin_state)
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    for name in expected_params:
        np.testing.assert_allclose(new_params[name], expected_params[name], rtol=rtol, atol=rtol)
    assert (new_state.count, new_state.skipped) == (expected_state.count, expected_state.skipped)
    for slot, tree in expected_state.slots.items():
        for name, value in tree.items():
            np.testing.assert_allclose(new_state.slots[slot][name], value, rtol=rtol, atol=rtol)
