"""The ``train`` command's runs: any optimizer of the library on a generated data set or a user's file.

:func:`run_training` builds an MLP whose input width comes from the data and
whose output layer comes from the labels, trains it with the optimizer named in
:data:`OPTIMIZER_NAMES` (read from :data:`anyoptim.optimizers.REGISTRY`, so a
newly registered optimizer is a choice here with no edit) and returns a
:class:`TrainingRun`; :func:`load_data` reads the data by name or path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..optimizers import REGISTRY, Optimizer
from .backends import load_backend, resolve_device
from .checks import ExperimentError, check_positive_int
from .problem import DEFAULT_SEED, LESSON

__all__ = ["DATASETS", "OPTIMIZER_NAMES", "OUTPUT_CHOICES", "TrainingRun", "load_data", "run_training"]

DATASETS = ("moons", "circles", "spirals", "blobs")
OUTPUT_CHOICES = ("auto", "sigmoid", "softmax", "identity")

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
    xp = load_backend(backend, dtype)
    where = resolve_device(xp, device)
    X, y = load_data(data, xp, dtype=dtype, device=where, n_samples=n_samples, noise=noise, seed=seed)
    if X.ndim != 2:
        raise ExperimentError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    output, width = _output_size(xp, y, output)
    model = MLP([int(X.shape[1]), *hidden, width], hidden_activation=activation, output=output, init="he")
    cls = OPTIMIZER_NAMES[optimizer.lower()]
    chosen = cls() if learning_rate is None else cls(learning_rate)
    start = time.perf_counter()
    if save is None:
        if resume:
            raise ExperimentError("resume needs the checkpoint file to continue from (--save FILE)")
        result = fit(model, chosen, X, y, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress)
    else:
        from ..checkpoint import resumable_fit

        every = max(1, epochs // 10)
        result = resumable_fit(
            model, chosen, X, y, epochs, batch_size, seed, progress=progress, checkpoint=save, checkpoint_every=every,
            resume=resume,
        )  # fmt: skip
    wall_time = time.perf_counter() - start
    train_accuracy = None if output == "identity" else float(accuracy(model, result.params, X, y))
    return TrainingRun(
        X=X, y=y, model=model, optimizer=chosen, result=result, train_accuracy=train_accuracy, wall_time=wall_time
    )
