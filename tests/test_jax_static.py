"""``OptimizerState.static`` seen from the user's side: errors that name the way out, and no stale numbers.

The static rate and skipped count (anyoptim/state.py, optimizers/traced.py ``static_of``) are a speed measure of
jitted JAX steps; these tests try to get a wrong number or a lost user out of them: a ``lax.scan`` carry whose rate
changed, a rate assigned between jitted steps, eager NumPy steps, a checkpoint loaded with another rate.
"""

from __future__ import annotations

import gc
import pickle
from dataclasses import replace

import numpy as np
import pytest

import anyoptim
from tests.helpers import load_namespace

jnp = load_namespace("jax")  # enables jax_enable_x64, as every JAX test here does
if jnp is None:
    pytest.skip("jax is not available here", allow_module_level=True)
import jax  # noqa: E402

BOTH = ("learning_rate", "skipped")


def _scan(optimizer, params, state, rows):
    def body(carry, g):
        return optimizer.step(carry[0], {"w": g}, carry[1]), None

    (params, state), _ = jax.lax.scan(body, (params, state), rows)
    return params, state


def test_a_scan_carry_whose_rate_changed_names_the_way_out():
    """JAX's structure error shows the static data: it says what static is and how to make the scalars leaves."""
    optimizer = anyoptim.Adam(0.1)
    params = {"w": jnp.asarray([1.0, -2.0])}
    state = optimizer.init(params)
    optimizer.learning_rate = 0.05
    with pytest.raises(TypeError, match=r"dataclasses\.replace\(state, static=\(\)\) makes them leaves"):
        _scan(optimizer, params, state, jnp.ones((2, 2)))
    final, last = _scan(optimizer, params, replace(state, static=()), jnp.ones((2, 2)))
    eager, eager_state = params, state
    for _ in range(2):
        eager, eager_state = optimizer.step(eager, {"w": jnp.ones(2)}, eager_state)
    np.testing.assert_allclose(np.asarray(final["w"]), np.asarray(eager["w"]), rtol=1e-12)
    assert float(last.learning_rate) == eager_state.learning_rate == 0.05
    # The hint lives in the pytree's static data only: the state's own field is a plain tuple.
    assert type(state.static) is tuple and repr(state.static) == repr(BOTH)
    rebuilt = jax.tree_util.tree_map(lambda leaf: leaf, state)
    assert type(rebuilt.static) is tuple and rebuilt.static == BOTH
    treedef = jax.tree_util.tree_structure(state)
    assert pickle.loads(pickle.dumps(treedef)) == treedef


def test_a_rate_assigned_between_jitted_steps_is_used_by_a_new_jit():
    """The guide: a setting assigned later takes effect in a new ``jax.jit(opt.step)`` (the old one dropped)."""
    optimizer = anyoptim.SGD(0.1)
    params, grads = {"w": jnp.asarray([1.0])}, {"w": jnp.asarray([1.0])}
    step = jax.jit(optimizer.step)
    _, state = step(params, grads, optimizer.init(params))
    optimizer.learning_rate = 0.5
    step = jax.jit(optimizer.step)  # the old one is gone: JAX cannot reuse its trace
    gc.collect()
    moved, state = step(params, grads, state)
    assert (float(moved["w"][0]), state.learning_rate) == (0.5, 0.5)
    # A function of one's own, made anew, is traced anew whatever still lives (here a jitted opt.step traced at 0.5).
    kept = jax.jit(optimizer.step)
    assert float(kept(params, grads, state)[0]["w"][0]) == 0.5
    optimizer.learning_rate = 0.25
    moved, state = jax.jit(lambda p, g, s: optimizer.step(p, g, s))(params, grads, state)
    assert (float(moved["w"][0]), state.learning_rate) == (0.75, 0.25)
    del kept


@pytest.mark.parametrize("policy", ["ignore", "skip"])
def test_eager_numpy_steps_keep_static(policy):
    """The prepared (fast) eager step keeps ``static`` as the full step does: a state does not change it by itself."""
    optimizer = anyoptim.Adam(0.1, on_nonfinite=policy)
    params, grads = {"w": np.array([1.0, -2.0])}, {"w": np.array([0.5, 1.5])}
    state = optimizer.init(params)
    expected = BOTH if policy == "ignore" else ("learning_rate",)
    seen = [state.static]
    for _ in range(3):  # the second and third take the prepared step
        params, state = optimizer.step(params, grads, state)
        seen.append(state.static)
    assert seen == [expected] * 4
    optimizer.learning_rate = anyoptim.schedules.cosine_decay(0.1, 10)  # a schedule: the rate is a leaf from now on
    params, state = optimizer.step(params, grads, state)
    assert state.static == tuple(name for name in expected if name != "learning_rate")


def test_a_state_pickled_before_static_existed_still_flattens():
    """An older anyoptim's pickle (a pickled estimator's state) has no ``static``: it loads as all leaves."""
    state = anyoptim.Adam(0.1).init({"w": jnp.asarray([1.0, -2.0])})
    old = anyoptim.OptimizerState(state.count, state.learning_rate, state.slots, state.skipped)
    del old.__dict__["static"]  # what unpickling an older state's __dict__ gives
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.static == () and loaded.__dict__["static"] == ()
    names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(loaded)[0]]
    assert names == [".count", ".learning_rate", ".slots['m']['w']", ".slots['v']['w']", ".skipped"]
    again = pickle.loads(pickle.dumps(state))
    assert again.static == BOTH and jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(state)


@pytest.mark.parametrize("policy", ["ignore", "skip"])
def test_a_restored_state_resumes_in_a_scan_as_the_uninterrupted_run(tmp_path, policy):
    """save, load with the optimizer, go on in a ``lax.scan``: the numbers of four eager steps in a row."""
    pytest.importorskip("safetensors")
    optimizer = anyoptim.Adam(0.1, on_nonfinite=policy)
    rows = jnp.asarray([[0.5, 1.5], [np.nan, 1.0] if policy == "skip" else [0.25, 1.0], [1.0, -1.0], [0.5, 0.5]])
    params = {"w": jnp.asarray([1.0, -2.0])}
    eager, eager_state = params, optimizer.init(params)
    for row in rows:
        eager, eager_state = optimizer.step(eager, {"w": row}, eager_state)
    half, half_state = _scan(optimizer, params, optimizer.init(params), rows[:2])
    anyoptim.save(tmp_path / "half.safetensors", half, half_state, optimizer=optimizer)
    loaded, loaded_state = anyoptim.load(tmp_path / "half.safetensors", like=params, optimizer=optimizer)
    assert loaded_state.static == optimizer.init(params).static
    final, final_state = _scan(optimizer, loaded, loaded_state, rows[2:])
    np.testing.assert_allclose(np.asarray(final["w"]), np.asarray(eager["w"]), rtol=1e-12)
    assert (int(final_state.count), int(final_state.skipped), float(final_state.learning_rate)) == (
        eager_state.count,
        eager_state.skipped,
        eager_state.learning_rate,
    )
    # Loaded into an optimizer of another rate (strict=False): the scan's error names the way out, which works.
    slower = anyoptim.Adam(0.05, on_nonfinite=policy)
    with pytest.warns(anyoptim.checkpoint.CheckpointWarning):
        loaded, loaded_state = anyoptim.load(tmp_path / "half.safetensors", like=params, optimizer=slower, strict=False)
    # Under "skip" the rate a step returns is chosen on the device (the old one where skipped): a leaf out where a
    # number came in, which JAX also reports as static data that differ, so the message names the way out too.
    with pytest.raises(TypeError, match=r"static=\(\)\) makes them leaves"):
        _scan(slower, loaded, loaded_state, rows[2:])
    final, final_state = _scan(slower, loaded, replace(loaded_state, static=()), rows[2:])
    assert float(final_state.learning_rate) == 0.05 and int(final_state.count) == eager_state.count
