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


def read_features(source: str, n_features: int, layout: dict | None = None) -> np.ndarray:
    """The inputs in a ``.csv`` or ``.npz`` file, as a float64 array of shape (n_samples, n_features).

    A ``.csv`` is read as ``train`` read its training file (``layout``, the checkpoint's ``extra["table"]``:
    the delimiter, the header, the label column, the feature names): it holds the training file's columns, or
    only its feature columns, matched by header names when it has a header line, by count otherwise (see
    :func:`~anyoptim.lesson.tables.read_saved_features`).  A ``.npz`` holds the array ``X``.
    """
    from .tables import read_saved_features

    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, _ = _npz(path)
    elif suffix == ".csv":
        X = read_saved_features(path, n_features, layout)
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
    layout = info.extra.get("table")
    X = read_features(data, model.layer_dims[0], layout if isinstance(layout, dict) else None).astype(dtype)
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
        "one per line, for the inputs in a .csv (read as train read its file: the same columns, or only the "
        "feature columns) or .npz (X).",
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
