"""Training that writes a checkpoint as it goes and picks it up again: :func:`resumable_fit`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..nn.data import Seed, host_rng
from ..nn.mlp import MLP
from ..nn.train import FitResult, History, fit
from ..optimizers.base import Optimizer
from .files import CheckpointError
from .restore import load, read_info
from .store import save

__all__ = ["resumable_fit"]


def _check_every(checkpoint_every: Any) -> int:
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
    return checkpoint_every


def _seed_record(seed: Any) -> int | list[int]:
    """``seed`` as the file's JSON records it and resume compares it: an int, or a list of ints.

    NumPy integers become ints and any sequence of integers a list (``(1, 2)`` and ``[1, 2]`` are one seed to
    :func:`anyoptim.fit`); a :class:`numpy.random.SeedSequence` or anything else JSON cannot hold is refused
    before training.
    """
    if isinstance(seed, np.random.SeedSequence):
        raise TypeError(
            "resumable_fit records the seed in the checkpoint, which cannot hold a numpy.random.SeedSequence: "
            "give an int or a list of ints"
        )

    def whole(value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

    if whole(seed):
        return int(seed)
    if isinstance(seed, (Sequence, np.ndarray)) and not isinstance(seed, (str, bytes)):
        items = list(seed)
        if all(whole(item) for item in items):
            return [int(item) for item in items]
    raise TypeError(f"seed must be an int or a sequence of ints (recorded in the checkpoint), got {seed!r}")


def _fit_record(info_extra: dict[str, Any], path: str) -> dict[str, Any]:
    record = info_extra.get("fit")
    keys = ("epoch", "seed", "batch_size", "cost", "learning_rate", "time", "layer_dims")
    if not isinstance(record, dict) or any(key not in record for key in keys):
        raise CheckpointError(f"{path} was not written by resumable_fit (no fit record): it cannot be resumed")
    epoch = record["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0 or len(record["cost"]) != epoch:
        raise CheckpointError(f"{path}: its fit record is damaged")
    return record


class _Writer:
    """The callback that writes the checkpoint every ``every`` epochs, with the run's history so far."""

    def __init__(self, path: str, every: int, optimizer: Optimizer, run: dict[str, Any], history: History):
        self.path, self.every, self.optimizer, self.run, self.history = path, every, optimizer, run, history
        self.saved_epochs = len(history)
        self.writes = True  # False on the processes of a data-parallel run other than rank 0
        self.offset = 0.0
        self.start = time.perf_counter()

    def __call__(self, epoch: int, cost: float, params: Any, state: Any) -> None:
        self.history.time.append(self.offset + time.perf_counter() - self.start)
        self.history.cost.append(cost)
        self.history.learning_rate.append(float(state.learning_rate))
        if (epoch + 1) % self.every == 0:
            self.write(epoch + 1, params, state)

    def write(self, epochs_done: int, params: Any, state: Any) -> None:
        record = {
            **self.run,
            "epoch": epochs_done,
            "cost": list(self.history.cost),
            "learning_rate": list(self.history.learning_rate),
            "time": list(self.history.time),
        }
        if self.writes:
            save(self.path, params, state, optimizer=self.optimizer, extra={"fit": record})
        self.saved_epochs = epochs_done


def resumable_fit(
    model: MLP,
    optimizer: Optimizer,
    X: Any,
    y: Any,
    epochs: int = 1000,
    batch_size: int = 64,
    seed: Seed = 0,
    params: dict | None = None,
    callbacks: Iterable[Callable[[int, float, Any, Any], Any]] = (),
    progress: bool | None = None,
    *,
    checkpoint: str | os.PathLike,
    checkpoint_every: int = 1,
    resume: bool = False,
    comm: Any = None,
) -> FitResult:
    """:func:`anyoptim.fit` that writes a checkpoint every few epochs and, with ``resume``, continues from it.

    The checkpoint (:func:`~anyoptim.save`) holds the parameters, the optimizer's
    state (step count and skipped steps included), the epochs done, the seed, the
    batch size and the history.  Each epoch's shuffle is derived from
    ``(seed, epoch)`` alone, so no generator state is stored: a run stopped after
    any epoch and resumed gives the same cost history, parameters and state, bit
    for bit, as the run that was never stopped.

    Parameters
    ----------
    model : MLP
        The network (as :func:`anyoptim.fit`); its widths, activation and
        output are recorded, and must match on resume.
    optimizer : Optimizer
        An :class:`~anyoptim.Optimizer`.  A schedule or other callable setting
        is not stored: give the same one when resuming.
    X : array, shape (n_samples, n_features)
        As :func:`anyoptim.fit`.
    y : array, shape (n_samples,) or (n_samples, n_outputs)
        As :func:`anyoptim.fit`.
    epochs : int, default 1000
        Epochs of the whole run, counted from its start (not from the resumed epoch).
    batch_size : int, default 64
        As :func:`anyoptim.fit`; must match on resume.
    seed : int or list of int, default 0
        As :func:`anyoptim.fit` (recorded in the file's JSON, so an int or a
        sequence of ints, NumPy integers included, recorded as a list); must
        match on resume.
    params : dict, optional
        Start from these parameters (ignored when resuming from a file).
    callbacks : sequence of callables, default ()
        As :func:`anyoptim.fit`; called with the epoch counted from the run's start.
    progress : bool, optional
        As :func:`anyoptim.fit`.
    checkpoint : str or path-like
        The file to write (atomically: a crash mid-save keeps the previous one).
    checkpoint_every : int, default 1
        Write after every this many epochs, and after the last epoch run.
    resume : bool, default False
        Continue from ``checkpoint`` if it exists (``params`` are then ignored);
        start a new run if it does not.  The file must come from the same model,
        optimizer class and settings, seed and batch size.
    comm : communicator, optional
        Train data-parallel (as :func:`anyoptim.fit`); every process reads the file
        on resume (so all must see it: where one cannot, every process raises
        before training), rank 0 alone writes it (from the whole, gathered state).

    Returns
    -------
    FitResult
        As :func:`anyoptim.fit`, with the history of the whole run (times of the
        resumed epochs continue from the saved ones).

    Raises
    ------
    ValueError
        For anything :func:`anyoptim.fit` refuses; a ``checkpoint_every`` below 1;
        on resume, a file that is damaged, not written by this function, or from
        another model, optimizer, seed or batch size (checked before training).
    TypeError
        If ``optimizer`` is not an :class:`~anyoptim.Optimizer`, or ``seed`` not
        an int or a sequence of ints (a :class:`numpy.random.SeedSequence`
        cannot be recorded); raised before training.

    See Also
    --------
    anyoptim.fit : Training without checkpoints; its ``state`` and ``initial_epoch`` continue a run.

    Examples
    --------
    >>> import os, tempfile, anyoptim
    >>> from anyoptim.checkpoint import resumable_fit
    >>> X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    >>> model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
    >>> path = os.path.join(tempfile.mkdtemp(), "run.safetensors")
    >>> whole = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=6, batch_size=20, progress=False)
    >>> first = resumable_fit(model, anyoptim.Adam(0.05), X, y, epochs=3, batch_size=20, progress=False,
    ...                       checkpoint=path)
    >>> rest = resumable_fit(model, anyoptim.Adam(0.05), X, y, epochs=6, batch_size=20, progress=False,
    ...                      checkpoint=path, resume=True)
    >>> rest.history.cost == whole.history.cost, rest.state.count
    (True, 12)
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an anyoptim.Optimizer, got {type(optimizer).__name__}")
    every = _check_every(checkpoint_every)
    if resume not in (True, False):
        raise TypeError(f"resume must be True or False, got {resume!r}")
    seed = _seed_record(seed)
    host_rng(seed)  # a seed fit refuses (a negative int) fails here, before a file is read
    path = str(Path(checkpoint))
    run = {
        "seed": seed,
        "batch_size": batch_size,
        "layer_dims": list(model.layer_dims),
        "hidden_activation": model.hidden_activation,
        "output": model.output,
    }
    history, state, initial_epoch = History(), None, 0
    if resume and Path(path).exists():
        record = _fit_record(read_info(path).extra, path)
        for key, value in run.items():
            if record[key] != value:
                raise CheckpointError(f"{path} was written by a run with {key}={record[key]!r}, not {value!r}")
        if record["epoch"] > epochs:
            raise CheckpointError(f"{path} has {record['epoch']} epochs done, more than epochs={epochs}")
        like = model.init(seed=seed, like=X)
        params, state = load(path, like=like, optimizer=optimizer)
        history = History(list(record["cost"]), list(record["learning_rate"]), list(record["time"]))
        initial_epoch = record["epoch"]
    writer = _Writer(path, every, optimizer, run, History(list(history.cost), list(history.learning_rate)))
    writer.writes = getattr(comm, "rank", 0) == 0
    offset = history.time[-1] if history.time else 0.0
    writer.history.time[:] = history.time
    writer.offset = offset
    user_callbacks = (callbacks,) if callable(callbacks) else tuple(callbacks)
    result = fit(
        model,
        optimizer,
        X,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        params=params,
        callbacks=(*user_callbacks, writer),
        progress=progress,
        state=state,
        initial_epoch=initial_epoch,
        comm=comm,
    )
    history.cost += result.history.cost
    history.learning_rate += result.history.learning_rate
    history.time += [offset + t for t in result.history.time]
    writer.history = History(list(history.cost), list(history.learning_rate), list(history.time))
    if writer.saved_epochs != len(history) or not Path(path).exists():
        writer.write(len(history), result.params, result.state)
    return FitResult(params=result.params, state=result.state, history=history)
