"""The user's own data files: ``.npz`` archives and CSV tables, read on the host, checked before use.

Both loaders return ``X`` (float64, shape (n_samples, n_features)) and labels
``y`` as NumPy arrays, or moved to another namespace with ``xp``, ``dtype`` and
``device`` (as the generators of :mod:`anyoptim.datasets`).  A file that is
missing, malformed, too large or holds unusable values is a
:class:`DataFileError` (a ``ValueError``) with a one-line message naming the
file and the problem; nothing larger than ``max_bytes`` is ever allocated
(:data:`MAX_BYTES`, checked against the sizes an ``.npz`` file declares, before
anything is read).  They are re-exported by :mod:`anyoptim.datasets`.
"""

from __future__ import annotations

import csv
import math
import operator
import os
import zipfile
from typing import Any

import numpy as np  # host-side file I/O only

from .data import to_namespace

__all__ = [
    "MAX_BYTES",
    "DataFileError",
    "MissingDataFileError",
    "deliver",
    "existing_file",
    "load_csv",
    "load_npz",
    "shown",
]

#: The largest array (in bytes, as stored) :func:`load_npz` reads, and the largest CSV file :func:`load_csv`
#: reads: 1 GiB.  Pass ``max_bytes`` to either to allow more (or less).
MAX_BYTES = 1 << 30

_INT64_LIMIT = 2.0**63  # whole numbers in [-2**63, 2**63) are int64 labels


class DataFileError(ValueError):
    """A data file that is missing, malformed or holds unusable values.

    Raised by :func:`load_csv` and :func:`load_npz` before anything is
    allocated or returned; the message names the file and the problem in one
    line (the command line prints it as ``anyoptim: error: ...``).

    Examples
    --------
    >>> import anyoptim
    >>> try:
    ...     anyoptim.datasets.load_csv("no-such-file.csv")
    ... except anyoptim.datasets.DataFileError as error:
    ...     print(type(error).__name__)
    MissingDataFileError
    """


class MissingDataFileError(DataFileError, FileNotFoundError):
    """The data file does not exist (a ``ValueError`` and a ``FileNotFoundError``).

    Examples
    --------
    >>> import anyoptim
    >>> issubclass(anyoptim.datasets.MissingDataFileError, FileNotFoundError)
    True
    """


def deliver(X: np.ndarray, y: np.ndarray, xp: Any, dtype: Any, device: Any) -> tuple[Any, Any]:
    """``X`` (float64, C-contiguous) and ``y`` moved to ``xp`` (``dtype`` of ``X``, cast there) on ``device``."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y)
    # A cast from float64 rounds to nearest on every library, so casting on the device gives the same values.
    return to_namespace(X, xp=xp, dtype=dtype, device=device), to_namespace(y, xp=xp, device=device)


def _labels(values: np.ndarray, source: str) -> np.ndarray:
    """Integer labels when every value is a whole number that int64 holds (classes), float targets otherwise.

    Integer values int64 cannot hold (uint64 labels of 2**63 or more) are refused, never wrapped.
    """
    if np.issubdtype(values.dtype, np.integer):
        if values.size and values.dtype == np.uint64 and values.max() > np.iinfo(np.int64).max:
            raise DataFileError(f"{source}: label {values.max()} does not fit a 64-bit signed integer")
        return values.astype(np.int64)
    if np.all(values == np.round(values)) and np.all((values >= -_INT64_LIMIT) & (values < _INT64_LIMIT)):
        return values.astype(np.int64)
    return values


def _check_loaded(X: np.ndarray, y: np.ndarray, source: str) -> None:
    if X.ndim != 2:
        raise DataFileError(f"{source}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise DataFileError(f"{source}: y has shape {y.shape} but X has {X.shape[0]} samples")
    if X.shape[0] == 0:
        raise DataFileError(f"{source}: no samples")
    for name, values in (("X", X), ("y", y)):
        if not np.all(np.isfinite(values)):
            raise DataFileError(f"{source}: {name} contains NaN or infinity")


def shown(path: str) -> str:
    """A file name as messages show it: as is, or as its ``repr`` when it is not printable UTF-8 text
    (a name of undecodable bytes, ``b"\\xff.csv"``, which would fail on a strict stdout)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return repr(path)
    return path if path.isprintable() else repr(path)


def existing_file(path: Any) -> tuple[str, str]:
    """The path of a data file that exists, as a string and as messages show it (:func:`shown`).

    Raises
    ------
    DataFileError
        If ``path`` is a directory.
    MissingDataFileError
        If no file is there.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise DataFileError(f"{shown(path)} is a directory, not a data file")
    if not os.path.isfile(path):
        raise MissingDataFileError(f"no such data file: {shown(path)}")
    return path, shown(path)


def _check_max_bytes(max_bytes: Any) -> int:
    if isinstance(max_bytes, bool) or not hasattr(max_bytes, "__index__") or operator.index(max_bytes) <= 0:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    return operator.index(max_bytes)


def _read_member(archive: zipfile.ZipFile, key: str, path: str, max_bytes: int) -> np.ndarray:
    """The array ``key`` of an open ``.npz`` archive, its declared sizes checked before anything is allocated."""
    try:
        info = archive.getinfo(f"{key}.npy")
    except KeyError:
        names = sorted(name.removesuffix(".npy") for name in archive.namelist())
        raise DataFileError(f"{path}: no array named {key!r}; the file has {names}") from None
    if info.file_size > max_bytes:
        raise DataFileError(
            f"{path}: array {key!r} takes {info.file_size} bytes, more than max_bytes={max_bytes} (pass a larger one)"
        )
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(member)
        if dtype.hasobject:
            raise DataFileError(f"{path}: array {key!r} holds Python objects (dtype {dtype}); pickle is refused")
        declared = math.prod(shape) * dtype.itemsize
        if declared > max_bytes:
            raise DataFileError(
                f"{path}: array {key!r} declares shape {shape} of {dtype} ({declared} bytes), more than "
                f"max_bytes={max_bytes} (pass a larger one)"
            )
        data = member.read(declared + 1)
    if len(data) != declared:
        raise DataFileError(f"{path}: array {key!r} holds {len(data)} bytes where its header declares {declared}")
    values = np.frombuffer(data, dtype=dtype)
    return values.reshape(shape[::-1]).T if fortran else values.reshape(shape)


def load_npz(
    path: Any,
    x_key: str = "X",
    y_key: str = "y",
    *,
    xp: Any = None,
    dtype: Any = None,
    device: Any = None,
    max_bytes: int = MAX_BYTES,
) -> tuple[Any, Any]:
    """Load features and labels from a NumPy ``.npz`` file.

    Parameters
    ----------
    path : str or path-like
        The file, as written by :func:`numpy.savez` (compressed or not); read without pickle.
    x_key, y_key : str, default "X", "y"
        Names of the two arrays in the file.
    xp, dtype, device : optional
        See :func:`anyoptim.datasets.make_moons`.
    max_bytes : int, default ``MAX_BYTES`` (1 GiB)
        The largest array read, by the size its header declares (checked before
        anything is allocated, so a small file that claims a huge shape, or a
        compressed file of zeros, is refused at once).

    Returns
    -------
    X : array, shape (n_samples, n_features)
        The features, float64 unless ``dtype`` says otherwise.
    y : array, shape (n_samples,) or (n_samples, n_outputs)
        The labels: int64 when every value is a whole number that int64 holds, float64 otherwise.

    Raises
    ------
    MissingDataFileError
        The file does not exist (a ``FileNotFoundError`` and a ``ValueError``).
    DataFileError
        (a ``ValueError``) The path is a directory, the file is not an ``.npz`` archive (an empty file, say), a key is
        missing, an array is larger than ``max_bytes``, not real numbers (complex, text, objects), shapes disagree,
        labels do not fit int64, or values are NaN/infinite.

    Examples
    --------
    >>> import numpy as np, tempfile, os, anyoptim
    >>> path = os.path.join(tempfile.mkdtemp(), "data.npz")
    >>> np.savez(path, X=np.ones((4, 2)), y=np.array([0, 1, 1, 0]))
    >>> X, y = anyoptim.datasets.load_npz(path)
    >>> X.shape, y.tolist()
    ((4, 2), [0, 1, 1, 0])
    """
    max_bytes = _check_max_bytes(max_bytes)
    file, path = existing_file(path)
    try:
        with open(file, "rb") as handle:
            if handle.read(6) == b"\x93NUMPY":
                raise DataFileError(f"{path}: holds a single array, not an .npz archive with {x_key!r} and {y_key!r}")
        with zipfile.ZipFile(file) as archive:
            X_raw, y_raw = (_read_member(archive, key, path, max_bytes) for key in (x_key, y_key))
    except DataFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as error:
        raise DataFileError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from None
    for key, values in ((x_key, X_raw), (y_key, y_raw)):
        if np.issubdtype(values.dtype, np.complexfloating):
            raise DataFileError(f"{path}: array {key!r} is complex (dtype {values.dtype}); X and y must be real")
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
            raise DataFileError(f"{path}: array {key!r} is not numeric (dtype {values.dtype})")
    X = X_raw.astype(np.float64)
    y = _labels(y_raw.astype(np.float64) if y_raw.dtype == np.bool_ else y_raw, path)
    _check_loaded(X, y, path)
    return deliver(X, y, xp, dtype, device)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _label_index(label_column: Any, width: int, path: str) -> int:
    if isinstance(label_column, bool) or not hasattr(label_column, "__index__"):
        raise TypeError(f"label_column must be an integer (a column index), got {label_column!r}")
    index = operator.index(label_column)
    if not -width <= index < width:
        raise DataFileError(f"{path}: label_column {index} is out of range for {width} columns")
    return index % width


def load_csv(
    path: Any,
    label_column: int = -1,
    *,
    delimiter: str = ",",
    header: bool | None = None,
    xp: Any = None,
    dtype: Any = None,
    device: Any = None,
    max_bytes: int = MAX_BYTES,
) -> tuple[Any, Any]:
    """Load a table of numbers from a CSV file: one column of labels, the others features.

    Parameters
    ----------
    path : str or path-like
        The file, UTF-8 text (a byte-order mark is allowed); blank lines are skipped.
    label_column : int, default -1
        Index of the label column (negative counts from the end).
    delimiter : str, default ","
        The field separator (``"\\t"``, ``";"``).
    header : bool, optional
        Whether the first row holds column names.  By default it does when any of its fields is not a number.
    xp, dtype, device : optional
        See :func:`anyoptim.datasets.make_moons`.
    max_bytes : int, default ``MAX_BYTES`` (1 GiB)
        The largest file read.

    Returns
    -------
    X : array, shape (n_samples, n_columns - 1)
        The other columns, in file order, float64 unless ``dtype`` says otherwise.
    y : array, shape (n_samples,)
        The label column: int64 when every label is a whole number that int64 holds, float64 otherwise.

    Raises
    ------
    TypeError
        If ``label_column`` is not an integer.
    MissingDataFileError
        The file does not exist (a ``FileNotFoundError`` and a ``ValueError``).
    DataFileError
        (a ``ValueError``) The path is a directory, an empty file, a file larger than ``max_bytes``, rows of different
        lengths, fewer than two columns, a label column out of range, or a value that is not a finite number (the
        message names its row and column).

    Examples
    --------
    >>> import pathlib, tempfile, anyoptim
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "data.csv"
    >>> _ = path.write_text("x1,x2,label\\n0.5,1.0,0\\n-1.0,2.0,1\\n")
    >>> X, y = anyoptim.datasets.load_csv(path)
    >>> X.tolist(), y.tolist()
    ([[0.5, 1.0], [-1.0, 2.0]], [0, 1])
    """
    max_bytes = _check_max_bytes(max_bytes)
    file, path = existing_file(path)
    if isinstance(label_column, bool) or not hasattr(label_column, "__index__"):
        raise TypeError(f"label_column must be an integer (a column index), got {label_column!r}")
    try:
        if os.path.getsize(file) > max_bytes:
            raise DataFileError(f"{path}: larger than max_bytes={max_bytes} (pass a larger one)")
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first field
        with open(file, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle, delimiter=delimiter) if any(field.strip() for field in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFileError(f"{path}: cannot read as CSV ({error})") from None
    if not rows:
        raise DataFileError(f"{path}: the file is empty")
    if header is None:
        header = any(_number(field) is None for field in rows[0])
    first_line = 2 if header else 1
    body = rows[1:] if header else rows
    if not body:
        raise DataFileError(f"{path}: no data rows")
    width = len(rows[0])
    if width < 2:
        raise DataFileError(f"{path}: needs at least two columns (features and a label), found {width}")
    label_index = _label_index(label_column, width, path)
    table = np.empty((len(body), width))
    for index, row in enumerate(body):
        line = first_line + index
        if len(row) != width:
            raise DataFileError(f"{path}: line {line} has {len(row)} columns, expected {width}")
        for column, field in enumerate(row):
            value = _number(field)
            if value is None or not math.isfinite(value):
                where = f"{path}: line {line}, column {column + 1}"
                raise DataFileError(f"{where}: {field.strip()!r} is not a finite number")
            table[index, column] = value
    X = np.delete(table, label_index, axis=1)
    y = _labels(table[:, label_index], path)
    _check_loaded(X, y, path)
    return deliver(X, y, xp, dtype, device)
