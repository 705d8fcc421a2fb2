"""Mini-batches: an exact partition, the documented sizes, the same batches on every backend, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyoptim
from anyoptim.nn.data import epoch_seed
from tests.helpers import from_numpy, to_numpy


def _indexed(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows that carry their own index, so a batch tells which examples it holds."""
    X = np.column_stack([np.arange(n, dtype=np.float64), -np.arange(n, dtype=np.float64)])
    return X, np.arange(n)


def _rows(batches) -> list[list[int]]:
    return [to_numpy(xb)[:, 0].astype(int).tolist() for xb, _ in batches]


def test_lesson_sizes():
    X, y = _indexed(300)
    batches = anyoptim.minibatches(X, y, batch_size=64, seed=0)
    assert [len(yb) for _, yb in batches] == [64, 64, 64, 64, 44]


@given(st.integers(1, 120), st.integers(1, 150), st.integers(0, 2**32 - 1), st.booleans())
def test_batches_partition_the_data_exactly_once(n, batch_size, seed, shuffle):
    X, y = _indexed(n)
    batches = anyoptim.minibatches(X, y, batch_size=batch_size, seed=seed, shuffle=shuffle)
    sizes = [len(xb) for xb, _ in batches]
    assert len(batches) == math.ceil(n / batch_size)
    assert all(size == batch_size for size in sizes[:-1]) and 1 <= sizes[-1] <= batch_size
    order = [i for rows in _rows(batches) for i in rows]
    assert sorted(order) == list(range(n))
    if not shuffle:
        assert order == list(range(n))
    for xb, yb in batches:  # labels travel with their rows
        np.testing.assert_array_equal(xb[:, 0].astype(int), yb)
        np.testing.assert_array_equal(xb[:, 1], -xb[:, 0])


def test_batch_and_stochastic_extremes():
    X, y = _indexed(10)
    assert [len(b[0]) for b in anyoptim.minibatches(X, y, batch_size=10)] == [10]
    assert [len(b[0]) for b in anyoptim.minibatches(X, y, batch_size=1000)] == [10]
    assert [len(b[0]) for b in anyoptim.minibatches(X, y, batch_size=1)] == [1] * 10


def test_seed_fixes_the_order():
    X, y = _indexed(50)
    first = _rows(anyoptim.minibatches(X, y, batch_size=16, seed=3))
    assert first == _rows(anyoptim.minibatches(X, y, batch_size=16, seed=3))
    assert first != _rows(anyoptim.minibatches(X, y, batch_size=16, seed=4))
    epochs = [_rows(anyoptim.minibatches(X, y, batch_size=16, seed=epoch_seed(3, e))) for e in range(3)]
    assert first not in epochs and epochs[0] != epochs[1] != epochs[2]
    assert epochs[1] == _rows(anyoptim.minibatches(X, y, batch_size=16, seed=np.random.SeedSequence(3).spawn(2)[1]))
    expected = np.random.default_rng(3).permutation(50)  # the documented host stream
    assert [i for rows in first for i in rows] == expected.tolist()


def test_same_batches_on_every_backend(xp):
    X_np, y_np = _indexed(100)
    expected = anyoptim.minibatches(X_np, y_np, batch_size=32, seed=11)
    batches = anyoptim.minibatches(from_numpy(xp, X_np), from_numpy(xp, y_np), batch_size=32, seed=11)
    assert len(batches) == len(expected)
    for (xb, yb), (xe, ye) in zip(batches, expected, strict=True):
        np.testing.assert_array_equal(to_numpy(xb), xe)
        np.testing.assert_array_equal(to_numpy(yb), ye)


def test_two_dimensional_labels():
    X, y = _indexed(20)
    one_hot = np.eye(20)[y]
    for xb, yb in anyoptim.minibatches(X, one_hot, batch_size=6, seed=0):
        np.testing.assert_array_equal(np.argmax(yb, axis=1), xb[:, 0].astype(int))


@pytest.mark.parametrize(
    ("case", "error", "words"),
    [
        ("X 1-D", ValueError, "2-D"),
        ("X 3-D", ValueError, "2-D"),
        ("X list", TypeError, "array"),
        ("y length", ValueError, "samples"),
        ("y 3-D", ValueError, "1-D"),
        ("NaN in X", ValueError, "NaN"),
        ("inf in y", ValueError, "NaN"),
        ("batch_size 0", ValueError, "batch_size"),
        ("batch_size -5", ValueError, "batch_size"),
        ("batch_size 2.5", TypeError, "batch_size"),
        ("batch_size True", TypeError, "batch_size"),
        ("seed -1", ValueError, "seed"),
        ("seed True", TypeError, "seed"),
        ("y from torch", TypeError, "library"),
    ],
)
def test_bad_input(case, error, words):
    X, y = _indexed(12)
    arguments = {"X": X, "y": y, "batch_size": 4, "seed": 0}
    if case == "X 1-D":
        arguments["X"] = X[:, 0]
    elif case == "X 3-D":
        arguments["X"] = X[None]
    elif case == "X list":
        arguments["X"] = X.tolist()
    elif case == "y length":
        arguments["y"] = y[:-1]
    elif case == "y 3-D":
        arguments["y"] = y.reshape(12, 1, 1)
    elif case == "NaN in X":
        arguments["X"] = np.where(X == 3, np.nan, X)
    elif case == "inf in y":
        arguments["y"] = np.where(y == 3, np.inf, y)
    elif case.startswith("batch_size"):
        arguments["batch_size"] = {"0": 0, "-5": -5, "2.5": 2.5, "True": True}[case.split()[1]]
    elif case.startswith("seed"):
        arguments["seed"] = {"-1": -1, "True": True}[case.split()[1]]
    elif case == "y from torch":
        torch = pytest.importorskip("torch")
        arguments["y"] = torch.asarray(y)
    with pytest.raises(error) as raised:
        anyoptim.minibatches(**arguments)
    assert words in str(raised.value) and "\n" not in str(raised.value)
