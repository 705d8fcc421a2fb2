"""Properties every optimizer must have, whatever the shapes, dtypes, hyperparameters and gradients.

* Bias correction: Adam's first step is ``lr * g / (|g| + eps)``; late steps tend to the
  uncorrected update; ``beta1 = 0`` Adam is bias-corrected RMSprop.
* Epsilon safety: zero, subnormal, huge and mixed-sign gradients never produce NaN or inf,
  and zero gradients never move the parameters.
* Invariances that follow from the algorithms (EMA momentum is a rescaled heavy ball; the
  adaptive methods with ``epsilon = 0`` ignore the scale of the gradient).
* Convergence, table-driven: every optimizer reaches the minimum of a convex quadratic and
  makes progress on Rosenbrock's function.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim import schedules
from tests.cases import CASES, Case, case_params
from tests.helpers import RTOL_SAME_BACKEND, to_numpy

DTYPES = st.sampled_from(["float32", "float64"])
BETAS = st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999])
EPSILONS = st.sampled_from([1e-8, 1e-6, 1e-3])
LEARNING_RATES = st.sampled_from([1e-3, 0.01, 0.1, 1.0])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
VALUES = st.floats(-8.0, 8.0, allow_nan=False, allow_subnormal=False).map(lambda x: 0.0 if abs(x) < 1e-3 else x)
NONZERO = st.floats(0.01, 8.0).flatmap(lambda x: st.sampled_from([x, -x]))


def _array(xp, values: np.ndarray, dtype: str):
    # Not tests.helpers.from_numpy: np.ascontiguousarray turns 0-D arrays into shape (1,).
    return xp.asarray(np.array(values, dtype=dtype, copy=True))


def _close(actual, expected, dtype: str, *, rtol: float | None = None) -> None:
    rtol = RTOL_SAME_BACKEND[dtype] if rtol is None else rtol
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 0.0)
    actual = np.asarray(actual) if isinstance(actual, (np.ndarray, np.generic)) else to_numpy(actual)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=rtol * scale)


# --------------------------------------------------------------------------- bias correction


@settings(max_examples=20)
@given(
    shape=SHAPES,
    dtype=DTYPES,
    beta1=BETAS,
    beta2=BETAS,
    epsilon=EPSILONS,
    learning_rate=LEARNING_RATES,
    data=st.data(),
)
def test_adam_first_step_is_sign_like(xp, shape, dtype, beta1, beta2, epsilon, learning_rate, data):
    """At t = 1 the corrected moments are g and g^2, so the update is lr * g / (|g| + eps)."""
    theta = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="theta").astype(dtype)
    g = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="g").astype(dtype)
    optimizer = anyoptim.Adam(learning_rate, beta1, beta2, epsilon)
    params = {"w": _array(xp, theta, dtype)}
    new, state = optimizer.step(params, {"w": _array(xp, g, dtype)}, optimizer.init(params))
    g64 = g.astype(np.float64)
    _close(new["w"], theta.astype(np.float64) - learning_rate * g64 / (np.abs(g64) + epsilon), dtype)
    _close(to_numpy(state.slots["m"]["w"]) / (1 - beta1), g64, dtype)
    _close(to_numpy(state.slots["v"]["w"]) / (1 - beta2), g64 * g64, dtype)


@settings(max_examples=15)
@given(
    shape=SHAPES,
    beta1=st.sampled_from([0.5, 0.9, 0.99]),
    beta2=st.sampled_from([0.9, 0.99, 0.999]),
    epsilon=EPSILONS,
    data=st.data(),
)
def test_adam_late_steps_tend_to_the_uncorrected_update(shape, beta1, beta2, epsilon, data):
    """From one state, the step taken as step t approaches lr m / (sqrt(v) + eps) as t grows."""
    m0 = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="m")
    v0 = np.abs(data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="v"))
    g = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="g")
    theta = np.zeros(shape)
    m = beta1 * m0 + (1 - beta1) * g
    v = beta2 * v0 + (1 - beta2) * g * g
    uncorrected = m / (np.sqrt(v) + epsilon)
    optimizer = anyoptim.Adam(1.0, beta1, beta2, epsilon)
    template = optimizer.init({"w": theta})
    scale = max(1.0, float(np.max(np.abs(uncorrected), initial=0.0)))
    gaps = []
    for t in (1, 2, 10, 100, 1_000, 10_000, 100_000):
        state = dataclasses.replace(template, count=t - 1, slots={"m": {"w": m0.copy()}, "v": {"w": v0.copy()}})
        new, after = optimizer.step({"w": theta.copy()}, {"w": g}, state)
        assert after.count == t
        corrected = -new["w"]
        # corrected / uncorrected lies between sqrt(1 - beta2^t) / (1 - beta1^t) and 1 / (1 - beta1^t).
        a, b = 1 - beta1**t, 1 - beta2**t
        bound = max(1 / a - 1, abs(1 - math.sqrt(b) / a))
        gap = np.abs(corrected - uncorrected)
        assert np.all(gap <= bound * np.abs(uncorrected) + 1e-13 * scale), (t, gap, bound)
        gaps.append(float(np.max(gap, initial=0.0)))
    assert gaps[-1] <= 1e-12 * scale, gaps


@settings(max_examples=20)
@given(
    shape=SHAPES,
    dtype=DTYPES,
    beta=BETAS,
    epsilon=EPSILONS,
    learning_rate=LEARNING_RATES,
    n_steps=st.integers(1, 6),
    data=st.data(),
)
def test_adam_with_beta1_zero_is_bias_corrected_rmsprop(xp, shape, dtype, beta, epsilon, learning_rate, n_steps, data):
    theta = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="theta").astype(dtype)
    grads = [data.draw(hnp.arrays(np.float64, shape, elements=VALUES)).astype(dtype) for _ in range(n_steps)]
    optimizer = anyoptim.Adam(learning_rate, beta1=0.0, beta2=beta, epsilon=epsilon)
    params = {"w": _array(xp, theta, dtype)}
    state = optimizer.init(params)
    expected, s = theta.astype(np.float64), np.zeros(shape)
    for t, g in enumerate(grads, start=1):
        g64 = g.astype(np.float64)
        s = beta * s + (1 - beta) * g64 * g64
        expected = expected - learning_rate * g64 / (np.sqrt(s / (1 - beta**t)) + epsilon)
        params, state = optimizer.step(params, {"w": _array(xp, g, dtype)}, state)
        _close(params["w"], expected, dtype, rtol={"float64": 1e-12, "float32": 1e-5}[dtype])


@settings(max_examples=15)
@given(shape=SHAPES, beta=BETAS, n_steps=st.integers(1, 6), data=st.data())
def test_adam_beta1_zero_is_anyoptim_rmsprop_with_a_correcting_schedule(shape, beta, n_steps, data):
    """With epsilon = 0 the correction 1/sqrt(1 - beta^t) is a learning-rate schedule of RMSprop."""
    theta = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="theta")
    grads = [data.draw(hnp.arrays(np.float64, shape, elements=NONZERO)) for _ in range(n_steps)]
    adam = anyoptim.Adam(0.1, beta1=0.0, beta2=beta, epsilon=0.0)
    rmsprop = anyoptim.RMSprop(lambda count: 0.1 * math.sqrt(1 - beta ** (count + 1)), beta=beta, epsilon=0.0)
    a, b = {"w": theta.copy()}, {"w": theta.copy()}
    sa, sb = adam.init(a), rmsprop.init(b)
    for g in grads:
        a, sa = adam.step(a, {"w": g}, sa)
        b, sb = rmsprop.step(b, {"w": g}, sb)
        _close(a["w"], b["w"], "float64")


# --------------------------------------------------------------------------- the optimizer table


def _make(case: Case, **options) -> anyoptim.Optimizer:
    """The case's example; AdamW and Lion with a weight decay of 0.01 (options may override it)."""
    return case.make(**{**({"weight_decay": 0.01} if case.decoupled else {}), **options})


def _all_finite(tree_leaves) -> bool:
    return all(bool(np.all(np.isfinite(to_numpy(leaf)))) for leaf in tree_leaves)


def _leaves(tree) -> list:
    return anyoptim.tree.tree_flatten(tree)[1]


# --------------------------------------------------------------------------- epsilon safety


def _extreme_values(dtype: str) -> list[float]:
    info = np.finfo(dtype)
    # Huge, but with a square (and a few summed squares: Adagrad) that still fits the dtype.
    huge = float(np.sqrt(info.max)) / 4
    tiny = float(info.smallest_subnormal)
    return [0.0, tiny, -tiny, float(info.smallest_normal), -float(info.smallest_normal), 1.0, -1.0, huge, -huge]


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=5)
@given(
    dtype=DTYPES, shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=5), n_steps=st.integers(1, 6), data=st.data()
)
def test_extreme_gradients_never_give_nan_or_inf(xp, case, dtype, shape, n_steps, data):
    name = case.id
    elements = st.sampled_from(_extreme_values(dtype))
    theta = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="theta").astype(dtype)
    optimizer = _make(case)
    params = {"W": _array(xp, theta.reshape(1, -1), dtype), "b": _array(xp, theta, dtype)}
    state = optimizer.init(params)
    for step in range(n_steps):
        g = data.draw(hnp.arrays(np.float64, shape, elements=elements), label=f"g{step}").astype(dtype)
        params, state = optimizer.step(
            params, {"W": _array(xp, g.reshape(1, -1), dtype), "b": _array(xp, g, dtype)}, state
        )
        assert _all_finite(_leaves(params)), f"{name}: non-finite params after step {step + 1}"
        for slot, tree in state.slots.items():
            assert _all_finite(_leaves(tree)), f"{name}: non-finite state slot {slot!r} after step {step + 1}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_global_norm_clipping_of_the_largest_gradients_stays_finite(xp, dtype):
    """The joint norm of finfo.max gradients overflows; clipping must still give finite steps."""
    largest = float(np.finfo(dtype).max)
    optimizer = anyoptim.SGD(1.0, clip_global_norm=1.0)
    params = {"a": _array(xp, np.zeros(3), dtype), "b": _array(xp, np.zeros(2), dtype)}
    grads = {"a": _array(xp, np.array([largest, -largest, 1.0]), dtype), "b": _array(xp, np.array([largest, 0]), dtype)}
    with np.errstate(over="ignore"):
        params, _ = optimizer.step(params, grads, optimizer.init(params))
    assert _all_finite(_leaves(params))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_global_norm_clipping_of_the_largest_gradients_keeps_the_clipped_norm(dtype):
    largest = float(np.finfo(dtype).max)
    optimizer = anyoptim.SGD(1.0, clip_global_norm=1.0)
    params = {"a": np.zeros(3, dtype=dtype), "b": np.zeros(2, dtype=dtype)}
    grads = {"a": np.array([largest, -largest, 1.0], dtype=dtype), "b": np.array([largest, 0], dtype=dtype)}
    with np.errstate(over="ignore"):
        params, _ = optimizer.step(params, grads, optimizer.init(params))
    step = np.concatenate([params["a"], params["b"]]).astype(np.float64)
    # The clipped gradient is (1, -1, ~0, 1, 0) / sqrt(3): a step of norm exactly clip_global_norm.
    np.testing.assert_allclose(np.linalg.norm(step), 1.0, rtol=1e-5)


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=4)
@given(dtype=DTYPES, shape=SHAPES, n_steps=st.integers(1, 5), data=st.data())
def test_zero_gradients_do_not_move_a_fresh_optimizer(xp, case, dtype, shape, n_steps, data):
    """Nothing accumulated, nothing to follow: every optimizer (weight decay off) stays put, bit for bit."""
    theta = data.draw(hnp.arrays(np.float64, shape, elements=VALUES), label="theta").astype(dtype)
    optimizer = _make(case, weight_decay=0.0)
    params = {"w": _array(xp, theta, dtype)}
    state = optimizer.init(params)
    zeros = _array(xp, np.zeros(shape), dtype)
    for _ in range(n_steps):
        params, state = optimizer.step(params, {"w": zeros}, state)
    assert to_numpy(params["w"]).tobytes() == theta.tobytes()
    assert state.count == n_steps


# --------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("nesterov", [False, True])
@settings(max_examples=15)
@given(dtype=DTYPES, shape=SHAPES, beta=st.sampled_from([0.0, 0.5, 0.9]), n_steps=st.integers(1, 6), data=st.data())
def test_ema_momentum_is_a_heavy_ball_with_a_smaller_rate(nesterov, dtype, shape, beta, n_steps, data):
    """v_ema = (1 - beta) v_heavy, so EMA momentum at rate lr is the heavy ball at lr (1 - beta)."""
    theta = data.draw(hnp.arrays(np.float64, shape, elements=VALUES)).astype(dtype)
    ema = anyoptim.Momentum(0.1, beta, form="ema", nesterov=nesterov)
    heavy = anyoptim.Momentum(0.1 * (1 - beta), beta, form="heavy_ball", nesterov=nesterov)
    a, b = {"w": theta.copy()}, {"w": theta.copy()}
    sa, sb = ema.init(a), heavy.init(b)
    for _ in range(n_steps):
        g = data.draw(hnp.arrays(np.float64, shape, elements=VALUES)).astype(dtype)
        a, sa = ema.step(a, {"w": g}, sa)
        b, sb = heavy.step(b, {"w": g.copy()}, sb)
        _close(a["w"], b["w"].astype(np.float64), dtype, rtol={"float64": 1e-12, "float32": 1e-5}[dtype])


SCALE_FREE = [case for case in CASES if case.scale_free is not None]


@pytest.mark.parametrize("case", case_params(SCALE_FREE))
@settings(max_examples=10)
@given(dtype=DTYPES, shape=SHAPES, power=st.integers(-20, 20), n_steps=st.integers(1, 8), data=st.data())
def test_adaptive_methods_ignore_the_gradient_scale(case, dtype, shape, power, n_steps, data):
    """With epsilon = 0, gradients times 2^k give bit-identical trajectories (powers of two scale exactly).

    RAdam is not in the table: its warm-up steps are momentum SGD, which follows the scale."""
    theta = data.draw(hnp.arrays(np.float64, shape, elements=VALUES)).astype(dtype)
    grads = [data.draw(hnp.arrays(np.float64, shape, elements=NONZERO)).astype(dtype) for _ in range(n_steps)]
    first, second = case.make(**case.scale_free), case.make(**case.scale_free)
    a, b = {"w": theta.copy()}, {"w": theta.copy()}
    sa, sb = first.init(a), second.init(b)
    factor = 2.0**power
    for g in grads:
        a, sa = first.step(a, {"w": g}, sa)
        b, sb = second.step(b, {"w": np.asarray(g * factor, dtype=dtype)}, sb)
        np.testing.assert_array_equal(a["w"], b["w"])


# --------------------------------------------------------------------------- convergence

A_DIAGONAL = np.array([1.0, 10.0, 3.0])
MINIMUM = np.array([1.0, -2.0, 0.5])


def quadratic_gradient(x):
    return A_DIAGONAL.astype(x.dtype) * (x - MINIMUM.astype(x.dtype))


def rosenbrock(x) -> float:
    x = x.astype(np.float64)
    return float((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)


def rosenbrock_gradient(x):
    g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])
    return g.astype(x.dtype)


# Every rate halves every 100 steps on the quadratic (every 500 on Rosenbrock's long valley), so that
# the sign-like and adaptive methods settle instead of hovering.  Weight decay is off: it moves the minimum.
CONVERGENCE = [case for case in CASES if case.convergence is not None]


def _without_decay(case: Case):
    return lambda learning_rate: case.make(learning_rate, weight_decay=0.0)


def _run(make, learning_rate, start, gradient, *, decay_steps, n_steps=1000):
    optimizer = make(schedules.exponential_decay(learning_rate, decay_steps=decay_steps, decay_rate=0.5))
    params = {"x": start.copy()}
    state = optimizer.init(params)
    for _ in range(n_steps):
        params, state = optimizer.step(params, {"x": gradient(params["x"])}, state)
    return params["x"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", case_params(CONVERGENCE))
def test_reaches_the_minimum_of_a_convex_quadratic(case, dtype):
    learning_rate, _ = case.convergence
    for start in (np.array([4.0, 3.0, -2.0]), np.array([-3.0, 0.0, 5.0])):
        final = _run(_without_decay(case), learning_rate, start.astype(dtype), quadratic_gradient, decay_steps=100)
        assert final.dtype == np.dtype(dtype)
        assert np.max(np.abs(final - MINIMUM)) < 1e-3, (case.id, final)


@pytest.mark.parametrize("case", case_params(CONVERGENCE))
def test_makes_progress_on_rosenbrock(case):
    _, learning_rate = case.convergence
    start = np.array([-1.2, 1.0])
    final = _run(_without_decay(case), learning_rate, start, rosenbrock_gradient, decay_steps=500)
    assert np.all(np.isfinite(final))
    assert rosenbrock(final) < rosenbrock(start) / 5, (case.id, final, rosenbrock(final))
