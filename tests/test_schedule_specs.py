"""Schedules that describe themselves (``spec``, :func:`schedules.describe`) and are rebuilt from the description
(:func:`schedules.from_spec`): the description changes nothing a schedule computes, and the rebuilt schedule
computes the same rates, bit for bit, after a JSON round trip."""

from __future__ import annotations

import inspect
import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyoptim import schedules

RATES = st.floats(0.0, 10.0)
POSITIVE = st.floats(1e-3, 1e4)
COUNTS = st.lists(st.integers(0, 10**7), min_size=1, max_size=20)
KINDS = ["constant", "exponential_decay", "inverse_time_decay", "piecewise_constant", "cosine_decay",
         "warmup_cosine_decay", "join"]  # fmt: skip


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


@st.composite
def _calls(draw, depth: int = 0):
    """``(name, args, kwargs)`` of a random call of a schedule function, nested joins included."""
    name = draw(st.sampled_from(KINDS if depth < 2 else KINDS[:-1]))
    if name == "constant":
        return name, (draw(RATES),), {}
    if name in ("exponential_decay", "inverse_time_decay"):
        rate = draw(st.floats(0.01, 2.0))
        return name, (draw(RATES), draw(POSITIVE), rate), {"staircase": draw(st.booleans())}
    if name == "piecewise_constant":
        boundaries = sorted(draw(st.sets(st.integers(0, 10**6), min_size=0, max_size=4)))
        return name, (boundaries, draw(st.lists(RATES, min_size=len(boundaries) + 1, max_size=len(boundaries) + 1))), {}
    if name == "cosine_decay":
        return name, (draw(RATES), draw(st.integers(1, 10**5))), {"alpha": draw(st.floats(0.0, 1.0))}
    if name == "warmup_cosine_decay":
        warmup = draw(st.integers(0, 1000))
        return name, (draw(RATES), warmup, warmup + draw(st.integers(1, 10**5))), {
            "initial_learning_rate": draw(RATES), "end_learning_rate": draw(RATES)}  # fmt: skip
    boundaries = sorted(draw(st.sets(st.integers(0, 10**6), min_size=1, max_size=3)))
    parts = [draw(_calls(depth + 1)) for _ in range(len(boundaries) + 1)]
    return name, ([_built(part) for part in parts], boundaries), {}


def _built(call):
    name, args, kwargs = call
    return getattr(schedules, name)(*args, **kwargs)


@given(call=_calls(), counts=COUNTS)
def test_a_described_schedule_computes_what_the_undecorated_function_computes(call, counts):
    name, args, kwargs = call
    plain = getattr(schedules, name).__wrapped__(*args, **kwargs)
    described = _built(call)
    assert [_bits(described(c)) for c in counts] == [_bits(plain(c)) for c in counts]


@given(call=_calls(), counts=COUNTS)
def test_from_spec_after_json_rebuilds_the_schedule_bit_for_bit(call, counts):
    schedule = _built(call)
    spec = schedules.describe(schedule)
    assert spec is not None and spec["name"] == call[0]
    again = schedules.from_spec(json.loads(json.dumps(spec, allow_nan=False)))
    assert schedules.describe(again) == spec
    assert [_bits(again(c)) for c in counts] == [_bits(schedule(c)) for c in counts]


def test_every_schedule_function_is_described_and_keeps_its_signature():
    for name in KINDS:
        function = getattr(schedules, name)
        assert inspect.signature(function) == inspect.signature(function.__wrapped__)
        assert function.__doc__ == function.__wrapped__.__doc__
    spec = schedules.warmup_cosine_decay(1.0, 10, 110).spec
    assert spec["name"] == "warmup_cosine_decay"
    with pytest.raises(TypeError):
        spec["name"] = "constant"  # read-only
    with pytest.raises(TypeError):
        spec["args"]["peak_learning_rate"] = 2.0


def test_nested_join_is_described_with_its_parts():
    inner = schedules.join([schedules.constant(1.0), schedules.exponential_decay(1.0, 5, 0.5)], [3])
    outer = schedules.join([inner, schedules.cosine_decay(0.5, 20)], [10])
    spec = schedules.describe(outer)
    assert spec["args"]["boundaries"] == [10]
    assert spec["args"]["schedules"][0]["name"] == "join"
    assert spec["args"]["schedules"][0]["args"]["schedules"][1]["args"]["decay_rate"] == 0.5
    again = schedules.from_spec(spec)
    assert [again(c) for c in range(40)] == [outer(c) for c in range(40)]


def test_numpy_arguments_are_described_as_python_numbers():
    schedule = schedules.piecewise_constant(np.array([5, 10]), np.array([0.3, 0.2, 0.1], dtype=np.float32))
    spec = schedules.describe(schedule)
    assert spec["args"] == {"boundaries": [5, 10], "values": [float(np.float32(0.3)), float(np.float32(0.2)),
                                                              float(np.float32(0.1))]}  # fmt: skip
    assert type(spec["args"]["boundaries"][0]) is int
    again = schedules.from_spec(spec)
    assert [again(c) for c in range(15)] == [schedule(c) for c in range(15)]
    assert schedules.describe(schedules.cosine_decay(np.float64(0.1), np.int64(100))) == {
        "name": "cosine_decay", "args": {"initial_learning_rate": 0.1, "decay_steps": 100, "alpha": 0.0}}  # fmt: skip


def test_hand_written_schedules_are_not_described():
    assert schedules.describe(lambda count: 0.1) is None
    assert schedules.describe(0.1) is None
    assert schedules.join([lambda count: 0.1, schedules.constant(0.2)], [3]).spec is None
    assert schedules.describe(schedules.join([lambda count: 0.1, schedules.constant(0.2)], [3])) is None

    def impostor(count):
        return 0.1

    impostor.spec = {"name": "constant", "args": {"value": 0.1}}  # not made by anyoptim.schedules
    assert schedules.describe(impostor) is None


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"name": "os.system", "args": {}}, "not one of anyoptim.schedules"),
        ({"name": "described", "args": {}}, "not one of anyoptim.schedules"),
        ({"name": "constant"}, "mapping"),
        ("constant", "mapping"),
        ({"name": "constant", "args": {"value": 0.1}, "extra": 1}, "mapping"),
        ({"name": "constant", "args": {"rate": 0.1}}, "do not fit"),
        ({"name": "constant", "args": {"value": -1.0}}, "value must be >= 0"),
        ({"name": "constant", "args": {"value": "0.1"}}, "not a number, a list or a nested spec"),
        ({"name": "join", "args": {"schedules": [{"name": "nope", "args": {}}], "boundaries": []}}, "nope"),
    ],
)
def test_bad_specs_raise_a_value_error_naming_the_problem(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        schedules.from_spec(spec)


def test_deeply_nested_specs_are_refused():
    spec = {"name": "constant", "args": {"value": 0.1}}
    for _ in range(100):
        spec = {"name": "join", "args": {"schedules": [spec], "boundaries": []}}
    with pytest.raises(ValueError, match="nested more than"):
        schedules.from_spec(spec)


def test_only_functions_of_anyoptim_schedules_may_be_described():
    from anyoptim.schedule_specs import described

    with pytest.raises(ValueError, match=r"only functions of anyoptim\.schedules"):
        described(lambda value: lambda count: value)
    assert math.isclose(schedules.from_spec({"name": "constant", "args": {"value": 0.25}})(7), 0.25)
