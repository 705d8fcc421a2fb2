"""The prepared step must refuse a call whose arrays kept their identity but not their memory or layout.

A prepared step (anyoptim.optimizers.prepared) compares a call's leaves with its own by identity; its compiled
kernels hold the addresses and element order those leaves had.  Whatever moves them without making new objects
(torch's ``t.data = other``, NumPy's ``a.strides = ...``, a read-only flag) must send the call to the validated
path, else the kernels read or write memory the caller no longer sees.  Each test compares with a fresh optimizer
that never prepared anything (the reference).
"""

from __future__ import annotations

import collections
import enum
import threading
import warnings

import numpy as np
import pytest

import anyoptim
from anyoptim.optimizers.gathering import leaf_gatherer
from anyoptim.tree import tree_flatten


def _torch_loop(optimizer):
    torch = pytest.importorskip("torch")
    params = {"b": torch.zeros(3, dtype=torch.float64), "w": torch.zeros(4, 3, dtype=torch.float64)}
    grads = {name: torch.ones_like(value) for name, value in params.items()}
    state = optimizer.init(params)
    for _ in range(2):  # the second step runs the prepared one
        params, state = optimizer.step(params, grads, state)
    return params, grads, state


def _reference(make, params, grads, state):
    """What a fresh optimizer computes from copies of the call's arrays."""
    fresh = make()
    copy = (lambda a: a.clone()) if hasattr(params["w"], "clone") else np.copy
    slots = {name: {k: copy(v) for k, v in tree.items()} for name, tree in state.slots.items()}
    start = anyoptim.OptimizerState(
        state.count, state.learning_rate, slots, state.skipped, state.structure, state.optimizer
    )
    return fresh.step({k: copy(v) for k, v in params.items()}, {k: copy(v) for k, v in grads.items()}, start)


def test_torch_a_gradient_given_other_memory_is_read_there():
    """``g.data = t`` between steps (same shape): the step reads t, not the memory the kernels were bound to."""
    torch = pytest.importorskip("torch")

    def make():
        return anyoptim.Adam(0.1)

    optimizer = make()
    params, grads, state = _torch_loop(optimizer)
    grads["w"].data = torch.full((4, 3), 5.0, dtype=torch.float64)
    expected, expected_state = _reference(make, params, grads, state)
    params, state = optimizer.step(params, grads, state)
    torch.testing.assert_close(params["w"], expected["w"], rtol=1e-12, atol=0)
    torch.testing.assert_close(state.slots["m"]["w"], expected_state.slots["m"]["w"], rtol=1e-12, atol=0)
    expected, _ = _reference(make, params, grads, state)
    params, state = optimizer.step(params, grads, state)  # the step prepared again reads it too
    torch.testing.assert_close(params["w"], expected["w"], rtol=1e-12, atol=0)


def test_torch_a_gradient_made_a_view_of_its_parameter_is_copied_first():
    """``g.data = p.data``: the gradient now aliases the parameter the kernel writes; the validated path copies it."""
    torch = pytest.importorskip("torch")

    def make():
        return anyoptim.Momentum(0.1, beta=0.5)

    optimizer = make()
    params, grads, state = _torch_loop(optimizer)
    params["w"].copy_(torch.arange(12.0, dtype=torch.float64).view(4, 3))
    grads["w"].data = params["w"].data
    expected, _ = _reference(make, params, grads, state)
    params, state = optimizer.step(params, grads, state)
    torch.testing.assert_close(params["w"], expected["w"], rtol=1e-12, atol=0)


def test_torch_a_state_slot_given_other_memory_is_read_and_written_there():
    torch = pytest.importorskip("torch")

    def make():
        return anyoptim.Adam(0.1)

    optimizer = make()
    params, grads, state = _torch_loop(optimizer)
    velocity = state.slots["v"]["w"]
    velocity.data = torch.full((4, 3), 9.0, dtype=torch.float64)
    expected, expected_state = _reference(make, params, grads, state)
    params, state = optimizer.step(params, grads, state)
    assert state.slots["v"]["w"] is velocity
    torch.testing.assert_close(velocity, expected_state.slots["v"]["w"], rtol=1e-12, atol=0)
    torch.testing.assert_close(params["w"], expected["w"], rtol=1e-12, atol=0)


def test_torch_step_again_also_sees_a_gradient_given_other_memory():
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.SGD(0.5)
    params, grads, state = _torch_loop(optimizer)
    grads["w"].data = torch.full((4, 3), 2.0, dtype=torch.float64)
    params, state = optimizer.step_again(params, grads, state)
    assert torch.equal(params["w"], torch.full((4, 3), -2.0, dtype=torch.float64))  # -0.5 -0.5 -1


def test_torch_new_gradients_rebound_then_given_other_memory_are_read_there():
    """The addresses recorded when new gradient tensors are rebound are those checked at the next call."""
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.SGD(0.5)
    params, grads, state = _torch_loop(optimizer)
    prepared = optimizer._prepared
    grads = {name: torch.ones_like(value) for name, value in grads.items()}  # new tensors: rebound
    params, state = optimizer.step(params, grads, state)
    assert optimizer._prepared is prepared
    grads["w"].data = torch.full((4, 3), 2.0, dtype=torch.float64)
    params, state = optimizer.step(params, grads, state)
    assert torch.equal(params["w"], torch.full((4, 3), -2.5, dtype=torch.float64))  # 3 x -0.5, then -1


@pytest.mark.parametrize("which", ["params", "grads"])
def test_numpy_an_array_given_other_strides_is_updated_element_by_element(which):
    """NumPy still lets code set ``a.strides`` (deprecated): the kernels' pairing of elements must follow."""

    def make():
        return anyoptim.SGD(1.0)

    optimizer = make()
    params, grads = {"w": np.zeros((2, 2))}, {"w": np.array([[1.0, 2.0], [3.0, 4.0]])}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    params["w"][...] = [[0.0, 10.0], [20.0, 30.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        (params if which == "params" else grads)["w"].strides = (8, 16)  # the transpose, same memory
    expected = params["w"] - grads["w"]
    params, state = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(params["w"], expected)


def test_numpy_a_parameter_made_read_only_is_not_written():
    optimizer = anyoptim.SGD(1.0)
    params, grads = {"w": np.zeros(3)}, {"w": np.ones(3)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    frozen = params["w"]
    frozen.flags.writeable = False
    new, state = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(frozen, np.full(3, -2.0))
    np.testing.assert_array_equal(new["w"], np.full(3, -3.0))
    frozen.flags.writeable = True  # writeable again: in place again, on the array now passed
    again, state = optimizer.step(new, grads, state)
    np.testing.assert_array_equal(again["w"], np.full(3, -4.0))
    np.testing.assert_array_equal(frozen, np.full(3, -2.0))


def test_a_parameter_made_to_share_another_ones_array_is_refused_and_nothing_changes():
    optimizer = anyoptim.SGD(1.0)
    params, grads = {"a": np.zeros(3), "b": np.zeros(3)}, {"a": np.ones(3), "b": np.ones(3)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    params["b"] = params["a"]  # the same dict, now one array twice
    with pytest.raises(ValueError, match=r"share|same"):
        optimizer.step(params, grads, state)
    np.testing.assert_array_equal(params["a"], np.full(3, -2.0))


def test_a_named_tuple_of_another_class_with_the_same_fields_is_another_structure():
    first, second = collections.namedtuple("Layer", "w b"), collections.namedtuple("Layer", "w b")
    leaves = (object(), object())
    gather = leaf_gatherer(tree_flatten(first(*leaves))[2], ())
    assert gather(first(*leaves), first(*leaves), {}) == leaves * 2
    assert gather(second(*leaves), first(*leaves), {}) is None
    assert gather(tuple(leaves), first(*leaves), {}) is None


def test_keys_the_generated_source_quotes_are_data_only():
    """A key is written into the generated source through repr(): quotes, newlines and code stay a string."""
    keys = ["a'] ; raise SystemExit #", 'b"\n    import os', "\\", "c\x00", "é\u2028"]
    tree = {key: object() for key in keys}
    gather = leaf_gatherer(tree_flatten(tree)[2], ("m",))
    leaves = tree_flatten(tree)[1]
    assert gather(tree, tree, {"m": tree}) == tuple(leaves) * 3
    renamed = {("other" if key == keys[0] else key): value for key, value in tree.items()}
    assert gather(renamed, tree, {"m": tree}) is None


def test_two_optimizers_of_one_structure_step_concurrently_each_on_its_own_arrays():
    """The gatherer is shared by structure (cached); the prepared steps, one per optimizer, are not."""
    rounds, results, errors = 200, {}, []

    def loop(scale: float) -> None:
        try:
            optimizer = anyoptim.Adam(0.01)
            params = {"w": np.full((8, 8), scale), "b": np.full(8, scale)}
            grads = {"w": np.full((8, 8), scale), "b": np.full(8, -scale)}
            state = optimizer.init(params)
            for _ in range(rounds):
                params, state = optimizer.step(params, grads, state)
            results[scale] = params
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(scale,)) for scale in (1.0, 2.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for scale in (1.0, 2.0):  # Adam's step is about lr whatever the gradient's size: 200 steps of -/+ 0.01
        np.testing.assert_allclose(results[scale]["w"], np.full((8, 8), scale - 2.0), atol=1e-6)
        np.testing.assert_allclose(results[scale]["b"], np.full(8, scale + 2.0), atol=1e-6)


def test_str_enum_keys_take_the_prepared_step_as_str_keys_do():
    """tree_flatten takes any str as a key (an enum.StrEnum member too): so must the walk written for its structure.

    The second step raised TypeError (the walk refused keys that are not exactly str) before the fix."""

    class Key(str, enum.Enum):  # what enum.StrEnum is, on every Python
        W = "W"
        b = "b"

    optimizer = anyoptim.SGD(0.5)
    params, grads = {Key.W: np.zeros(3), Key.b: np.zeros(2)}, {Key.W: np.ones(3), Key.b: np.ones(2)}
    state = optimizer.init(params)
    for _ in range(3):
        params, state = optimizer.step(params, grads, state)
    assert optimizer._prepared.check is not None  # the second and third steps took the prepared step
    np.testing.assert_array_equal(params[Key.W], np.full(3, -1.5))
    treedef = tree_flatten(params)[2]
    leaves = tuple(tree_flatten(params)[1])
    assert leaf_gatherer(treedef, ())({"W": leaves[0], "b": leaves[1]}, params, {}) == leaves * 2  # equal keys


@pytest.mark.parametrize("other", ["param", "slot"])
def test_a_state_slot_made_to_share_memory_is_refused_and_nothing_changes(other):
    """``state.slots["v"]["w"] = params["w"]``: the in-place update would read what it just wrote (it was taken)."""
    optimizer = anyoptim.Adam(0.1)
    params, grads = {"w": np.zeros(3), "b": np.zeros(2)}, {"w": np.ones(3), "b": np.ones(2)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    snapshot = {k: v.copy() for k, v in params.items()}
    state.slots["v"]["w"] = params["w"] if other == "param" else state.slots["m"]["w"][:]
    with pytest.raises(ValueError, match=r"state slot 'v' of 'w' shares memory with (params|state slot 'm' of)"):
        optimizer.step(params, grads, state)
    for name, value in params.items():
        np.testing.assert_array_equal(value, snapshot[name])


def test_the_prepared_step_returns_the_trees_it_was_given_not_older_ones():
    """A new tree of the same arrays runs prepared; what comes back is that tree (and that state's slots), not the
    tree an earlier step returned, which its owner may have changed since (it returned an array never updated)."""
    optimizer = anyoptim.Adam(1.0)
    first, second = np.zeros(2), np.zeros(2)
    grads = {"w": np.ones(2), "b": np.ones(2)}
    returned, state = optimizer.step({"w": first, "b": second}, grads, optimizer.init({"w": first, "b": second}))
    again = dict(returned)
    returned["w"] = np.full(2, 100.0)  # the earlier result, changed after it was returned
    slots = {name: dict(tree) for name, tree in state.slots.items()}
    state.slots["m"]["w"] = np.full(2, 100.0)
    state = anyoptim.OptimizerState(
        state.count, state.learning_rate, slots, state.skipped, state.structure, state.optimizer
    )
    params, state = optimizer.step(again, grads, state)
    assert params is again and params["w"] is first and state.slots is slots
    np.testing.assert_allclose(first, [-2.0, -2.0])
    params, state = optimizer.step_again(params, grads, state)  # what the prepared step returned, passed back
    np.testing.assert_allclose(first, [-3.0, -3.0])


@pytest.mark.parametrize("which", ["params", "grads", "v"])
@pytest.mark.parametrize("how", ["data", "t_", "step_again"])
def test_torch_a_tensor_given_other_strides_in_place_is_updated_element_by_element(which, how):
    """``p.data = p.data.t()`` (a square tensor, or ``t_()``): the same object, address, shape and dtype, but its
    elements in another order; the kernels pair elements by memory, so the call must take the validated path."""
    torch = pytest.importorskip("torch")

    def make():
        return anyoptim.Adam(0.1)

    optimizer = make()
    params = {"b": torch.zeros(3, dtype=torch.float64), "w": torch.zeros(3, 3, dtype=torch.float64)}
    grads = {name: torch.ones_like(value) for name, value in params.items()}
    state = optimizer.init(params)
    for _ in range(2):  # the second step runs the prepared one
        params, state = optimizer.step(params, grads, state)
    with torch.no_grad():
        params["w"].copy_(torch.arange(9.0, dtype=torch.float64).view(3, 3))
        grads["w"].copy_(torch.arange(9.0, dtype=torch.float64).view(3, 3) ** 2)
        state.slots["v"]["w"].copy_(torch.arange(9.0, dtype=torch.float64).view(3, 3) + 1)
    tensor = {"params": params, "grads": grads, "v": state.slots["v"]}[which]["w"]
    if how == "t_":
        tensor.t_()
    else:
        tensor.data = tensor.data.t()
    assert not tensor.is_contiguous()
    expected, expected_state = _reference(make, params, grads, state)
    step = optimizer.step_again if how == "step_again" else optimizer.step
    params, state = step(params, grads, state)
    torch.testing.assert_close(params["w"], expected["w"], rtol=1e-12, atol=0)
    torch.testing.assert_close(state.slots["v"]["w"], expected_state.slots["v"]["w"], rtol=1e-12, atol=0)


def test_a_state_another_optimizer_made_is_refused_as_the_validated_path_refuses_it():
    """The very slots, in a state that names another maker: the validated path refuses it, so the prepared one must."""
    import dataclasses

    optimizer = anyoptim.Adam(0.1)
    params, grads = {"w": np.zeros(3)}, {"w": np.ones(3)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    snapshot = params["w"].copy()
    with pytest.raises(ValueError, match="state was made by AdamW, not by Adam"):
        optimizer.step(params, grads, dataclasses.replace(state, optimizer="AdamW"))
    np.testing.assert_array_equal(params["w"], snapshot)
    params, state = optimizer.step(params, grads, dataclasses.replace(state, optimizer=None))  # by hand: accepted
    assert optimizer._prepared is not None and optimizer._prepared.check is not None


@pytest.mark.parametrize("library", ["numpy", "torch new grads"])
def test_state_slots_in_another_order_are_refused_as_the_validated_path_refuses_them(library):
    """``{"v": ..., "m": ...}`` of the very slot trees: the validated path refuses the order, so the prepared one must
    (also where only the gradient tensors are new and would be rebound)."""
    import dataclasses

    optimizer = anyoptim.Adam(0.1)
    if library == "numpy":
        params, grads = {"w": np.zeros(3)}, {"w": np.ones(3)}
    else:
        torch = pytest.importorskip("torch")
        params, grads = {"w": torch.zeros(3)}, {"w": torch.ones(3)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    if library != "numpy":
        grads = {"w": torch.ones(3)}  # new gradient tensors: the prepared step would rebind them
    reordered = dataclasses.replace(state, slots={"v": state.slots["v"], "m": state.slots["m"]})
    with pytest.raises(ValueError, match=r"state has slots \['v', 'm'\] but Adam needs \['m', 'v'\]"):
        optimizer.step(params, grads, reordered)
