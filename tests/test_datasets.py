"""Generated data sets (shapes, labels, geometry, determinism, backends) and the file loaders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyoptim import datasets
from tests.helpers import to_numpy

GENERATORS = {
    "moons": lambda **kw: datasets.make_moons(**kw),
    "circles": lambda **kw: datasets.make_circles(**kw),
    "spirals": lambda **kw: datasets.make_spirals(**kw),
    "blobs": lambda **kw: datasets.make_blobs(**kw),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_shapes_dtypes_and_determinism(name):
    X, y = GENERATORS[name](n_samples=101, seed=5)
    assert X.shape == (101, 2) and X.dtype == np.float64
    assert y.shape == (101,) and np.issubdtype(y.dtype, np.integer)
    again_X, again_y = GENERATORS[name](n_samples=101, seed=5)
    np.testing.assert_array_equal(X, again_X)
    np.testing.assert_array_equal(y, again_y)
    assert not np.array_equal(X, GENERATORS[name](n_samples=101, seed=6)[0])
    assert not np.array_equal(y, np.sort(y)), "rows are shuffled"


@given(st.integers(2, 400))
def test_moons_follow_scikit_learn_geometry(n):
    X, y = datasets.make_moons(n_samples=n, noise=0.0, seed=1)
    assert (y == 0).sum() == n // 2 and (y == 1).sum() == n - n // 2
    outer, inner = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0, rtol=1e-12)
    assert np.all(outer[:, 1] >= -1e-12)  # the upper half circle
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1, inner[:, 1] - 0.5), 1.0, rtol=1e-12)
    assert np.all(inner[:, 1] <= 0.5 + 1e-12)  # the lower half circle, shifted


def test_moons_noise_is_gaussian_with_the_given_scale():
    clean, y = datasets.make_moons(n_samples=20000, noise=0.0, seed=2)
    noisy, y_noisy = datasets.make_moons(n_samples=20000, noise=0.2, seed=2)
    np.testing.assert_array_equal(y, y_noisy)  # same shuffle, then noise on top
    assert np.std(noisy - clean) == pytest.approx(0.2, rel=0.02)


def test_circles_radii():
    X, y = datasets.make_circles(n_samples=50, noise=0.0, factor=0.3, seed=0)
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0, rtol=1e-12)
    np.testing.assert_allclose(radius[y == 1], 0.3, rtol=1e-12)


def test_spirals_classes_and_radius():
    X, y = datasets.make_spirals(n_samples=301, n_classes=3, noise=0.5, seed=0)
    assert np.bincount(y).tolist() == [101, 100, 100]
    assert np.all(np.hypot(X[:, 0], X[:, 1]) <= 1 + 1e-12)


def test_blobs_around_given_centers():
    centers = np.array([[0.0, 0.0, 0.0], [10.0, -10.0, 5.0]])
    X, y = datasets.make_blobs(n_samples=4001, centers=centers, cluster_std=0.5, seed=0)
    assert X.shape == (4001, 3) and np.bincount(y).tolist() == [2001, 2000]
    for label, center in enumerate(centers):
        np.testing.assert_allclose(X[y == label].mean(axis=0), center, atol=0.05)
        assert (X[y == label] - center).std() == pytest.approx(0.5, rel=0.05)
    X, y = datasets.make_blobs(n_samples=30, centers=4, n_features=5, center_box=(0, 1), seed=0)
    assert X.shape == (30, 5) and set(y.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("name", GENERATORS)
def test_moved_to_every_backend(xp, name):
    expected_X, expected_y = GENERATORS[name](n_samples=40, seed=0)
    X, y = GENERATORS[name](n_samples=40, seed=0, xp=xp)
    np.testing.assert_array_equal(to_numpy(X), expected_X)
    np.testing.assert_array_equal(to_numpy(y), expected_y)
    single, _ = GENERATORS[name](n_samples=40, seed=0, xp=xp, dtype="float32")
    assert single.dtype == xp.float32
    np.testing.assert_array_equal(to_numpy(single), expected_X.astype(np.float32))


def test_numpy_dtype_without_xp():
    X, _ = datasets.make_moons(n_samples=10, dtype="float32")
    assert X.dtype == np.float32


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: datasets.make_moons(n_samples=1), ValueError, "n_samples"),
        (lambda: datasets.make_moons(n_samples=10.5), TypeError, "n_samples"),
        (lambda: datasets.make_moons(noise=-0.1), ValueError, "noise"),
        (lambda: datasets.make_moons(noise="lots"), TypeError, "noise"),
        (lambda: datasets.make_moons(seed=-3), ValueError, "seed"),
        (lambda: datasets.make_moons(device="cuda"), ValueError, "device"),
        (lambda: datasets.make_circles(factor=1.5), ValueError, "factor"),
        (lambda: datasets.make_spirals(n_classes=1), ValueError, "n_classes"),
        (lambda: datasets.make_spirals(turns=0), ValueError, "turns"),
        (lambda: datasets.make_blobs(centers=0), ValueError, "centers"),
        (lambda: datasets.make_blobs(centers=[1.0, 2.0]), ValueError, "centers"),
        (lambda: datasets.make_blobs(center_box=(1, -1)), ValueError, "center_box"),
        (lambda: datasets.make_blobs(n_samples=2, centers=3), ValueError, "n_samples"),
    ],
)
def test_bad_generator_arguments(call, error, words):
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value) and "\n" not in str(raised.value)


# --------------------------------------------------------------------------- loaders


def test_npz_round_trip(tmp_path, xp):
    X, y = datasets.make_blobs(n_samples=25, centers=3, n_features=4, seed=1)
    path = tmp_path / "blobs.npz"
    np.savez(path, features=X, labels=y)
    loaded_X, loaded_y = datasets.load_npz(path, x_key="features", y_key="labels", xp=xp)
    np.testing.assert_array_equal(to_numpy(loaded_X), X)
    np.testing.assert_array_equal(to_numpy(loaded_y), y)


def test_npz_float_targets_stay_float(tmp_path):
    X = np.arange(8.0).reshape(4, 2)
    targets = np.array([0.5, 1.25, -2.0, 3.0])
    np.savez(tmp_path / "r.npz", X=X, y=targets)
    _, y = datasets.load_npz(tmp_path / "r.npz")
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, targets)


@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(tmp_path, header):
    X, y = datasets.make_moons(n_samples=30, seed=4)
    path = tmp_path / "moons.csv"
    lines = ["x1,x2,label"] if header else []
    lines += [f"{float(a)!r},{float(b)!r},{label}" for (a, b), label in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    loaded_X, loaded_y = datasets.load_csv(path)
    np.testing.assert_array_equal(loaded_X, X)
    np.testing.assert_array_equal(loaded_y, y)
    assert np.issubdtype(loaded_y.dtype, np.integer)


def test_csv_label_column_and_delimiter(tmp_path):
    path = tmp_path / "first.tsv"
    path.write_text("1\t0.5\t2.5\n0\t-1\t3\n")
    X, y = datasets.load_csv(path, label_column=0, delimiter="\t")
    np.testing.assert_array_equal(X, [[0.5, 2.5], [-1.0, 3.0]])
    np.testing.assert_array_equal(y, [1, 0])


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "words"),
    [
        ("empty.csv", "", {}, "empty"),
        ("header.csv", "a,b,c\n", {}, "no data rows"),
        ("ragged.csv", "1,2,0\n3,4\n", {}, "line 2 has 2 columns"),
        ("word.csv", "a,b,label\n1,2,0\n3,oops,1\n", {}, "line 3, column 2: 'oops'"),
        ("nan.csv", "1,2,0\n3,nan,1\n", {}, "line 2, column 2"),
        ("one.csv", "1\n2\n", {}, "two columns"),
        ("range.csv", "1,2,0\n", {"label_column": 3}, "label_column 3"),
    ],
)
def test_bad_csv_files(tmp_path, name, text, kwargs, words):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError) as raised:
        datasets.load_csv(path, **kwargs)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_bad_npz_files(tmp_path):
    np.savez(tmp_path / "keys.npz", features=np.ones((3, 2)), y=np.zeros(3))
    np.savez(tmp_path / "text.npz", X=np.array([["a", "b"]]), y=np.zeros(1))
    np.savez(tmp_path / "flat.npz", X=np.ones(3), y=np.zeros(3))
    np.savez(tmp_path / "short.npz", X=np.ones((3, 2)), y=np.zeros(2))
    np.savez(tmp_path / "nan.npz", X=np.array([[1.0, np.nan]]), y=np.zeros(1))
    np.save(tmp_path / "single.npy", np.ones(3))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    cases = {
        "keys.npz": "no array named 'X'",
        "text.npz": "not numeric",
        "flat.npz": "2-D",
        "short.npz": "3 samples",
        "nan.npz": "NaN",
        "single.npy": "single array",
        "junk.npz": "not a readable",
    }
    for name, words in cases.items():
        with pytest.raises(ValueError) as raised:
            datasets.load_npz(tmp_path / name)
        assert words in str(raised.value) and "\n" not in str(raised.value), name


@pytest.mark.parametrize("loader", [datasets.load_csv, datasets.load_npz])
def test_missing_file(tmp_path, loader):
    with pytest.raises(FileNotFoundError, match="no such data file") as raised:
        loader(tmp_path / "absent")
    assert isinstance(raised.value, ValueError)  # so a command line catching ValueError reports it too
