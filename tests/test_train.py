"""fit, predict and accuracy: the same run on every backend, the documented algorithm, callbacks, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim
from anyoptim import datasets
from anyoptim.nn.data import epoch_seed
from tests.helpers import to_numpy, tree_to_numpy

LESSON_MODEL = ([2, 5, 2, 1], "relu", "sigmoid")


def _moons(xp=None, n=300):
    return datasets.make_moons(n_samples=n, noise=0.2, seed=0, xp=xp)


def test_whole_run_agrees_across_backends(xp):
    """20 epochs of Adam from one seed: the same cost history everywhere (float64, relative 1e-9)."""
    model = anyoptim.MLP(*LESSON_MODEL)
    reference = anyoptim.fit(model, anyoptim.Adam(0.01), *_moons(), epochs=20, seed=3, progress=False)
    result = anyoptim.fit(model, anyoptim.Adam(0.01), *_moons(xp), epochs=20, seed=3, progress=False)
    np.testing.assert_allclose(result.history.cost, reference.history.cost, rtol=1e-9)
    assert result.history.learning_rate == reference.history.learning_rate
    for key, value in tree_to_numpy(reference.params).items():
        np.testing.assert_allclose(to_numpy(result.params[key]), value, rtol=1e-9, atol=1e-12, err_msg=key)
    assert result.state.count == reference.state.count == 20 * 5


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: anyoptim.SGD(anyoptim.schedules.inverse_time_decay(0.1, decay_steps=10, decay_rate=1.0)),
        lambda: anyoptim.Momentum(0.05, beta=0.9),
        lambda: anyoptim.RMSprop(0.01),
    ],
    ids=["sgd-decay", "momentum", "rmsprop"],
)
def test_other_optimizers_agree_with_the_strict_reference(make_optimizer):
    xp = pytest.importorskip("array_api_strict")
    model = anyoptim.MLP([2, 6, 1], hidden_activation="tanh")
    reference = anyoptim.fit(model, make_optimizer(), *_moons(n=100), epochs=8, batch_size=32, progress=False)
    strict = anyoptim.fit(model, make_optimizer(), *_moons(xp, n=100), epochs=8, batch_size=32, progress=False)
    np.testing.assert_allclose(strict.history.cost, reference.history.cost, rtol=1e-9)
    assert strict.history.learning_rate == reference.history.learning_rate


def test_fit_is_the_documented_loop():
    """Re-running the documented algorithm by hand with the public pieces gives the same history and params."""
    model = anyoptim.MLP([2, 4, 3, 1], hidden_activation="leaky_relu")
    X, y = _moons(n=90)
    optimizer = anyoptim.Momentum(0.1)
    result = anyoptim.fit(model, optimizer, X, y, epochs=4, batch_size=20, seed=9, progress=False)

    params = model.init(seed=9, like=X)
    state = optimizer.init(params)
    costs = []
    for epoch in range(4):
        total = 0.0
        for X_batch, y_batch in anyoptim.minibatches(X, y, batch_size=20, seed=epoch_seed(9, epoch)):
            loss, grads = model.loss_and_grad(params, X_batch, y_batch)
            params, state = optimizer.step(params, grads, state)
            total += float(loss) * len(X_batch)
        costs.append(total / len(X))
    np.testing.assert_allclose(result.history.cost, costs, rtol=1e-12)
    for key in params:
        np.testing.assert_allclose(result.params[key], params[key], rtol=1e-12, atol=1e-15)


def test_cost_is_the_mean_loss_over_the_epoch():
    model = anyoptim.MLP(*LESSON_MODEL)
    X, y = _moons()
    start = model.init(seed=0, like=X)
    result = anyoptim.fit(model, anyoptim.SGD(0.0), X, y, epochs=2, params=start, progress=False)
    full_batch = float(model.loss(start, X, y))
    assert result.history.cost == pytest.approx([full_batch, full_batch], rel=1e-12)


def test_history_and_learning_rate_schedule():
    schedule = anyoptim.schedules.inverse_time_decay(0.1, decay_steps=5, decay_rate=1.0, staircase=True)
    model = anyoptim.MLP(*LESSON_MODEL)
    result = anyoptim.fit(model, anyoptim.SGD(schedule), *_moons(), epochs=6, batch_size=64, progress=False)
    history = result.history
    assert len(history) == len(history.cost) == len(history.learning_rate) == len(history.time) == 6
    assert history.learning_rate == [schedule(5 * (epoch + 1) - 1) for epoch in range(6)]
    assert all(b >= a for a, b in zip(history.time, history.time[1:], strict=False)) and history.time[0] >= 0


def test_adam_learns_the_moons():
    model = anyoptim.MLP([2, 16, 1], hidden_activation="tanh")
    X, y = _moons()
    result = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=150, seed=0, progress=False)
    assert result.history.cost[-1] < 0.5 * result.history.cost[0]
    assert anyoptim.accuracy(model, result.params, X, y) > 0.85


def test_softmax_and_regression_training():
    X, y = datasets.make_blobs(n_samples=150, centers=3, cluster_std=1.0, seed=2)
    X = X / 10
    classifier = anyoptim.MLP([2, 8, 3], output="softmax")
    result = anyoptim.fit(classifier, anyoptim.Adam(0.02), X, y, epochs=60, batch_size=32, progress=False)
    assert anyoptim.accuracy(classifier, result.params, X, y) > 0.9
    assert anyoptim.accuracy(classifier, result.params, X, np.eye(3)[y]) > 0.9  # one-hot labels too
    targets = np.sin(3 * X[:, :1]) + X[:, 1:]
    regressor = anyoptim.MLP([2, 16, 1], hidden_activation="tanh", output="identity")
    result = anyoptim.fit(regressor, anyoptim.Adam(0.01), X, targets, epochs=60, batch_size=32, progress=False)
    assert result.history.cost[-1] < 0.2 * result.history.cost[0]
    assert anyoptim.predict(regressor, result.params, X).shape == (150,)


def test_seed_fixes_the_run_and_given_params_are_not_changed():
    model = anyoptim.MLP(*LESSON_MODEL)
    X, y = _moons()
    first = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=3, seed=1, progress=False)
    again = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=3, seed=1, progress=False)
    other = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=3, seed=2, progress=False)
    assert first.history.cost == again.history.cost != other.history.cost
    start = model.init(seed=1)
    kept = {key: value.copy() for key, value in start.items()}
    from_start = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=3, seed=1, params=start, progress=False)
    assert from_start.history.cost == first.history.cost
    for key in start:
        np.testing.assert_array_equal(start[key], kept[key])


def test_parameters_and_gradients_live_in_one_buffer():
    """On NumPy, fit trains flat views: the fused engine updates the whole model in one pass."""
    model = anyoptim.MLP(*LESSON_MODEL)
    result = anyoptim.fit(model, anyoptim.Adam(0.01), *_moons(), epochs=2, progress=False)
    bases = [value.base for value in result.params.values()]
    assert bases[0] is not None and all(base is bases[0] for base in bases)
    assert bases[0].size == sum(value.size for value in result.params.values())


def test_callbacks_see_every_epoch_and_can_stop():
    model = anyoptim.MLP(*LESSON_MODEL)
    seen = []

    def record(epoch, cost, params, state):
        seen.append((epoch, cost, state.count, sorted(params)))

    def stop_after_three(epoch, cost, params, state):
        return epoch == 2

    result = anyoptim.fit(
        model, anyoptim.Adam(0.01), *_moons(), epochs=10, callbacks=[record, stop_after_three], progress=False
    )
    assert len(result.history) == 3
    assert [entry[0] for entry in seen] == [0, 1, 2]
    assert [entry[1] for entry in seen] == result.history.cost
    assert [entry[2] for entry in seen] == [5, 10, 15]
    assert seen[0][3] == ["W1", "W2", "W3", "b1", "b2", "b3"]


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    pytest.importorskip("tqdm")
    model = anyoptim.MLP(*LESSON_MODEL)
    anyoptim.fit(model, anyoptim.Adam(0.01), *_moons(), epochs=3, progress=None)
    assert capsys.readouterr().err == ""  # captured stderr is not a terminal
    anyoptim.fit(model, anyoptim.Adam(0.01), *_moons(), epochs=3, progress=False)
    assert capsys.readouterr().err == ""
    anyoptim.fit(model, anyoptim.Adam(0.01), *_moons(), epochs=3, progress=True)
    shown = capsys.readouterr().err
    assert "3/3" in shown and "cost=" in shown and "epoch" in shown


def test_predict_and_accuracy(xp):
    model = anyoptim.MLP(*LESSON_MODEL)
    X, y = _moons(xp, n=50)
    params = model.init(seed=4, like=X)
    predicted = to_numpy(anyoptim.predict(model, params, X))
    expected = float(np.mean(predicted == to_numpy(y)))
    assert anyoptim.accuracy(model, params, X, y) == pytest.approx(expected, abs=1e-15)
    column = xp.reshape(y, (-1, 1))
    assert anyoptim.accuracy(model, params, X, column) == pytest.approx(expected, abs=1e-15)


def test_accuracy_needs_a_classifier():
    model = anyoptim.MLP([2, 3, 1], output="identity")
    X, y = _moons(n=10)
    with pytest.raises(ValueError, match="classifier"):
        anyoptim.accuracy(model, model.init(0), X, y)


def test_a_resumed_run_equals_one_long_run(xp):
    model = anyoptim.MLP(*LESSON_MODEL)
    X, y = _moons(xp)
    whole = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=5, seed=3, progress=False)
    optimizer = anyoptim.Adam(0.01)
    first = anyoptim.fit(model, optimizer, X, y, epochs=3, seed=3, progress=False)
    rest = anyoptim.fit(
        model,
        optimizer,
        X,
        y,
        epochs=5,
        seed=3,
        params=first.params,
        state=first.state,
        initial_epoch=3,
        progress=False,
    )
    assert first.history.cost + rest.history.cost == whole.history.cost
    assert int(rest.state.count) == int(whole.state.count)
    for key, value in tree_to_numpy(whole.params).items():
        np.testing.assert_array_equal(to_numpy(rest.params[key]), value)


def _bad_fits():
    model = anyoptim.MLP(*LESSON_MODEL)
    X, y = _moons(n=20)
    adam = anyoptim.Adam(0.01)
    nan_X = X.copy()
    nan_X[3, 0] = np.nan

    def run(**changes):
        arguments = {"model": model, "optimizer": adam, "X": X, "y": y, "epochs": 2, "progress": False, **changes}
        return lambda: anyoptim.fit(**arguments)

    return [
        ("epochs 0", run(epochs=0), ValueError, "epochs"),
        ("epochs -3", run(epochs=-3), ValueError, "epochs"),
        ("epochs 2.5", run(epochs=2.5), TypeError, "epochs"),
        ("batch_size 0", run(batch_size=0), ValueError, "batch_size"),
        ("X 1-D", run(X=X[:, 0]), ValueError, "2-D"),
        ("X features", run(X=X[:, :1]), ValueError, "features"),
        ("y length", run(y=y[:-2]), ValueError, "samples"),
        ("NaN in X", run(X=nan_X), ValueError, "NaN"),
        ("NaN in y", run(y=np.where(y == 1, np.nan, 0.0)), ValueError, "NaN"),
        ("labels", run(y=y + 1), ValueError, "[0, 1]"),
        ("model", run(model="mlp"), TypeError, "MLP"),
        ("optimizer", run(optimizer="adam"), TypeError, "optimizer"),
        ("callback", run(callbacks=[print, 3]), TypeError, "callbacks[1]"),
        ("progress", run(progress="yes"), TypeError, "progress"),
        ("seed", run(seed=-1), ValueError, "seed"),
        ("initial_epoch", run(initial_epoch=-1), ValueError, "initial_epoch"),
        ("params shape", run(params={**model.init(0), "W2": np.zeros((2, 5))}), ValueError, "shape"),
        ("params dtype", run(params=model.init(0, dtype="float32")), TypeError, "dtype"),
        ("params NaN", run(params={**model.init(0), "b1": np.full(5, np.nan)}), ValueError, "NaN"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_fits())), ids=[case[0] for case in _bad_fits()])
def test_bad_input_gives_one_line_errors(case):
    _, call, error, words = _bad_fits()[case]
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_params_from_another_library_are_refused():
    torch = pytest.importorskip("torch")
    model = anyoptim.MLP(*LESSON_MODEL)
    X, y = _moons(n=20)
    params = {key: torch.asarray(value) for key, value in model.init(0).items()}
    with pytest.raises(TypeError, match="different array libraries"):
        anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=1, params=params, progress=False)


def test_float32_training(xp):
    model = anyoptim.MLP(*LESSON_MODEL)
    X, y = datasets.make_moons(n_samples=100, seed=0, xp=xp, dtype="float32")
    result = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=3, batch_size=50, progress=False)
    assert result.params["W1"].dtype == xp.float32
    reference = anyoptim.fit(
        model, anyoptim.Adam(0.01), *datasets.make_moons(n_samples=100, seed=0), epochs=3, batch_size=50, progress=False
    )
    np.testing.assert_allclose(result.history.cost, reference.history.cost, rtol=1e-4)


# --------------------------------------------------------------------------- fit(state=) checks as step does


def _small_run() -> tuple:
    X, y = datasets.make_moons(n_samples=20, noise=0.1, seed=0)
    model = anyoptim.MLP([2, 4, 1], hidden_activation="tanh")
    return model, X, y, model.init(seed=0)


def test_fit_refuses_a_state_made_by_another_optimizer() -> None:
    model, X, y, params = _small_run()
    state = anyoptim.Adagrad(0.1).init(params)
    calls = []
    with pytest.raises(ValueError, match="state was made by Adagrad, not by RMSprop: its slots mean something else"):
        anyoptim.fit(
            model, anyoptim.RMSprop(0.1), X, y, epochs=1, params=params, state=state, progress=False,
            callbacks=[lambda *args: calls.append(args)],
        )  # fmt: skip
    assert calls == []


def test_fit_keeps_the_maker_of_the_state_it_continues() -> None:
    model, X, y, params = _small_run()
    optimizer = anyoptim.Adagrad(0.1)
    result = anyoptim.fit(
        model, optimizer, X, y, epochs=2, initial_epoch=2, params=params, state=optimizer.init(params), progress=False
    )
    assert result.state.optimizer == "Adagrad"


def test_fit_names_the_library_of_state_slots_from_another_library() -> None:
    torch = pytest.importorskip("torch")
    model, X, y, params = _small_run()
    optimizer = anyoptim.Adam(0.1)
    state = optimizer.init({key: torch.from_numpy(value.copy()) for key, value in params.items()})
    with pytest.raises(TypeError, match="is a torch array on cpu, but the parameter is a numpy array"):
        anyoptim.fit(model, optimizer, X, y, epochs=1, params=params, state=state, progress=False)


def test_a_float16_epoch_cost_is_summed_in_float32() -> None:
    """At rate 0 every batch's loss is the loss of the same params: the epoch's cost is their mean, 20,000 rows of
    float16 losses summed in float32 (a float16 sum had gone 1.6 % off; past 65504 it is inf)."""
    X, y = datasets.make_moons(n_samples=20_000, noise=0.2, seed=0)
    model = anyoptim.MLP([2, 8, 1])
    params = {key: value.astype(np.float16) for key, value in model.init(seed=0, like=X).items()}
    result = anyoptim.fit(
        model, anyoptim.SGD(0.0), X.astype(np.float16), y, epochs=1, batch_size=64, params=params, progress=False
    )
    wide = {key: value.astype(np.float64) for key, value in params.items()}
    want = float(model.loss(wide, X.astype(np.float16).astype(np.float64), y))
    assert result.history.cost[0] == pytest.approx(want, rel=2e-3)  # each batch's float16 loss: about 1e-3
