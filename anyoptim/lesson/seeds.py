"""The lesson's comparison over several initialization seeds: how much of a result is the seed's.

:func:`run_seeds` runs every configuration of :data:`~anyoptim.lesson.compare.COMPARISON_RUNS`
once per seed (``seed, seed + 1, ...``) on the same data, and :func:`summarize`
reduces the runs to one :class:`SeedSummary` per configuration: the median and
the range (min-max) of the final cost and the train accuracy, and the spread of
the loss curves epoch by epoch.  Numbers only: :mod:`anyoptim.lesson.cli`
prints them, :func:`anyoptim.lesson.plots.plot_loss_bands` draws them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .checks import ExperimentError, check_positive_int
from .compare import COMPARISON_RUNS, ComparisonRow, RunSpec, run_comparison
from .problem import DEFAULT_SEED, LESSON, Problem, lesson_problem

__all__ = ["SEED_COLUMNS", "SeedSummary", "Spread", "run_seeds", "seed_list", "spread", "summarize", "table_rows"]


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of a few numbers."""

    median: float
    low: float
    high: float


def spread(values: Sequence[float]) -> Spread:
    """The :class:`Spread` of ``values`` (at least one number).

    Examples
    --------
    >>> spread([0.3, 0.1, 0.2, 0.9])
    Spread(median=0.25, low=0.1, high=0.9)
    """
    if len(values) == 0:
        raise ExperimentError("a spread needs at least one value")
    numbers = [float(v) for v in values]
    return Spread(float(statistics.median(numbers)), min(numbers), max(numbers))


def seed_list(seed: int, n_seeds: int) -> list[int]:
    """The seeds ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ExperimentError(f"seed must be an integer >= 0, got {seed!r}")
    return list(range(seed, seed + check_positive_int("seeds", n_seeds)))


@dataclass(frozen=True)
class SeedSummary:
    """One configuration of the comparison over several seeds.

    Attributes
    ----------
    label : str
        The configuration's label ("Adam", "GD + decay", ...).
    learning_rate : float
        Its (initial) learning rate.
    decay : bool
        Whether the stepped decay was on.
    seeds : list of int
        The seeds, in order; the lists below follow them.
    final_costs, train_accuracies, wall_times : list of float
        One per seed.
    cost_curves : list of list of float
        The cost per epoch of each seed's run.
    """

    label: str
    learning_rate: float
    decay: bool
    seeds: list[int]
    final_costs: list[float]
    train_accuracies: list[float]
    wall_times: list[float]
    cost_curves: list[list[float]]

    @property
    def final_cost(self) -> Spread:
        return spread(self.final_costs)

    @property
    def train_accuracy(self) -> Spread:
        return spread(self.train_accuracies)

    def band(self) -> tuple[list[float], list[float], list[float]]:
        """Median, minimum and maximum cost at every epoch, over the seeds."""
        per_epoch = [spread(costs) for costs in zip(*self.cost_curves, strict=True)]
        return [s.median for s in per_epoch], [s.low for s in per_epoch], [s.high for s in per_epoch]


def summarize(runs_by_seed: Sequence[Sequence[ComparisonRow]], seeds: Sequence[int]) -> list[SeedSummary]:
    """Per configuration, the results of every seed (``runs_by_seed[i]`` are the rows of ``seeds[i]``)."""
    if len(runs_by_seed) != len(seeds) or not seeds:
        raise ExperimentError(f"{len(runs_by_seed)} lists of rows for {len(seeds)} seeds")
    if len({len(rows) for rows in runs_by_seed}) != 1:
        raise ExperimentError("every seed must have run the same configurations")
    summaries = []
    for column in zip(*runs_by_seed, strict=True):
        first = column[0]
        if any((row.label, row.learning_rate) != (first.label, first.learning_rate) for row in column):
            raise ExperimentError("every seed must have run the same configurations, in the same order")
        summaries.append(
            SeedSummary(
                label=first.label,
                learning_rate=first.learning_rate,
                decay=first.decay,
                seeds=list(seeds),
                final_costs=[row.final_cost for row in column],
                train_accuracies=[row.train_accuracy for row in column],
                wall_times=[row.wall_time for row in column],
                cost_curves=[list(row.history.cost) for row in column],
            )
        )
    return summaries


def run_seeds(
    seeds: Sequence[int],
    epochs: int = LESSON.epochs,
    *,
    problem: Problem | None = None,
    runs: Sequence[RunSpec] = COMPARISON_RUNS,
    data_seed: int = DEFAULT_SEED,
    progress: bool | None = None,
) -> tuple[list[SeedSummary], list[ComparisonRow]]:
    """Run the comparison once per initialization seed, on the same data.

    Parameters
    ----------
    seeds : sequence of int
        Seeds of the initial weights and the shuffling (see :func:`seed_list`).
    epochs : int, default 5000
        Passes over the data of every run.
    problem : Problem, optional
        The data and the network (by default :func:`lesson_problem` with ``data_seed``, on NumPy).
    runs : sequence of RunSpec
        The configurations; the lesson's seven by default.
    data_seed : int, default 2
        Seed of the moons when ``problem`` is not given.
    progress : bool, optional
        As :func:`anyoptim.fit`.

    Returns
    -------
    summaries : list of SeedSummary
        One per configuration, in the order of ``runs``.
    first_rows : list of ComparisonRow
        The first seed's rows (their parameters draw the decision boundaries).
    """
    if len(seeds) == 0:
        raise ExperimentError("run_seeds needs at least one seed")
    if problem is None:
        problem = lesson_problem(seed=data_seed)
    runs_by_seed = [
        run_comparison(epochs=epochs, seed=seed, progress=progress, runs=runs, problem=problem) for seed in seeds
    ]
    return summarize(runs_by_seed, seeds), runs_by_seed[0]


#: The columns of the table of :func:`table_rows`.
SEED_COLUMNS = ("optimizer", "learning rate", "decay", "final cost median", "(min-max)", "train accuracy", "(min-max)")


def table_rows(summaries: Sequence[SeedSummary], decay_text: str) -> list[list[str]]:
    """The cells of the seeds table, one row per configuration (``decay_text`` names the decay)."""
    rows = []
    for s in summaries:
        cost, acc = s.final_cost, s.train_accuracy
        rows.append(
            [
                s.label.removesuffix(" + decay"),
                f"{s.learning_rate:g}",
                decay_text if s.decay else "none",
                f"{cost.median:.4f}",
                f"{cost.low:.4f}-{cost.high:.4f}",
                f"{100 * acc.median:.1f} %",
                f"{100 * acc.low:.1f}-{100 * acc.high:.1f} %",
            ]
        )
    return rows
