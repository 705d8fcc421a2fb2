"""A call's leaves in one generated function: the prepared step's per-call walk of params, grads and state slots.

A prepared step (:mod:`anyoptim.optimizers.prepared`) checks every later call
by gathering the leaves of its params, grads and state slots and comparing them
by identity with the ones it was made for.  Walking the trees node by node, a
function call per subtree, was most of a small network's step.
:func:`leaf_gatherer` writes that walk out once per structure as straight-line
Python (one type and length test per container, one subscript per child) and
compiles it: no calls, no loops, no intermediate tuples.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from ..tree import TreeDef

__all__ = ["leaf_gatherer"]

#: ``gather(params, grads, slots) -> tuple or None``, what :func:`leaf_gatherer` makes.
Gatherer = Callable[[Any, Any, Any], "tuple | None"]


@functools.lru_cache(maxsize=64)
def leaf_gatherer(treedef: TreeDef, slot_names: tuple[str, ...]) -> Gatherer:
    """Make ``gather(params, grads, slots)``: the leaves of a call whose trees have exactly this structure.

    The returned function gives the leaves of ``params``, then of ``grads``,
    then of ``slots[name]`` for each name of ``slot_names`` in order (each
    tree's leaves in :func:`anyoptim.tree.tree_flatten`'s order: dict keys
    sorted), as one tuple; or None where any tree is not of ``treedef``'s
    structure: a container of another type (exact types: a dict subclass, or a
    list where a tuple was, is another structure), another length, or a dict
    without one of the keys; or where ``slots`` is not a dict of exactly these
    names.  A leaf position takes any object: the caller compares what is
    found there with its own leaves (by identity).  It reads the trees only
    (exact builtin containers are subscripted, tuples unpacked, as
    :func:`~anyoptim.tree.tree_flatten` iterates them) and changes nothing:
    no method of the caller's runs, except a named tuple class's own length
    and iteration, as in :func:`~anyoptim.tree.tree_flatten`.  Made once per
    structure (cached) and compiled from generated source.

    Parameters
    ----------
    treedef : TreeDef
        The structure of params, grads and each slot tree (from
        :func:`~anyoptim.tree.tree_flatten`).
    slot_names : tuple of str
        The state slots, in the order their leaves follow the grads'.

    Returns
    -------
    callable
        ``gather(params, grads, slots) -> tuple or None``, the tuple of
        ``(2 + len(slot_names)) * treedef.num_leaves`` leaves.

    Examples
    --------
    >>> from anyoptim.optimizers.gathering import leaf_gatherer
    >>> from anyoptim.tree import tree_flatten
    >>> gather = leaf_gatherer(tree_flatten({"b": 0, "W": [0, 0]})[2], ("m",))
    >>> gather({"W": [1, 2], "b": 3}, {"b": 6, "W": [4, 5]}, {"m": {"W": [7, 8], "b": 9}})
    (1, 2, 3, 4, 5, 6, 7, 8, 9)
    >>> print(gather({"W": (1, 2), "b": 3}, {"b": 6, "W": [4, 5]}, {"m": {"W": [7, 8], "b": 9}}))
    None
    """
    source, constants = gatherer_source(treedef, slot_names)
    namespace: dict[str, Any] = dict(constants)
    name = f"<anyoptim leaf gatherer: {treedef.num_leaves} leaves x {2 + len(slot_names)} trees>"
    exec(compile(source, name, "exec"), namespace)  # the source of gatherer_source(), from the structure alone
    return namespace["gather"]


def gatherer_source(treedef: TreeDef, slot_names: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The source of :func:`leaf_gatherer`'s function, and the objects it names (tuple types, slots, str-subclass keys).

    Two functions: ``leaves_of(tree)``, the walk of one tree of ``treedef``'s structure (None for another), and
    ``gather``, which runs it on params, grads and each slot tree: written once, the walk compiles in a quarter of
    the time one function written out for every tree would take (tens of milliseconds for a thousand leaves).
    """
    lines = ["def leaves_of(tree):", "    try:"]
    constants: dict[str, Any] = {}
    temporaries = (f"n{index}" for index in itertools.count())
    leaves: list[str] = []

    def constant(value: Any) -> str:
        for name, known in constants.items():
            if known is value:
                return name
        name = f"C{len(constants)}"
        constants[name] = value
        return name

    def visit(node: str, structure: TreeDef) -> None:
        if structure.kind == "leaf":
            leaves.append(node)
            return
        count = len(structure.children)
        if structure.kind == "dict":
            if not all(isinstance(key, str) for key in structure.keys):  # tree_flatten allows none other
                raise TypeError(f"tree keys must be strings, not {structure.keys!r}")
            lines.append(f"        if type({node}) is not dict or len({node}) != {count}: return None")
            # A str is written as its literal; a str subclass's key (an enum.StrEnum member) is looked up as itself.
            children = [f"{node}[{repr(key) if type(key) is str else constant(key)}]" for key in structure.keys]
        elif structure.kind == "list":
            lines.append(f"        if type({node}) is not list or len({node}) != {count}: return None")
            children = [f"{node}[{index}]" for index in range(count)]
        else:
            expected = "tuple" if structure.node_type is None else constant(structure.node_type)
            lines.append(f"        if type({node}) is not {expected} or len({node}) != {count}: return None")
            children = [next(temporaries) for _ in range(count)]
            if children:  # unpacked, as tree_flatten iterates a tuple
                lines.append(f"        {', '.join(children)}, = {node}")
        for child, child_structure in zip(children, structure.children, strict=True):
            if child_structure.kind == "leaf":
                leaves.append(child)  # read where the tuple is built: a missing key raises KeyError there
                continue
            if not child.isidentifier():  # a subscript: the subtree gets a name
                name = next(temporaries)
                lines.append(f"        {name} = {child}")
                child = name
            visit(child, child_structure)

    visit("tree", treedef)
    lines.append(f"        return ({''.join(leaf + ', ' for leaf in leaves)})")
    lines.append("    except KeyError:")
    lines.append("        return None")
    trees = ["params", "grads", *(f"slots[{constant(name)}]" for name in slot_names)]
    lines += [
        "",
        "def gather(params, grads, slots):",
        f"    if type(slots) is not dict or len(slots) != {len(slot_names)}: return None",
        "    try:  # a missing slot raises KeyError, a tree of another structure TypeError (None unpacked)",
        f"        return ({''.join(f'*leaves_of({tree}), ' for tree in trees)})",
        "    except (KeyError, TypeError):",
        "        return None",
    ]
    return "\n".join(lines) + "\n", constants
