"""The MLP: gradients against finite differences on every backend, stable losses, init, labels, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyoptim
from anyoptim.nn import ACTIVATIONS, OUTPUTS
from tests.helpers import from_numpy, to_numpy, tree_from_numpy, tree_to_numpy

WIDTHS = {"sigmoid": 1, "softmax": 3, "identity": 2}


def _problem(output: str, n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Host data for a [3, 4, 3, K] network: features and labels fitting ``output``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    if output == "sigmoid":
        y = rng.integers(0, 2, n)
    elif output == "softmax":
        y = rng.integers(0, WIDTHS["softmax"], n)
    else:
        y = rng.standard_normal((n, WIDTHS["identity"]))
    return X, y


def _central_differences(model, params_np, X, y, xp, h=1e-6):
    """∂loss/∂θ by central differences, every parameter perturbed on the host and the loss taken on ``xp``."""
    grads = {}
    for key, value in params_np.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            losses = []
            for sign in (1, -1):
                shifted = {k: v.copy() for k, v in params_np.items()}
                shifted[key][index] += sign * h
                losses.append(float(model.loss(tree_from_numpy(xp, shifted), X, y)))
            grad[index] = (losses[0] - losses[1]) / (2 * h)
        grads[key] = grad
    return grads


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_central_differences(xp, activation, output):
    model = anyoptim.MLP([3, 4, 3, WIDTHS[output]], hidden_activation=activation, output=output)
    X_np, y_np = _problem(output)
    X, y = from_numpy(xp, X_np), from_numpy(xp, y_np)
    params = model.init(seed=1, like=X)
    loss, grads = model.loss_and_grad(params, X, y)
    assert tuple(loss.shape) == ()
    assert float(loss) == pytest.approx(float(model.loss(params, X, y)), rel=1e-14)
    expected = _central_differences(model, tree_to_numpy(params), X, y, xp)
    for key in expected:
        np.testing.assert_allclose(to_numpy(grads[key]), expected[key], rtol=1e-6, atol=1e-8, err_msg=key)


def test_gradients_are_written_into_out(xp):
    model = anyoptim.MLP([3, 4, 3, 1])
    X_np, y_np = _problem("sigmoid")
    X, y = from_numpy(xp, X_np), from_numpy(xp, y_np)
    params = anyoptim.flatten(model.init(seed=0, like=X))
    out = anyoptim.flatten({key: xp.zeros_like(value) for key, value in params.items()})
    _, fresh = model.loss_and_grad(params, X, y)
    _, written = model.loss_and_grad(params, X, y, out=out)
    for key in fresh:
        np.testing.assert_array_equal(to_numpy(written[key]), to_numpy(fresh[key]))
    if anyoptim._namespace.is_mutable(xp):
        assert written is out
        for key in fresh:
            np.testing.assert_array_equal(to_numpy(out[key]), to_numpy(fresh[key]))


def _bce_reference(z: np.ndarray, y: np.ndarray) -> float:
    """-log σ(z) for y = 1 and -log(1 - σ(z)) = -log σ(-z) for y = 0, each written out in Python floats."""
    terms = [math.log1p(math.exp(-zi)) if yi == 1 else math.log1p(math.exp(zi)) for zi, yi in zip(z, y, strict=True)]
    return math.fsum(terms) / len(terms)


def _logits_model(output: str, k: int):
    """A one-layer model whose logits equal the input (identity weights), to test the losses on chosen logits."""
    model = anyoptim.MLP([k, k], output=output)
    return model, {"W1": np.eye(k), "b1": np.zeros(k)}


@given(st.lists(st.floats(-30, 30), min_size=1, max_size=20), st.integers(0, 2**32 - 1))
def test_binary_cross_entropy_matches_its_definition(logits, seed):
    model, params = _logits_model("sigmoid", 1)
    z = np.array(logits)[:, None]
    y = np.random.default_rng(seed).integers(0, 2, len(logits))
    assert float(model.loss(params, z, y)) == pytest.approx(_bce_reference(z[:, 0], y), rel=1e-9, abs=1e-12)


@given(st.lists(st.lists(st.floats(-30, 30), min_size=3, max_size=3), min_size=1, max_size=10))
def test_softmax_cross_entropy_matches_its_definition(rows):
    model, params = _logits_model("softmax", 3)
    z = np.array(rows)
    y = np.argmax(z, axis=1) if len(rows) % 2 else np.zeros(len(rows), dtype=int)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    reference = -np.mean(np.log(p[np.arange(len(y)), y]))
    assert float(model.loss(params, z, y)) == pytest.approx(reference, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_loss_and_gradients_finite_for_extreme_logits(xp, output):
    k = 1 if output == "sigmoid" else 3
    model = anyoptim.MLP([k, k], output=output)
    z = np.array([[1e4] * k, [-1e4] * k, [800.0] * k, [-800.0] * k])
    if output == "softmax":
        z[:, 0] *= -1
    params = tree_from_numpy(xp, {"W1": np.eye(k), "b1": np.zeros(k)})
    y = from_numpy(xp, np.array([0, 1, 0, 1]))
    loss, grads = model.loss_and_grad(params, from_numpy(xp, z), y)
    assert math.isfinite(float(loss)) and float(loss) > 100  # confidently wrong rows cost about |z|
    assert all(np.all(np.isfinite(to_numpy(g))) for g in grads.values())
    probabilities = to_numpy(model.forward(params, from_numpy(xp, z)))
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_mse_is_the_mean_over_samples_and_outputs():
    model, params = _logits_model("identity", 2)
    z = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]])
    y = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    assert float(model.loss(params, z, y)) == pytest.approx(np.mean((z - y) ** 2), rel=1e-15)


def test_binary_labels_as_vector_or_column_agree():
    model = anyoptim.MLP([3, 4, 1])
    X, y = _problem("sigmoid")
    params = model.init(seed=0)
    loss_vector, grads_vector = model.loss_and_grad(params, X, y)
    loss_column, grads_column = model.loss_and_grad(params, X, y[:, None])
    assert float(loss_vector) == float(loss_column)
    for key in grads_vector:
        np.testing.assert_array_equal(grads_vector[key], grads_column[key])


def test_class_indices_and_one_hot_agree():
    model = anyoptim.MLP([3, 4, 3], output="softmax")
    X, y = _problem("softmax")
    params = model.init(seed=0)
    loss_indices, grads_indices = model.loss_and_grad(params, X, y)
    loss_one_hot, grads_one_hot = model.loss_and_grad(params, X, np.eye(3)[y])
    assert float(loss_indices) == pytest.approx(float(loss_one_hot), rel=1e-15)
    for key in grads_indices:
        np.testing.assert_allclose(grads_indices[key], grads_one_hot[key], rtol=1e-14, atol=1e-17)


def test_predict(xp):
    X_np, _ = _problem("sigmoid", n=20)
    X = from_numpy(xp, X_np)
    binary = anyoptim.MLP([3, 4, 1])
    params = binary.init(seed=3, like=X)
    labels = to_numpy(binary.predict(params, X))
    assert labels.shape == (20,)
    np.testing.assert_array_equal(labels, (to_numpy(binary.forward(params, X))[:, 0] > 0.5).astype(int))
    multi = anyoptim.MLP([3, 4, 3], output="softmax")
    params = multi.init(seed=3, like=X)
    np.testing.assert_array_equal(
        to_numpy(multi.predict(params, X)), np.argmax(to_numpy(multi.forward(params, X)), axis=1)
    )
    regression = anyoptim.MLP([3, 4, 1], output="identity")
    params = regression.init(seed=3, like=X)
    values = to_numpy(regression.forward(params, X))[:, 0]
    np.testing.assert_array_equal(to_numpy(regression.predict(params, X)), values)


# --------------------------------------------------------------------------- initialization


def test_init_is_identical_on_every_backend(xp):
    model = anyoptim.MLP([2, 5, 2, 1])
    expected = model.init(seed=7)
    X = from_numpy(xp, np.zeros((1, 2)))
    params = model.init(seed=7, like=X)
    assert sorted(params) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    for key, value in expected.items():
        np.testing.assert_array_equal(to_numpy(params[key]), value)
    assert to_numpy(model.init(seed=7, xp=xp)["W2"]).tolist() == expected["W2"].tolist()


def test_init_shapes_seeds_and_dtypes():
    model = anyoptim.MLP([4, 6, 3], output="softmax")
    params = model.init(seed=0)
    assert {k: v.shape for k, v in params.items()} == {"W1": (4, 6), "b1": (6,), "W2": (6, 3), "b2": (3,)}
    assert params["W1"].dtype == np.float64 and not params["b1"].any()
    assert not np.array_equal(params["W1"], model.init(seed=1)["W1"])
    np.testing.assert_array_equal(params["W1"], model.init(seed=0)["W1"])
    single = model.init(seed=0, like=np.zeros((1, 4), dtype=np.float32))
    assert single["W2"].dtype == np.float32
    np.testing.assert_array_equal(single["W1"], params["W1"].astype(np.float32))
    assert model.init(seed=0, xp=np, dtype="float32")["b2"].dtype == np.float32


@pytest.mark.parametrize(("scheme", "variance"), [("he", lambda i, o: 2 / i), ("xavier", lambda i, o: 2 / (i + o))])
def test_init_variance(scheme, variance):
    model = anyoptim.MLP([400, 300], output="identity", init=scheme)
    weights = model.init(seed=0)["W1"]
    assert abs(weights.mean()) < 0.01 * math.sqrt(variance(400, 300))
    assert weights.var() == pytest.approx(variance(400, 300), rel=0.02)  # 120000 draws: sd of the estimate 0.4 %


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        (([2],), ValueError, "at least"),
        (([],), ValueError, "at least"),
        (([2, 0, 1],), ValueError, "layer_dims[1]"),
        (([2, -3, 1],), ValueError, "layer_dims[1]"),
        (([2, 2.5, 1],), TypeError, "layer_dims[1]"),
        (("21",), TypeError, "layer_dims"),
        (([2, 3, 1], "swish"), ValueError, "hidden_activation"),
        (([2, 3, 1], "relu", "tanh"), ValueError, "output"),
        (([2, 3, 1], "relu", "sigmoid", "orthogonal"), ValueError, "init"),
        (([2, 3, 2], "relu", "sigmoid"), ValueError, "one output"),
        (([2, 3, 1], "relu", "softmax"), ValueError, "two output"),
    ],
)
def test_bad_model_arguments(arguments, error, words):
    with pytest.raises(error, match=None) as raised:
        anyoptim.MLP(*arguments)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def _bad_calls():
    model = anyoptim.MLP([3, 4, 1])
    softmax = anyoptim.MLP([3, 4, 3], output="softmax")
    X, _ = _problem("sigmoid")
    y = np.array([0, 1, 1, 0, 1, 0])
    params = model.init(seed=0)
    nan_X = X.copy()
    nan_X[2, 1] = np.nan
    return [
        ("X 1-D", lambda: model.loss(params, X[:, 0], y), ValueError, "2-D"),
        ("X 3-D", lambda: model.loss(params, X[None], y), ValueError, "2-D"),
        ("X list", lambda: model.loss(params, X.tolist(), y), TypeError, "X must be an array"),
        ("X ints", lambda: model.loss(params, X.astype(int), y), TypeError, "floating"),
        ("features", lambda: model.loss(params, X[:, :2], y), ValueError, "features"),
        ("y length", lambda: model.loss(params, X, y[:-1]), ValueError, "samples"),
        ("NaN X", lambda: model.loss(params, nan_X, y), ValueError, "NaN"),
        ("NaN y", lambda: model.loss(params, X, np.where(y == 1, np.nan, 0.0)), ValueError, "NaN"),
        ("sigmoid labels", lambda: model.loss(params, X, y * 2), ValueError, "[0, 1]"),
        ("class labels", lambda: softmax.loss(softmax.init(0), X, y + 2), ValueError, "[0, 3)"),
        ("negative class", lambda: softmax.loss(softmax.init(0), X, y - 1), ValueError, "[0, 3)"),
        ("fractional class", lambda: softmax.loss(softmax.init(0), X, y + 0.5), ValueError, "integers"),
        ("one-hot width", lambda: softmax.loss(softmax.init(0), X, np.eye(2)[y]), ValueError, "columns"),
        ("params keys", lambda: model.loss({"W1": params["W1"]}, X, y), ValueError, "missing keys"),
        ("params shape", lambda: model.loss({**params, "b2": np.zeros(3)}, X, y), ValueError, "shape"),
        ("params dtype", lambda: model.loss({**params, "b2": np.zeros(1, np.float32)}, X, y), TypeError, "dtype"),
        ("X dtype", lambda: model.loss(params, X.astype(np.float32), y), TypeError, "dtype"),
        ("params type", lambda: model.loss([params], X, y), TypeError, "dict"),
        ("out shape", lambda: model.loss_and_grad(params, X, y, out={"W1": 0}), ValueError, "missing keys"),
        ("init seed", lambda: model.init(seed=-1), ValueError, "seed"),
        ("init like", lambda: model.init(seed=0, like=[1.0]), TypeError, "like"),
        ("init dtype", lambda: model.init(seed=0, xp=np, dtype="float99"), ValueError, "dtype"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())), ids=[case[0] for case in _bad_calls()])
def test_bad_input_gives_one_line_errors(case):
    _, call, error, words = _bad_calls()[case]
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_repr_names_the_settings():
    text = repr(anyoptim.MLP([2, 5, 2, 1], hidden_activation="tanh", init="xavier"))
    assert text == "MLP(layer_dims=[2, 5, 2, 1], hidden_activation='tanh', output='sigmoid', init='xavier')"
