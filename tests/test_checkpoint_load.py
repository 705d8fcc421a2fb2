"""How anyoptim.load builds its result: allocated once, uninitialised, in the flat layout, and read into once.

No throw-away ``optimizer.init`` (the slots and their fills come from :meth:`Optimizer.slot_fills`), no copy of
``like``, nothing allocated before every check has passed.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import anyoptim
from anyoptim.checkpoint import CheckpointWarning, load, save
from anyoptim.tree import tree_flatten
from tests.cases import case_params

pytest.importorskip("safetensors")


def _mixed() -> dict:
    rng = np.random.default_rng(1)
    return {
        "W": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "s": rng.standard_normal(2),  # float64: a second buffer
    }


def _stepped(opt, params, steps: int = 2):
    state = opt.init(params)
    for k in range(steps):
        grads = {name: (leaf * 0.5 - 0.1 * (k + 1)).astype(leaf.dtype) for name, leaf in params.items()}
        params, state = opt.step(params, grads, state)
    return params, state


@pytest.mark.parametrize("case", case_params())
def test_slot_fills_are_the_slots_init_makes(case):
    opt = case.make()
    state = opt.init(_mixed())
    fills = opt.slot_fills()
    assert list(fills) == list(state.slots)
    for slot, fill in fills.items():
        for leaf in tree_flatten(state.slots[slot])[1]:
            np.testing.assert_array_equal(leaf, np.asarray(fill, dtype=leaf.dtype))


def test_slot_fills_read_the_settings():
    assert anyoptim.Adagrad(initial_accumulator_value=0.25).slot_fills() == {"s": 0.25}
    assert list(anyoptim.Adam(amsgrad=True).slot_fills()) == ["m", "v", "v_max"]


def test_load_never_calls_init_and_lays_everything_flat(tmp_path, monkeypatch):
    opt = anyoptim.Adam(0.01)
    params, state = _stepped(opt, anyoptim.flatten(_mixed()))
    path = tmp_path / "c.safetensors"
    save(path, params, state, optimizer=opt)

    def refuse(self, params):
        raise AssertionError("load called init")

    monkeypatch.setattr(anyoptim.Optimizer, "init", refuse)
    loaded, loaded_state = load(path, like=_mixed(), optimizer=opt)  # like not flat: the result is
    monkeypatch.undo()
    for tree in (loaded, *loaded_state.slots.values()):
        assert tree["W"].base is tree["b"].base and tree["s"].base is not tree["W"].base
        assert tree["s"].dtype == np.float64
    assert list(loaded_state.slots) == ["m", "v"] and loaded_state.count == 2
    # The loaded run continues bit for bit, through the fused engine's one span per dtype.
    grads = {name: leaf * 0.25 for name, leaf in params.items()}
    expected, expected_state = opt.step(params, grads, state)
    got, got_state = opt.step(loaded, {name: leaf * 0.25 for name, leaf in loaded.items()}, loaded_state)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
        np.testing.assert_array_equal(got_state.slots["v"][name], expected_state.slots["v"][name])


def test_state_without_optimizer_is_flat_and_as_saved(tmp_path):
    opt = anyoptim.RMSprop(0.01, centered=True, momentum=0.9)
    params, state = _stepped(opt, _mixed())
    save(tmp_path / "c.safetensors", params, state, optimizer=opt)
    _, loaded_state = load(tmp_path / "c.safetensors", like=_mixed())
    assert list(loaded_state.slots) == list(state.slots)
    for slot, tree in loaded_state.slots.items():
        assert tree["W"].base is tree["b"].base
        for name in tree:
            np.testing.assert_array_equal(tree[name], state.slots[slot][name])


def test_partial_load_fills_skipped_leaves_as_init_would(tmp_path):
    opt = anyoptim.Adagrad(0.1, initial_accumulator_value=0.25)
    params, state = _stepped(opt, {"W": _mixed()["W"]})
    save(tmp_path / "c.safetensors", params, state, optimizer=opt)
    like = _mixed()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, loaded_state = load(tmp_path / "c.safetensors", like=like, optimizer=opt, strict=False)
    assert [w.category for w in caught] == [CheckpointWarning]
    np.testing.assert_array_equal(loaded["W"], params["W"])
    np.testing.assert_array_equal(loaded["b"], like["b"])  # kept from like, into the new buffer
    assert not np.shares_memory(loaded["b"], like["b"])
    np.testing.assert_array_equal(loaded_state.slots["s"]["W"], state.slots["s"]["W"])
    np.testing.assert_array_equal(loaded_state.slots["s"]["b"], 0.25)
    np.testing.assert_array_equal(loaded_state.slots["s"]["s"], 0.25)
    with pytest.warns(CheckpointWarning):
        without_optimizer = load(tmp_path / "c.safetensors", like=like, strict=False)[1]
    np.testing.assert_array_equal(without_optimizer.slots["s"]["b"], 0.0)


def _traced_peak(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_load_allocates_one_copy_and_nothing_when_it_fails(tmp_path):
    n = 2**18
    opt = anyoptim.Adam(1e-3)
    params = {"W": np.random.default_rng(0).standard_normal(n, dtype=np.float32)}
    params, state = _stepped(opt, params, steps=1)
    path = tmp_path / "big.safetensors"
    save(path, params, state, optimizer=opt)
    like = {"W": np.zeros(n, dtype=np.float32)}
    nbytes = 3 * params["W"].nbytes
    peak = _traced_peak(lambda: load(path, like=like, optimizer=opt))
    assert nbytes <= peak <= nbytes + 2**16, f"load's peak {peak} bytes for a result of {nbytes}"
    wrong = {"W": np.zeros(n + 1, dtype=np.float32)}

    def failing() -> None:
        with pytest.raises(ValueError, match="shape"):
            load(path, like=wrong, optimizer=opt)

    assert _traced_peak(failing) < 2**16  # every check runs before anything is allocated


def test_jax_like_gets_new_arrays_and_fills(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    opt = anyoptim.Adagrad(0.1, initial_accumulator_value=0.25)
    params, state = _stepped(opt, {"W": _mixed()["W"]})
    save(tmp_path / "c.safetensors", params, state, optimizer=opt)
    like = {"W": jnp.zeros((3, 4), dtype=jnp.float32), "b": jnp.ones(4, dtype=jnp.float32)}
    with pytest.warns(CheckpointWarning):
        loaded, loaded_state = load(tmp_path / "c.safetensors", like=like, optimizer=opt, strict=False)
    np.testing.assert_array_equal(np.asarray(loaded["W"]), params["W"])
    assert loaded["b"] is like["b"]
    np.testing.assert_array_equal(np.asarray(loaded_state.slots["s"]["b"]), 0.25)
