"""The backward pass written into given arrays (anyoptim.nn.inplace) equals the portable one (anyoptim.nn.layers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyoptim
import anyoptim.nn.inplace as inplace
from anyoptim.engines.inplace import in_place_ops
from anyoptim.nn import ACTIVATIONS, OUTPUTS
from anyoptim.nn.layers import backprop
from tests.helpers import RTOL_SAME_BACKEND, from_numpy, to_numpy

WIDTHS = {"sigmoid": 1, "softmax": 4, "identity": 2}


def _problem(dims, output, n, dtype, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dims[0])).astype(dtype)
    if output == "softmax":
        t = np.eye(dims[-1], dtype=dtype)[rng.integers(0, dims[-1], n)]
    elif output == "sigmoid":
        t = rng.integers(0, 2, (n, 1)).astype(dtype)
    else:
        t = rng.standard_normal((n, dims[-1])).astype(dtype)
    return X, t


def _both(model, params, X, t):
    """(loss, grads) of the portable pass and of the in-place one, which writes into a flat buffer's views."""
    keys = tuple((f"W{layer}", f"b{layer}") for layer in range(1, model.n_layers + 1))
    settings = {"keys": keys, "hidden_activation": model.hidden_activation, "output": model.output}
    expected = backprop(np, params, X, t, None, **settings)
    out = anyoptim.flatten({key: np.full_like(value, np.nan) for key, value in params.items()})
    got = inplace.backprop_into(np, params, X, t, out, **settings)
    assert got[1] is out
    return expected, got


def _assert_same(expected, got, dtype):
    rtol = RTOL_SAME_BACKEND[np.dtype(dtype).name]
    assert float(got[0]) == pytest.approx(float(expected[0]), rel=rtol)
    for key, value in expected[1].items():
        np.testing.assert_allclose(got[1][key], value, rtol=rtol, atol=rtol * 1e-3, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_in_place_pass_equals_the_portable_one(activation, output, dtype):
    model = anyoptim.MLP([5, 7, 6, WIDTHS[output]], hidden_activation=activation, output=output)
    X, t = _problem(model.layer_dims, output, 9, dtype, seed=0)
    params = model.init(seed=3, like=X)
    expected, got = _both(model, params, X, t)
    _assert_same(expected, got, dtype)


@given(
    widths=st.lists(st.integers(1, 12), min_size=0, max_size=3),
    n=st.integers(1, 40),
    scale=st.floats(0.01, 10.0),
    activation=st.sampled_from(ACTIVATIONS),
    output=st.sampled_from(OUTPUTS),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_in_place_pass_equals_the_portable_one_on_any_network(widths, n, scale, activation, output, dtype, seed):
    dims = [3, *widths, WIDTHS[output]]
    model = anyoptim.MLP(dims, hidden_activation=activation, output=output)
    X, t = _problem(dims, output, n, dtype, seed)
    params = {key: value * dtype(scale) for key, value in model.init(seed=seed, like=X).items()}
    expected, got = _both(model, params, X, t)
    _assert_same(expected, got, dtype)


def test_relu_passes_no_gradient_at_zero():
    """Inputs that make a hidden unit exactly 0 give it slope 0 on both passes (as the layers module defines it)."""
    model = anyoptim.MLP([2, 3, 1])
    params = {"W1": np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]), "b1": np.zeros(3)}
    params |= {"W2": np.ones((3, 1)), "b2": np.zeros(1)}
    X, t = np.array([[0.0, 1.0], [2.0, -1.0]]), np.array([[1.0], [0.0]])
    expected, got = _both(model, params, X, t)
    _assert_same(expected, got, np.float64)
    assert got[1]["W1"][0, 2] == 0.0 and got[1]["b1"][2] == 0.0  # unit 3 is 0 for every sample


def test_out_may_be_the_params_themselves():
    """Every product that reads a weight runs before its gradient is written, as in the portable pass."""
    model = anyoptim.MLP([4, 6, 5, 3], output="softmax")
    X, t = _problem(model.layer_dims, "softmax", 8, np.float64, seed=1)
    params = anyoptim.flatten(model.init(seed=0, like=X))
    expected = model.value_and_grad(np, {k: v.copy() for k, v in params.items()}, X, t)
    loss, grads = model.value_and_grad(np, params, X, t, out=params)
    assert grads is params
    _assert_same(expected, (loss, grads), np.float64)


def test_penalized_model_gradients_unchanged():
    """The estimators' network (L2 penalty, loss scale) on the in-place pass equals it on the portable one."""
    pytest.importorskip("sklearn")  # the sklearn extra
    from anyoptim.sklearn.model import PenalizedMLP

    model = PenalizedMLP([6, 8, 3], "relu", "softmax", alpha=0.3, loss_scale=0.5)
    X, t = _problem(model.layer_dims, "softmax", 10, np.float64, seed=2)
    params = anyoptim.flatten(model.init(seed=0, like=X))
    expected = model.value_and_grad(np, params, X, t)  # no out: the portable pass
    out = anyoptim.flatten({key: np.zeros_like(value) for key, value in params.items()})
    got = model.value_and_grad(np, params, X, t, out=out)
    assert got[1] is out
    _assert_same(expected, got, np.float64)


def test_fit_is_unchanged_by_the_in_place_pass(monkeypatch):
    """A whole training run on NumPy gives the same costs and weights with and without the in-place operations."""
    X, y = anyoptim.datasets.make_moons(n_samples=120, noise=0.2, seed=0)
    model = anyoptim.MLP([2, 8, 6, 1])
    fast = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=15, batch_size=32, progress=False)
    monkeypatch.setattr(inplace, "in_place_ops", lambda xp: None)
    portable = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=15, batch_size=32, progress=False)
    np.testing.assert_allclose(fast.history.cost, portable.history.cost, rtol=1e-12)
    for key, value in portable.params.items():
        np.testing.assert_allclose(fast.params[key], value, rtol=1e-12, atol=1e-15, err_msg=key)


def test_only_numpy_has_the_in_place_operations(backend, xp):
    assert (in_place_ops(xp) is not None) == (backend == "numpy")
    model = anyoptim.MLP([3, 4, 2], output="softmax")
    X_np, t_np = _problem(model.layer_dims, "softmax", 5, np.float64, seed=0)
    X, t = from_numpy(xp, X_np), from_numpy(xp, t_np)
    params = model.init(seed=0, like=X)
    expected = model.value_and_grad(np, model.init(seed=0, like=X_np), X_np, t_np)
    loss, grads = model.value_and_grad(xp, params, X, t, out={k: xp.zeros_like(v) for k, v in params.items()})
    assert float(loss) == pytest.approx(float(expected[0]), rel=1e-12)
    for key, value in expected[1].items():
        np.testing.assert_allclose(to_numpy(grads[key]), value, rtol=1e-12, atol=1e-15, err_msg=key)


def test_numpy_operations_write_where_they_are_told():
    ops = in_place_ops(np)
    z = np.array([[-2.0, 0.0, 3.0], [1.0, -0.5, np.nan]], dtype=np.float32)
    ops.relu(z)
    np.testing.assert_array_equal(z[:, :2], [[0.0, 0.0], [1.0, 0.0]])
    assert z[0, 2] == 3.0 and np.isnan(z[1, 2]) and z.dtype == np.float32
    d = np.full((2, 3), 2.0, dtype=np.float32)
    ops.mask_inactive(d, np.array([[0.0, 1.0, 0.0], [3.0, 0.0, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(d, [[0.0, 2.0, 0.0], [2.0, 0.0, 2.0]])
    a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
    flat = np.zeros(10)
    out = flat[2:10].reshape(2, 4)  # a view into a flat buffer, as fit's gradients are
    assert ops.matmul(a, b, out) is out
    np.testing.assert_array_equal(flat[2:].reshape(2, 4), a @ b)
