"""The prepared step's generated walk of a call's trees (anyoptim.optimizers.gathering), and the rules it serves.

The generated function must agree with :func:`anyoptim.tree.tree_flatten`: it gives a call's leaves exactly when
every tree has the prepared structure with the very container types, and None otherwise.  The prepared step built on
it must still tell a call with other leaves, keys or memory from the one it was made for.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
from anyoptim.optimizers.gathering import checker_source, gatherer_source, leaf_checker, leaf_gatherer
from anyoptim.tree import TreeDef, tree_flatten

Pair = collections.namedtuple("Pair", "first second")


class Sub(dict):
    """A dict subclass: tree_flatten flattens it as a dict, the prepared step's walk refuses it (exact types)."""


KEYS = st.sampled_from(["a", "b", "c", "W", "bias"])


def _trees():
    leaf = st.builds(object)
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.dictionaries(KEYS, children, max_size=3),
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.tuples(children, children).map(lambda pair: Pair(*pair)),
        ),
        max_leaves=8,
    )


def _fresh(tree, leaf=object):
    """The same structure, a new leaf ``leaf()`` at every leaf."""
    if isinstance(tree, dict):
        return type(tree)({key: _fresh(value, leaf) for key, value in tree.items()})
    if isinstance(tree, Pair):
        return Pair(*(_fresh(value, leaf) for value in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_fresh(value, leaf) for value in tree)
    return leaf()


def _mutations(tree):
    """Every tree one change away from ``tree`` in its containers: each of another structure or container type.

    A leaf position takes any object (the prepared step compares what it finds there with its leaves by identity),
    so leaves are not changed into containers here."""
    if isinstance(tree, dict):
        yield Sub(tree)
        yield {**tree, "extra": object()}
        for key in tree:
            yield {k: v for k, v in tree.items() if k != key}
            yield {("renamed" if k == key else k): v for k, v in tree.items()}
            for changed in _mutations(tree[key]):
                yield {**tree, key: changed}
    elif isinstance(tree, (list, tuple)):
        rebuild = (lambda values: Pair(*values)) if isinstance(tree, Pair) else type(tree)
        if not isinstance(tree, Pair):
            yield (tuple if isinstance(tree, list) else list)(tree)
            yield type(tree)([*tree, object()])
        if tree and not isinstance(tree, Pair):
            yield type(tree)(tree[1:])
        for index, value in enumerate(tree):
            for changed in _mutations(value):
                yield rebuild([*tree[:index], changed, *tree[index + 1 :]])


@settings(max_examples=150, deadline=None)
@given(_trees(), st.lists(st.sampled_from(["m", "v", "w"]), unique=True, max_size=3))
def test_the_generated_walk_gives_tree_flattens_leaves_of_every_tree(tree, slot_names):
    _, _, treedef = tree_flatten(tree)
    grads, slots = _fresh(tree), {name: _fresh(tree) for name in slot_names}
    found = leaf_gatherer(treedef, tuple(slot_names))(tree, grads, slots)
    expected = [tree_flatten(one)[1] for one in (tree, grads, *(slots[name] for name in slot_names))]
    assert found == tuple(leaf for leaves in expected for leaf in leaves)
    assert all(map(lambda a, b: a is b, found, (leaf for leaves in expected for leaf in leaves)))


@settings(max_examples=150, deadline=None)
@given(_trees())
def test_the_generated_walk_refuses_a_tree_of_another_structure_in_any_position(tree):
    gather = leaf_gatherer(tree_flatten(tree)[2], ("m",))
    for other in _mutations(tree):
        assert gather(other, tree, {"m": tree}) is None
        assert gather(tree, other, {"m": tree}) is None
        assert gather(tree, tree, {"m": other}) is None


@settings(max_examples=100, deadline=None)
@given(_trees(), _trees())
def test_the_generated_walk_agrees_with_tree_flatten_on_any_two_trees(tree, other):
    """Leaves exactly when tree_flatten gives ``other`` the same structure; else None, or containers found where
    ``tree`` has leaves (a leaf position takes any object: the prepared step then finds no leaf of its own there)."""
    gather = leaf_gatherer(tree_flatten(tree)[2], ())
    _, leaves, structure = tree_flatten(other)
    found = gather(other, other, {})
    if structure == tree_flatten(tree)[2]:
        assert found == (*leaves, *leaves)
    else:
        assert found is None or any(isinstance(leaf, (dict, list, tuple)) for leaf in found)


def test_the_slots_must_be_a_dict_of_exactly_the_names():
    tree = {"w": 1, "b": [2, 3]}
    gather = leaf_gatherer(tree_flatten(tree)[2], ("m", "v"))
    assert gather(tree, tree, {"m": tree, "v": tree}) == (2, 3, 1) * 4
    # Another order of the names is refused, as the validated path's check_state refuses it.
    others = ({"m": tree}, {"m": tree, "v": tree, "w": tree}, {"m": tree, "x": tree}, [tree, tree], Sub(m=tree))
    for slots in ({"v": tree, "m": tree}, *others):
        assert gather(tree, tree, slots) is None


def test_a_bare_leaf_and_empty_containers_are_trees_too():
    assert leaf_gatherer(TreeDef("leaf"), ("m",))(1, 2, {"m": 3}) == (1, 2, 3)
    empty = {"d": {}, "l": [], "t": ()}
    gather = leaf_gatherer(tree_flatten(empty)[2], ())
    assert gather(empty, empty, {}) == ()
    assert gather({"d": {}, "l": [], "t": (1,)}, empty, {}) is None


def test_the_walk_is_made_once_per_structure_and_runs_none_of_the_callers_code():
    treedef = tree_flatten({"a": [1, (2, 3)]})[2]
    assert leaf_gatherer(treedef, ("m",)) is leaf_gatherer(tree_flatten({"a": [4, (5, 6)]})[2], ("m",))
    source, constants = gatherer_source(treedef, ("m",))
    assert "try" in source and constants == {"C0": "m", "C1": ("m",)}  # names only; no key or value of a tree

    class Loud(dict):
        def __getitem__(self, key):
            raise AssertionError("the walk called a method of the caller's")

        def __len__(self):
            raise AssertionError("the walk called a method of the caller's")

    assert leaf_gatherer(treedef, ("m",))(Loud(a=[1, (2, 3)]), {"a": [1, (2, 3)]}, {"m": {"a": [1, (2, 3)]}}) is None


def test_keys_that_are_not_strings_are_refused_when_the_walk_is_written():
    with pytest.raises(TypeError, match="tree keys must be strings"):
        gatherer_source(TreeDef("dict", (1,), (TreeDef("leaf"),)), ())


class Leaf:
    """A leaf with a shape, a dtype and an address (read by ``_address``), each of which a test may change."""

    def __init__(self, shape=(2,), dtype="f4", address=0):
        self.shape, self.dtype, self.address = shape, dtype, address


def _address(leaf):
    return leaf.address


_ADDRESSES = itertools.count(1)


def _with_leaves(tree):
    """The same structure with a fresh Leaf, of an address of its own, at every leaf."""
    return _fresh(tree, lambda: Leaf(address=next(_ADDRESSES)))


def _facts(trees, addressed):
    """What a prepared step holds for leaf_checker: per tree its leaves, addresses, and (params, grads) layout."""
    facts = []
    for position, tree in enumerate(trees):
        leaves = tuple(tree_flatten(tree)[1])
        fact = [leaves, *([tuple(leaf.address for leaf in leaves)] if addressed else [])]
        if position < 2:
            fact += [tuple(leaf.shape for leaf in leaves), tuple(leaf.dtype for leaf in leaves)]
        facts.append(tuple(fact))
    return tuple(facts)


@settings(max_examples=150, deadline=None)
@given(_trees(), st.lists(st.sampled_from(["m", "v"]), unique=True, max_size=2), st.booleans(), st.booleans())
def test_the_generated_check_holds_exactly_for_the_very_leaves_in_the_very_structure(
    tree, slot_names, addressed, inline
):
    """True for the trees the facts were taken from; False for any tree one change away, in any position, and for
    one leaf replaced, or of another shape, dtype or address.  Both forms: written out in one function (small
    trees) and one walk per kind of tree."""
    trees = [_with_leaves(tree) for _ in range(2 + len(slot_names))]
    source, constants = checker_source(tree_flatten(tree)[2], tuple(slot_names), addressed, False, inline)
    namespace = {**constants, "address_of": _address, "contiguity_of": None}
    exec(compile(source, "<check>", "exec"), namespace)
    check = namespace["check"]
    facts = _facts(trees, addressed)
    params, grads, *slot_trees = trees
    slots = dict(zip(slot_names, slot_trees, strict=True))
    assert check(params, grads, slots, facts)
    for position in range(len(trees)):
        for other in _mutations(trees[position]):
            changed = [*trees[:position], other, *trees[position + 1 :]]
            assert not check(changed[0], changed[1], dict(zip(slot_names, changed[2:], strict=True)), facts)
        leaves = tree_flatten(trees[position])[1]
        for leaf in leaves:
            for field, value in (("shape", (3,)), ("dtype", "f8"), ("address", -1)):
                old = getattr(leaf, field)
                setattr(leaf, field, value)
                seen = field != "address" or addressed
                # Shapes and dtypes are compared for params and grads; a slot's own are not the step's to check.
                expected = not seen or (field != "address" and position >= 2)
                assert check(params, grads, slots, facts) is expected, (position, field)
                setattr(leaf, field, old)
    if tree_flatten(tree)[1]:
        replaced = _with_leaves(tree)
        assert not check(params, replaced, slots, facts)
    assert not check(params, grads, {**slots, "extra": params}, facts)


def test_the_check_compares_dtypes_by_equality_and_reads_no_attribute_of_another_leaf():
    treedef = tree_flatten({"w": 0})[2]
    check = leaf_checker(treedef, (), None)
    w, g = np.zeros(2, np.float32), np.zeros(2, np.float32)
    facts = (((w,), ((2,),), (np.dtype("float32"),)), ((g,), ((2,),), ("float32",)))  # "float32" == its dtype
    assert check({"w": w}, {"w": g}, {}, facts)

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the check read .{name} of a leaf that is not the one held")

    assert not check({"w": Untouchable()}, {"w": g}, {}, facts)
    source, _ = checker_source(treedef, ("m",), True)
    assert "address_of(x)" in source and "address_of" not in checker_source(treedef, ("m",), False)[0]


def _numpy_loop():
    optimizer = anyoptim.SGD(0.5)
    params = {"layer": {"w": np.ones(3), "b": np.ones(2)}}
    grads = {"layer": {"w": np.ones(3), "b": np.ones(2)}}
    state = optimizer.init(params)
    for _ in range(2):  # the second step runs prepared
        params, state = optimizer.step(params, grads, state)
    return optimizer, params, grads, state


def test_a_leaf_replaced_in_the_same_dict_is_not_taken_for_the_old_one():
    optimizer, params, grads, state = _numpy_loop()
    old = params["layer"]["w"]
    params["layer"]["w"] = new = np.full(3, 10.0)  # the same dict objects, one leaf another array of its shape
    params, state = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(new, np.full(3, 9.5))
    np.testing.assert_array_equal(old, np.zeros(3))  # 1 - 0.5 - 0.5, untouched by the third step
    grads["layer"]["b"] = np.full(2, 4.0)  # a new gradient array in the same grads dict
    params, state = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(params["layer"]["b"], np.full(2, -2.5))  # 1 - 3 * 0.5 - 0.5 * 4


def test_a_state_slot_replaced_in_the_same_dict_is_read_and_written():
    optimizer = anyoptim.Momentum(1.0, beta=0.5)
    params, grads = {"w": np.zeros(2)}, {"w": np.ones(2)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    slot = next(iter(state.slots))
    state.slots[slot]["w"] = replaced = np.full(2, 100.0)  # the dict the step returned, one leaf replaced
    before = params["w"].copy()
    params, state = optimizer.step(params, grads, state)
    assert state.slots[slot]["w"] is replaced and not np.array_equal(replaced, np.full(2, 100.0))
    assert np.all(before - params["w"] > 50.0)  # the step read the replaced velocity


def test_a_key_renamed_in_the_same_dict_is_an_error_and_changes_nothing():
    optimizer, params, grads, state = _numpy_loop()
    snapshot = params["layer"]["w"].copy()
    grads["layer"]["weight"] = grads["layer"].pop("w")  # same dict object, same leaves, another key
    with pytest.raises(ValueError, match="structure"):
        optimizer.step(params, grads, state)
    np.testing.assert_array_equal(params["layer"]["w"], snapshot)


def test_a_dict_subclass_in_place_of_a_dict_takes_the_validated_path():
    optimizer, params, grads, state = _numpy_loop()
    params = {"layer": Sub(params["layer"])}
    params, state = optimizer.step(params, grads, state)  # validated: the same leaves, updated in place
    np.testing.assert_array_equal(params["layer"]["w"], np.full(3, -0.5))


def test_torch_a_parameter_replaced_in_the_module_tree_is_the_one_updated():
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.SGD(0.5)
    params = {"fc": {"weight": torch.ones(2, 3), "bias": torch.ones(2)}}
    grads = {"fc": {"weight": torch.ones(2, 3), "bias": torch.ones(2)}}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    old, params["fc"]["bias"] = params["fc"]["bias"], torch.full((2,), 10.0)
    params, state = optimizer.step(params, grads, state)
    assert torch.equal(params["fc"]["bias"], torch.full((2,), 9.5)) and torch.equal(old, torch.zeros(2))


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_torch_a_parameter_given_a_view_of_its_own_memory_is_still_checked(change):
    """``p.data = p.data.view(...)`` keeps the address (and the version): the shape or dtype it changes is seen."""
    torch = pytest.importorskip("torch")
    w = torch.ones(2, 3, dtype=torch.float64)  # a Parameter refuses integer data
    optimizer = anyoptim.SGD(0.5)
    params, grads = {"w": w}, {"w": torch.ones(2, 3, dtype=torch.float64)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    address = w.data_ptr()
    w.data = w.data.view(3, 2) if change == "shape" else w.data.view(torch.int64)
    assert w.data_ptr() == address
    with pytest.raises((ValueError, TypeError), match=r"shape \(3, 2\)|dtype"):
        optimizer.step(params, grads, state)


def test_torch_new_gradients_of_another_shape_or_type_are_not_rebound():
    """A prepared step reads new gradient tensors only of the old ones' type, shape, dtype, device and layout."""
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.SGD(0.5)
    params = {"w": torch.ones(2, 3, dtype=torch.float64)}
    state = optimizer.init(params)
    params, state = optimizer.step(params, {"w": torch.ones(2, 3, dtype=torch.float64)}, state)
    prepared = optimizer._prepared
    params, state = optimizer.step(params, {"w": torch.ones(2, 3, dtype=torch.float64)}, state)
    assert optimizer._prepared is prepared  # rebound
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        optimizer.step(params, {"w": torch.ones(3, 2, dtype=torch.float64)}, state)
    params, state = optimizer.step(params, {"w": torch.nn.Parameter(torch.ones(2, 3, dtype=torch.float64))}, state)
    assert optimizer._prepared is not prepared  # another type: the validated path prepared a new step
    assert torch.equal(params["w"], torch.full((2, 3), -0.5, dtype=torch.float64)) and state.count == 3


def test_torch_a_new_gradient_that_is_a_state_slot_takes_the_validated_path():
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.Momentum(1.0, beta=0.5)
    params = {"w": torch.zeros(2, dtype=torch.float64)}
    state = optimizer.init(params)
    params, state = optimizer.step(params, {"w": torch.ones(2, dtype=torch.float64)}, state)
    prepared = optimizer._prepared
    slot = state.slots[next(iter(state.slots))]["w"]
    velocity = slot.clone()
    params, state = optimizer.step(params, {"w": slot[:]}, state)  # a view of the slot the step writes
    assert optimizer._prepared is not prepared
    expected = anyoptim.Momentum(1.0, beta=0.5, engine="generic")
    p, s = expected.step(
        {"w": torch.zeros(2, dtype=torch.float64)},
        {"w": torch.ones(2, dtype=torch.float64)},
        expected.init({"w": torch.zeros(2, dtype=torch.float64)}),
    )
    p, s = expected.step(p, {"w": velocity}, s)
    assert torch.equal(params["w"], p["w"])


def test_torch_byte_ranges_of_contiguous_tensors_are_their_bytes_as_the_general_formula_says():
    torch = pytest.importorskip("torch")
    from anyoptim.engines.memory import byte_range

    base = torch.arange(24.0)
    for tensor in (base, base.view(4, 6), base[6:12], base.view(4, 6)[1:3], base.view(2, 1, 12), base[:0], base[3]):
        reach = sum((length - 1) * stride for length, stride in zip(tensor.shape, tensor.stride(), strict=True))
        start = tensor.data_ptr()
        expected = (start, start + (reach + 1) * 4) if tensor.numel() else None
        assert tensor.is_contiguous() and byte_range(tensor) == expected
    strided = base.view(4, 6).t()
    assert byte_range(strided) == (base.data_ptr(), base.data_ptr() + 24 * 4)


def test_a_tree_too_large_to_write_out_takes_the_prepared_step_through_one_walk_per_kind():
    from anyoptim.optimizers.gathering import INLINE_LEAVES

    count = INLINE_LEAVES + 6
    optimizer = anyoptim.SGD(0.5)
    params = {f"w{i:03d}": np.ones(2) for i in range(count)}
    grads = {name: np.ones(2) for name in params}
    state = optimizer.init(params)
    for _ in range(3):
        params, state = optimizer.step(params, grads, state)
    assert optimizer._prepared.check is not None  # the second and third steps took the prepared step
    grads["w069"] = np.full(2, 3.0)  # one gradient replaced: seen
    params, state = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(params["w069"], np.full(2, -2.0))
    np.testing.assert_array_equal(params["w000"], np.full(2, -1.0))
