"""The ``train`` command's runs: any optimizer of the library on a generated data set or a user's file.

:func:`run_training` builds an MLP whose input width comes from the data and
whose output layer comes from the labels, trains it with the optimizer named in
:data:`OPTIMIZER_NAMES` (read from :data:`anyoptim.optimizers.REGISTRY`, so a
newly registered optimizer is a choice here with no edit) and returns a
:class:`TrainingRun`; :func:`load_data` reads the data by name or path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..nn.files import shown
from ..optimizers import REGISTRY, Optimizer
from ..transforms import decay_weights_only
from .backends import load_backend, resolve_device
from .checks import ExperimentError, check_positive_int
from .launch import launch_comm
from .problem import DEFAULT_SEED, LESSON

__all__ = [
    "DATASETS",
    "OPTIMIZER_NAMES",
    "OUTPUT_CHOICES",
    "SCHEDULES",
    "TrainingRun",
    "build_schedule",
    "load_data",
    "load_file",
    "run_training",
]

DATASETS = ("moons", "circles", "spirals", "blobs")
OUTPUT_CHOICES = ("auto", "sigmoid", "softmax", "identity")
#: ``--schedule`` names: the learning rate over the run (``NAME`` or ``NAME:VALUE``).
SCHEDULES = {
    "constant": "the learning rate throughout (default)",
    "cosine": "cosine decay from the learning rate to 0 over the run",
    "exponential:RATE": "the rate multiplied by RATE (0 < RATE <= 1) after every epoch",
    "step:EPOCHS": "the lesson's lr0 / (1 + floor(epoch / EPOCHS))",
}

#: Each optimizer class by its command-line name: the lesson's ``"gd"`` for
#: :class:`anyoptim.SGD`, then every name of :data:`anyoptim.optimizers.REGISTRY`.
#: ``train`` builds it with only the learning rate set (everything else at its default).
OPTIMIZER_NAMES: dict[str, type[Optimizer]] = {"gd": REGISTRY["sgd"], **REGISTRY}


@dataclass(frozen=True)
class TrainingRun:
    """The outcome of :func:`run_training`: the data, the network, and what :func:`anyoptim.fit` returned."""

    X: Any
    y: Any
    model: Any
    optimizer: Optimizer
    result: Any
    train_accuracy: float | None  # None for a regression (identity output)
    wall_time: float
    classes: list | None = None  # a file's label of each class; None when not remapped from a file
    notes: tuple[str, ...] = ()  # lines for the user: how the file was read, the label mapping, validation


def load_data(
    source: str, xp: Any, *, dtype: str, device: Any = None, n_samples: int = 300, noise: float = 0.2, seed: int = 0
) -> tuple[Any, Any]:
    """A generated data set by name (:data:`DATASETS`), or a user's ``.npz`` / ``.csv`` file by path.

    Files follow :func:`anyoptim.datasets.load_npz` (arrays ``X`` and ``y``) and
    :func:`anyoptim.datasets.load_csv` (labels in the last column).

    Parameters
    ----------
    source : str
        One of :data:`DATASETS`, or a path ending in ``.npz`` or ``.csv``.
    xp : namespace
        Array API namespace of the arrays returned.
    dtype : {"float64", "float32"}
        Floating-point type of ``X``.
    device : optional
        A device of ``xp`` (None: its default).
    n_samples : int, default 300
    noise : float, default 0.2
    seed : int, default 0
        Size, noise and seed of a generated data set (ignored for files).

    Returns
    -------
    X, y : arrays
        ``X`` of shape (n_samples, n_features); ``y`` labels or targets, as the loaders give them.

    Raises
    ------
    ExperimentError
        If ``source`` is neither a data set nor a ``.npz``/``.csv`` path, or ``n_samples`` is not positive.
    ValueError
        From the loaders, for a file that is missing or holds bad data.
    """
    from ..nn import datasets

    where = {"xp": xp, "dtype": getattr(xp, dtype), "device": device}
    if source in DATASETS:
        n_samples = check_positive_int("n_samples", n_samples)
        if source == "blobs":
            return datasets.make_blobs(n_samples=n_samples, seed=seed, **where)
        make = getattr(datasets, f"make_{source}")
        return make(n_samples=n_samples, noise=noise, seed=seed, **where)
    suffix = source.rsplit(".", 1)[-1].lower() if "." in source else ""
    if suffix == "npz":
        return datasets.load_npz(source, **where)
    if suffix == "csv":
        return datasets.load_csv(source, **where)
    raise ExperimentError(f"data {source!r} is neither a data set ({', '.join(DATASETS)}) nor a .npz or .csv file")


def load_file(
    source: str,
    *,
    label_column: int | str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    task: str = "classification",
) -> tuple[Any, Any, list | None, list[str]]:
    """A user's ``.csv`` (any delimited text) or ``.npz`` file, read on the host for :func:`run_training`.

    The ``.csv`` rules (delimiter, header, label column) are :func:`anyoptim.lesson.tables.read_table`'s;
    labels are encoded by :func:`~anyoptim.lesson.tables.encode_labels` (classes 0 .. K-1, or real targets).

    Returns
    -------
    X : numpy.ndarray
        float64 features.
    y : numpy.ndarray
        int64 classes or float64 targets (a 2-D ``y`` of a ``.npz`` is passed through).
    classes : list or None
        The file's label of each class (None for a regression or a 2-D ``y``).
    notes : list of str
        How the file was read, and the label mapping when labels were remapped.
    """
    X, y, classes, notes, _ = _read_file(source, label_column, delimiter, header, task)
    return X, y, classes, notes


def _read_file(
    source: str, label_column: int | str | None, delimiter: str | None, header: bool | None, task: str
) -> tuple[Any, Any, list | None, list[str], dict | None]:
    """:func:`load_file`'s result and, for a ``.csv``, how it was read (``Table.layout()``)."""
    import numpy as np

    from ..nn import datasets
    from .tables import Table, encode_labels, read_table

    notes = []
    if source.lower().endswith(".npz"):
        if label_column is not None or delimiter is not None or header is not None:
            raise ExperimentError("--label-column, --delimiter and --header are for .csv files; a .npz names X and y")
        X, y = datasets.load_npz(source, xp=np, dtype=np.float64)
        if y.ndim != 1:
            return X, y, None, notes, None
        labels = [str(v.item()) for v in y]
        table = Table(X, labels, "y", X.shape[1], "", False)
    else:
        table = read_table(source, label_column=label_column, delimiter=delimiter, header=header)
        notes.append(f"{shown(Path(source).name)}: {table.describe()}")
    encoded = encode_labels(table, task, source)
    if encoded.remapped:
        notes.append(encoded.mapping())
    layout = None if source.lower().endswith(".npz") else table.layout()
    return table.features, encoded.y, encoded.classes, notes, layout


def build_schedule(spec: str, learning_rate: float, steps_per_epoch: int, epochs: int) -> Any:
    """The learning rate of ``--schedule spec`` (see :data:`SCHEDULES`): a float for "constant", else a schedule.

    Raises
    ------
    ExperimentError
        For an unknown name or a bad value.
    """
    from .. import schedules

    name, _, value = spec.partition(":")
    try:
        number = float(value) if value else None
    except ValueError:
        number = None
        value = value or "?"
    if name == "constant" and not value:
        return learning_rate
    if name == "cosine" and not value:
        return schedules.cosine_decay(learning_rate, decay_steps=max(1, epochs * steps_per_epoch))
    if name == "exponential" and number is not None and 0 < number <= 1:
        return schedules.exponential_decay(learning_rate, decay_steps=steps_per_epoch, decay_rate=number)
    if name == "step" and number is not None and number >= 1 and number == int(number):
        return schedules.inverse_time_decay(
            learning_rate, decay_steps=int(number) * steps_per_epoch, decay_rate=1.0, staircase=True
        )
    raise ExperimentError(f"unknown schedule {spec!r}; choose one of {', '.join(SCHEDULES)}")


def _split(X: Any, y: Any, fraction: float, seed: int) -> tuple[Any, Any, Any, Any]:
    """``X, y`` split at random (fixed by ``seed``) into training and the last ``fraction`` for validation."""
    import numpy as np

    n = int(X.shape[0])
    n_validation = round(fraction * n)
    if not 0 <= fraction < 1 or (fraction > 0 and not 1 <= n_validation < n):
        raise ExperimentError(
            f"validation fraction {fraction} of {n} examples leaves no training or no validation examples"
        )
    order = np.random.default_rng(seed).permutation(n)
    return X[order[n_validation:]], y[order[n_validation:]], X[order[:n_validation]], y[order[:n_validation]]


def _output_size(xp: Any, y: Any, output: str) -> tuple[str, int]:
    """The output layer (resolving "auto") and its width for labels ``y``."""
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot rows or several regression targets
        return ("softmax" if output == "auto" else output), int(y.shape[1])
    if output == "identity":
        return output, 1
    n_classes = int(xp.max(y)) + 1
    if output == "auto":
        output = "sigmoid" if n_classes <= 2 else "softmax"
    return output, 1 if output == "sigmoid" else n_classes


def run_training(
    backend: str = "numpy",
    device: str | None = None,
    dtype: str = "float64",
    *,
    data: str = "moons",
    n_samples: int = LESSON.n_samples,
    noise: float = LESSON.noise,
    hidden: Sequence[int] = LESSON.layer_dims[1:-1],
    activation: str = LESSON.hidden_activation,
    output: str = "auto",
    optimizer: str = "adam",
    learning_rate: float | None = None,
    batch_size: int = LESSON.batch_size,
    epochs: int = 1000,
    seed: int = DEFAULT_SEED,
    progress: bool | None = None,
    save: str | None = None,
    resume: bool = False,
    label_column: int | str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    task: str | None = None,
    validation_fraction: float = 0.0,
    schedule: str = "constant",
    weight_decay: float = 0.0,
) -> TrainingRun:
    """Train an MLP on a generated data set or a user's file with any optimizer of the library.

    The input width comes from the data, the output layer from the labels
    (``output="auto"``: sigmoid for two classes, softmax for more).  Every check
    (names, counts, the data themselves) runs before training starts.

    Parameters
    ----------
    backend, device, dtype
        Where to train (see :func:`~anyoptim.lesson.backends.load_backend`).
    data : str, default "moons"
        A data set name or a file (see :func:`load_data`); ``n_samples`` and ``noise`` shape a generated one.
    hidden : sequence of int, default (5, 2)
        Widths of the hidden layers.
    activation : str, default "relu"
        Activation of the hidden layers.
    output : {"auto", "sigmoid", "softmax", "identity"}
    optimizer : str, default "adam"
        A name of :data:`OPTIMIZER_NAMES` (any case), built with ``learning_rate`` and its other defaults.
    learning_rate : float, optional
        The optimizer's learning rate; by default its own default (0.001 for Adam, 1.0 for Adadelta).
    batch_size, epochs, seed, progress
        As :func:`anyoptim.fit`.
    save : str, optional
        A checkpoint file (:func:`anyoptim.checkpoint.resumable_fit`), written
        every tenth of the epochs and at the end.
    resume : bool, default False
        Continue from ``save`` when it exists.
    label_column, delimiter, header
        How to read a ``.csv`` file (:func:`anyoptim.lesson.tables.read_table`; detected by default).
    task : {"classification", "regression"}, optional
        By default a regression with ``output="identity"``, else a classification.  A file's labels
        become classes 0 .. K-1 (the mapping is in ``notes`` and, with ``save``, in the checkpoint's
        ``extra["labels"]``); a regression trains the identity output on real targets.
    validation_fraction : float, default 0
        The share of the examples held out (at random, fixed by ``seed``) and scored after training.
    schedule : str, default "constant"
        The learning rate over the run, one of :data:`SCHEDULES`.
    weight_decay : float, default 0
        The optimizer's ``weight_decay`` on the weight matrices (not the biases).

    Returns
    -------
    TrainingRun

    Raises
    ------
    ExperimentError
        For an unknown optimizer, output, data set or backend, a count that is not positive, or ``X`` not 2-D.
    """
    from ..nn.mlp import MLP
    from ..nn.train import accuracy, fit

    if optimizer.lower() not in OPTIMIZER_NAMES:
        raise ExperimentError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")
    if output not in OUTPUT_CHOICES:
        raise ExperimentError(f"unknown output {output!r}; choose one of {', '.join(OUTPUT_CHOICES)}")
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch size", batch_size)
    for width in hidden:
        check_positive_int("every hidden layer width", width)
    import numpy as np

    from ..nn.data import to_namespace

    if task is None:
        task = "regression" if output == "identity" else "classification"
    if task == "regression" and output not in ("auto", "identity"):
        raise ExperimentError(f"--task regression trains the identity output, not {output!r}: drop --output")
    output = "identity" if task == "regression" else output
    if not (isinstance(weight_decay, int | float) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ExperimentError(f"weight decay must be a finite number >= 0, got {weight_decay!r}")
    xp = load_backend(backend, dtype)
    where = resolve_device(xp, device)
    classes, notes, layout = None, [], None
    if data in DATASETS:
        X, y = load_data(data, np, dtype="float64", n_samples=n_samples, noise=noise, seed=seed)
    elif data.rsplit(".", 1)[-1].lower() in ("csv", "npz"):
        X, y, classes, notes, layout = _read_file(data, label_column, delimiter, header, task)
    else:
        names = ", ".join(DATASETS)
        raise ExperimentError(f"data {data!r} is neither a data set ({names}) nor a .npz or .csv file")
    if X.ndim != 2:
        raise ExperimentError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    X, y, X_val, y_val = _split(X, y, validation_fraction, seed)
    X, X_val = (to_namespace(a, xp=xp, dtype=getattr(xp, dtype), device=where) for a in (X, X_val))
    y, y_val = (to_namespace(np.ascontiguousarray(a), xp=xp, device=where) for a in (y, y_val))
    output, width = _output_size(xp, y, output)
    if classes is not None and len(classes) > 2 and output == "sigmoid":
        raise ExperimentError(f"{len(classes)} classes need a softmax output, not sigmoid: drop --output")
    if classes is not None and output == "softmax":
        width = len(classes)
    model = MLP([int(X.shape[1]), *hidden, width], hidden_activation=activation, output=output, init="he")
    cls = OPTIMIZER_NAMES[optimizer.lower()]
    rate = cls().learning_rate if learning_rate is None else learning_rate
    rate = build_schedule(schedule, rate, math.ceil(int(X.shape[0]) / batch_size), epochs)
    decay = {"weight_decay": float(weight_decay), "weight_decay_mask": decay_weights_only} if weight_decay else {}
    chosen = cls(rate, **decay)
    start = time.perf_counter()
    if save is None:
        if resume:
            raise ExperimentError("resume needs the checkpoint file to continue from (--save FILE)")
        result = fit(
            model, chosen, X, y, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress, comm=launch_comm()
        )
    else:
        from ..checkpoint import resumable_fit

        every = max(1, epochs // 10)
        result = resumable_fit(
            model, chosen, X, y, epochs, batch_size, seed, progress=progress, checkpoint=save, checkpoint_every=every,
            resume=resume, comm=launch_comm(),
        )  # fmt: skip
        if (classes is not None or layout is not None) and getattr(launch_comm(), "rank", 0) == 0:
            _record_file(save, result, chosen, classes, layout)
    wall_time = time.perf_counter() - start
    train_accuracy = None if output == "identity" else float(accuracy(model, result.params, X, y))
    if int(X_val.shape[0]):
        cost = float(model.loss(result.params, X_val, y_val))
        right = None if output == "identity" else float(accuracy(model, result.params, X_val, y_val))
        score = "" if right is None else f", accuracy {100 * right:.1f} %"
        notes.append(f"validation ({int(X_val.shape[0])} held-out examples): cost {cost:.4f}{score}")
    return TrainingRun(
        X=X, y=y, model=model, optimizer=chosen, result=result, train_accuracy=train_accuracy, wall_time=wall_time,
        classes=classes, notes=tuple(notes),
    )  # fmt: skip


def _record_file(path: str, result: Any, optimizer: Optimizer, classes: list | None, layout: dict | None) -> None:
    """Add the file's label of each class (``extra["labels"]``) and how a ``.csv`` was read (``extra["table"]``)
    to the checkpoint: ``anyoptim predict`` reads its data the same way and maps classes back to labels."""
    from ..checkpoint import read_info, save

    extra = dict(read_info(path).extra)
    if classes is not None:
        extra["labels"] = {"classes": classes}
    if layout is not None:
        extra["table"] = layout
    save(path, result.params, result.state, optimizer=optimizer, extra=extra)
