"""anyoptim.tree.nest (torch's dotted names as nested dicts) and the prepared step on dicts of dicts."""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim
from anyoptim.tree import leaf_names, nest


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([("a", 1), ("a.b", 2)], "'a' is a leaf and a prefix of 'a.b'"),
        ([("a.b", 2), ("a", 1)], "'a' is a prefix of another name"),
        ([("a", 1), ("a", 2)], "'a' is given twice"),
        ([("a..b", 1)], "empty part"),
        ([("a", {"x": 1}), ("a.b", 2)], "'a' is a leaf and a prefix of 'a.b'"),  # a dict value is a leaf
        ([("a", {"x": 1}), ("a", {"y": 2})], "'a' is given twice"),
    ],
)
def test_nest_refuses_names_that_do_not_make_a_tree(items, message):
    with pytest.raises(ValueError, match=message):
        nest(items)


def test_nest_leaves_dict_values_alone_and_refuses_names_that_are_not_strings():
    value = {"x": 1}
    with pytest.raises(ValueError, match="prefix"):
        nest([("a", value), ("a.b", 2)])
    assert value == {"x": 1}
    with pytest.raises(TypeError, match="names must be strings"):
        nest([(0, 1)])


def test_nest_takes_a_mapping_and_gives_the_names_back():
    tree = nest({"fc.weight": 1, "fc.bias": 2, "scale": 3})
    assert tree == {"fc": {"weight": 1, "bias": 2}, "scale": 3}
    assert leaf_names(tree) == ["fc.bias", "fc.weight", "scale"]


def _nested(value):
    return nest([("0.weight", np.full((2, 2), value)), ("0.bias", np.full(2, value)), ("scale", np.full(1, value))])


def test_the_prepared_step_serves_nested_dicts_and_refuses_other_structures():
    optimizer = anyoptim.SGD(0.5)
    params, grads = _nested(1.0), _nested(1.0)
    state = optimizer.init(params)
    params, state = optimizer.step(params, grads, state)
    prepared = optimizer._prepared
    assert prepared is not None and prepared.matches(params, grads, state)
    assert prepared.matches(dict(params), {**grads, "0": dict(grads["0"])}, state)  # new dicts, same arrays
    assert not prepared.matches(params, _nested(1.0), state)  # other arrays
    assert not prepared.matches(params, {**grads, "0": grads["0"]["weight"]}, state)  # a leaf where a dict was
    assert not prepared.matches(params, {**grads, "0": {"weight": grads["0"]["weight"]}}, state)  # a key missing
    assert not prepared.matches(params, {**grads, "0": {**grads["0"], "x": grads["0"]["bias"]}}, state)
    assert not prepared.matches(params, {"0": grads["0"], "other": grads["scale"]}, state)
    params, state = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(params["0"]["weight"], 0.0)
    with pytest.raises(ValueError, match="grads"):
        optimizer.step(params, {**grads, "0": {"weight": grads["0"]["weight"]}}, state)
