"""The ``predict`` command: a network trained and saved by ``anyoptim train --save``, applied to new data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..nn.files import existing_file
from .checks import ExperimentError

__all__ = ["add_predict_parser", "read_features", "run_predict_command", "run_prediction"]


def read_features(source: str, n_features: int) -> np.ndarray:
    """The inputs in a ``.csv`` or ``.npz`` file, as a float64 array of shape (n_samples, n_features).

    A ``.csv`` holds one example per line (a header line of names is skipped); a
    last column beyond ``n_features`` is taken for labels and dropped.  A
    ``.npz`` holds the array ``X``.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, _ = _npz(path)
    elif suffix == ".csv":
        X = _table_features(path, n_features)
    else:
        raise ExperimentError(f"data {source!r} is not a .csv or .npz file")
    if X.ndim != 2 or X.shape[1] not in (n_features, n_features + 1):
        raise ExperimentError(f"{source} has {X.shape[-1]} columns; the model takes {n_features} features")
    X = X[:, :n_features]
    if not np.all(np.isfinite(X)):
        raise ExperimentError(f"{source} holds NaN or infinity")
    return np.ascontiguousarray(X)


def _npz(path: Path) -> tuple[np.ndarray, None]:
    existing_file(path)  # a directory or a missing file: one line naming it
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive:
                raise ExperimentError(f"{path} holds no array named X")
            return np.asarray(archive["X"], dtype=np.float64), None
    except (OSError, ValueError) as error:
        raise ExperimentError(f"{path} cannot be read as .npz ({error})") from None


def _table_features(path: Path, n_features: int) -> np.ndarray:
    """The features of a file ``train`` reads (any delimiter, a header, a last label column even of text)."""
    from .tables import read_table

    try:
        table = read_table(path)
    except ExperimentError:
        return _csv(path)
    return table.features if table.features.shape[1] == n_features else _csv(path)


def _csv(path: Path) -> np.ndarray:
    existing_file(path)  # a directory or a missing file: one line naming it
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append([float(cell) for cell in line.split(",")])
        except ValueError:
            if number == 1:
                continue  # a header of column names
            raise ExperimentError(f"{path}, line {number}: not a row of numbers") from None
    if not rows or len({len(row) for row in rows}) != 1:
        raise ExperimentError(f"{path} holds no rows, or rows of different lengths")
    return np.asarray(rows, dtype=np.float64)


def run_prediction(model_path: str, data: str) -> np.ndarray:
    """Predictions of the network saved in ``model_path`` for the inputs in ``data`` (NumPy arrays).

    Class labels for a classifier, values for a regression, as :func:`anyoptim.predict` gives them; when
    ``train`` remapped a file's labels to classes (``extra["labels"]``), the file's own labels.
    """
    from ..checkpoint import load, read_info
    from ..nn.mlp import MLP

    info = read_info(model_path)
    record = info.extra.get("fit")
    if not isinstance(record, dict) or not all(k in record for k in ("layer_dims", "hidden_activation", "output")):
        raise ExperimentError(f"{model_path} holds no network description: save it with anyoptim train --save")
    model = MLP(record["layer_dims"], hidden_activation=record["hidden_activation"], output=record["output"])
    params, _ = load(model_path)
    dtype = params["W1"].dtype
    X = read_features(data, model.layer_dims[0]).astype(dtype)
    predictions = model.predict(params, X)
    labels = info.extra.get("labels")
    if isinstance(labels, dict) and "classes" in labels and model.output != "identity":
        # train remapped the file's labels to classes 0 .. K-1: give the file's labels back
        return np.asarray(labels["classes"])[np.asarray(predictions).astype(np.int64).reshape(-1)]
    return predictions


def add_predict_parser(commands: Any) -> None:
    """Add the ``predict`` subcommand to the ``anyoptim`` command's subparsers (``add_subparsers()``'s result)."""
    predict = commands.add_parser(
        "predict",
        help="apply a network saved by train --save to new data",
        description="Print the predictions (class labels, or values for a regression) of a saved network, "
        "one per line, for the inputs in a .csv (one example per line; a label column is dropped) or .npz (X).",
    )
    predict.add_argument("--model", required=True, metavar="FILE", help="a checkpoint written by train --save")
    predict.add_argument("--data", required=True, metavar="FILE", help="a .csv or .npz file of inputs")
    predict.add_argument("--output", metavar="FILE", help="write the predictions to this file instead of stdout")


def run_predict_command(args: argparse.Namespace) -> int:
    """The ``predict`` subcommand: print (or write) one prediction per line; return the exit status."""
    predictions = run_prediction(args.model, args.data)

    def text(value: Any) -> str:
        return str(value) if isinstance(value, str | np.str_) else f"{value:.9g}"

    lines = "".join(f"{' '.join(text(v) for v in row) if row.ndim else text(row)}\n" for row in predictions)
    if args.output is None:
        sys.stdout.write(lines)
    else:
        Path(args.output).write_text(lines, encoding="utf-8")
        print(f"wrote {len(predictions)} predictions to {args.output}")
    return 0
