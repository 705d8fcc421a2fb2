"""Learning-rate schedules: each formula, its edges, its validation, and the course's per-epoch decays.

A schedule is a function of ``count``, the number of optimizer steps taken before the
step that uses the rate.  The course decays per epoch; with ``steps_per_epoch`` mini-batches
an epoch is ``count // steps_per_epoch`` (the mapping in :mod:`anyoptim.schedules`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyoptim
from anyoptim import schedules

RATES = st.floats(1e-6, 10.0)
COUNTS = st.integers(0, 100_000)
STEPS = st.integers(1, 5_000)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-13, abs_tol=1e-300)


# --------------------------------------------------------------------------- the course's decays


def update_lr(learning_rate0, epoch_num, decay_rate):
    """The course's per-epoch inverse-time decay."""
    return learning_rate0 / (1 + decay_rate * epoch_num)


def schedule_lr_decay(learning_rate0, epoch_num, decay_rate, time_interval=1000):
    """The course's stepped decay: the rate drops every ``time_interval`` epochs."""
    return learning_rate0 / (1 + decay_rate * np.floor(epoch_num / time_interval))


@st.composite
def course_setups(draw):
    n_samples = draw(st.integers(1, 1000))
    batch_size = draw(st.integers(1, n_samples))
    steps_per_epoch = math.ceil(n_samples / batch_size)
    return {
        "lr0": draw(RATES),
        "decay_rate": draw(st.floats(0.0, 5.0)),
        "steps_per_epoch": steps_per_epoch,
        "time_interval": draw(st.integers(1, 1000)),
    }


def _counts_around_epoch_boundaries(steps_per_epoch: int, interval: int) -> list[int]:
    counts = set(range(0, 3 * steps_per_epoch + 2))
    for k in (1, 2, 3, 7):
        for centre in (k * steps_per_epoch, k * interval * steps_per_epoch):
            counts.update(c for c in (centre - 1, centre, centre + 1) if c >= 0)
    return sorted(counts)


@given(setup=course_setups())
def test_inverse_time_decay_staircase_is_the_courses_update_lr(setup):
    spe = setup["steps_per_epoch"]
    schedule = schedules.inverse_time_decay(
        setup["lr0"], decay_steps=spe, decay_rate=setup["decay_rate"], staircase=True
    )
    for count in _counts_around_epoch_boundaries(spe, 1):
        assert _close(schedule(count), update_lr(setup["lr0"], count // spe, setup["decay_rate"])), count


@given(setup=course_setups())
def test_inverse_time_decay_staircase_is_the_courses_schedule_lr_decay(setup):
    spe, interval = setup["steps_per_epoch"], setup["time_interval"]
    schedule = schedules.inverse_time_decay(
        setup["lr0"], decay_steps=interval * spe, decay_rate=setup["decay_rate"], staircase=True
    )
    for count in _counts_around_epoch_boundaries(spe, interval):
        expected = float(schedule_lr_decay(setup["lr0"], count // spe, setup["decay_rate"], interval))
        assert _close(schedule(count), expected), count


@given(
    lr0=RATES,
    decay_rate=st.floats(0.0, 5.0),
    steps_per_epoch=st.integers(1, 6),
    time_interval=st.integers(1, 4),
    stepped=st.booleans(),
)
def test_the_courses_training_loop_is_one_epoch_behind(lr0, decay_rate, steps_per_epoch, time_interval, stepped):
    """The course's model() sets ``learning_rate = decay(learning_rate0, i, decay_rate)`` at the END of
    epoch i, so epoch i trains with decay(lr0, i - 1) (epoch 0 with lr0).  Its exact rates are the
    staircase schedule started one epoch late: join([constant(lr0), inverse_time_decay(...)], [spe])."""
    decay = (lambda l0, e, r: schedule_lr_decay(l0, e, r, time_interval)) if stepped else update_lr
    course_rates, learning_rate = [], lr0
    for epoch in range(4 * time_interval + 3):
        course_rates += [float(learning_rate)] * steps_per_epoch
        learning_rate = decay(lr0, epoch, decay_rate)
    decay_steps = steps_per_epoch * (time_interval if stepped else 1)
    schedule = schedules.join(
        [
            schedules.constant(lr0),
            schedules.inverse_time_decay(lr0, decay_steps=decay_steps, decay_rate=decay_rate, staircase=True),
        ],
        [steps_per_epoch],
    )
    for count, rate in enumerate(course_rates):
        assert _close(schedule(count), rate), count


def test_the_lessons_stepped_decay_in_a_training_loop():
    """300 samples in batches of 64 (5 steps an epoch), lr0 / (1 + floor(epoch / 1000)) from 0.1."""
    spe = math.ceil(300 / 64)
    schedule = schedules.inverse_time_decay(0.1, decay_steps=1000 * spe, decay_rate=1.0, staircase=True)
    optimizer = anyoptim.SGD(schedule)
    params = {"w": np.zeros(1)}
    state = optimizer.init(params)
    rates = {}
    for epoch in range(2001):
        for _ in range(spe):
            params, state = optimizer.step(params, {"w": np.ones(1)}, state)
            rates.setdefault(epoch, set()).add(state.learning_rate)
    for epoch in (0, 999, 1000, 1999, 2000):
        assert rates[epoch] == {float(schedule_lr_decay(0.1, epoch, 1.0))}, epoch
    assert rates[999] == {0.1} and rates[1000] == {0.05} and rates[2000] == {0.1 / 3}
    assert state.count == 2001 * spe


# --------------------------------------------------------------------------- each schedule


@given(value=RATES, count=COUNTS)
def test_constant(value, count):
    assert schedules.constant(value)(count) == value


@given(lr0=RATES, decay_steps=STEPS, rate=st.floats(0.01, 1.0), count=COUNTS, staircase=st.booleans())
def test_exponential_decay(lr0, decay_steps, rate, count, staircase):
    exponent = count // decay_steps if staircase else count / decay_steps
    assert _close(schedules.exponential_decay(lr0, decay_steps, rate, staircase=staircase)(count), lr0 * rate**exponent)


@given(lr0=RATES, decay_steps=STEPS, rate=st.floats(0.0, 10.0), count=COUNTS, staircase=st.booleans())
def test_inverse_time_decay(lr0, decay_steps, rate, count, staircase):
    ratio = count // decay_steps if staircase else count / decay_steps
    assert _close(
        schedules.inverse_time_decay(lr0, decay_steps, rate, staircase=staircase)(count), lr0 / (1 + rate * ratio)
    )


@given(
    boundaries=st.lists(st.integers(1, 10_000), min_size=0, max_size=5, unique=True).map(sorted),
    data=st.data(),
)
def test_piecewise_constant(boundaries, data):
    values = data.draw(st.lists(RATES, min_size=len(boundaries) + 1, max_size=len(boundaries) + 1))
    schedule = schedules.piecewise_constant(boundaries, values)
    assert schedule(0) == values[0]
    for i, boundary in enumerate(boundaries):
        assert schedule(boundary - 1) == values[i]
        assert schedule(boundary) == values[i + 1]
    assert schedule(10**9) == values[-1]


@given(lr0=RATES, decay_steps=STEPS, alpha=st.floats(0.0, 1.0), count=COUNTS)
def test_cosine_decay(lr0, decay_steps, alpha, count):
    schedule = schedules.cosine_decay(lr0, decay_steps, alpha)
    progress = min(count, decay_steps) / decay_steps
    expected = lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)
    assert _close(schedule(count), expected)
    assert _close(schedule(0), lr0)
    assert _close(schedule(decay_steps), alpha * lr0) and _close(schedule(decay_steps + count), alpha * lr0)
    assert schedule(count + 1) <= schedule(count) * (1 + 1e-15)


@given(
    peak=RATES,
    warmup=st.integers(0, 1000),
    extra=st.integers(1, 5000),
    start=st.floats(0.0, 1.0),
    end_fraction=st.floats(0.0, 1.0),
)
def test_warmup_cosine_decay(peak, warmup, extra, start, end_fraction):
    start, end = start * peak, end_fraction * peak
    total = warmup + extra
    schedule = schedules.warmup_cosine_decay(peak, warmup, total, initial_learning_rate=start, end_learning_rate=end)
    assert _close(schedule(0), start if warmup else peak)
    assert _close(schedule(warmup), peak)
    assert _close(schedule(total), end) and _close(schedule(total + 10), end)
    if warmup:
        middle = warmup // 2
        assert _close(schedule(middle), start + (peak - start) * middle / warmup)
    rates = [schedule(c) for c in range(warmup, total + 1, max(1, extra // 50))]
    assert all(b <= a * (1 + 1e-13) for a, b in itertools.pairwise(rates))


def test_warmup_cosine_decay_matches_optax():
    optax = pytest.importorskip("optax")
    ours = schedules.warmup_cosine_decay(0.1, 10, 100, initial_learning_rate=0.01, end_learning_rate=0.001)
    theirs = optax.warmup_cosine_decay_schedule(0.01, 0.1, 10, 100, end_value=0.001)
    for count in range(0, 120, 3):
        assert math.isclose(ours(count), float(theirs(count)), rel_tol=1e-6), count


@given(data=st.data(), boundaries=st.lists(st.integers(0, 1000), min_size=1, max_size=4, unique=True).map(sorted))
def test_join_restarts_the_count_of_each_part(data, boundaries):
    parts = [schedules.exponential_decay(1.0 + i, decay_steps=7, decay_rate=0.5) for i in range(len(boundaries) + 1)]
    schedule = schedules.join(parts, boundaries)
    count = data.draw(st.integers(0, 2000))
    starts = [0, *boundaries]
    index = sum(count >= b for b in boundaries)
    assert schedule(count) == parts[index](count - starts[index])


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.constant(0.1),
        schedules.exponential_decay(0.1, 10, 0.5),
        schedules.inverse_time_decay(0.1, 10, 0.5, staircase=True),
        schedules.piecewise_constant([5], [0.1, 0.01]),
        schedules.cosine_decay(0.1, 10),
        schedules.warmup_cosine_decay(0.1, 3, 10),
        schedules.join([schedules.constant(0.1), schedules.cosine_decay(0.1, 5)], [4]),
    ],
    ids=["constant", "exponential", "inverse_time", "piecewise", "cosine", "warmup_cosine", "join"],
)
def test_every_schedule_gives_finite_non_negative_floats_and_drives_an_optimizer(schedule):
    rates = [schedule(count) for count in range(40)]
    assert all(isinstance(rate, float) and math.isfinite(rate) and rate >= 0 for rate in rates)
    optimizer = anyoptim.Momentum(schedule)
    params = {"w": np.ones(2)}
    state = optimizer.init(params)
    assert state.learning_rate == rates[0]
    for count in range(40):
        params, state = optimizer.step(params, {"w": np.ones(2)}, state)
        assert state.learning_rate == rates[count]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: schedules.constant(-0.1), r"value .*-0\.1"),
        (lambda: schedules.constant(math.nan), r"value .*nan"),
        (lambda: schedules.exponential_decay(-1.0, 10, 0.5), r"initial_learning_rate .*-1\.0"),
        (lambda: schedules.exponential_decay(0.1, 0, 0.5), r"decay_steps .*0"),
        (lambda: schedules.exponential_decay(0.1, 10, 0.0), r"decay_rate .*0\.0"),
        (lambda: schedules.exponential_decay(0.1, 10, math.inf), r"decay_rate .*inf"),
        (lambda: schedules.inverse_time_decay(0.1, -5, 0.5), r"decay_steps .*-5"),
        (lambda: schedules.inverse_time_decay(0.1, 10, -0.5), r"decay_rate .*-0\.5"),
        (lambda: schedules.inverse_time_decay(math.inf, 10, 0.5), r"initial_learning_rate .*inf"),
        (lambda: schedules.piecewise_constant([10], [0.1]), r"len\(values\) == len\(boundaries\) \+ 1"),
        (lambda: schedules.piecewise_constant([10, 10], [0.1, 0.2, 0.3]), r"boundaries must increase strictly"),
        (lambda: schedules.piecewise_constant([10], [0.1, -0.2]), r"values .*-0\.2"),
        (lambda: schedules.cosine_decay(0.1, 0), r"decay_steps .*0"),
        (lambda: schedules.cosine_decay(0.1, 10, alpha=-0.5), r"alpha .*-0\.5"),
        (lambda: schedules.warmup_cosine_decay(0.1, 10, 10), r"warmup_steps < decay_steps"),
        (lambda: schedules.warmup_cosine_decay(0.1, -1, 10), r"warmup_steps < decay_steps"),
        (lambda: schedules.warmup_cosine_decay(math.nan, 1, 10), r"peak_learning_rate .*nan"),
        (lambda: schedules.join([schedules.constant(0.1)], [5]), r"len\(schedules\) == len\(boundaries\) \+ 1"),
        (
            lambda: schedules.join([schedules.constant(0.1)] * 3, [5, 3]),
            r"boundaries must be >= 0 and increase strictly",
        ),
        (lambda: schedules.join([schedules.constant(0.1)] * 2, [-1]), r"boundaries must be >= 0"),
    ],
)
def test_bad_schedule_arguments_raise_naming_them(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
