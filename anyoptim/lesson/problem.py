"""The lesson's problem: its data, its network, its seed and its four optimizers.

:data:`LESSON` holds the lesson's fixed choices (moons data, 2-5-2-1 network,
mini-batches of 64, 5000 epochs, the stepped decay's interval);
:func:`lesson_problem` makes the data and the network on any backend;
:data:`LESSON_OPTIMIZERS` builds GD, Momentum, RMSprop and Adam with the
lesson's settings.  The comparison (:mod:`.compare`), the trajectories
(:mod:`.trajectories`), the batch sizes (:mod:`.batch_sizes`) and the ``train``
command (:mod:`.training`) share them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..optimizers import SGD, Adam, Momentum, Optimizer, RMSprop
from .backends import load_backend, resolve_device

__all__ = ["DEFAULT_SEED", "LESSON", "LESSON_OPTIMIZERS", "LessonSetup", "Problem", "lesson_problem"]

# The seed of the data, the initial weights and the shuffling in every
# experiment.  With seed 2 the full 5000-epoch comparison on NumPy float64 gives
# train accuracies GD 79.7 %, Momentum 79.7 %, RMSprop 95.3 %, Adam 95.7 %; with
# the decay GD 95.7 %, Momentum 95.7 %, Adam 96.0 %: the lesson's picture
# (seeds 0-11 scanned: GD without decay reaches 80-90 %, seeds 5 and 10 leave it stuck at 50 %).
DEFAULT_SEED = 2


@dataclass(frozen=True)
class LessonSetup:
    """The lesson's fixed choices: data, network, batch, schedule."""

    n_samples: int = 300
    noise: float = 0.2
    layer_dims: tuple[int, ...] = (2, 5, 2, 1)
    hidden_activation: str = "relu"
    output: str = "sigmoid"
    batch_size: int = 64
    epochs: int = 5000
    decay_interval: int = 1000  # epochs between the steps of lr0 / (1 + floor(epoch / interval))


LESSON = LessonSetup()


@dataclass(frozen=True)
class Problem:
    """The moons data on one backend, and the lesson's network for it."""

    xp: Any
    X: Any
    y: Any
    model: Any


def lesson_problem(
    backend: str = "numpy", *, device: str | None = None, dtype: str = "float64", seed: int = DEFAULT_SEED
) -> Problem:
    """The lesson's data (moons, 300 samples, noise 0.2) and network (2-5-2-1, ReLU, sigmoid).

    The data are drawn on the host from ``seed`` and moved to ``backend``'s
    ``device``, so every backend sees the same numbers.

    Parameters
    ----------
    backend : str, default "numpy"
        One of :data:`~anyoptim.lesson.backends.BACKENDS`.
    device : str, optional
        A device of that library by name (see :func:`~anyoptim.lesson.backends.resolve_device`).
    dtype : {"float64", "float32"}
    seed : int, default 2
        Seed of the data (the model's weights are drawn later, by ``model.init``).

    Returns
    -------
    Problem
        The namespace, ``X`` of shape (300, 2) in ``dtype``, ``y`` of shape (300,) (integer labels 0 and 1), the MLP.

    Raises
    ------
    ExperimentError
        If the backend, dtype or device cannot be used here.
    """
    from ..nn import datasets
    from ..nn.mlp import MLP

    xp = load_backend(backend, dtype)
    where = resolve_device(xp, device)
    X, y = datasets.make_moons(
        n_samples=LESSON.n_samples, noise=LESSON.noise, seed=seed, xp=xp, dtype=getattr(xp, dtype), device=where
    )
    model = MLP(list(LESSON.layer_dims), hidden_activation=LESSON.hidden_activation, output=LESSON.output, init="he")
    return Problem(xp=xp, X=X, y=y, model=model)


#: The lesson's four optimizers by their names in its tables, each built from a
#: learning rate (a number or a schedule) with the lesson's β 0.9, β1 0.9, β2 0.999, ε 1e-8.
LESSON_OPTIMIZERS: dict[str, Callable[[Any], Optimizer]] = {
    "GD": lambda rate: SGD(rate),
    "Momentum": lambda rate: Momentum(rate, beta=0.9, form="ema"),
    "RMSprop": lambda rate: RMSprop(rate, beta=0.9, epsilon=1e-8),
    "Adam": lambda rate: Adam(rate, beta1=0.9, beta2=0.999, epsilon=1e-8),
}
