"""The lesson's comparison: GD, Momentum, RMSprop and Adam on the moons, then with the stepped decay.

:func:`run_comparison` trains the lesson's 2-5-2-1 network on the two-moons
data with each run of :data:`COMPARISON_RUNS` (the four optimizers at one small
rate, then GD, Momentum and Adam with the stepped learning-rate decay of
:func:`stepped_decay`) and returns one :class:`ComparisonRow` per run: no
printing, no plotting (:mod:`anyoptim.lesson.cli` prints, :mod:`anyoptim.lesson.plots` draws).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import schedules
from ..optimizers.base import Optimizer
from .checks import check_positive_int
from .launch import launch_comm
from .problem import DEFAULT_SEED, LESSON, LESSON_OPTIMIZERS, Problem, lesson_problem

__all__ = ["COMPARISON_RUNS", "ComparisonRow", "RunSpec", "run_comparison", "stepped_decay"]


def stepped_decay(lr0: float, steps_per_epoch: int, interval: int = LESSON.decay_interval) -> schedules.Schedule:
    """The lesson's ``lr0 / (1 + floor(epoch / interval))`` as a schedule of optimizer steps.

    Parameters
    ----------
    lr0 : float
        The rate of the first ``interval`` epochs.
    steps_per_epoch : int
        Optimizer steps in one epoch (mini-batches per pass over the data).
    interval : int, default 1000
        Epochs between the steps down.

    Returns
    -------
    anyoptim.schedules.Schedule
        The rate as a function of the optimizer's step count.
    """
    return schedules.inverse_time_decay(lr0, decay_steps=interval * steps_per_epoch, decay_rate=1.0, staircase=True)


@dataclass(frozen=True)
class RunSpec:
    """One row of the comparison: an optimizer, its (initial) rate, with or without the stepped decay."""

    optimizer: str
    learning_rate: float
    decay: bool

    @property
    def label(self) -> str:
        return f"{self.optimizer} + decay" if self.decay else self.optimizer

    def build(self, steps_per_epoch: int) -> Optimizer:
        """The optimizer, with the lesson's β 0.9, β1 0.9, β2 0.999, ε 1e-8."""
        rate: Any = stepped_decay(self.learning_rate, steps_per_epoch) if self.decay else self.learning_rate
        return LESSON_OPTIMIZERS[self.optimizer](rate)


# The lesson's seven runs: all four at 0.0007, then the decay from 0.1 (GD, Momentum) and 0.01 (Adam).
COMPARISON_RUNS: tuple[RunSpec, ...] = (
    RunSpec("GD", 0.0007, decay=False),
    RunSpec("Momentum", 0.0007, decay=False),
    RunSpec("RMSprop", 0.0007, decay=False),
    RunSpec("Adam", 0.0007, decay=False),
    RunSpec("GD", 0.1, decay=True),
    RunSpec("Momentum", 0.1, decay=True),
    RunSpec("Adam", 0.01, decay=True),
)


@dataclass(frozen=True)
class ComparisonRow:
    """The outcome of one run of :func:`run_comparison`.

    Attributes
    ----------
    optimizer : str
        "GD", "Momentum", "RMSprop" or "Adam".
    decay : bool
        Whether the stepped decay was on.
    learning_rate : float
        The (initial) learning rate.
    final_cost : float
        The last epoch's mean cost.
    train_accuracy : float
        Accuracy on the training data after the last epoch, in [0, 1].
    wall_time : float
        Seconds the training took.
    history : anyoptim.nn.train.History
        Cost, learning rate and time per epoch.
    params : dict
        The trained parameters, on the backend that trained them.
    """

    optimizer: str
    decay: bool
    learning_rate: float
    final_cost: float
    train_accuracy: float
    wall_time: float
    history: Any
    params: Any

    @property
    def label(self) -> str:
        return f"{self.optimizer} + decay" if self.decay else self.optimizer


def run_comparison(
    backend: str = "numpy",
    device: str | None = None,
    dtype: str = "float64",
    epochs: int = LESSON.epochs,
    seed: int = DEFAULT_SEED,
    progress: bool | None = None,
    *,
    runs: Sequence[RunSpec] = COMPARISON_RUNS,
    problem: Problem | None = None,
) -> list[ComparisonRow]:
    """Train the lesson's network with each optimizer of ``runs`` and collect the results.

    Every run starts from the same initial weights and sees the same
    mini-batches (both fixed by ``seed``), so the rows differ only in the optimizer.

    Parameters
    ----------
    backend, device, dtype
        Where to train (see :func:`load_backend`, :func:`resolve_device`).
    epochs : int, default 5000
        Passes over the 300 examples, in mini-batches of 64.
    seed : int
        Seed of the data, the initialization and the shuffling.
    progress : bool, optional
        Passed to :func:`anyoptim.fit` (None: a bar only on a terminal).
    runs : sequence of RunSpec
        Which optimizers to train; the lesson's seven by default.
    problem : Problem, optional
        Data and model made by :func:`lesson_problem` (made here when absent).

    Returns
    -------
    list of ComparisonRow
        One per run, in order.
    """
    from ..nn.train import accuracy, fit

    epochs = check_positive_int("epochs", epochs)
    if problem is None:
        problem = lesson_problem(backend, device=device, dtype=dtype, seed=seed)
    steps_per_epoch = math.ceil(LESSON.n_samples / LESSON.batch_size)
    rows = []
    for spec in runs:
        optimizer = spec.build(steps_per_epoch)
        start = time.perf_counter()
        result = fit(
            problem.model,
            optimizer,
            problem.X,
            problem.y,
            epochs=epochs,
            batch_size=LESSON.batch_size,
            seed=seed,
            progress=progress,
            comm=launch_comm(),
        )
        wall_time = time.perf_counter() - start
        rows.append(
            ComparisonRow(
                optimizer=spec.optimizer,
                decay=spec.decay,
                learning_rate=spec.learning_rate,
                final_cost=float(result.history.cost[-1]),
                train_accuracy=float(accuracy(problem.model, result.params, problem.X, problem.y)),
                wall_time=wall_time,
                history=result.history,
                params=result.params,
            )
        )
    return rows
