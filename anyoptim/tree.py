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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TreeDef", "check_same_structure", "leaf_names", "map_leaves", "tree_flatten", "tree_unflatten"]

ROOT_LEAF_NAME = "param"


@dataclass(frozen=True)
class TreeDef:
    """The structure of a tree with its leaves removed.

    ``kind`` is ``"leaf"``, ``"dict"``, ``"list"`` or ``"tuple"``; ``keys`` holds a
    dict's keys in order; ``node_type`` rebuilds tuple subclasses (named tuples).
    """

    kind: str
    keys: tuple = ()
    children: tuple[TreeDef, ...] = ()
    node_type: type | None = None

    @property
    def num_leaves(self) -> int:
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
                raise ValueError(f"tree keys must be non-empty and free of '.'; {path or 'the root'} has key {key!r}")
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

    Parameters
    ----------
    tree
        An array, or a dict (string keys), list or tuple of trees.

    Returns
    -------
    names : list of str
        Dotted path of every leaf, depth first, dict keys in sorted order.
    leaves : list
        The leaves in the same order.
    treedef : TreeDef
        What :func:`tree_unflatten` needs to rebuild the structure.
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
    """Rebuild a tree of ``treedef``'s structure from its leaves (inverse of :func:`tree_flatten`)."""
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"the tree has {treedef.num_leaves} leaves but {len(leaves)} were given")
    return _unflatten_from(treedef, iter(leaves))


def leaf_names(tree: Any) -> list[str]:
    """The dotted names of a tree's leaves, in order."""
    return tree_flatten(tree)[0]


def map_leaves(function: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``function`` to every leaf and return a tree of the same structure."""
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
    """Raise ``ValueError`` naming the first place where two tree structures differ."""
    if expected == actual:
        return
    difference = _first_difference(expected, actual, "")
    raise ValueError(f"{what} does not have the structure of {like}: {difference}")
