"""Parameter trees: nested dicts, lists and tuples of arrays, with a name on every leaf.

A tree is flattened once per call into a list of leaves, a list of leaf names and
a :class:`TreeDef` that rebuilds the same structure.  Leaf names join the keys
and indices on the path with dots: ``{"encoder": [{"W": w}]}`` has one leaf,
``"encoder.0.W"``.  A bare array is a tree of one leaf named ``"param"``.

Names are what later layers rely on: checkpoints store state slots by name,
weight-decay masks select leaves by name, and data-parallel training reduces
gradients leaf by leaf in name order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TreeDef", "check_same_structure", "leaf_names", "map_leaves", "nest", "tree_flatten", "tree_unflatten"]

ROOT_LEAF_NAME = "param"


@dataclass(frozen=True)
class TreeDef:
    """The structure of a tree with its leaves removed.

    Made by :func:`tree_flatten`, consumed by :func:`tree_unflatten`; two trees
    have the same structure exactly when their ``TreeDef`` objects compare equal
    (:func:`check_same_structure` says where they differ).  Frozen and hashable.

    Parameters
    ----------
    kind : {"leaf", "dict", "list", "tuple"}
        What this node is.
    keys : tuple of str, default ()
        A dict's keys, in the (sorted) order of ``children``; empty for other kinds.
    children : tuple of TreeDef, default ()
        The structure of each child, in order; empty for a leaf.
    node_type : type, optional
        The tuple subclass to rebuild (a named tuple's class); None for plain
        tuples and for other kinds.

    Attributes
    ----------
    num_leaves : int
        How many leaves the tree has.

    See Also
    --------
    tree_flatten : Makes a ``TreeDef`` from a tree.
    tree_unflatten : Rebuilds a tree from a ``TreeDef`` and leaves.

    Examples
    --------
    >>> from anyoptim.tree import tree_flatten
    >>> treedef = tree_flatten({"b": 1.0, "W": [2.0, 3.0]})[2]
    >>> treedef.kind, treedef.keys, treedef.num_leaves
    ('dict', ('W', 'b'), 3)
    >>> [child.kind for child in treedef.children]
    ['list', 'leaf']
    """

    kind: str
    keys: tuple = ()
    children: tuple[TreeDef, ...] = ()
    node_type: type | None = None

    @property
    def num_leaves(self) -> int:
        """How many leaves the tree has (1 for a leaf).

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.tree import tree_flatten
        >>> names, leaves, treedef = tree_flatten({"W": np.ones((2, 2)), "layers": [np.zeros(2), np.zeros(3)]})
        >>> treedef.num_leaves
        3
        """
        if self.kind == "leaf":
            return 1
        return sum(child.num_leaves for child in self.children)


_LEAF = TreeDef("leaf")


def _flatten_into(node: Any, path: str, names: list[str], leaves: list[Any]) -> TreeDef:
    if isinstance(node, dict):
        for key in node:
            if not isinstance(key, str):
                raise TypeError(f"tree keys must be strings; {path or 'the root'} has key {key!r}")
            if not key or "." in key:
                # Dots join names, so "a.b" and {"a": {"b": ...}} would name two leaves alike.
                raise ValueError(
                    f"tree keys must be non-empty and free of '.'; {path or 'the root'} has key {key!r} "
                    "(for dotted names such as torch's named_parameters(), anyoptim.tree.nest builds nested dicts)"
                )
        # Sorted, as in JAX: grads built in another insertion order still match params.
        keys = tuple(sorted(node))
        children = tuple(_flatten_into(node[key], f"{path}.{key}" if path else key, names, leaves) for key in keys)
        return TreeDef("dict", keys, children)
    if isinstance(node, (list, tuple)):
        children = tuple(
            _flatten_into(value, f"{path}.{index}" if path else str(index), names, leaves)
            for index, value in enumerate(node)
        )
        if isinstance(node, list):
            return TreeDef("list", (), children)
        return TreeDef("tuple", (), children, None if type(node) is tuple else type(node))
    names.append(path or ROOT_LEAF_NAME)
    leaves.append(node)
    return _LEAF


def tree_flatten(tree: Any) -> tuple[list[str], list[Any], TreeDef]:
    """Flatten a tree into leaf names, leaves and its structure.

    Anything that is not a dict, list or tuple is a leaf (an array, a Python
    number, None).  Dict keys are visited in sorted order, as in JAX, so two
    dicts built in different insertion orders flatten alike.

    Parameters
    ----------
    tree : array, dict, list or tuple
        An array, or a dict (string keys), list or tuple (named tuples
        included) of trees.

    Returns
    -------
    names : list of str
        Dotted path of every leaf, depth first, dict keys in sorted order; a
        bare array (the whole tree one leaf) is named ``"param"``.
    leaves : list
        The leaves in the same order, the very objects of ``tree`` (not copies).
    treedef : TreeDef
        What :func:`tree_unflatten` needs to rebuild the structure.

    Raises
    ------
    TypeError
        If a dict has a key that is not a string.
    ValueError
        If a dict key is empty or contains ``"."`` (dots join the names).

    See Also
    --------
    tree_unflatten : The inverse.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.tree import tree_flatten
    >>> names, leaves, treedef = tree_flatten({"b": np.zeros(2), "W": [np.ones((2, 2)), np.ones(3)]})
    >>> names
    ['W.0', 'W.1', 'b']
    >>> [leaf.shape for leaf in leaves]
    [(2, 2), (3,), (2,)]
    >>> tree_flatten(np.ones(3))[0]
    ['param']
    """
    names: list[str] = []
    leaves: list[Any] = []
    treedef = _flatten_into(tree, "", names, leaves)
    return names, leaves, treedef


def _unflatten_from(treedef: TreeDef, leaves: Any) -> Any:
    if treedef.kind == "leaf":
        return next(leaves)
    children = [_unflatten_from(child, leaves) for child in treedef.children]
    if treedef.kind == "dict":
        return dict(zip(treedef.keys, children, strict=False))
    if treedef.kind == "list":
        return children
    if treedef.node_type is not None:
        return treedef.node_type(*children)
    return tuple(children)


def tree_unflatten(treedef: TreeDef, leaves: Sequence[Any]) -> Any:
    """Rebuild a tree of ``treedef``'s structure from its leaves (inverse of :func:`tree_flatten`).

    Parameters
    ----------
    treedef : TreeDef
        The structure, from :func:`tree_flatten`.
    leaves : sequence
        The new leaves, ``treedef.num_leaves`` of them, in the order of
        :func:`tree_flatten`'s ``names``.

    Returns
    -------
    array, dict, list or tuple
        New dicts, lists and tuples (named tuples rebuilt with their class)
        holding the given leaves themselves; for a bare leaf's structure
        (``kind="leaf"``), the one leaf.

    Raises
    ------
    ValueError
        If ``len(leaves)`` is not ``treedef.num_leaves``.

    Examples
    --------
    >>> from anyoptim.tree import tree_flatten, tree_unflatten
    >>> names, leaves, treedef = tree_flatten({"b": 1.0, "W": [2.0, 3.0]})
    >>> tree_unflatten(treedef, [10.0, 20.0, 30.0])
    {'W': [10.0, 20.0], 'b': 30.0}
    """
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"the tree has {treedef.num_leaves} leaves but {len(leaves)} were given")
    return _unflatten_from(treedef, iter(leaves))


def leaf_names(tree: Any) -> list[str]:
    """The dotted names of a tree's leaves, in order.

    Parameters
    ----------
    tree : array, dict, list or tuple
        A tree (see :func:`tree_flatten`).

    Returns
    -------
    list of str
        The names of :func:`tree_flatten`: keys and indices joined with dots,
        depth first, dict keys sorted; ``["param"]`` for a bare array.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.tree import leaf_names
    >>> leaf_names({"encoder": [{"W": np.ones((2, 2)), "b": np.zeros(2)}], "scale": np.ones(1)})
    ['encoder.0.W', 'encoder.0.b', 'scale']
    """
    return tree_flatten(tree)[0]


def nest(items: Any) -> dict[str, Any]:
    """Build nested dicts from ``(dotted name, value)`` pairs, such as torch's ``module.named_parameters()``.

    Leaf names are dotted paths, so a dict key may not hold a dot; the nested
    dict this returns has exactly the given names as its leaf names
    (``"0.weight"`` is ``{"0": {"weight": ...}}``), which state slots and
    checkpoints then use.

    Parameters
    ----------
    items : iterable of (str, object) or mapping of str to object
        Dotted names and their values (a mapping's items are taken).

    Returns
    -------
    dict
        Nested dicts, one level per dot, the values at the leaves.

    Raises
    ------
    TypeError
        If a name is not a string.
    ValueError
        If a name has an empty part, or is both a leaf and a prefix of
        another name (``"a"`` and ``"a.b"``, whatever the value of ``"a"``,
        a dict included), or appears twice.

    Examples
    --------
    >>> from anyoptim.tree import leaf_names, nest
    >>> tree = nest([("0.weight", 1.0), ("0.bias", 2.0), ("2.weight", 3.0)])
    >>> tree
    {'0': {'weight': 1.0, 'bias': 2.0}, '2': {'weight': 3.0}}
    >>> leaf_names(tree)
    ['0.bias', '0.weight', '2.weight']
    """
    tree: dict[str, Any] = {}
    made = {id(tree)}  # the dicts made here: a value that is a dict is a leaf, never filled
    for name, value in items.items() if isinstance(items, Mapping) else items:
        if not isinstance(name, str):
            raise TypeError(f"names must be strings (dotted paths), got {name!r}")
        parts = name.split(".")
        if not all(parts):
            raise ValueError(f"name {name!r} has an empty part")
        node = tree
        for depth, part in enumerate(parts[:-1]):
            if part not in node:
                node[part] = {}
                made.add(id(node[part]))
            node = node[part]
            if id(node) not in made:
                raise ValueError(f"{'.'.join(parts[: depth + 1])!r} is a leaf and a prefix of {name!r}")
        if parts[-1] in node:
            what = "a prefix of another name" if id(node[parts[-1]]) in made else "given twice"
            raise ValueError(f"{name!r} is {what}")
        node[parts[-1]] = value
    return tree


def map_leaves(function: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``function`` to every leaf and return a tree of the same structure.

    Parameters
    ----------
    function : callable
        ``function(leaf) -> new_leaf``, called once per leaf in leaf order.
    tree : array, dict, list or tuple
        A tree (see :func:`tree_flatten`).

    Returns
    -------
    array, dict, list or tuple
        A new tree of ``tree``'s structure whose leaves are the results of
        ``function`` (dicts come back with their keys sorted).

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.tree import map_leaves
    >>> zeros = map_leaves(np.zeros_like, {"W": np.ones((2, 3)), "b": np.ones(3)})
    >>> {name: leaf.shape for name, leaf in zeros.items()}
    {'W': (2, 3), 'b': (3,)}
    """
    _, leaves, treedef = tree_flatten(tree)
    return tree_unflatten(treedef, [function(leaf) for leaf in leaves])


def _describe(treedef: TreeDef) -> str:
    if treedef.kind == "dict":
        return f"a dict with keys {list(treedef.keys)}"
    if treedef.kind == "leaf":
        return "an array"
    kind = treedef.node_type.__name__ if treedef.node_type is not None else treedef.kind
    return f"a {kind} of {len(treedef.children)}"


def _first_difference(expected: TreeDef, actual: TreeDef, path: str) -> str | None:
    where = path or "the root"
    if expected.node_type is not actual.node_type:
        return f"at {where} expected {_describe(expected)}, got {_describe(actual)}"
    if expected.kind != actual.kind or (expected.kind != "leaf" and len(expected.children) != len(actual.children)):
        return f"at {where} expected {_describe(expected)}, got {_describe(actual)}"
    if expected.kind == "dict" and expected.keys != actual.keys:
        missing = [k for k in expected.keys if k not in actual.keys]
        extra = [k for k in actual.keys if k not in expected.keys]
        return f"at {where}: missing keys {missing}, unexpected keys {extra}"
    labels = expected.keys if expected.kind == "dict" else range(len(expected.children))
    for label, e, a in zip(labels, expected.children, actual.children, strict=False):
        found = _first_difference(e, a, f"{path}.{label}" if path else str(label))
        if found:
            return found
    return None


def check_same_structure(expected: TreeDef, actual: TreeDef, *, what: str, like: str) -> None:
    """Raise ``ValueError`` naming the first place where two tree structures differ.

    Parameters
    ----------
    expected : TreeDef
        The reference structure (the parameters', say).
    actual : TreeDef
        The structure to check (the gradients', say).
    what : str
        The name of the tree checked, the subject of the message (``"grads"``).
    like : str
        The name of the reference tree in the message (``"params"``).

    Raises
    ------
    ValueError
        If the structures differ: the message gives the path of the first
        difference (a missing or unexpected key, a list of another length, a
        leaf where a subtree was expected).

    Examples
    --------
    >>> from anyoptim.tree import check_same_structure, tree_flatten
    >>> params = tree_flatten({"W": [1.0, 2.0], "b": 0.0})[2]
    >>> check_same_structure(params, tree_flatten({"b": 0.0, "W": [0.1, 0.2]})[2], what="grads", like="params")
    >>> check_same_structure(params, tree_flatten({"W": [0.1], "b": 0.0})[2], what="grads", like="params")
    Traceback (most recent call last):
        ...
    ValueError: grads does not have the structure of params: at W expected a list of 2, got a list of 1
    """
    if expected == actual:
        return
    difference = _first_difference(expected, actual, "")
    raise ValueError(f"{what} does not have the structure of {like}: {difference}")
