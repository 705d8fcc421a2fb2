"""The user's data files (anyoptim/nn/files.py) and the command line around them: every bad file is one line.

Items of the hardening issue: a byte-order mark without a header; labels int64
cannot hold; a label column that is not an integer; an empty ``.npz``; an ``.npz``
that claims a huge shape or is a compressed bomb (sizes checked before anything
is allocated); complex ``X``; a directory named like a data file; on the command
line, no compiler under ``ANYOPTIM_NUMPY_KERNELS=c``, a file name that is not
UTF-8, and an ``--out`` that cannot be written, reported before training.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import anyoptim
from anyoptim import datasets
from anyoptim.nn import files

ROOT = Path(__file__).resolve().parent.parent


def test_the_loaders_are_still_those_of_anyoptim_datasets() -> None:
    assert datasets.load_csv is files.load_csv and datasets.load_npz is files.load_npz
    assert anyoptim.datasets.DataFileError is files.DataFileError


@pytest.mark.parametrize("header", [False, True, None])
def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path, header) -> None:
    """A CSV with a BOM and no header row lost its first data row (the BOM made it look like a header)."""
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeff0.5,1.0,0\n-1.0,2.0,1\n".encode())
    if header is True:
        path.write_bytes("\ufeffa,b,label\n0.5,1.0,0\n-1.0,2.0,1\n".encode())
    X, y = datasets.load_csv(path, header=header)
    assert X.tolist() == [[0.5, 1.0], [-1.0, 2.0]] and y.tolist() == [0, 1]


@pytest.mark.parametrize("label", ["1e19", "9223372036854775808", "-1e19", "-9.3e18"])
def test_whole_numbers_past_int64_stay_floats_in_a_csv(tmp_path, label: str) -> None:
    """``1e19`` became INT64_MIN."""
    path = tmp_path / "big.csv"
    path.write_text(f"0.5,1.0,{label}\n-1.0,2.0,1\n")
    _, y = datasets.load_csv(path)
    assert y.dtype == np.float64 and y[0] == float(label)


def test_uint64_labels_past_int64_are_refused(tmp_path) -> None:
    """uint64 labels ``2**64 - 2`` became -2."""
    np.savez(tmp_path / "u.npz", X=np.ones((2, 1)), y=np.array([2**64 - 2, 1], dtype=np.uint64))
    with pytest.raises(ValueError, match="label 18446744073709551614 does not fit a 64-bit signed integer"):
        datasets.load_npz(tmp_path / "u.npz")
    np.savez(tmp_path / "ok.npz", X=np.ones((2, 1)), y=np.array([2**63 - 1, 1], dtype=np.uint64))
    assert datasets.load_npz(tmp_path / "ok.npz")[1].tolist() == [2**63 - 1, 1]


@pytest.mark.parametrize("column", [1.5, "1", None, True, [1]])
def test_a_label_column_that_is_not_an_integer_is_a_type_error_naming_it(tmp_path, column) -> None:
    path = tmp_path / "t.csv"
    path.write_text("0.5,1.0,0\n-1.0,2.0,1\n")
    with pytest.raises(TypeError, match="label_column must be an integer"):
        datasets.load_csv(path, label_column=column)
    assert datasets.load_csv(path, label_column=np.int64(0))[1].tolist() == [0.5, -1.0]


def _npz_with_header(path: Path, shape: tuple[int, ...], payload: bytes = b"", compress: bool = False) -> None:
    """An ``.npz`` whose ``X`` header declares ``shape`` (float64), followed by ``payload`` only."""
    header = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload
    y = io.BytesIO()
    np.save(y, np.zeros(2))
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("X.npy", member)
        archive.writestr("y.npy", y.getvalue())


def test_an_npz_that_claims_a_huge_shape_is_refused_before_allocating(tmp_path) -> None:
    """A 474-byte file claiming shape (2e9, 2) gave a 29.8 GiB MemoryError traceback."""
    _npz_with_header(tmp_path / "claims.npz", (2_000_000_000, 2))
    assert (tmp_path / "claims.npz").stat().st_size < 1000
    with pytest.raises(ValueError, match=r"array 'X' declares shape \(2000000000, 2\) .* more than max_bytes"):
        datasets.load_npz(tmp_path / "claims.npz")


def test_a_compressed_bomb_is_refused_by_its_declared_size(tmp_path) -> None:
    """A 4.1 MB zip of zeros took 10.5 GB of memory and 40 s; here 64 MiB of zeros against a 1 MiB limit."""
    zeros = 64 << 20
    _npz_with_header(tmp_path / "bomb.npz", (zeros // 8, 1), bytes(zeros), compress=True)
    assert (tmp_path / "bomb.npz").stat().st_size < zeros // 100
    with pytest.raises(ValueError, match="more than max_bytes=1048576"):
        datasets.load_npz(tmp_path / "bomb.npz", max_bytes=1 << 20)


def test_the_size_limit_is_adjustable_and_checked(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", X=np.ones((64, 2)), y=np.zeros(64))
    assert datasets.load_npz(tmp_path / "d.npz")[0].shape == (64, 2)
    with pytest.raises(ValueError, match="more than max_bytes=100"):
        datasets.load_npz(tmp_path / "d.npz", max_bytes=100)
    (tmp_path / "d.csv").write_text("1,2,0\n" * 100)
    with pytest.raises(ValueError, match="larger than max_bytes=100"):
        datasets.load_csv(tmp_path / "d.csv", max_bytes=100)
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
            datasets.load_npz(tmp_path / "d.npz", max_bytes=bad)
    assert files.MAX_BYTES == 1 << 30


def test_a_truncated_npz_member_is_a_data_file_error(tmp_path) -> None:
    _npz_with_header(tmp_path / "short.npz", (4, 2), bytes(8))
    with pytest.raises(ValueError, match="holds 8 bytes where its header declares 64"):
        datasets.load_npz(tmp_path / "short.npz")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04", b"PK\x05\x06" + bytes(18)])
def test_an_empty_or_broken_npz_is_one_line(tmp_path, content: bytes) -> None:
    """A 0-byte ``.npz`` gave EOFError."""
    (tmp_path / "e.npz").write_bytes(content)
    with pytest.raises(files.DataFileError) as raised:
        datasets.load_npz(tmp_path / "e.npz")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("key", ["X", "y"])
def test_complex_arrays_are_refused(tmp_path, key: str) -> None:
    """Complex ``X`` was cast to real with only a ComplexWarning."""
    arrays = {"X": np.ones((2, 2)), "y": np.zeros(2)}
    arrays[key] = arrays[key] + 1j
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(ValueError, match=f"array '{key}' is complex"):
        datasets.load_npz(tmp_path / "c.npz")


def test_fortran_ordered_and_compressed_arrays_load(tmp_path) -> None:
    X = np.asfortranarray(np.arange(6.0).reshape(3, 2))
    np.savez_compressed(tmp_path / "f.npz", X=X, y=np.array([0, 1, 0]))
    loaded, y = datasets.load_npz(tmp_path / "f.npz")
    np.testing.assert_array_equal(loaded, X)
    assert y.tolist() == [0, 1, 0]


@pytest.mark.parametrize("loader", [datasets.load_csv, datasets.load_npz])
def test_a_directory_is_not_reported_missing(tmp_path, loader) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(files.DataFileError, match="is a directory, not a data file") as raised:
        loader(tmp_path / "d.csv")
    assert not isinstance(raised.value, FileNotFoundError)


# --------------------------------------------------------------------------- the command line


def _anyoptim(*argv: str | bytes, cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **environment}
    return subprocess.run(
        [sys.executable, "-m", "anyoptim", *argv], cwd=cwd, env=env, capture_output=True, timeout=300, check=False
    )


def _good_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    path.write_text("".join(f"{a:.4f},{b:.4f},{int(a > b)}\n" for a, b in X))


def test_no_compiler_under_kernels_c_is_one_line_and_status_2(tmp_path) -> None:
    """``ANYOPTIM_NUMPY_KERNELS=c`` without a compiler gave a 31-line KernelBuildError traceback, exit 1."""
    _good_csv(tmp_path / "ok.csv")
    done = _anyoptim(
        "train", "--data", "ok.csv", "--epochs", "1", "--no-plots", cwd=tmp_path,
        ANYOPTIM_NUMPY_KERNELS="c", CC="no-such-compiler-anywhere",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "anyoptim: error: no C compiler found (looked for $CC, Python's CC, cc, gcc, clang)"
    ]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_file_name_that_is_not_utf8_is_shown_escaped(tmp_path) -> None:
    """``$'\\xff.csv'``: a matplotlib traceback after training, or an encoding error with a strict stdout."""
    name = b"\xff.csv"
    _good_csv(tmp_path / "ok.csv")
    os.rename(tmp_path / "ok.csv", os.path.join(os.fsencode(tmp_path), name))
    done = _anyoptim("train", "--data", name, "--epochs", "1", "--out", "figs", cwd=tmp_path, PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr.decode()
    assert "'\\udcff.csv'" in done.stdout.decode()
    assert sorted(path.name for path in (tmp_path / "figs").iterdir()) == ["train_boundary.png", "train_loss.png"]
    done = _anyoptim("train", "--data", b"\xfe.csv", "--epochs", "1", cwd=tmp_path, PYTHONIOENCODING="ascii")
    assert done.returncode == 2 and done.stderr.decode().count("\n") == 1
    assert "no such data file: '\\udcfe.csv'" in done.stderr.decode()


def test_a_directory_named_like_a_data_file_is_said_to_be_a_directory(tmp_path) -> None:
    (tmp_path / "d.csv").mkdir()
    done = _anyoptim("train", "--data", "d.csv", "--no-plots", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.decode().strip() == "anyoptim: error: d.csv is a directory, not a data file"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (a file system nobody can write)")
def test_an_unusable_out_is_reported_before_training(tmp_path) -> None:
    """``--out`` on a file system that refuses writes was reported only after the whole training had run."""
    _good_csv(tmp_path / "ok.csv")
    done = _anyoptim("train", "--data", "ok.csv", "--epochs", "1", "--out", "/proc/self/figs", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == b""  # no table: nothing was trained
    assert done.stderr.decode().startswith("anyoptim: error: cannot write the figures to --out '/proc/self/figs'")
