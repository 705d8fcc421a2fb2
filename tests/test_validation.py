"""Bad input gets a clear error naming the parameter or leaf and the value, and changes nothing.

Hyperparameters are checked when an optimizer is built.  Trees, dtypes, shapes,
libraries, devices, state and schedule values are checked by ``init`` and ``step``
before any array is touched: after a failed call every parameter and state array is
bit-identical to a copy taken before it, on every backend (the NumPy engine updates
in place, so this is a real promise there), and the next good step proceeds as if
the failed call had never happened.  The bad leaf is always the *last* one in tree
order, so that a check made leaf by leaf while updating would be caught.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import anyoptim
from anyoptim.tree import tree_flatten
from tests.cases import CASES
from tests.helpers import from_numpy, load_namespace, to_numpy

# --------------------------------------------------------------------------- construction

# Per class: the classes in table order, and the union of their rows' beta and epsilon parameters.
CLASSES = list(dict.fromkeys(case.cls for case in CASES))
BETA_PARAMETERS = {
    cls: list(dict.fromkeys(p for case in CASES if case.cls is cls for p in case.betas)) for cls in CLASSES
}
EPSILON_PARAMETERS = {
    cls: list(dict.fromkeys(p for case in CASES if case.cls is cls for p in case.epsilons)) for cls in CLASSES
}


def _construction_cases():
    cases = []
    for cls in CLASSES:
        for value in (-0.1, -1e-300, math.nan, math.inf, -math.inf):
            cases.append(pytest.param(cls, "learning_rate", value, id=f"{cls.__name__}-learning_rate={value}"))
        for value in (-0.01, math.nan, math.inf):
            cases.append(pytest.param(cls, "weight_decay", value, id=f"{cls.__name__}-weight_decay={value}"))
        for name in BETA_PARAMETERS.get(cls, []):
            for value in (-0.1, 1.0, 1.5, math.nan, -math.inf):
                cases.append(pytest.param(cls, name, value, id=f"{cls.__name__}-{name}={value}"))
        for name in EPSILON_PARAMETERS.get(cls, []):
            for value in (-1e-8, math.nan, math.inf):
                cases.append(pytest.param(cls, name, value, id=f"{cls.__name__}-{name}={value}"))
        for name in ("clip_global_norm", "clip_value"):
            for value in (0.0, -1.0, math.nan, math.inf):
                cases.append(pytest.param(cls, name, value, id=f"{cls.__name__}-{name}={value}"))
    return cases


def _message_pattern(name: str, value: Any) -> str:
    return rf"{re.escape(name)}\b.*{re.escape(repr(value))}"


@pytest.mark.parametrize(("cls", "name", "value"), _construction_cases())
def test_bad_hyperparameters_raise_at_construction(cls, name, value):
    with pytest.raises(ValueError, match=_message_pattern(name, value)):
        cls(**{name: value})


@pytest.mark.parametrize(
    ("make", "name", "value"),
    [
        (lambda v: anyoptim.Momentum(0.1, form=v), "form", "nesterov"),
        (lambda v: anyoptim.Momentum(0.1, form=v), "form", "EMA"),
        (lambda v: anyoptim.Adam(on_nonfinite=v), "on_nonfinite", "warn"),
        (lambda v: anyoptim.SGD(on_nonfinite=v), "on_nonfinite", None),
        (lambda v: anyoptim.Adam(engine=v), "engine", "cuda"),
        (lambda v: anyoptim.Lion(engine=v), "engine", "numpy"),
        (lambda v: anyoptim.SGD(learning_rate=v), "learning_rate", "fast"),
        (lambda v: anyoptim.RAdam(threshold=v), "threshold", math.nan),
    ],
    ids=lambda v: str(v) if not callable(v) else "",
)
def test_unknown_choices_raise_at_construction(make, name, value):
    with pytest.raises(ValueError, match=_message_pattern(name, value)):
        make(value)


def test_radam_threshold_below_four_raises_at_construction():
    with pytest.raises(ValueError, match="threshold"):
        anyoptim.RAdam(threshold=1.0)


def test_malformed_weight_decay_mask_raises_at_construction():
    with pytest.raises(TypeError, match=r"keys must be strings.*1"):
        anyoptim.AdamW(weight_decay_mask={1: True})


# --------------------------------------------------------------------------- init and step: nothing changes

Tree = dict[str, Any]


def _params(xp, rng) -> Tree:
    return {
        "W1": from_numpy(xp, rng.normal(size=(3, 2))),
        "b1": from_numpy(xp, rng.normal(size=(2,))),
        "z": [{"W": from_numpy(xp, rng.normal(size=(2, 2)))}],
    }


def _snapshot(params: Any, state: Any) -> list[tuple[str, str, bytes]]:
    """Name, dtype and bytes of every params and state array."""
    items = []
    names, leaves, _ = tree_flatten(params)
    items += [
        (f"params[{n}]", str(to_numpy(x).dtype), to_numpy(x).tobytes()) for n, x in zip(names, leaves, strict=True)
    ]
    if isinstance(state, anyoptim.OptimizerState):
        for slot, tree in state.slots.items():
            names, leaves, _ = tree_flatten(tree)
            items += [
                (f"{slot}[{n}]", str(to_numpy(x).dtype), to_numpy(x).tobytes())
                for n, x in zip(names, leaves, strict=True)
            ]
    return items


def _other_library(backend: str):
    other = load_namespace("array_api_strict" if backend == "numpy" else "numpy")
    return other


def _replace_last(tree: Tree, value: Any) -> Tree:
    return {"W1": tree["W1"], "b1": tree["b1"], "z": [{"W": value}]}


# Each case: (id, build(xp, other, params, grads, state, optimizer) -> call, exception, pattern).
# `call` is a zero-argument function making the failing call.


def _grads_case(make_grads: Callable[..., Tree]):
    def build(xp, other, params, grads, state, optimizer):
        bad = make_grads(xp, other, grads)
        return lambda: optimizer.step(params, bad, state)

    return build


def _with_state(make_state: Callable[..., Any]):
    def build(xp, other, params, grads, state, optimizer):
        bad = make_state(xp, params, state)
        return lambda: optimizer.step(params, grads, bad)

    return build


def _with_state_and_other(make_state: Callable[..., Any]):
    def build(xp, other, params, grads, state, optimizer):
        bad = make_state(xp, other, params, state)
        return lambda: optimizer.step(params, grads, bad)

    return build


def _with_params(make_params: Callable[..., Tree], *, same_grads: bool = False):
    """A step with bad params; with ``same_grads`` the grads are made alike, so that only the state disagrees."""

    def build(xp, other, params, grads, state, optimizer):
        bad = make_params(xp, other, params)
        if same_grads:
            grads = make_params(xp, other, grads)
        return lambda: optimizer.step(bad, grads, state)

    return build


def _int(xp, shape, dtype="int64"):
    return from_numpy(xp, np.ones(shape, dtype=dtype))


STEP_CASES = [
    (
        "grads-missing-key",
        _grads_case(lambda xp, other, g: {"W1": g["W1"], "z": g["z"]}),
        ValueError,
        r"grads does not have the structure of params: at the root .*'b1'",
    ),
    (
        "grads-extra-key",
        _grads_case(lambda xp, other, g: {**g, "extra": g["b1"]}),
        ValueError,
        r"grads does not have the structure of params: at the root .*'extra'",
    ),
    (
        "grads-list-too-short",
        _grads_case(lambda xp, other, g: {"W1": g["W1"], "b1": g["b1"], "z": []}),
        ValueError,
        r"grads.*at z expected a list of 1, got a list of 0",
    ),
    (
        "grads-dict-for-list",
        _grads_case(lambda xp, other, g: {"W1": g["W1"], "b1": g["b1"], "z": {"W": g["z"][0]["W"]}}),
        ValueError,
        r"grads.*at z expected a list of 1, got a dict",
    ),
    (
        "grads-array-for-tree",
        _grads_case(lambda xp, other, g: g["W1"]),
        ValueError,
        r"grads.*at the root expected a dict",
    ),
    (
        "grads-shape",
        _grads_case(lambda xp, other, g: _replace_last(g, from_numpy(xp, np.ones((2, 3))))),
        ValueError,
        r"grads\['z\.0\.W'\] has shape \(2, 3\).*params\['z\.0\.W'\] has shape \(2, 2\)",
    ),
    (
        "grads-dtype",
        _grads_case(lambda xp, other, g: _replace_last(g, from_numpy(xp, np.ones((2, 2), dtype=np.float32)))),
        TypeError,
        r"grads\['z\.0\.W'\] has dtype .*float32.*params\['z\.0\.W'\] has dtype .*float64",
    ),
    (
        "grads-integer",
        _grads_case(lambda xp, other, g: _replace_last(g, _int(xp, (2, 2)))),
        TypeError,
        r"grads\['z\.0\.W'\] has dtype .*int64",
    ),
    (
        "grads-bool",
        _grads_case(lambda xp, other, g: _replace_last(g, _int(xp, (2, 2), "bool"))),
        TypeError,
        r"grads\['z\.0\.W'\] has dtype .*bool",
    ),
    (
        "grads-python-float",
        _grads_case(lambda xp, other, g: _replace_last(g, 0.5)),
        TypeError,
        r"grads\['z\.0\.W'\] is a float, not an array",
    ),
    (
        "grads-mixed-libraries",
        _grads_case(lambda xp, other, g: _replace_last(g, from_numpy(other, np.ones((2, 2))))),
        TypeError,
        r"grads\['z\.0\.W'\] is a \w+ array but grads\['W1'\] is a \w+ array",
    ),
    (
        "grads-other-library",
        _grads_case(
            lambda xp, other, g: {
                "W1": from_numpy(other, np.ones((3, 2))),
                "b1": from_numpy(other, np.ones(2)),
                "z": [{"W": from_numpy(other, np.ones((2, 2)))}],
            }
        ),
        TypeError,
        r"grads and params must come from the same array library",
    ),
    (
        "params-integer",
        _with_params(lambda xp, other, p: _replace_last(p, _int(xp, (2, 2)))),
        TypeError,
        r"params\['z\.0\.W'\] has dtype .*int64.*floating",
    ),
    (
        "params-bool",
        _with_params(lambda xp, other, p: _replace_last(p, _int(xp, (2, 2), "bool"))),
        TypeError,
        r"params\['z\.0\.W'\] has dtype .*bool",
    ),
    (
        "params-mixed-libraries",
        _with_params(lambda xp, other, p: _replace_last(p, from_numpy(other, np.ones((2, 2))))),
        TypeError,
        r"params\['z\.0\.W'\] is a \w+ array but params\['W1'\] is a \w+ array",
    ),
    (
        "params-other-structure",
        _with_params(lambda xp, other, p: {"W1": p["W1"], "b1": p["b1"]}, same_grads=True),
        ValueError,
        r"params does not have the structure of the params this state was made for: at the root .*'z'",
    ),
    (
        "params-other-shape",
        _with_params(lambda xp, other, p: _replace_last(p, from_numpy(xp, np.ones((2, 3)))), same_grads=True),
        ValueError,
        r"state slot 'm' of 'z\.0\.W' has shape \(2, 2\).*the parameter has \(2, 3\)",
    ),
    (
        "state-not-a-state",
        _with_state(lambda xp, p, s: dict(s.slots)),
        TypeError,
        r"state must be the OptimizerState .* got dict",
    ),
    (
        "state-of-another-optimizer",
        _with_state(lambda xp, p, s: anyoptim.Momentum().init(p)),
        ValueError,
        r"state was made by Momentum, not by Adam",
    ),
    (
        "state-of-a-look-alike-optimizer",  # Adagrad's running sum is not RMSprop's average: same slot names
        _with_state(lambda xp, p, s: dataclasses.replace(s, optimizer="AdamW")),
        ValueError,
        r"state was made by AdamW, not by Adam",
    ),
    (
        "state-built-by-hand-with-other-slots",
        _with_state(lambda xp, p, s: dataclasses.replace(anyoptim.Momentum().init(p), optimizer=None)),
        ValueError,
        r"state has slots \['v'\] but Adam needs \['m', 'v'\]",
    ),
    (
        "state-count-negative",
        _with_state(lambda xp, p, s: dataclasses.replace(s, count=-1)),
        ValueError,
        r"state\.count must be a non-negative integer, got -1",
    ),
    (
        "state-count-float",
        _with_state(lambda xp, p, s: dataclasses.replace(s, count=1.0)),
        ValueError,
        r"state\.count must be a non-negative integer, got 1\.0",
    ),
    (
        "state-count-bool",
        _with_state(lambda xp, p, s: dataclasses.replace(s, count=True)),
        ValueError,
        r"state\.count must be a non-negative integer, got True",
    ),
    (
        "state-slots-of-another-library",
        _with_state_and_other(
            lambda xp, other, p, s: dataclasses.replace(
                s, slots={slot: {**tree, "W1": from_numpy(other, np.zeros((3, 2)))} for slot, tree in s.slots.items()}
            )
        ),
        TypeError,
        r"state slot 'm' of 'W1' is a \w+ array on .*, but the parameter is a \w+ array on .*one library",
    ),
    (
        "state-slot-shape",
        _with_state(
            lambda xp, p, s: dataclasses.replace(
                s, slots={**s.slots, "v": _replace_last(s.slots["v"], from_numpy(xp, np.zeros((4,))))}
            )
        ),
        ValueError,
        r"state slot 'v' of 'z\.0\.W' has shape \(4,\)",
    ),
    (
        "state-slot-dtype",
        _with_state(
            lambda xp, p, s: dataclasses.replace(
                s,
                slots={**s.slots, "v": _replace_last(s.slots["v"], from_numpy(xp, np.zeros((2, 2), np.float32)))},
            )
        ),
        ValueError,
        r"state slot 'v' of 'z\.0\.W' .* dtype .*float32",
    ),
]


@pytest.mark.parametrize("engine", ["auto", "generic"])
@pytest.mark.parametrize(("case_id", "build", "error", "pattern"), STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_bad_step_raises_and_changes_nothing(xp, backend, engine, case_id, build, error, pattern):
    rng = np.random.default_rng(0)
    optimizer = anyoptim.Adam(0.1, engine=engine, weight_decay=0.01, clip_global_norm=1.0)
    twin = anyoptim.Adam(0.1, engine=engine, weight_decay=0.01, clip_global_norm=1.0)
    start = [to_numpy(x) for x in tree_flatten(_params(xp, np.random.default_rng(0)))[1]]
    params = _params(xp, rng)
    twin_params = _params(xp, np.random.default_rng(0))
    warm = _params(xp, rng)
    # One good step first: a validation cache keyed on the arrays must not hide the error.
    params, state = optimizer.step(params, warm, optimizer.init(params))
    twin_params, twin_state = twin.step(twin_params, warm, twin.init(twin_params))
    grads = _params(xp, rng)
    call = build(xp, _other_library(backend), params, grads, state, optimizer)

    before = _snapshot(params, state)
    with pytest.raises(error, match=pattern):
        call()
    assert _snapshot(params, state) == before, "a failed call changed params or state"
    assert state.count == 1

    # The next good step is the one that would have come without the failed call.
    params, state = optimizer.step(params, grads, state)
    twin_params, twin_state = twin.step(twin_params, grads, twin_state)
    assert _snapshot(params, state) == _snapshot(twin_params, twin_state)
    assert [to_numpy(x).tobytes() for x in tree_flatten(params)[1]] != [x.tobytes() for x in start]


INIT_CASES = [
    ("integer", lambda xp, other, p: _replace_last(p, _int(xp, (2, 2))), TypeError, r"params\['z\.0\.W'\] has dtype"),
    (
        "bool",
        lambda xp, other, p: _replace_last(p, _int(xp, (2, 2), "bool")),
        TypeError,
        r"params\['z\.0\.W'\] has dtype",
    ),
    ("string-leaf", lambda xp, other, p: _replace_last(p, "weights"), TypeError, r"params\['z\.0\.W'\] is a str"),
    (
        "mixed-libraries",
        lambda xp, other, p: _replace_last(p, from_numpy(other, np.ones((2, 2)))),
        TypeError,
        r"params\['z\.0\.W'\] is a \w+ array but params\['W1'\]",
    ),
    ("empty", lambda xp, other, p: {}, ValueError, r"params is empty"),
    ("empty-list", lambda xp, other, p: {"layers": []}, ValueError, r"params is empty"),
    ("non-string-key", lambda xp, other, p: {**p, 3: p["W1"]}, TypeError, r"keys must be strings.*3"),
]


@pytest.mark.parametrize(("case_id", "make", "error", "pattern"), INIT_CASES, ids=[c[0] for c in INIT_CASES])
def test_bad_params_raise_at_init(xp, backend, case_id, make, error, pattern):
    params = make(xp, _other_library(backend), _params(xp, np.random.default_rng(1)))
    with pytest.raises(error, match=pattern):
        anyoptim.Adam().init(params)


def test_python_scalars_are_not_parameters():
    with pytest.raises(TypeError, match=r"params\['w'\] is a float, not an array"):
        anyoptim.SGD().init({"w": 1.0})
    with pytest.raises(TypeError, match=r"params\['param'\] is a int, not an array"):
        anyoptim.SGD().init(3)


# --------------------------------------------------------------------------- schedules, masks, policies


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh-grads", "same-grads"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.5, "fast"])
def test_schedule_returning_a_bad_value_raises_and_changes_nothing(xp, bad, reuse):
    """Also when the loop passes the same arrays every step (the step's fast path)."""

    def schedule(count):
        return 0.1 if count < 2 else bad

    optimizer = anyoptim.Adam(schedule)
    rng = np.random.default_rng(2)
    params = _params(xp, rng)
    grads = _params(xp, rng)
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads if reuse else _params(xp, rng), state)
    before = _snapshot(params, state)
    with pytest.raises(ValueError, match=rf"schedule returned {re.escape(repr(bad))} at step count 2"):
        optimizer.step(params, grads if reuse else _params(xp, rng), state)
    assert _snapshot(params, state) == before
    assert (state.count, state.learning_rate) == (2, 0.1)


def test_schedule_returning_nan_at_the_start_fails_init():
    with pytest.raises(ValueError, match=r"schedule returned nan at step count 0"):
        anyoptim.SGD(lambda count: math.nan).init({"w": np.ones(2)})


@pytest.mark.parametrize(
    ("mask", "error", "pattern"),
    [
        (
            {"W1": True, "b1": False},
            ValueError,
            r"weight_decay_mask does not have the structure of params: at the root .*'z'",
        ),
        (
            {"W1": True, "b1": False, "z": [{"W": 1}]},
            TypeError,
            r"weight_decay_mask\['z\.0\.W'\] must be a bool, got 1",
        ),
    ],
)
def test_bad_weight_decay_mask_raises_at_init(xp, mask, error, pattern):
    params = _params(xp, np.random.default_rng(3))
    before = _snapshot(params, None)
    with pytest.raises(error, match=pattern):
        anyoptim.AdamW(weight_decay_mask=mask).init(params)
    assert _snapshot(params, None) == before


def test_nonfinite_raise_after_in_place_poisoning():
    """The same grads buffer, poisoned in place after a good step, is still caught."""
    optimizer = anyoptim.Adam(0.1, on_nonfinite="raise")
    params = {"w": np.ones(3), "z": np.ones(2)}
    grads = {"w": np.full(3, 0.5), "z": np.full(2, 0.5)}
    params, state = optimizer.step(params, grads, optimizer.init(params))
    params, state = optimizer.step(params, grads, state)  # the same arrays again: the fast path
    grads["z"][1] = np.inf
    before = _snapshot(params, state)
    with pytest.raises(FloatingPointError, match=r"grads\['z'\] holds NaN or infinity"):
        optimizer.step(params, grads, state)
    assert _snapshot(params, state) == before


def test_dtype_changed_in_place_is_caught():
    """Same array object, new dtype (a NumPy view trick): the fast path must not accept it."""
    optimizer = anyoptim.Adam(0.1)
    params = {"w": np.ones(4), "z": np.ones(2)}
    grads = {"w": np.full(4, 0.5), "z": np.full(2, 0.5)}
    params, state = optimizer.step(params, grads, optimizer.init(params))
    params, state = optimizer.step(params, grads, state)
    grads["z"].dtype = np.int64
    before = _snapshot(params, state)
    with pytest.raises(TypeError, match=r"grads\['z'\] has dtype int64"):
        optimizer.step(params, grads, state)
    assert _snapshot(params, state) == before


def test_shape_changed_in_place_is_caught():
    """A NumPy array reshaped in place keeps its identity; the step must still see the new shape."""
    optimizer = anyoptim.Adam(0.1)
    params = {"w": np.ones(6), "z": np.ones(2)}
    grads = {"w": np.full(6, 0.5), "z": np.full(2, 0.5)}
    params, state = optimizer.step(params, grads, optimizer.init(params))
    params, state = optimizer.step(params, grads, state)  # the same arrays again: the fast path
    grads["w"].shape = (2, 3)
    before = _snapshot(params, state)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(2, 3\)"):
        optimizer.step(params, grads, state)
    assert _snapshot(params, state) == before


@pytest.mark.parametrize("backend_name", ["array_api_strict", "jax"])  # torch's: engines/torch_bridge.py
def test_fused_engine_is_refused_where_there_is_none(backend_name):
    xp = load_namespace(backend_name)
    if xp is None:
        pytest.skip(f"{backend_name} is not available here")
    with pytest.raises(ValueError, match=r"engine='fused' is not available for \w+ arrays"):
        anyoptim.Adam(engine="fused").init({"w": xp.ones((2,))})


def test_an_engine_object_runs_the_step_and_must_fit_the_arrays():
    """Tests and benchmarks pin an engine by passing one; it must have the engine methods and suit the arrays."""
    from anyoptim.engines.numpy import NumpyEngine

    engine = NumpyEngine(kernels="ufunc")
    optimizer = anyoptim.SGD(0.5, engine=engine)
    params = {"w": np.ones(3)}
    params, _ = optimizer.step(params, {"w": np.ones(3)}, optimizer.init(params))
    np.testing.assert_array_equal(params["w"], 0.5)
    assert optimizer._prepared is not None and optimizer.engine is engine
    for bad in (object(), NumpyEngine):  # the class is not an engine
        with pytest.raises(ValueError, match="engine must be one of 'auto', 'generic', 'fused' or an engine object"):
            anyoptim.SGD(0.5, engine=bad)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="engine NumpyEngine runs numpy arrays, not torch arrays"):
        anyoptim.SGD(0.5, engine=engine).init({"w": torch.ones(2)})


def test_arrays_on_another_device_are_refused():
    torch = pytest.importorskip("torch")
    params = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(2, dtype=torch.float64)}
    optimizer = anyoptim.Adam(0.1)
    state = optimizer.init(params)
    with pytest.raises(ValueError, match=r"params\['b'\] is on device meta"):
        optimizer.init({"a": params["a"], "b": torch.ones(2, dtype=torch.float64, device="meta")})
    grads = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(2, dtype=torch.float64, device="meta")}
    before = _snapshot(params, state)
    with pytest.raises(ValueError, match=r"device"):
        optimizer.step(params, grads, state)
    assert _snapshot(params, state) == before
