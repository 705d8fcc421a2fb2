"""Defects found in review, each pinned by the smallest test that showed it."""

from __future__ import annotations

import math
import warnings
from collections import namedtuple

import array_api_compat.numpy as xnp
import numpy as np
import pytest

import anyoptim
from anyoptim.transforms import clip_factor


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("learning_rate", math.nan),
        ("learning_rate", -1.0),
        ("beta1", 1.0),
        ("epsilon", -1e-8),
        ("weight_decay", -0.1),
        ("clip_global_norm", 0.0),
        ("engine", "fast"),
        ("on_nonfinite", "warn"),
    ],
)
def test_settings_assigned_after_construction_are_checked_and_kept(name, value):
    optimizer = anyoptim.Adam(0.1)
    before = getattr(optimizer, name)
    with pytest.raises(ValueError, match=name):
        setattr(optimizer, name, value)
    assert getattr(optimizer, name) == before
    params = {"w": np.ones(3)}
    params, _ = optimizer.step(params, {"w": np.ones(3)}, optimizer.init(params))
    assert np.all(np.isfinite(params["w"]))


def test_momentum_form_is_checked_on_assignment():
    optimizer = anyoptim.Momentum(0.1)
    with pytest.raises(ValueError, match="form"):
        optimizer.form = "nesterov"
    assert optimizer.form == "ema"


@pytest.mark.parametrize("value", [True, "0.1", b"0.1"])
def test_booleans_and_strings_are_not_numbers(value):
    with pytest.raises(ValueError, match="learning_rate must be a number"):
        anyoptim.SGD(value)


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: anyoptim.NAdam(amsgrad=True), "amsgrad"),
        (lambda: anyoptim.RAdam(amsgrad=True), "amsgrad"),
        (lambda: anyoptim.RAdam(eps_root=1.0), "eps_root"),
    ],
)
def test_options_an_optimizer_does_not_implement_are_refused(make, option):
    with pytest.raises(TypeError, match=option):
        make()


def test_one_array_under_two_names_is_refused_before_anything_changes():
    shared = np.zeros(2)
    optimizer = anyoptim.SGD(1.0)
    with pytest.raises(ValueError, match="same array"):
        optimizer.init({"a": shared, "b": shared})
    state = optimizer.init({"a": shared, "b": np.zeros(2)})
    with pytest.raises(ValueError, match="same array"):
        optimizer.step({"a": shared, "b": shared}, {"a": np.ones(2), "b": np.ones(2)}, state)
    np.testing.assert_array_equal(shared, np.zeros(2))


def test_tuple_and_named_tuple_are_told_apart_in_the_message():
    Pair = namedtuple("Pair", "a b")
    optimizer = anyoptim.SGD(0.1)
    params = (np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="expected a tuple of 2, got a Pair of 2"):
        optimizer.step(params, Pair(np.ones(2), np.ones(2)), optimizer.init(params))


def test_a_tree_mask_is_copied_so_later_changes_to_it_do_not_leak_into_the_fast_path():
    mask = {"W": True, "b": True}
    optimizer = anyoptim.SGD(1.0, weight_decay=0.5, weight_decay_mask=mask)
    mask["b"] = False
    params = {"W": np.ones(2), "b": np.ones(2)}
    grads = {"W": np.zeros(2), "b": np.zeros(2)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    np.testing.assert_allclose(params["b"], 0.25)  # decayed both steps, as the mask said at construction
    with pytest.raises(TypeError, match="must be a bool"):
        anyoptim.SGD(1.0, weight_decay=0.5, weight_decay_mask={"W": 1})


def test_global_norm_clip_factor_of_float16_gradients_does_not_overflow():
    factor = clip_factor(xnp, [np.ones(100_000, np.float16)], 1.0)
    np.testing.assert_allclose(float(factor), 1 / math.sqrt(100_000), rtol=1e-6)


@pytest.mark.parametrize("arena_dtype", [np.float64, np.uint8])
def test_fused_numpy_engine_on_float32_views_of_another_dtype(arena_dtype):
    arena = np.zeros(32 // np.dtype(arena_dtype).itemsize, dtype=arena_dtype)
    floats = arena.view(np.float32)
    params = {"a": floats[:4], "b": floats[4:8]}
    params["a"][...] = 1.0
    params["b"][...] = 2.0
    grads = {"a": np.full(4, 0.5, np.float32), "b": np.full(4, 0.5, np.float32)}
    optimizer = anyoptim.SGD(1.0, engine="fused")
    params, _ = optimizer.step(params, grads, optimizer.init(params))
    np.testing.assert_array_equal(params["a"], np.full(4, 0.5, np.float32))
    np.testing.assert_array_equal(params["b"], np.full(4, 1.5, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_norm_clipping_of_subnormal_gradients_warns_of_no_overflow(dtype):
    """A largest element of 1e-45 (float32) made c / scale overflow: a RuntimeWarning for a factor that is 1
    (found by the new-user trial).  The factor is 1 with no warning, and the step equals the unclipped one."""
    from anyoptim.transforms import clip_factor

    tiny = np.finfo(dtype).smallest_subnormal
    grads = [np.array([tiny, -tiny], dtype), np.array([0.0], dtype)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(clip_factor(np, grads, 1.0)) == 1.0
        clipped, plain = anyoptim.SGD(0.1, clip_global_norm=1.0), anyoptim.SGD(0.1)
        params = {"w": np.ones(2, dtype)}
        ours, _ = clipped.step({"w": params["w"].copy()}, {"w": grads[0]}, clipped.init(params))
        theirs, _ = plain.step({"w": params["w"].copy()}, {"w": grads[0]}, plain.init(params))
    np.testing.assert_array_equal(ours["w"], theirs["w"])
    assert float(clip_factor(np, [np.array([3.0], dtype), np.array([4.0], dtype)], 1.0)) == pytest.approx(0.2)
