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

__all__ = ["leaf_checker", "leaf_gatherer"]

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
    names in this order (the validated step refuses another order).  A leaf
    position takes any object: the caller compares what is found there with
    its own leaves (by identity).  It reads the trees only
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
    constants: dict[str, Any] = {}
    lines = ["def leaves_of(tree):", "    try:"]
    leaves = _walk(treedef, lines, constants, lambda expression, index: None)
    lines.append(f"        return ({''.join(leaf + ', ' for leaf in leaves)})")
    lines.append("    except KeyError:")
    lines.append("        return None")
    trees = ["params", "grads", *(f"slots[{_constant(constants, name)}]" for name in slot_names)]
    names = _constant(constants, tuple(slot_names))  # in this order, as the validated path requires
    lines += [
        "",
        "def gather(params, grads, slots):",
        f"    if type(slots) is not dict or tuple(slots) != {names}: return None",
        "    try:  # a missing slot raises KeyError, a tree of another structure TypeError (None unpacked)",
        f"        return ({''.join(f'*leaves_of({tree}), ' for tree in trees)})",
        "    except (KeyError, TypeError):",
        "        return None",
    ]
    return "\n".join(lines) + "\n", constants


#: ``check(params, grads, slots, facts) -> bool``, what :func:`leaf_checker` makes.
Checker = Callable[[Any, Any, Any, tuple], bool]


@functools.lru_cache(maxsize=64)
def leaf_checker(
    treedef: TreeDef,
    slot_names: tuple[str, ...],
    address_of: Callable[[Any], int] | None,
    contiguity_of: Callable[[Any], bool] | None = None,
) -> Checker:
    """Make ``check(params, grads, slots, facts)``: whether a call passes the very arrays a prepared step holds.

    The same walk as :func:`leaf_gatherer` (the same structures accepted, the
    same reads of the trees, nothing of the caller's run), with each leaf
    compared where it is found instead of gathered: the whole per-call check of
    a prepared step in one function, which stops at the first difference.

    ``facts`` is ``(params_facts, grads_facts, *slot_facts)``, one per tree in
    the order params, grads, then ``slot_names``.  Each is a tuple whose first
    item holds the tree's leaves in :func:`~anyoptim.tree.tree_flatten`'s
    order; then, where ``address_of`` is given, their addresses; then, where
    ``contiguity_of`` is given, whether each is contiguous; then, for params
    and grads only, their shapes and their dtypes.  The check is true
    exactly when every tree has ``treedef``'s structure (exact container types,
    as :func:`leaf_gatherer`), ``slots`` is a dict of exactly ``slot_names`` in order,
    each leaf found *is* the one held, ``address_of(leaf)`` and
    ``contiguity_of(leaf)`` equal those held, and each param's and grad's
    ``shape`` and ``dtype`` equal (``==``) those held.  Made once per
    structure, slot names and readers (cached) and compiled from generated
    source.

    Parameters
    ----------
    treedef : TreeDef
        The structure of params, grads and each slot tree.
    slot_names : tuple of str
        The state slots, in the order of their facts.
    address_of : callable or None
        ``address_of(array) -> int``, the reader of the addresses held in
        ``facts`` (``torch.Tensor.data_ptr``); None: no addresses are held or
        compared.
    contiguity_of : callable or None, default None
        ``contiguity_of(array) -> bool``, the reader of whether each array is
        contiguous (``torch.Tensor.is_contiguous``: a tensor given other strides
        in place, ``p.data = p.data.t()``, keeps its address and, square, its
        shape); None: not held or compared.

    Returns
    -------
    callable
        ``check(params, grads, slots, facts) -> bool``.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.optimizers.gathering import leaf_checker
    >>> from anyoptim.tree import tree_flatten
    >>> w, g, m = np.zeros(2), np.ones(2), np.zeros(2)
    >>> check = leaf_checker(tree_flatten({"w": w})[2], ("m",), None)
    >>> facts = (((w,), ((2,),), (w.dtype,)), ((g,), ((2,),), (g.dtype,)), ((m,),))
    >>> check({"w": w}, {"w": g}, {"m": {"w": m}}, facts), check({"w": w}, {"w": m}, {"m": {"w": m}}, facts)
    (True, False)
    """
    inline = treedef.num_leaves <= INLINE_LEAVES
    source, constants = checker_source(treedef, slot_names, address_of is not None, contiguity_of is not None, inline)
    namespace: dict[str, Any] = {**constants, "address_of": address_of, "contiguity_of": contiguity_of}
    name = f"<anyoptim leaf checker: {treedef.num_leaves} leaves x {2 + len(slot_names)} trees>"
    exec(compile(source, name, "exec"), namespace)  # the source of checker_source(), from the structure alone
    return namespace["check"]


#: Trees of at most this many leaves get their check written out in one function (no call per tree, about
#: 0.3 µs of a small model's step); larger ones share one walk per kind of tree, which compiles in a quarter
#: of the time.
INLINE_LEAVES = 64


def checker_source(
    treedef: TreeDef, slot_names: Sequence[str], addressed: bool, contiguous: bool = False, inline: bool = False
) -> tuple[str, dict[str, Any]]:
    """The source of :func:`leaf_checker`'s function, and the objects it names (as :func:`gatherer_source`).

    Two walks written once each: ``arrays_same`` (identity, address, contiguity, shape and dtype: params and grads)
    and ``leaves_same`` (identity, address and contiguity: the slots); ``check`` runs them on each tree with its
    facts.  With ``inline`` the walks are written out in ``check`` itself, one after the other.
    """
    constants: dict[str, Any] = {}
    count = treedef.num_leaves
    names = _constant(constants, tuple(slot_names))  # in this order, as the validated path requires
    trees = ["params", "grads", *(f"slots[{_constant(constants, name)}]" for name in slot_names)]
    order = [1, 0, *range(2, len(trees))]  # the grads first: a loop with new gradient tensors fails there at once

    def fields(shaped: bool) -> list[str]:
        return ["L", *(["A"] if addressed else []), *(["K"] if contiguous else []), *(["S", "D"] if shaped else [])]

    def unpacked(shaped: bool, prefix: str) -> str:
        return "".join(
            "(" + "".join(f"{field}{prefix}{index}, " for index in range(count)) + "), " for field in fields(shaped)
        )

    lines: list[str] = []
    if inline:
        lines += [
            "def check(params, grads, slots, facts):",
            f"    if type(slots) is not dict or tuple(slots) != {names}: return False",
            "    try:  # a missing key or slot raises KeyError",
        ]
        if count:
            everything = "".join(f"({unpacked(tree < 2, f'_{tree}_')}), " for tree in range(len(trees)))
            lines.append(f"        ({everything}) = facts")
        for tree in order:
            lines.append(f"        tree = {trees[tree]}")
            test = _leaf_test(lines, addressed, contiguous, tree < 2, f"_{tree}_")
            _walk(treedef, lines, constants, test, on_false="False")
        lines += ["        return True", "    except KeyError:", "        return False"]
        return "\n".join(lines) + "\n", constants
    for function, shaped in (("arrays_same", True), ("leaves_same", False)):
        lines.extend([f"def {function}(tree, facts):", "    try:"])
        if count:
            lines.append(f"        ({unpacked(shaped, '')}) = facts")
        _walk(treedef, lines, constants, _leaf_test(lines, addressed, contiguous, shaped), on_false="False")
        lines.extend(["        return True", "    except KeyError:", "        return False", ""])
    calls = [f"{'arrays_same' if i < 2 else 'leaves_same'}({trees[i]}, facts[{i}])" for i in order]
    lines.extend(
        [
            "def check(params, grads, slots, facts):",
            f"    if type(slots) is not dict or tuple(slots) != {names}: return False",
            "    try:  # a missing slot raises KeyError",
            f"        return {' and '.join(calls)}",
            "    except KeyError:",
            "        return False",
        ]
    )
    return "\n".join(lines) + "\n", constants


def _leaf_test(
    lines: list[str], addressed: bool, contiguous: bool, shaped: bool, prefix: str = ""
) -> Callable[[str, int], None]:
    """``leaf(expression, index)`` for :func:`_walk`: write the test of the leaf found there against the facts
    (named ``L<prefix><index>``, ``A...``, ...)."""

    def leaf(expression: str, index: int) -> None:
        at = f"{prefix}{index}"
        tests = [f"x is not L{at}"]
        if addressed:
            tests.append(f"address_of(x) != A{at}")
        if contiguous:
            tests.append(f"contiguity_of(x) != K{at}")
        if shaped:
            # The same dtype object is the usual case (torch's and NumPy's builtin dtypes are singletons): == only
            # where it is another object.
            tests += [f"x.shape != S{at}", f"(x.dtype is not D{at} and x.dtype != D{at})"]
        lines.append(f"        x = {expression}")
        lines.append(f"        if {' or '.join(tests)}: return False")

    return leaf


def _constant(constants: dict[str, Any], value: Any) -> str:
    """The name under which generated code reads ``value`` (added to ``constants`` the first time)."""
    for name, known in constants.items():
        if known is value:
            return name
    name = f"C{len(constants)}"
    constants[name] = value
    return name


def _walk(
    treedef: TreeDef,
    lines: list[str],
    constants: dict[str, Any],
    leaf: Callable[[str, int], None],
    on_false: str = "None",
) -> list[str]:
    """Write the walk of a tree named ``tree`` of ``treedef``'s structure into ``lines`` (indented for a ``try``).

    Each container's exact type and length are tested (``return <on_false>`` for another); a leaf's expression is
    handed to ``leaf(expression, index)`` (index in tree_flatten's order) where it is found, and all of them are
    returned in that order.  A missing dict key raises KeyError, which the caller's ``try`` turns into its answer.
    """
    temporaries = (f"n{index}" for index in itertools.count())
    leaves: list[str] = []

    def found(expression: str) -> None:
        leaf(expression, len(leaves))
        leaves.append(expression)

    def visit(node: str, structure: TreeDef) -> None:
        if structure.kind == "leaf":
            found(node)
            return
        count = len(structure.children)
        refuse = f"return {on_false}"
        if structure.kind == "dict":
            if not all(isinstance(key, str) for key in structure.keys):  # tree_flatten allows none other
                raise TypeError(f"tree keys must be strings, not {structure.keys!r}")
            lines.append(f"        if type({node}) is not dict or len({node}) != {count}: {refuse}")
            # A str is written as its literal; a str subclass's key (an enum.StrEnum member) is looked up as itself.
            children = [
                f"{node}[{repr(key) if type(key) is str else _constant(constants, key)}]" for key in structure.keys
            ]
        elif structure.kind == "list":
            lines.append(f"        if type({node}) is not list or len({node}) != {count}: {refuse}")
            children = [f"{node}[{index}]" for index in range(count)]
        else:
            expected = "tuple" if structure.node_type is None else _constant(constants, structure.node_type)
            lines.append(f"        if type({node}) is not {expected} or len({node}) != {count}: {refuse}")
            children = [next(temporaries) for _ in range(count)]
            if children:  # unpacked, as tree_flatten iterates a tuple
                lines.append(f"        {', '.join(children)}, = {node}")
        for child, child_structure in zip(children, structure.children, strict=True):
            if child_structure.kind == "leaf":
                found(child)  # the gatherer reads it where the tuple is built: a missing key raises KeyError there
                continue
            if not child.isidentifier():  # a subscript: the subtree gets a name
                name = next(temporaries)
                lines.append(f"        {name} = {child}")
                child = name
            visit(child, child_structure)

    visit("tree", treedef)
    return leaves
