"""Batch, mini-batch and stochastic gradient descent on the lesson's problem.

:func:`run_batch_sizes` trains the lesson's network with plain gradient descent
on the whole set, on mini-batches of 64 and on one example per step, records the
cost of every step in a :class:`BatchSizeCurve`, and :func:`step_noise` measures
how much each curve jitters.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..optimizers import SGD
from .checks import check_positive_int
from .problem import DEFAULT_SEED, LESSON, Problem, lesson_problem

__all__ = [
    "BATCH_SIZE_LEARNING_RATE",
    "BATCH_SIZE_STEPS",
    "BatchSizeCurve",
    "run_batch_sizes",
    "step_noise",
]


@dataclass(frozen=True)
class BatchSizeCurve:
    """Gradient descent with one batch size: the cost at every step.

    Attributes
    ----------
    label : str
        "batch GD", "mini-batch (64)" or "stochastic GD".
    batch_size : int
    batch_costs : list of float
        The mean loss of each step's batch, before the step: the curve a
        training loop sees (the lesson's "cost per iteration").
    full_costs : list of float
        The mean loss on the whole training set after each step.
    wall_time : float
        Seconds the training took (the whole-set costs included).
    """

    label: str
    batch_size: int
    batch_costs: list[float]
    full_costs: list[float]
    wall_time: float


def step_noise(costs: Sequence[float]) -> float:
    """Mean absolute change between consecutive costs: how much a loss curve jitters."""
    if len(costs) < 2:
        return 0.0
    return sum(abs(b - a) for a, b in itertools.pairwise(costs)) / (len(costs) - 1)


BATCH_SIZE_LEARNING_RATE = 0.1
BATCH_SIZE_STEPS = 500


def run_batch_sizes(
    backend: str = "numpy",
    device: str | None = None,
    dtype: str = "float64",
    steps: int = BATCH_SIZE_STEPS,
    seed: int = DEFAULT_SEED,
    *,
    learning_rate: float = BATCH_SIZE_LEARNING_RATE,
    batch_sizes: Sequence[int] | None = None,
    problem: Problem | None = None,
) -> list[BatchSizeCurve]:
    """Gradient descent on the lesson's problem with the whole set, mini-batches of 64, and one example per step.

    All runs take the same number of steps of plain gradient descent
    (:class:`anyoptim.SGD`) at one rate, from the same initial weights; only the
    batch each gradient is computed on differs.  Per step, the mini-batch cost
    wanders around the batch curve and the one-example cost jumps the most.

    Parameters
    ----------
    backend, device, dtype, seed
        As :func:`run_comparison`.
    steps : int, default 500
        Optimizer steps of each run (batch GD: one per epoch; stochastic GD: 300 per epoch).
    learning_rate : float, default 0.1
    batch_sizes : sequence of int, optional
        Default: (number of samples, 64, 1).
    problem : Problem, optional
        Data and model (made by :func:`lesson_problem` when absent).

    Returns
    -------
    list of BatchSizeCurve
    """
    from ..nn.data import minibatches

    steps = check_positive_int("steps", steps)
    if problem is None:
        problem = lesson_problem(backend, device=device, dtype=dtype, seed=seed)
    n_samples = int(problem.X.shape[0])
    sizes = [n_samples, LESSON.batch_size, 1] if batch_sizes is None else list(batch_sizes)
    for size in sizes:
        check_positive_int("batch size", size)
    curves = []
    for size in sizes:
        model, optimizer = problem.model, SGD(learning_rate)
        params = model.init(seed=seed, like=problem.X)
        state = optimizer.init(params)
        batch_costs: list[float] = []
        full_costs: list[float] = []
        start = time.perf_counter()
        epoch = 0
        while len(batch_costs) < steps:
            for X_batch, y_batch in minibatches(problem.X, problem.y, batch_size=size, seed=seed * 100_003 + epoch):
                loss, grads = model.loss_and_grad(params, X_batch, y_batch)
                params, state = optimizer.step(params, grads, state)
                batch_costs.append(float(loss))
                full_costs.append(float(model.loss(params, problem.X, problem.y)))
                if len(batch_costs) == steps:
                    break
            epoch += 1
        curves.append(
            BatchSizeCurve(
                label=_batch_label(size, n_samples),
                batch_size=size,
                batch_costs=batch_costs,
                full_costs=full_costs,
                wall_time=time.perf_counter() - start,
            )
        )
    return curves


def _batch_label(size: int, n_samples: int) -> str:
    if size >= n_samples:
        return "batch GD"
    if size == 1:
        return "stochastic GD"
    return f"mini-batch ({size})"
