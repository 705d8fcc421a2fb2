"""Optimizer paths on 2-D surfaces: GD, Momentum, RMSprop and Adam on a valley and on Rosenbrock.

:func:`run_trajectories` follows the lesson's four optimizers
(:data:`~anyoptim.lesson.problem.LESSON_OPTIMIZERS`) on an ill-conditioned
quadratic and on the Rosenbrock function (:data:`SURFACES`) and returns one
:class:`Trajectory` per pair; :func:`reversals` counts how often a path zig-zags.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .backends import load_backend
from .checks import ExperimentError
from .problem import LESSON_OPTIMIZERS

__all__ = ["QUADRATIC", "ROSENBROCK", "SURFACES", "Surface", "Trajectory", "reversals", "run_trajectories"]


@dataclass(frozen=True)
class Surface:
    """A 2-D test function with its analytic gradient and the rates that suit each optimizer.

    ``value`` and ``gradient`` use only arithmetic operators, so they work
    elementwise on arrays of any library (and on a grid for contour plots).
    """

    name: str
    title: str
    value: Callable[[Any, Any], Any]
    gradient: Callable[[Any, Any], tuple[Any, Any]]
    start: tuple[float, float]
    minimum: tuple[float, float]
    window: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max of the contour plot
    steps: int
    learning_rates: dict[str, float]


# f = (x² + 50 y²) / 2: curvature 50 times larger across the valley (y) than along it (x).
_VALLEY = 50.0

# Rates: GD just below its stability limit 2/50 across the valley, where it zig-zags;
# Momentum at the same rate, to show the damping alone; RMSprop and Adam take
# steps of about their rate in every direction, so theirs are larger.
QUADRATIC = Surface(
    name="quadratic",
    title="ill-conditioned quadratic  f = (x² + 50 y²) / 2",
    value=lambda x, y: 0.5 * (x**2 + _VALLEY * y**2),
    gradient=lambda x, y: (x * 1.0, y * _VALLEY),
    start=(-4.0, 1.0),
    minimum=(0.0, 0.0),
    window=(-4.5, 1.0, -1.5, 1.5),
    steps=50,
    learning_rates={"GD": 0.036, "Momentum": 0.036, "RMSprop": 0.1, "Adam": 0.1},
)

# Rosenbrock (1960): a curved, flat-bottomed valley with its minimum at (1, 1).
ROSENBROCK = Surface(
    name="rosenbrock",
    title="Rosenbrock  f = (1 - x)² + 100 (y - x²)²",
    value=lambda x, y: (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2,
    gradient=lambda x, y: (-2.0 * (1.0 - x) - 400.0 * x * (y - x**2), 200.0 * (y - x**2)),
    start=(-1.5, 2.0),
    minimum=(1.0, 1.0),
    window=(-2.0, 2.0, -1.0, 3.0),
    steps=1000,
    learning_rates={"GD": 0.001, "Momentum": 0.005, "RMSprop": 0.01, "Adam": 0.05},
)

SURFACES: tuple[Surface, ...] = (QUADRATIC, ROSENBROCK)


@dataclass(frozen=True)
class Trajectory:
    """The path one optimizer took on one surface.

    ``points[k]`` is the position after ``k`` steps (``points[0]`` the start),
    ``values[k]`` the function there.
    """

    surface: str
    optimizer: str
    learning_rate: float
    points: list[tuple[float, float]]
    values: list[float]

    @property
    def final_distance(self) -> float:
        """Euclidean distance from the last point to the surface's minimum."""
        surface = next(s for s in SURFACES if s.name == self.surface)
        (x, y), (x_min, y_min) = self.points[-1], surface.minimum
        return math.hypot(x - x_min, y - y_min)


def reversals(points: Sequence[tuple[float, float]]) -> int:
    """How often the path turns back: consecutive steps whose dot product is negative.

    Gradient descent zig-zagging across a valley reverses at almost every
    step; momentum damps that.
    """
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(points)]
    return sum(1 for s, t in itertools.pairwise(steps) if s[0] * t[0] + s[1] * t[1] < 0)


def run_trajectories(
    xp: Any = None, *, surfaces: Sequence[Surface] = SURFACES, optimizers: Sequence[str] = tuple(LESSON_OPTIMIZERS)
) -> list[Trajectory]:
    """Follow each optimizer from each surface's start for its number of steps.

    The position is one float64 2-vector ``{"w": [x, y]}`` stepped by the
    library's optimizers, with the surface's analytic gradient.

    Parameters
    ----------
    xp : namespace, optional
        Array API namespace to compute in (NumPy by default).
    surfaces, optimizers
        Which surfaces and which of "GD", "Momentum", "RMSprop", "Adam".

    Returns
    -------
    list of Trajectory
        Surfaces in order, optimizers in order within each.
    """
    if xp is None:
        xp = load_backend("numpy")
    unknown = [name for name in optimizers if name not in LESSON_OPTIMIZERS]
    if unknown:
        raise ExperimentError(f"unknown optimizer {unknown[0]!r}; choose from {', '.join(LESSON_OPTIMIZERS)}")
    paths = []
    for surface in surfaces:
        for name in optimizers:
            rate = surface.learning_rates[name]
            paths.append(_follow(xp, surface, name, rate))
    return paths


def _follow(xp: Any, surface: Surface, name: str, rate: float) -> Trajectory:
    optimizer = LESSON_OPTIMIZERS[name](rate)
    params = {"w": xp.asarray(list(surface.start), dtype=xp.float64)}
    state = optimizer.init(params)
    points = [surface.start]
    values = [float(surface.value(*surface.start))]
    for _ in range(surface.steps):
        w = params["w"]
        grad_x, grad_y = surface.gradient(w[0], w[1])
        params, state = optimizer.step(params, {"w": xp.stack([grad_x, grad_y])}, state)
        x, y = float(params["w"][0]), float(params["w"][1])
        points.append((x, y))
        values.append(float(surface.value(x, y)))
    return Trajectory(surface=surface.name, optimizer=name, learning_rate=rate, points=points, values=values)
