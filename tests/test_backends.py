"""One optimizer, every array library: same trajectories, same dtypes, devices and structures.

NumPy with the generic engine is the yardstick; every backend present (and both engines)
must follow it step by step: float64 to 1e-12 relative, float32 to 1e-5 (1e-6 between
two engines on NumPy itself).  Then the things that must survive a step on any backend:
dtype, device, library and tree structure of params and state, ``state.count`` and
``state.learning_rate``, and the flat layout made by :func:`anyoptim.flatten`.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import array_api_compat
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim import schedules
from anyoptim.tree import leaf_names, tree_flatten
from tests.cases import Case, case_params
from tests.helpers import RTOL, RTOL_SAME_BACKEND, Backend, from_numpy, load_namespace, to_numpy


def _make(case: Case, **options: Any) -> anyoptim.Optimizer:
    """The case's example; AdamW and Lion with a weight decay of 0.1, so that decay shows in the trajectory."""
    return case.make(**({"weight_decay": 0.1} if case.decoupled else {}), **options)


# Gradient processing drawn on top of each optimizer.
PROCESSING = st.fixed_dictionaries(
    {
        "clip_global_norm": st.sampled_from([None, 1.0]),
        "clip_value": st.sampled_from([None, 0.5]),
        "learning_rate_schedule": st.booleans(),
    }
)

VALUES = st.floats(-4.0, 4.0, allow_nan=False, allow_subnormal=False).map(lambda x: 0.0 if abs(x) < 1e-3 else x)


def _tree(leaves: list[Any]) -> dict[str, Any]:
    w1, b1, w2 = leaves
    return {"W1": w1, "b1": b1, "layers": [{"W": w2}]}


def _move(xp, arrays: list[np.ndarray], dtype: str) -> dict[str, Any]:
    return _tree([from_numpy(xp, np.array(a, dtype=dtype)) for a in arrays])


def _build(case: Case, processing: dict[str, Any], engine: str) -> anyoptim.Optimizer:
    optimizer = _make(
        case, engine=engine, clip_global_norm=processing["clip_global_norm"], clip_value=processing["clip_value"]
    )
    if processing["learning_rate_schedule"]:
        optimizer.learning_rate = schedules.exponential_decay(0.05, decay_steps=1, decay_rate=0.7)
    return optimizer


def _trajectory(xp, case, processing, engine, params0, grads, dtype) -> list[list[np.ndarray]]:
    optimizer = _build(case, processing, engine)
    params = _move(xp, params0, dtype)
    state = optimizer.init(params)
    steps = []
    for g in grads:
        params, state = optimizer.step(params, _move(xp, g, dtype), state)
        steps.append([to_numpy(leaf) for leaf in tree_flatten(params)[1]])
    return steps


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=6)
@given(
    dtype=st.sampled_from(["float32", "float64"]),
    dims=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    n_steps=st.integers(1, 5),
    processing=PROCESSING,
    data=st.data(),
)
def test_same_trajectory_on_every_backend(xp, backend, case, dtype, dims, n_steps, processing, data):
    a, b = dims
    shapes = [(a, b), (b,), (b, a)]

    def draw_tree():
        return [data.draw(hnp.arrays(np.float64, shape, elements=VALUES)) for shape in shapes]

    params0 = draw_tree()
    grads = [draw_tree() for _ in range(n_steps)]
    expected = _trajectory(Backend.NUMPY.namespace(), case, processing, "generic", params0, grads, dtype)
    rtol = (RTOL_SAME_BACKEND if backend is Backend.NUMPY else RTOL)[dtype]
    for engine in ("generic", "auto"):
        actual = _trajectory(xp, case, processing, engine, params0, grads, dtype)
        for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
            for leaf, (g, w) in enumerate(zip(got, want, strict=True)):
                assert g.dtype == np.dtype(dtype)
                scale = max(1.0, float(np.max(np.abs(w))))
                np.testing.assert_allclose(
                    g,
                    w,
                    rtol=rtol,
                    atol=rtol * scale,
                    err_msg=f"{case.id} on {backend} ({engine}), step {step + 1}, leaf {leaf}",
                )


# --------------------------------------------------------------------------- dtype, device, library


def _check_like(xp, leaves: list[Any], dtypes: list[Any], device: Any, what: str) -> None:
    for i, (leaf, dtype) in enumerate(zip(leaves, dtypes, strict=True)):
        assert array_api_compat.array_namespace(leaf) is array_api_compat.array_namespace(xp.asarray(leaf)), what
        assert array_api_compat.is_array_api_obj(leaf), f"{what}[{i}] is a {type(leaf).__name__}"
        assert leaf.dtype == dtype, f"{what}[{i}] has dtype {leaf.dtype}, expected {dtype}"
        assert array_api_compat.device(leaf) == device, f"{what}[{i}] moved to {array_api_compat.device(leaf)}"


@pytest.mark.parametrize("engine", ["generic", "auto"])
@pytest.mark.parametrize(
    "dtypes", [("float32",) * 3, ("float64",) * 3, ("float32", "float64", "float32")], ids=["f32", "f64", "mixed"]
)
@pytest.mark.parametrize("case", case_params())
def test_dtype_device_and_library_are_preserved(xp, case, dtypes, engine):
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (2,), (2, 3)]
    params = _tree([from_numpy(xp, rng.normal(size=s).astype(dt)) for s, dt in zip(shapes, dtypes, strict=True)])
    _, leaves, _ = tree_flatten(params)
    expected_dtypes = [leaf.dtype for leaf in leaves]
    device = array_api_compat.device(leaves[0])
    namespace = array_api_compat.array_namespace(leaves[0])
    name = case.id
    optimizer = _make(case, engine=engine, clip_global_norm=1.0)
    state = optimizer.init(params)
    for slot, tree in state.slots.items():
        _check_like(xp, tree_flatten(tree)[1], expected_dtypes, device, f"{name} init slot {slot}")
    for _ in range(2):
        grads = _tree([from_numpy(xp, rng.normal(size=s).astype(dt)) for s, dt in zip(shapes, dtypes, strict=True)])
        params, state = optimizer.step(params, grads, state)
        new_leaves = tree_flatten(params)[1]
        _check_like(xp, new_leaves, expected_dtypes, device, f"{name} params")
        assert all(array_api_compat.array_namespace(leaf) is namespace for leaf in new_leaves)
        for slot, tree in state.slots.items():
            _check_like(xp, tree_flatten(tree)[1], expected_dtypes, device, f"{name} slot {slot}")


@pytest.mark.parametrize("engine", ["generic", "auto"])
@pytest.mark.parametrize("case", case_params())
def test_zero_dimensional_parameters_stay_arrays(xp, case, engine):
    optimizer = _make(case, engine=engine)

    params = {"w": from_numpy(xp, np.array(1.5)), "v": from_numpy(xp, np.array([1.0, 2.0]))}
    state = optimizer.init(params)
    for _ in range(3):
        params, state = optimizer.step(
            params, {"w": from_numpy(xp, np.array(0.5)), "v": from_numpy(xp, np.array([0.5, -0.5]))}, state
        )
    for tree in (params, *state.slots.values()):
        assert array_api_compat.is_array_api_obj(tree["w"]) and tuple(tree["w"].shape) == ()
    assert float(to_numpy(params["w"])) < 1.5


def test_read_only_zero_dimensional_numpy_params_stay_arrays():
    w = np.array(1.5)
    w.flags.writeable = False
    optimizer = anyoptim.Adam(0.1)
    params = {"w": w}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, {"w": np.array(0.5)}, state)
    assert isinstance(params["w"], np.ndarray) and params["w"].shape == ()


# --------------------------------------------------------------------------- structure

Pair = namedtuple("Pair", ["weight", "bias"])

STRUCTURES = {
    "dict": lambda a: {"W1": a((2, 3)), "b1": a((3,))},
    "nested-dict": lambda a: {"encoder": {"W": a((2, 2)), "b": a((2,))}, "head": {"W": a((2, 1))}},
    "list": lambda a: [a((2,)), a((3, 1))],
    "tuple": lambda a: (a((2,)), [a((1, 2)), {"x": a((2,))}]),
    "namedtuple": lambda a: {"layer": Pair(a((2, 2)), a((2,)))},
    "bare-array": lambda a: a((4,)),
}


def _same_shape_of_tree(actual: Any, expected: Any, path: str = "root") -> None:
    assert type(actual) is type(expected) or not isinstance(expected, (dict, list, tuple)), (
        f"{path}: {type(actual).__name__} instead of {type(expected).__name__}"
    )
    if isinstance(expected, dict):
        assert set(actual) == set(expected), path
        for key in expected:
            _same_shape_of_tree(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _same_shape_of_tree(a, e, f"{path}.{i}")
    else:
        assert tuple(actual.shape) == tuple(expected.shape), path


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
@pytest.mark.parametrize("case", case_params())
def test_structure_of_params_and_state_is_preserved(xp, case, structure):
    rng = np.random.default_rng(1)

    def array(shape):
        return from_numpy(xp, rng.normal(size=shape))

    params = STRUCTURES[structure](array)
    template = STRUCTURES[structure](lambda shape: np.zeros(shape))
    optimizer = _make(case)
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, STRUCTURES[structure](array), state)
        _same_shape_of_tree(params, template)
        for slot, tree in state.slots.items():
            _same_shape_of_tree(tree, template, f"slot {slot}")
            # State slot trees are named like the parameters: state.slots["m"]["W1"].
            assert leaf_names(tree) == leaf_names(params)


@pytest.mark.parametrize("case", case_params())
def test_state_slots_are_named_like_the_params(xp, case):
    params = {
        "W1": from_numpy(xp, np.ones((2, 3))),
        "b1": from_numpy(xp, np.zeros(3)),
        "block": [{"W": from_numpy(xp, np.ones((3, 1)))}],
    }
    state = _make(case).init(params)
    assert leaf_names(params) == ["W1", "b1", "block.0.W"]
    for slot, tree in state.slots.items():
        assert isinstance(slot, str) and slot
        assert leaf_names(tree) == ["W1", "b1", "block.0.W"], slot
        assert tree_flatten(tree)[2] == tree_flatten(params)[2], slot
        assert tuple(tree["block"][0]["W"].shape) == (3, 1)


# --------------------------------------------------------------------------- count and learning rate


@pytest.mark.parametrize("constant", [True, False], ids=["float", "schedule"])
def test_state_count_and_learning_rate(xp, constant):
    schedule = schedules.piecewise_constant([2, 4], [0.3, 0.2, 0.1])
    optimizer = anyoptim.Adam(0.3 if constant else schedule)
    params = {"w": from_numpy(xp, np.ones(3))}
    state = optimizer.init(params)
    assert (state.count, state.skipped) == (0, 0)
    assert state.learning_rate == 0.3
    for step in range(1, 7):
        params, state = optimizer.step(params, {"w": from_numpy(xp, np.ones(3))}, state)
        assert state.count == step
        assert state.learning_rate == (0.3 if constant else schedule(step - 1))
        assert isinstance(state.count, int) and isinstance(state.learning_rate, float)


# --------------------------------------------------------------------------- anyoptim.flatten


def _mixed_tree(xp, rng):
    return {
        "W1": from_numpy(xp, rng.normal(size=(3, 2))),
        "b1": from_numpy(xp, rng.normal(size=(2,)).astype(np.float32)),
        "layers": [from_numpy(xp, rng.normal(size=(2, 2))), from_numpy(xp, rng.normal(size=(4,)).astype(np.float32))],
        "scale": from_numpy(xp, rng.normal(size=())),
    }


def test_flatten_preserves_structure_values_and_dtypes(xp):
    rng = np.random.default_rng(2)
    tree = _mixed_tree(xp, rng)
    expected = [to_numpy(leaf) for leaf in tree_flatten(tree)[1]]
    flat = anyoptim.flatten(tree)
    assert tree_flatten(flat)[2] == tree_flatten(tree)[2]
    assert leaf_names(flat) == leaf_names(tree)
    for leaf, want in zip(tree_flatten(flat)[1], expected, strict=True):
        got = to_numpy(leaf)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def _buffer_of(leaf: Any) -> Any:
    """The array that owns a view's memory (NumPy's base, torch's _base)."""
    if isinstance(leaf, np.ndarray):
        base = leaf
        while base.base is not None:
            base = base.base
        return base
    base = leaf._base if leaf._base is not None else leaf
    return base


@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
def test_flatten_makes_views_of_one_buffer_per_dtype(backend_name):
    xp = load_namespace(backend_name)
    if xp is None:
        pytest.skip(f"{backend_name} is not available here")
    rng = np.random.default_rng(3)
    flat = anyoptim.flatten(_mixed_tree(xp, rng))
    names, leaves, _ = tree_flatten(flat)
    by_dtype: dict[Any, list[int]] = {}
    for i, leaf in enumerate(leaves):
        by_dtype.setdefault(leaf.dtype, []).append(i)
    assert len(by_dtype) == 2
    buffers = []
    for indices in by_dtype.values():
        buffer = _buffer_of(leaves[indices[0]])
        assert all(_buffer_of(leaves[i]) is buffer for i in indices), names
        assert tuple(buffer.shape) == (sum(int(np.prod(leaves[i].shape)) for i in indices),)
        # Leaf order, back to back: the buffer reads as the concatenation of the leaves.
        np.testing.assert_array_equal(
            to_numpy(buffer), np.concatenate([to_numpy(leaves[i]).reshape(-1) for i in indices])
        )
        buffers.append(buffer)
        # Writing through a leaf writes the buffer.
        last = leaves[indices[-1]]
        last[...] = 7.0
        assert np.all(to_numpy(buffer)[-int(np.prod(last.shape)) :] == 7.0)
    assert buffers[0] is not buffers[1]


def test_flatten_returns_jax_trees_unchanged():
    xp = load_namespace("jax")
    if xp is None:
        pytest.skip("jax is not available here")
    tree = _mixed_tree(xp, np.random.default_rng(4))
    assert anyoptim.flatten(tree) is tree


@pytest.mark.parametrize("engine", ["generic", "auto"])
@pytest.mark.parametrize("case", case_params())
def test_flattened_params_follow_the_same_trajectory(xp, case, engine):
    rng = np.random.default_rng(5)
    plain = _mixed_tree(xp, rng)
    flat = anyoptim.flatten(_mixed_tree(xp, np.random.default_rng(5)))
    grads = [_mixed_tree(xp, rng) for _ in range(3)]
    first, second = _make(case, engine=engine), _make(case, engine=engine)
    s1, s2 = first.init(plain), second.init(flat)
    for g in grads:
        plain, s1 = first.step(plain, g, s1)
        flat, s2 = second.step(flat, g, s2)
    for a, b in zip(tree_flatten(plain)[1], tree_flatten(flat)[1], strict=True):
        dtype = str(to_numpy(a).dtype)
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=RTOL_SAME_BACKEND[dtype], atol=1e-7)


def test_numpy_steps_keep_the_flat_layout():
    """The NumPy engine updates flattened params in place: the returned leaves are the buffer's views."""
    rng = np.random.default_rng(6)
    flat = anyoptim.flatten(_mixed_tree(np, rng))
    leaves = tree_flatten(flat)[1]
    buffers = {id(_buffer_of(leaf)) for leaf in leaves}
    optimizer = anyoptim.Adam(0.1)
    state = optimizer.init(flat)
    for _ in range(2):
        flat, state = optimizer.step(flat, _mixed_tree(np, rng), state)
    new_leaves = tree_flatten(flat)[1]
    assert {id(_buffer_of(leaf)) for leaf in new_leaves} == buffers
    assert all(new is old for new, old in zip(new_leaves, leaves, strict=True))
