"""Parameter trees: leaf names, sorted dict keys, round trips, and structure errors at the first difference."""

from __future__ import annotations

import string
from collections import namedtuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyoptim.tree import TreeDef, check_same_structure, leaf_names, map_leaves, tree_flatten, tree_unflatten

Layer = namedtuple("Layer", ["W", "b"])


class Leaf:
    """An opaque leaf: the tree functions must never look inside one."""

    def __init__(self, label: int):
        self.label = label

    def __repr__(self) -> str:
        return f"Leaf({self.label})"


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("tree", "names"),
    [
        ({"W1": 1, "b1": 2, "W2": 3, "b2": 4}, ["W1", "W2", "b1", "b2"]),
        ({"encoder": [{"W": 1}]}, ["encoder.0.W"]),
        (
            {"encoder": [{"W": 1, "b": 2}, {"W": 3}], "head": (4, 5)},
            ["encoder.0.W", "encoder.0.b", "encoder.1.W", "head.0", "head.1"],
        ),
        ([1, [2, 3]], ["0", "1.0", "1.1"]),
        ({"layer": Layer(W=1, b=2)}, ["layer.0", "layer.1"]),
        (Leaf(0), ["param"]),
        ({"a": {}, "b": [], "c": 1}, ["c"]),
    ],
)
def test_leaf_names(tree, names):
    assert leaf_names(tree) == names
    assert tree_flatten(tree)[0] == names


def test_dict_keys_are_visited_in_sorted_order():
    forward = {"b": 1, "a": 2, "c": {"z": 3, "y": 4}}
    backward = {"c": {"y": 4, "z": 3}, "a": 2, "b": 1}
    names, leaves, treedef = tree_flatten(forward)
    assert names == ["a", "b", "c.y", "c.z"]
    assert leaves == [2, 1, 4, 3]
    assert tree_flatten(backward)[2] == treedef
    assert tree_flatten(backward)[1] == leaves


def test_non_string_keys_are_refused_naming_the_place():
    with pytest.raises(TypeError, match=r"tree keys must be strings; the root has key 1"):
        tree_flatten({1: "x"})
    with pytest.raises(TypeError, match=r"tree keys must be strings; encoder\.0 has key \('W', 1\)"):
        tree_flatten({"encoder": [{("W", 1): "x"}]})


# --------------------------------------------------------------------------- round trips

KEYS = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=4)


@st.composite
def trees(draw):
    """Nested dicts, lists, tuples and named tuples with opaque, numbered leaves."""
    counter = iter(range(10**6))
    shape = draw(
        st.recursive(
            st.just("leaf"),
            lambda children: st.one_of(
                st.dictionaries(KEYS, children, max_size=3),
                st.lists(children, max_size=3),
                st.lists(children, max_size=3).map(tuple),
                st.tuples(children, children).map(lambda pair: Layer(*pair)),
            ),
            max_leaves=12,
        )
    )

    def build(node):
        if node == "leaf":
            return Leaf(next(counter))
        if isinstance(node, dict):
            return {key: build(value) for key, value in node.items()}
        if isinstance(node, Layer):
            return Layer(*(build(value) for value in node))
        if isinstance(node, tuple):
            return tuple(build(value) for value in node)
        return [build(value) for value in node]

    return build(shape)


def _same(a, b) -> bool:
    """Equal structure, container types (named tuples included) and the very same leaf objects."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a is b


@given(tree=trees())
def test_flatten_then_unflatten_is_the_identity(tree):
    names, leaves, treedef = tree_flatten(tree)
    assert len(names) == len(leaves) == treedef.num_leaves
    assert _same(tree_unflatten(treedef, leaves), tree)


@given(tree=trees())
def test_unflatten_then_flatten_gives_back_the_leaves(tree):
    _, leaves, treedef = tree_flatten(tree)
    fresh = [Leaf(-i) for i in range(len(leaves))]
    names2, leaves2, treedef2 = tree_flatten(tree_unflatten(treedef, fresh))
    assert leaves2 == fresh
    assert treedef2 == treedef
    assert names2 == leaf_names(tree)


@given(tree=trees())
def test_leaf_names_are_unique_and_follow_the_path(tree):
    names, leaves, _ = tree_flatten(tree)
    assert len(set(names)) == len(names)
    for name, leaf in zip(names, leaves, strict=True):
        node = tree
        if name != "param" or node is not leaf:
            for part in name.split("."):
                node = node[part] if isinstance(node, dict) else node[int(part)]
        assert node is leaf, name


@given(tree=trees())
def test_map_leaves_keeps_the_structure(tree):
    mapped = map_leaves(lambda leaf: Leaf(leaf.label + 1000), tree)
    _, leaves, treedef = tree_flatten(tree)
    _, new_leaves, new_def = tree_flatten(mapped)
    assert new_def == treedef
    assert [leaf.label for leaf in new_leaves] == [leaf.label + 1000 for leaf in leaves]


@given(tree=trees())
def test_a_tree_has_the_structure_of_itself(tree):
    treedef = tree_flatten(tree)[2]
    assert check_same_structure(treedef, treedef, what="grads", like="params") is None


def test_named_tuples_are_rebuilt_with_their_type():
    rebuilt = map_leaves(lambda x: x * 2, {"layer": Layer(W=1, b=2), "pair": (3, 4)})
    assert rebuilt == {"layer": Layer(W=2, b=4), "pair": (6, 8)}
    assert type(rebuilt["layer"]) is Layer
    assert type(rebuilt["pair"]) is tuple


def test_unflatten_with_the_wrong_number_of_leaves():
    treedef = tree_flatten({"a": 1, "b": [2, 3]})[2]
    assert treedef.num_leaves == 3
    with pytest.raises(ValueError, match=r"the tree has 3 leaves but 2 were given"):
        tree_unflatten(treedef, [1, 2])
    with pytest.raises(ValueError, match=r"the tree has 3 leaves but 4 were given"):
        tree_unflatten(treedef, [1, 2, 3, 4])


def test_treedef_is_hashable_and_compares_by_structure():
    a = tree_flatten({"x": [1, 2]})[2]
    b = tree_flatten({"x": [5, 6]})[2]
    assert a == b and hash(a) == hash(b)
    assert a != tree_flatten({"x": (1, 2)})[2]
    assert isinstance(a, TreeDef)


# --------------------------------------------------------------------------- structure errors


def _difference(expected, actual) -> str:
    with pytest.raises(ValueError) as error:
        check_same_structure(tree_flatten(expected)[2], tree_flatten(actual)[2], what="grads", like="params")
    message = str(error.value)
    assert message.startswith("grads does not have the structure of params: ")
    return message.removeprefix("grads does not have the structure of params: ")


@pytest.mark.parametrize(
    ("expected", "actual", "difference"),
    [
        (
            {"a": [1, {"b": 2}]},
            {"a": [1, {"c": 2}]},
            "at a.1: missing keys ['b'], unexpected keys ['c']",
        ),
        ({"a": [1, {"b": 2}]}, {"a": [1, [2]]}, "at a.1 expected a dict with keys ['b'], got a list of 1"),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, "at a expected a list of 2, got a list of 3"),
        ({"a": [1, 2]}, {"a": (1, 2)}, "at a expected a list of 2, got a tuple of 2"),
        ({"a": [1, 2]}, {"a": [[1], 2]}, "at a.0 expected an array, got a list of 1"),
        ({"a": 1}, 1, "at the root expected a dict with keys ['a'], got an array"),
        ({"a": 1, "b": 2}, {"a": 1}, "at the root expected a dict with keys ['a', 'b'], got a dict with keys ['a']"),
    ],
)
def test_structure_errors_name_the_first_difference(expected, actual, difference):
    assert _difference(expected, actual) == difference


def test_the_first_of_several_differences_is_named():
    expected = {"a": [1, 2], "b": {"x": 1}, "c": 3}
    actual = {"a": [1, 2], "b": {"y": 1}, "c": [3]}
    assert _difference(expected, actual) == "at b: missing keys ['x'], unexpected keys ['y']"


def test_keys_with_dots_cannot_make_two_leaves_share_a_name():
    try:
        names = leaf_names({"a.b": 1, "a": {"b": 2}})
    except (TypeError, ValueError):
        return  # refusing such keys is a fix too
    assert len(set(names)) == len(names), names
