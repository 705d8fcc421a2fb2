"""The tracer: a :class:`~anyoptim.engines.program.Program` called with symbols records a :class:`Trace`.

Neither fused engine types an update formula: each calls the very program the
generic engine runs, with a *symbolic* namespace and symbolic arrays, and the
operators the rule applies record an expression graph (a DAG, :class:`Trace`,
made by :func:`trace_program`).  See :mod:`anyoptim.engines.trace` for the
three kinds of values a graph keeps apart and what the engines make of it.

The rule contract (see :mod:`anyoptim.optimizers.contract`) is enforced here: the operators
``+ - * /``, unary ``-``, ``**`` with a scalar exponent and comparisons, and the
functions ``sqrt``, ``abs``, ``sign``, ``maximum``, ``minimum``, ``where`` and
``clip``.  Anything else raises a ``TypeError`` or ``AttributeError`` naming
what the rule tried (a returned slot set that differs from the given one, a
``ValueError``); the NumPy engine takes any of these as its signal to run the
rule as written instead.

This module is pure Python: it imports neither NumPy nor CuPy.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ARRAY",
    "BOOL",
    "SCALAR",
    "Node",
    "Symbol",
    "Trace",
    "hp_signature",
    "kernel_name",
    "trace_program",
]

ARRAY, BOOL, SCALAR = "array", "bool", "scalar"


@dataclass(frozen=True)
class Node:
    """One node of a traced graph.

    Attributes
    ----------
    op : str
        A leaf (``"param"``, ``"grad"``, ``"slot"``, ``"hp_array"``, ``"hp_scalar"``,
        ``"const"``) or an operation (``"add"``, ``"sub"``, ``"mul"``, ``"div"``,
        ``"pow"``, ``"neg"``, a comparison ``"lt"`` ... ``"ne"``, ``"sqrt"``, ``"abs"``,
        ``"sign"``, ``"maximum"``, ``"minimum"``, ``"where"``, ``"muladd"``).
    args : tuple of int
        Indices of the argument nodes (earlier in the graph).
    kind : {"array", "bool", "scalar"}
        What the node holds: elementwise values of ``T``, elementwise booleans,
        or one host-side Python number.
    value
        The slot or hyperparameter name of a leaf, or a constant's value.
    """

    op: str
    args: tuple[int, ...]
    kind: str
    value: Any = None


@dataclass(frozen=True)
class Trace:
    """A program traced for one set of slot names and hyperparameter kinds.

    Attributes
    ----------
    name : str
        The rule's name with its options (for kernel names and messages).
    nodes : tuple of Node
        The graph in topological order.
    slot_names : tuple of str
        The state slots, in the order of the engine's arguments.
    hp_arrays : tuple of str
        Hyperparameters that are 0-D arrays (kernel array arguments, broadcast).
    kernel_scalars : tuple of int
        The scalar nodes whose values the kernel needs, computed on the host
        each step by :func:`fold_scalars`; kernel argument ``c{k}`` holds
        ``kernel_scalars[k]``.
    param_output : int
        The node of the new parameter.
    slot_outputs : tuple of int
        The node of each new slot, in ``slot_names`` order.
    """

    name: str
    nodes: tuple[Node, ...]
    slot_names: tuple[str, ...]
    hp_arrays: tuple[str, ...]
    kernel_scalars: tuple[int, ...]
    param_output: int
    slot_outputs: tuple[int, ...]

    def outputs(self) -> list[tuple[str, int]]:
        """``("param", node)`` then ``("slot", node)`` per slot."""
        return [("param", self.param_output), *(("slot", node) for node in self.slot_outputs)]

    def live_nodes(self) -> list[int]:
        """Indices of the nodes the outputs depend on, in topological order."""
        live: set[int] = set()
        pending = [node for _, node in self.outputs()]
        while pending:
            index = pending.pop()
            if index not in live:
                live.add(index)
                pending.extend(self.nodes[index].args)
        return sorted(live)


# --------------------------------------------------------------------------- tracing


class _Builder:
    """Records nodes, merging identical ones (the same hyperparameter read twice is one node)."""

    def __init__(self, hp_kinds: Mapping[str, bool]):
        self.nodes: list[Node] = []
        self._index: dict[tuple[Any, ...], int] = {}
        self.hp_kinds = dict(hp_kinds)
        self.hp_arrays: list[str] = []

    def add(self, op: str, args: tuple[int, ...], kind: str, value: Any = None) -> Symbol:
        # repr keeps 1 and 1.0, 0.0 and -0.0 apart; the type keeps True and 1 apart.
        key = (op, args, kind, type(value).__name__, repr(value))
        index = self._index.get(key)
        if index is None:
            index = len(self.nodes)
            self.nodes.append(Node(op, args, kind, value))
            self._index[key] = index
        return Symbol(self, index)

    def kind(self, index: int) -> str:
        return self.nodes[index].kind

    def operand(self, value: Any, what: str) -> int:
        """The node of an operand: a symbol of this trace, or a Python number made a constant."""
        if isinstance(value, Symbol):
            if value.builder is not self:
                raise TypeError(f"{what}: the operand belongs to another trace")
            return value.index
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"{what}: a rule may combine arrays with Python numbers only, got {type(value).__name__} {value!r}"
            )
        return self.add("const", (), SCALAR, value).index

    def hp(self, name: str) -> Symbol:
        if name not in self.hp_kinds:
            raise KeyError(name)
        if self.hp_kinds[name]:
            if name not in self.hp_arrays:
                self.hp_arrays.append(name)
            return self.add("hp_array", (), ARRAY, name)
        return self.add("hp_scalar", (), SCALAR, name)


def _result_kind(kinds: Sequence[str], op: str) -> str:
    if BOOL in kinds:
        raise TypeError(f"{op}: arithmetic on the result of a comparison is outside the rule contract; use xp.where")
    return ARRAY if ARRAY in kinds else SCALAR


class Symbol:
    """A symbolic array or scalar: every operator a rule applies records a node."""

    __array_priority__ = 1000
    __array_ufunc__ = None  # NumPy scalars on the left defer to our reflected operators
    __hash__ = None  # type: ignore[assignment]  # == builds a node, so symbols are not hashable

    def __init__(self, builder: _Builder, index: int):
        self.builder = builder
        self.index = index

    @property
    def kind(self) -> str:
        return self.builder.kind(self.index)

    def _binary(self, op: str, left: Any, right: Any) -> Symbol:
        builder = self.builder
        a = builder.operand(left, op)
        b = builder.operand(right, op)
        kind = _result_kind([builder.kind(a), builder.kind(b)], op)
        return builder.add(op, (a, b), kind)

    def __add__(self, other: Any) -> Symbol:
        return self._binary("add", self, other)

    def __radd__(self, other: Any) -> Symbol:
        return self._binary("add", other, self)

    def __sub__(self, other: Any) -> Symbol:
        return self._binary("sub", self, other)

    def __rsub__(self, other: Any) -> Symbol:
        return self._binary("sub", other, self)

    def __mul__(self, other: Any) -> Symbol:
        return self._binary("mul", self, other)

    def __rmul__(self, other: Any) -> Symbol:
        return self._binary("mul", other, self)

    def __truediv__(self, other: Any) -> Symbol:
        return self._binary("div", self, other)

    def __rtruediv__(self, other: Any) -> Symbol:
        return self._binary("div", other, self)

    def __pow__(self, exponent: Any) -> Symbol:
        builder = self.builder
        b = builder.operand(exponent, "**")
        if builder.kind(b) != SCALAR:
            raise TypeError("**: the exponent must be a scalar (a constant or a hyperparameter), not an array")
        return self._binary("pow", self, exponent)

    def __rpow__(self, base: Any) -> Symbol:
        if self.kind != SCALAR:
            raise TypeError("**: raising a number to an array power is outside the rule contract")
        return self._binary("pow", base, self)

    def __neg__(self) -> Symbol:
        return self.builder.add("neg", (self.index,), _result_kind([self.kind], "unary -"))

    def __pos__(self) -> Symbol:
        _result_kind([self.kind], "unary +")
        return self

    def __abs__(self) -> Symbol:
        return _function(self.builder, "abs", self)

    def _compare(self, op: str, other: Any) -> Symbol:
        builder = self.builder
        a = self.index
        b = builder.operand(other, op)
        kinds = [builder.kind(a), builder.kind(b)]
        if BOOL in kinds:
            raise TypeError("comparing comparison results is outside the rule contract")
        if ARRAY not in kinds:
            raise TypeError(
                "a rule may compare arrays only: comparing two scalars would branch on host values "
                "that change every step"
            )
        return builder.add(op, (a, b), BOOL)

    def __lt__(self, other: Any) -> Symbol:
        return self._compare("lt", other)

    def __le__(self, other: Any) -> Symbol:
        return self._compare("le", other)

    def __gt__(self, other: Any) -> Symbol:
        return self._compare("gt", other)

    def __ge__(self, other: Any) -> Symbol:
        return self._compare("ge", other)

    def __eq__(self, other: Any) -> Symbol:  # type: ignore[override]
        return self._compare("eq", other)

    def __ne__(self, other: Any) -> Symbol:  # type: ignore[override]
        return self._compare("ne", other)

    def __bool__(self) -> bool:
        raise TypeError(
            "a rule cannot branch on array or hyperparameter values (if, and, or, bool()): "
            "use xp.where, or let the optimizer compute a scalar on the host"
        )

    def __float__(self) -> float:
        raise TypeError("a rule cannot read a value back as a Python number")

    def __int__(self) -> int:
        raise TypeError("a rule cannot read a value back as a Python number")

    def __index__(self) -> int:
        raise TypeError("a rule cannot use an array or hyperparameter as an index")

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"a traced rule used the attribute {name!r} of an array: only the operators and the functions of "
            "the rule contract are available (see anyoptim.optimizers.contract)"
        )

    def __repr__(self) -> str:
        node = self.builder.nodes[self.index]
        return f"<Symbol {self.index}: {node.op} {node.kind}>"


def _function(builder: _Builder, op: str, *operands: Any) -> Symbol:
    args = tuple(builder.operand(x, f"xp.{op}") for x in operands)
    kinds = [builder.kind(a) for a in args]
    if op == "where":
        if kinds[0] != BOOL:
            raise TypeError("xp.where: the condition must be a comparison of arrays")
        _result_kind(kinds[1:], "xp.where")  # the branches must be values, not comparisons
        return builder.add(op, args, ARRAY)  # elementwise even when both branches are scalars
    kind = _result_kind(kinds, f"xp.{op}")
    if kind != ARRAY:
        raise TypeError(
            f"xp.{op} was applied to scalars only: the rule contract applies functions to arrays; "
            "compute scalar functions on the host (in the optimizer's step scalars)"
        )
    return builder.add(op, args, kind)


class _SymbolicNamespace:
    """The namespace a rule sees while it is traced: the functions of the rule contract, nothing else."""

    def __init__(self, builder: _Builder):
        self._builder = builder

    def sqrt(self, x: Any) -> Symbol:
        return _function(self._builder, "sqrt", x)

    def abs(self, x: Any) -> Symbol:
        return _function(self._builder, "abs", x)

    def sign(self, x: Any) -> Symbol:
        return _function(self._builder, "sign", x)

    def maximum(self, x1: Any, x2: Any) -> Symbol:
        return _function(self._builder, "maximum", x1, x2)

    def minimum(self, x1: Any, x2: Any) -> Symbol:
        return _function(self._builder, "minimum", x1, x2)

    def where(self, condition: Any, x1: Any, x2: Any) -> Symbol:
        return _function(self._builder, "where", condition, x1, x2)

    def traced_muladd(self, a: Any, b: Any, c: Any) -> Symbol:
        """:func:`anyoptim.engines.muladd.muladd` records one node ``"muladd"`` (a*b + c rounded once in float32)."""
        return _function(self._builder, "muladd", a, b, c)

    def clip(self, x: Any, /, min: Any = None, max: Any = None) -> Symbol:
        """``clip(x, min, max)`` is ``minimum(maximum(x, min), max)``: NaN propagates, as in the Array API."""
        builder = self._builder
        if not isinstance(x, Symbol) or x.kind != ARRAY:
            raise TypeError("xp.clip: the first argument must be an array")
        result = x
        if min is not None:
            result = _function(builder, "maximum", result, min)
        if max is not None:
            result = _function(builder, "minimum", result, max)
        return result

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"the rule called xp.{name}, which is outside the rule contract (anyoptim.optimizers.contract): "
            "the fused engines can trace operators and xp.sqrt, abs, sign, maximum, minimum, where and clip only"
        )


class _SymbolicHyperparameters(Mapping[str, Any]):
    """The ``hp`` mapping a traced rule reads: each key becomes a host scalar or a 0-D array input."""

    def __init__(self, builder: _Builder):
        self._builder = builder

    def __getitem__(self, name: str) -> Symbol:
        return self._builder.hp(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builder.hp_kinds)

    def __len__(self) -> int:
        return len(self._builder.hp_kinds)


def _is_host_scalar(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def hp_signature(hp: Mapping[str, Any]) -> tuple[tuple[str, bool], ...]:
    """Which hyperparameters are 0-D arrays (True) and which host numbers (False), sorted by name.

    Raises
    ------
    TypeError
        If a value is neither a real Python (or NumPy) number nor a 0-D array.
    """
    signature = []
    for name in sorted(hp):
        value = hp[name]
        if _is_host_scalar(value):
            signature.append((name, False))
        elif tuple(getattr(value, "shape", (None,))) == ():
            signature.append((name, True))
        else:
            raise TypeError(f"hp[{name!r}] must be a real number or a 0-D array, got {type(value).__name__} {value!r}")
    return tuple(signature)


def _program_name(program: Any) -> str:
    rule = getattr(program, "rule", program)
    name = getattr(rule, "__name__", type(rule).__name__)
    options = ", ".join(f"{key}={value!r}" for key, value in getattr(program, "options", ()))
    return f"{name}({options})"


def trace_program(
    program: Callable[..., Any], slot_names: Sequence[str], signature: Sequence[tuple[str, bool]]
) -> Trace:
    """Trace ``program(xp, p, g, slots, hp)`` into a :class:`Trace`.

    Parameters
    ----------
    program
        A :class:`~anyoptim.engines.program.Program` (or any callable with a rule's signature).
    slot_names
        The state slots passed to the program, in order.
    signature
        ``(name, is_array)`` for every hyperparameter the program may read
        (:func:`hp_signature` of a real ``hp``).

    Raises
    ------
    TypeError, AttributeError
        If the rule steps outside the rule contract.
    ValueError
        If the rule returns other slots than it was given.
    """
    builder = _Builder(dict(signature))
    xp = _SymbolicNamespace(builder)
    p = builder.add("param", (), ARRAY)
    g = builder.add("grad", (), ARRAY)
    slots = {name: builder.add("slot", (), ARRAY, name) for name in slot_names}
    new_p, new_slots = program(xp, p, g, slots, _SymbolicHyperparameters(builder))
    if not isinstance(new_slots, Mapping) or set(new_slots) != set(slot_names):
        returned = sorted(new_slots) if isinstance(new_slots, Mapping) else type(new_slots).__name__
        raise ValueError(
            f"{_program_name(program)} was given slots {sorted(slot_names)} but returned {returned}: "
            "a rule must return every slot it is given, and no other"
        )
    param_output = builder.operand(new_p, "the new parameter")
    slot_outputs = tuple(builder.operand(new_slots[name], f"slot {name!r}") for name in slot_names)
    for what, index in [("the new parameter", param_output), *zip(slot_names, slot_outputs, strict=True)]:
        if builder.kind(index) == BOOL:
            raise TypeError(f"{what} is a comparison result; a rule must return arrays of the parameter's dtype")
    nodes = tuple(builder.nodes)
    partial = Trace(_program_name(program), nodes, tuple(slot_names), (), (), param_output, slot_outputs)
    live = partial.live_nodes()
    kernel_scalars = sorted(
        {
            index
            for index in live
            if nodes[index].kind == SCALAR
            and nodes[index].op != "const"
            and (
                index in (param_output, *slot_outputs)
                or any(index in nodes[user].args and nodes[user].kind != SCALAR for user in live)
            )
        }
    )
    live_hp_arrays = {nodes[i].value for i in live if nodes[i].op == "hp_array"}
    hp_arrays = tuple(name for name in builder.hp_arrays if name in live_hp_arrays)
    return Trace(
        name=partial.name,
        nodes=nodes,
        slot_names=tuple(slot_names),
        hp_arrays=hp_arrays,
        kernel_scalars=tuple(kernel_scalars),
        param_output=param_output,
        slot_outputs=slot_outputs,
    )


def kernel_name(trace: Trace) -> str:
    """A C identifier naming the kernel of ``trace`` (``anyoptim_adam``)."""
    base = trace.name.split("(", 1)[0]
    safe = "".join(ch if ch.isalnum() else "_" for ch in base) or "rule"
    return f"anyoptim_{safe}"
