"""Learning-rate schedules: pure functions of the step count.

A schedule is any callable ``schedule(count) -> float`` where ``count`` is the
number of optimizer steps taken *before* the step that uses the rate (0 for the
first step), as in optax.  Every optimizer's ``learning_rate`` takes a float or a
schedule.

From the course's per-epoch functions to step counts
----------------------------------------------------
The course decays the rate once per *epoch*; optimizers count *steps*.  With
``steps_per_epoch = ceil(n_samples / batch_size)`` mini-batches per epoch, the
epoch of a step is ``count // steps_per_epoch``, so:

* ``update_lr(lr0, epoch, decay_rate) = lr0 / (1 + decay_rate * epoch)`` is
  ``inverse_time_decay(lr0, decay_steps=steps_per_epoch, decay_rate=decay_rate, staircase=True)``;
* ``schedule_lr_decay(lr0, epoch, decay_rate, time_interval=1000)
  = lr0 / (1 + decay_rate * floor(epoch / time_interval))`` is
  ``inverse_time_decay(lr0, decay_steps=time_interval * steps_per_epoch, decay_rate=decay_rate, staircase=True)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from ._checks import check_non_negative, check_positive
from .count_math import cos, floor, is_traced, minimum, select
from .schedule_specs import describe, described, from_spec

__all__ = [
    "Schedule",
    "constant",
    "cosine_decay",
    "describe",
    "exponential_decay",
    "from_spec",
    "inverse_time_decay",
    "join",
    "learning_rate_at",
    "piecewise_constant",
    "warmup_cosine_decay",
]

Schedule = Callable[[int], float]


@described
def constant(value: float) -> Schedule:
    """The same rate at every step.

    Parameters
    ----------
    value : float
        The rate, a finite number >= 0.

    Returns
    -------
    callable
        ``schedule(count) -> float``, which returns ``value`` for every ``count``.

    Raises
    ------
    ValueError
        If ``value`` is negative or not a finite number.

    See Also
    --------
    join : Constant pieces one after another.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> lr = schedules.constant(0.01)
    >>> lr(0), lr(10_000)
    (0.01, 0.01)
    """
    value = check_non_negative("value", value)
    return lambda count: value


@described
def exponential_decay(
    initial_learning_rate: float, decay_steps: float, decay_rate: float, *, staircase: bool = False
) -> Schedule:
    r"""Exponential decay: :math:`\alpha_0 \cdot r^{t / T}` (:math:`\lfloor t/T \rfloor` with ``staircase``).

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\alpha_0` >= 0, the rate at step count 0.
    decay_steps : float
        :math:`T` > 0: the rate is multiplied by :math:`r` every :math:`T` steps.
    decay_rate : float
        :math:`r` > 0 (< 1 to decay).
    staircase : bool, default False
        Decay in steps, once every :math:`T` steps, instead of continuously.

    Returns
    -------
    callable
        ``schedule(count) -> float``, the rate :math:`\alpha_0 r^{t/T}` at step count :math:`t`.

    Raises
    ------
    ValueError
        If ``initial_learning_rate`` is negative, or ``decay_steps`` or ``decay_rate``
        is not positive (or any of them is not a finite number).

    Notes
    -----
    optax.exponential_decay(init_value, transition_steps, decay_rate, staircase=...)
    and Keras ExponentialDecay(initial_learning_rate, decay_steps, decay_rate, staircase=...)
    with the same arguments.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> schedules.exponential_decay(0.1, decay_steps=10, decay_rate=0.5)(20)
    0.025
    >>> lr = schedules.exponential_decay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    >>> lr(9), lr(10), lr(15)
    (0.1, 0.05, 0.05)
    """
    lr0 = check_non_negative("initial_learning_rate", initial_learning_rate)
    decay_steps = check_positive("decay_steps", decay_steps)
    rate = check_positive("decay_rate", decay_rate)

    def schedule(count: int) -> float:
        exponent = count / decay_steps
        return lr0 * rate ** (floor(exponent) if staircase else exponent)

    return schedule


@described
def inverse_time_decay(
    initial_learning_rate: float, decay_steps: float, decay_rate: float, staircase: bool = False
) -> Schedule:
    r"""Inverse-time decay: :math:`\alpha_0 / (1 + r \cdot t / T)`, with :math:`\lfloor t/T \rfloor` if ``staircase``.

    This is the course's ``update_lr`` and ``schedule_lr_decay``; see the module
    docstring for the epoch-to-step conversion.

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\alpha_0` >= 0, the rate at step count 0.
    decay_steps : float
        :math:`T` > 0, the steps per unit of time (per epoch, for the course's functions).
    decay_rate : float
        :math:`r` >= 0: after :math:`T` steps the rate is :math:`\alpha_0 / (1 + r)`.
    staircase : bool, default False
        Use :math:`\lfloor t/T \rfloor`: the rate changes once every :math:`T` steps.

    Returns
    -------
    callable
        ``schedule(count) -> float``, the rate at step count :math:`t`.

    Raises
    ------
    ValueError
        If ``initial_learning_rate`` or ``decay_rate`` is negative, or ``decay_steps``
        is not positive (or any of them is not a finite number).

    Notes
    -----
    Keras InverseTimeDecay(initial_learning_rate, decay_steps, decay_rate, staircase=...)
    with the same arguments.

    Examples
    --------
    The lesson's stepped decay, 5 mini-batches per epoch, halving after 1000 epochs:

    >>> from anyoptim import schedules
    >>> lr = schedules.inverse_time_decay(0.1, decay_steps=1000 * 5, decay_rate=1.0, staircase=True)
    >>> lr(0), lr(4999), lr(5000)
    (0.1, 0.1, 0.05)
    """
    lr0 = check_non_negative("initial_learning_rate", initial_learning_rate)
    decay_steps = check_positive("decay_steps", decay_steps)
    rate = check_non_negative("decay_rate", decay_rate)

    def schedule(count: int) -> float:
        ratio = count / decay_steps
        return lr0 / (1.0 + rate * (floor(ratio) if staircase else ratio))

    return schedule


@described
def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``values[i]`` for ``boundaries[i-1] <= count < boundaries[i]`` (one more value than boundaries).

    Parameters
    ----------
    boundaries : sequence of int
        The step counts at which the rate changes, strictly increasing.
    values : sequence of float
        The rates, each >= 0: ``values[0]`` before ``boundaries[0]``, ``values[-1]``
        from ``boundaries[-1]`` on.

    Returns
    -------
    callable
        ``schedule(count) -> float``, the rate of the piece ``count`` falls in.

    Raises
    ------
    ValueError
        If ``len(values) != len(boundaries) + 1``, the boundaries do not increase
        strictly, or a value is negative or not a finite number.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> lr = schedules.piecewise_constant([100, 200], [1.0, 0.5, 0.1])
    >>> lr(99), lr(100), lr(250)
    (1.0, 0.5, 0.1)
    """
    boundaries = [int(b) for b in boundaries]
    values = [check_non_negative("values", v) for v in values]
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"piecewise_constant needs len(values) == len(boundaries) + 1, got {len(values)} and {len(boundaries)}"
        )
    if any(b2 <= b1 for b1, b2 in itertools.pairwise(boundaries)):
        raise ValueError(f"boundaries must increase strictly, got {boundaries}")

    def value_from(piece: int, count: int) -> float:  # the rate, knowing that count >= boundaries[piece - 1]
        if piece == len(boundaries):
            return values[piece]
        return select(count < boundaries[piece], lambda: values[piece], lambda: value_from(piece + 1, count))

    def schedule(count: int) -> float:
        return value_from(0, count)

    return schedule


@described
def cosine_decay(initial_learning_rate: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    r"""Cosine decay (Loshchilov & Hutter, 2017) [1]_ to :math:`\alpha \cdot \alpha_0` over ``decay_steps``.

    .. math::

        \alpha_t = \alpha_0 \left((1-\alpha)\tfrac{1}{2}\left(1 + \cos\tfrac{\pi \min(t, T)}{T}\right) + \alpha\right)

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\alpha_0` >= 0, the rate at step count 0.
    decay_steps : int
        :math:`T` > 0, the steps over which the rate decays; it stays at
        :math:`\alpha \alpha_0` after.
    alpha : float, default 0
        :math:`\alpha` >= 0, the final rate as a fraction of :math:`\alpha_0`.

    Returns
    -------
    callable
        ``schedule(count) -> float``, the rate :math:`\alpha_t` at step count :math:`t`.

    Raises
    ------
    ValueError
        If ``initial_learning_rate`` or ``alpha`` is negative, or ``decay_steps``
        is not positive (or any of them is not a finite number).

    See Also
    --------
    warmup_cosine_decay : The same decay after a linear warm-up.

    Notes
    -----
    optax.cosine_decay_schedule(init_value, decay_steps, alpha) and Keras
    CosineDecay(initial_learning_rate, decay_steps, alpha) with the same arguments.

    References
    ----------
    .. [1] Loshchilov, I. and Hutter, F., "SGDR: Stochastic Gradient Descent with Warm Restarts",
       ICLR 2017, arXiv:1608.03983.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> lr = schedules.cosine_decay(0.1, decay_steps=100, alpha=0.1)
    >>> [round(lr(t), 6) for t in (0, 50, 100, 200)]
    [0.1, 0.055, 0.01, 0.01]
    """
    lr0 = check_non_negative("initial_learning_rate", initial_learning_rate)
    decay_steps = check_positive("decay_steps", decay_steps)
    alpha = check_non_negative("alpha", alpha)

    def schedule(count: int) -> float:
        progress = minimum(count, decay_steps) / decay_steps
        return lr0 * ((1 - alpha) * 0.5 * (1 + cos(math.pi * progress)) + alpha)

    return schedule


@described
def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[i]`` from ``boundaries[i-1]``, each seeing the count since its own start.

    Parameters
    ----------
    schedules : sequence of callable
        The schedules ``f(count) -> float``, in the order they run.
    boundaries : sequence of int
        The step counts at which the next schedule takes over, >= 0 and strictly
        increasing; one fewer than ``schedules``.

    Returns
    -------
    callable
        ``schedule(count) -> float``: ``schedules[i](count - boundaries[i-1])`` for
        ``boundaries[i-1] <= count < boundaries[i]``.

    Raises
    ------
    ValueError
        If ``len(schedules) != len(boundaries) + 1``, or the boundaries are negative
        or do not increase strictly.

    Notes
    -----
    optax.join_schedules(schedules, boundaries), with the same convention.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> lr = schedules.join([schedules.constant(1.0), schedules.constant(0.5)], [10])
    >>> lr(9), lr(10)
    (1.0, 0.5)
    """
    schedules = list(schedules)
    boundaries = [int(b) for b in boundaries]
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(
            f"join needs len(schedules) == len(boundaries) + 1, got {len(schedules)} and {len(boundaries)}"
        )
    if any(b2 <= b1 for b1, b2 in itertools.pairwise(boundaries)) or any(b < 0 for b in boundaries):
        raise ValueError(f"boundaries must be >= 0 and increase strictly, got {boundaries}")

    def value_from(piece: int, count: int) -> float:  # the rate, knowing that count >= boundaries[piece - 1]
        start = boundaries[piece - 1] if piece else 0
        if piece == len(boundaries):
            return schedules[piece](count - start)
        return select(
            count < boundaries[piece], lambda: schedules[piece](count - start), lambda: value_from(piece + 1, count)
        )

    def schedule(count: int) -> float:
        return value_from(0, count)

    return schedule


@described
def warmup_cosine_decay(
    peak_learning_rate: float,
    warmup_steps: int,
    decay_steps: int,
    *,
    initial_learning_rate: float = 0.0,
    end_learning_rate: float = 0.0,
) -> Schedule:
    r"""Linear warm-up from ``initial_learning_rate`` to the peak, then cosine decay to ``end_learning_rate``.

    ``decay_steps`` counts the whole schedule, warm-up included, as in optax:

    .. math::

        \alpha_t = \begin{cases}
            \alpha_{init} + (\alpha_{peak} - \alpha_{init})\, t / W & t < W \\
            \alpha_{end} + (\alpha_{peak} - \alpha_{end})\tfrac{1}{2}
                \left(1 + \cos\tfrac{\pi \min(t - W,\, T - W)}{T - W}\right) & t \ge W
        \end{cases}

    Parameters
    ----------
    peak_learning_rate : float
        :math:`\alpha_{peak}` >= 0, the rate at the end of the warm-up.
    warmup_steps : int
        :math:`W` >= 0, the steps of the linear warm-up (0: start at the peak).
    decay_steps : int
        :math:`T` > :math:`W`, the steps of the whole schedule; the rate stays at
        ``end_learning_rate`` after.
    initial_learning_rate : float, default 0
        :math:`\alpha_{init}` >= 0, the rate at step count 0.
    end_learning_rate : float, default 0
        :math:`\alpha_{end}` >= 0, the final rate.

    Returns
    -------
    callable
        ``schedule(count) -> float``, the rate :math:`\alpha_t` at step count :math:`t`.

    Raises
    ------
    ValueError
        If a rate is negative or not a finite number, or not
        ``0 <= warmup_steps < decay_steps``.

    See Also
    --------
    cosine_decay : The decay without the warm-up.

    Notes
    -----
    optax.warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps, end_value)
    with the same arguments.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> lr = schedules.warmup_cosine_decay(1.0, warmup_steps=10, decay_steps=110)
    >>> [round(lr(t), 6) for t in (0, 5, 10, 60, 110, 500)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    peak = check_non_negative("peak_learning_rate", peak_learning_rate)
    start = check_non_negative("initial_learning_rate", initial_learning_rate)
    end = check_non_negative("end_learning_rate", end_learning_rate)
    warmup_steps = int(warmup_steps)
    if warmup_steps < 0 or int(decay_steps) <= warmup_steps:
        raise ValueError(f"need 0 <= warmup_steps < decay_steps, got {warmup_steps} and {decay_steps}")

    def warmup(count: int) -> float:
        return start + (peak - start) * count / warmup_steps if warmup_steps else peak

    decay = cosine_decay(peak, int(decay_steps) - warmup_steps, alpha=end / peak if peak else 0.0)
    return join([warmup, decay], [warmup_steps])


def learning_rate_at(learning_rate: float | Schedule, count: int) -> float:
    """The rate of the step taken after ``count`` steps: ``learning_rate`` itself, or a schedule's value, checked.

    Parameters
    ----------
    learning_rate : float or callable
        A rate (already checked), or a schedule ``f(count) -> float``.
    count : int or array
        Steps taken before this one (a traced 0-D integer array under ``jax.jit``).

    Returns
    -------
    float or 0-D array
        The rate, a finite number >= 0; under ``jax.jit`` a schedule's value is a traced array, not checked.

    Raises
    ------
    ValueError
        If the schedule returns anything else, naming the value and the count.

    Examples
    --------
    >>> from anyoptim import schedules
    >>> schedules.learning_rate_at(0.1, 5)
    0.1
    >>> schedules.learning_rate_at(schedules.piecewise_constant([2], [1.0, 0.5]), 5)
    0.5
    >>> schedules.learning_rate_at(lambda count: 0.1 - 0.01 * count, 20)
    Traceback (most recent call last):
        ...
    ValueError: the learning-rate schedule returned -0.1 at step count 20: it must be a finite number >= 0
    """
    if not callable(learning_rate):
        return learning_rate
    try:
        value = learning_rate(count)
        if is_traced(value):  # under jax.jit: a 0-D array whose value is not known while the step is traced
            return value
    except (OverflowError, ZeroDivisionError) as error:  # exponential_decay growing past float's range, say
        raise ValueError(
            f"the learning-rate schedule failed at step count {count} ({type(error).__name__}: {error}): "
            "it must return a finite number >= 0"
        ) from None
    try:
        return check_non_negative("learning_rate", value)
    except ValueError:
        raise ValueError(
            f"the learning-rate schedule returned {value!r} at step count {count}: it must be a finite number >= 0"
        ) from None
