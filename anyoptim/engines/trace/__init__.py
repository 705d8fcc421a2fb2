"""The one tracer of the fused engines: a :class:`~anyoptim.engines.program.Program` as an expression graph.

Neither fused engine types an update formula: each calls the very program the
generic engine runs, with a *symbolic* namespace and symbolic arrays, and the
operators the rule applies record an expression graph (a DAG, :class:`Trace`,
made by :func:`trace_program`).  That one graph is then

* printed as the body of one ``cupy.ElementwiseKernel`` (:func:`cuda_source`)
  by the CuPy engine: one typed temporary per node, parameter and state slots
  as in-out arguments written at the end;
* turned by the NumPy engine (:mod:`anyoptim.engines.numpy`) into ufunc calls
  with ``out=`` on cache-sized blocks, each node given the dtype NumPy's own
  promotion gives it;
* or evaluated with any Array API namespace (:func:`evaluate`), which is how
  the tests prove on a CPU that the traced graph is the rule.

Three kinds of values flow through a rule, and the graph keeps them apart:

``array``
    elementwise values of the parameter's dtype ``T``: the parameter, its
    gradient, the state slots, hyperparameters that are 0-D arrays (the
    global-norm clip factor, which stays on the device), and every result that
    depends on one of them;
``bool``
    the elementwise results of comparisons, consumed by ``xp.where``;
``scalar``
    Python numbers: hyperparameters such as the learning rate, constants of
    the rule, and arithmetic among them (``1 - beta1``).

Scalar subexpressions are evaluated **on the host, in Python**, exactly as the
generic engine evaluates them (``1 - beta1`` in double precision), by the
statements of :func:`scalar_statements` (which both engines compile into their
step), and only their values enter the kernel, converted to ``T``.  This
matters in float32: ``1 - 0.999`` rounded once to float32 differs from
``1.0f - 0.999f`` by 1.3e-5 relative, which a fused Adam would otherwise carry
into every second moment.  A bare constant that meets an array (``0.5 * g``)
becomes a literal of ``T`` (``0.5f`` in a float32 kernel), so a kernel never
computes in double or half precision by accident.  (The NumPy engine instead
casts each scalar as NumPy would where it meets an array, so that it matches
the generic engine bit for bit.)

The rule contract (see :mod:`anyoptim.rules`) is enforced here: the operators
``+ - * /``, unary ``-``, ``**`` with a scalar exponent and comparisons, and the
functions ``sqrt``, ``abs``, ``sign``, ``maximum``, ``minimum``, ``where`` and
``clip``.  Anything else raises a ``TypeError`` or ``AttributeError`` naming
what the rule tried (a returned slot set that differs from the given one, a
``ValueError``); the NumPy engine takes any of these as its signal to run the
rule as written instead.

This module is pure Python: it imports neither NumPy nor CuPy.
"""

from __future__ import annotations

import math
import numbers
import operator
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "C_OPERATORS",
    "FUSED_DTYPES",
    "KernelSource",
    "Node",
    "Trace",
    "cuda_source",
    "evaluate",
    "fold_scalars",
    "hp_signature",
    "kernel_name",
    "scalar_folder",
    "scalar_statements",
    "trace_program",
]

#: The dtypes the CUDA printer supports, with the C type of ``T``.
FUSED_DTYPES = {"float32": "float", "float64": "double"}

ARRAY, BOOL, SCALAR = "array", "bool", "scalar"

#: The C operator of each binary operation of a trace (the same in CUDA and in C).
C_OPERATORS = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "eq": "==",
    "ne": "!=",
}


@dataclass(frozen=True)
class Node:
    """One node of a traced graph.

    Attributes
    ----------
    op : str
        A leaf (``"param"``, ``"grad"``, ``"slot"``, ``"hp_array"``, ``"hp_scalar"``,
        ``"const"``) or an operation (``"add"``, ``"sub"``, ``"mul"``, ``"div"``,
        ``"pow"``, ``"neg"``, a comparison ``"lt"`` ... ``"ne"``, ``"sqrt"``, ``"abs"``,
        ``"sign"``, ``"maximum"``, ``"minimum"``, ``"where"``).
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
            "the rule contract are available (see anyoptim.rules)"
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
            f"the rule called xp.{name}, which is outside the rule contract (anyoptim.rules): the fused engines "
            "can trace operators and xp.sqrt, abs, sign, maximum, minimum, where and clip only"
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


# --------------------------------------------------------------------------- host scalars


_PYTHON_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}


def scalar_statements(trace: Trace) -> tuple[list[str], dict[str, Any]]:
    """Python statements that compute the host scalars of a trace from ``hp``, and the names they read.

    Statement ``v{i} = ...`` computes scalar node ``i`` with Python's own
    operators on the values in ``hp``, exactly as the generic engine evaluates
    ``1 - beta1``; after them, ``v{i}`` is bound for every ``i`` in
    ``trace.kernel_scalars``.  Hyperparameter names and constants enter as values
    of the returned names (``K``, ``C``), never as source text.  Engines embed the
    statements in code they generate (:func:`scalar_folder`, the NumPy engine's
    step), so a step costs a few Python statements, not a walk of the graph.
    """
    needed: set[int] = set()
    pending = list(trace.kernel_scalars)
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(trace.nodes[index].args)
    keys: list[Any] = []
    constants: list[Any] = []
    lines = []
    for index in sorted(needed):  # node order is topological
        node = trace.nodes[index]
        if node.op == "hp_scalar":
            lines.append(f"v{index} = hp[K[{len(keys)}]]")
            keys.append(node.value)
        elif node.op == "const":
            lines.append(f"v{index} = C[{len(constants)}]")
            constants.append(node.value)
        elif node.op == "neg":
            lines.append(f"v{index} = -v{node.args[0]}")
        elif node.op in _PYTHON_OPERATORS:
            a, b = node.args
            lines.append(f"v{index} = v{a} {_PYTHON_OPERATORS[node.op]} v{b}")
        else:  # pragma: no cover - the tracer builds no other scalar nodes
            raise AssertionError(f"node {index} ({node.op}) is not a host scalar")
    return lines, {"K": tuple(keys), "C": tuple(constants)}


def scalar_folder(trace: Trace) -> Callable[[Mapping[str, Any]], list[Any]]:
    """Compile the host part of a trace into a Python function ``hp -> [c0, c1, ...]``.

    The function runs :func:`scalar_statements` and returns the value of each
    node of ``trace.kernel_scalars``; it is built once per trace (as
    ``collections.namedtuple`` builds its classes, from generated source).
    """
    statements, namespace = scalar_statements(trace)
    lines = ["def fold(hp):", *(f"    {line}" for line in statements)]
    lines.append(f"    return [{', '.join(f'v{index}' for index in trace.kernel_scalars)}]")
    # The source is generated above from the trace's structure; names and constants are passed as values.
    exec(compile("\n".join(lines), f"<scalars of {trace.name}>", "exec"), namespace)
    return namespace["fold"]


def fold_scalars(trace: Trace, hp: Mapping[str, Any]) -> list[Any]:
    """The host values of the kernel's scalar arguments, computed as the generic engine computes them.

    Returns one Python number per entry of ``trace.kernel_scalars`` (see
    :func:`scalar_folder`, which engines keep to avoid recompiling each step).
    """
    return scalar_folder(trace)(hp)


def _scalar_expression(trace: Trace, index: int) -> str:
    """A readable form of a scalar node, for comments in the kernel source."""
    node = trace.nodes[index]
    if node.op == "hp_scalar":
        name = str(node.value)
        return name if name.isidentifier() and name.isascii() else repr(name)
    if node.op == "const":
        return repr(node.value)
    parts = [_scalar_expression(trace, arg) for arg in node.args]
    if node.op == "neg":
        return f"-({parts[0]})"
    symbol = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}[node.op]
    return f"({parts[0]} {symbol} {parts[1]})"


# --------------------------------------------------------------------------- CUDA source


@dataclass(frozen=True)
class KernelSource:
    """What ``cupy.ElementwiseKernel`` needs, and the order of its arguments.

    Attributes
    ----------
    name : str
        The kernel's name.
    in_params, out_params : str
        CuPy parameter declarations (``"T grad, T c0"``, ``"T param, T slot_m"``).
    body : str
        The loop body: one ``const T tN = ...;`` per node, then the outputs.
    loop_prep : str
        Code before the loop (loads the scalars from the device table, if any).
    inputs, outputs : tuple of (str, object)
        The role of each argument in order: ``("grad", None)``, ``("hp_array",
        name)``, ``("scalar", k)`` (``c{k}``, passed by value) or ``("scalar_table",
        None)`` (a float64 device array holding every ``c{k}``); ``("param",
        None)``, ``("slot", name)``.
    dtype : str
        ``"float32"`` or ``"float64"``.
    """

    name: str
    in_params: str
    out_params: str
    body: str
    loop_prep: str
    inputs: tuple[tuple[str, Any], ...]
    outputs: tuple[tuple[str, Any], ...]
    dtype: str


def _identifier(prefix: str, name: str, index: int) -> str:
    suffix = name if name.isidentifier() and name.isascii() else str(index)
    return f"{prefix}_{suffix}"


def c_literal(value: float, dtype: str) -> str:
    """A C literal of ``T`` for a Python number: ``0.5f`` in float32, ``0.5`` in float64.

    The value is first rounded to ``T`` (as NumPy rounds a Python number that
    meets a float32 array), so the literal is exact and the compiler never sees
    a double constant in a float kernel.
    """
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a rule constant must be finite to become a kernel literal, got {value!r}")
    if dtype == "float32":
        rounded = struct.unpack("f", struct.pack("f", number))[0]
        text = repr(rounded)
        return f"({text}f)" if text.startswith("-") else f"{text}f"
    if dtype == "float64":
        text = repr(number)
        return f"({text})" if text.startswith("-") else text
    raise ValueError(f"no CUDA kernel for dtype {dtype}; supported: {', '.join(FUSED_DTYPES)}")


def kernel_name(trace: Trace) -> str:
    """A C identifier naming the kernel of ``trace`` (``anyoptim_adam``)."""
    base = trace.name.split("(", 1)[0]
    safe = "".join(ch if ch.isalnum() else "_" for ch in base) or "rule"
    return f"anyoptim_{safe}"


def cuda_source(trace: Trace, dtype: str, *, scalars_on_device: bool = False) -> KernelSource:
    """Print a trace as a ``cupy.ElementwiseKernel`` that updates the parameter and slots in place.

    Parameters
    ----------
    trace
        From :func:`trace_program`.
    dtype : {"float32", "float64"}
        The parameter dtype; every temporary and literal is of this type ``T``.
    scalars_on_device : bool, default False
        False: each host scalar is a kernel argument ``T c{k}`` (pass NumPy
        scalars of ``dtype``).  True: the kernel reads them from a float64
        device array ``scalars`` (``c{k} = (T)scalars[k]``, loaded once before
        the loop), so a captured CUDA graph stays valid while they change.

    Notes
    -----
    Operations map to C so that the kernel matches NumPy's float semantics:
    ``maximum``/``minimum`` propagate NaN, ``sign`` returns 0 for zeros and NaN
    for NaN, ``x**2`` is ``x*x`` and ``x**0.5`` is ``sqrt(x)`` (NumPy's fast
    paths), other powers are ``pow``.  The engine compiles with
    ``--fmad=false`` so that ``a*b + c`` is rounded twice, as the generic
    engine rounds it.
    """
    if dtype not in FUSED_DTYPES:
        raise ValueError(f"no CUDA kernel for dtype {dtype}; supported: {', '.join(FUSED_DTYPES)}")
    nodes = trace.nodes
    live = trace.live_nodes()
    zero, one = c_literal(0, dtype), c_literal(1, dtype)
    scalar_names = {index: f"c{k}" for k, index in enumerate(trace.kernel_scalars)}
    slot_names = {name: _identifier("slot", name, i) for i, name in enumerate(trace.slot_names)}
    hp_names = {name: _identifier("hp", name, i) for i, name in enumerate(trace.hp_arrays)}
    names: dict[int, str] = {}

    def atom(index: int) -> str:
        node = nodes[index]
        if node.op == "const":
            return c_literal(node.value, dtype)
        if node.kind == SCALAR:
            return scalar_names[index]
        return names[index]

    def expression(node: Node) -> str:
        a = [atom(arg) for arg in node.args]
        if node.op == "param":
            return "param"
        if node.op == "grad":
            return "grad"
        if node.op == "slot":
            return slot_names[node.value]
        if node.op == "hp_array":
            return hp_names[node.value]
        if node.op in C_OPERATORS:
            return f"{a[0]} {C_OPERATORS[node.op]} {a[1]}"
        if node.op == "neg":
            return f"-{a[0]}"
        if node.op == "pow":
            exponent = nodes[node.args[1]]
            constant = float(exponent.value) if exponent.op == "const" else None
            if constant == 2.0:
                return f"{a[0]} * {a[0]}"
            if constant == 1.0:
                return a[0]
            if constant == 0.5:
                return f"sqrt({a[0]})"
            if constant == 0.0:
                return one
            if constant == -1.0:
                return f"{one} / {a[0]}"
            return f"pow({a[0]}, {a[1]})"
        if node.op == "sqrt":
            return f"sqrt({a[0]})"
        if node.op == "abs":
            return f"fabs({a[0]})"
        if node.op == "sign":
            x = a[0]
            return f"({x} > {zero}) ? {one} : (({x} < {zero}) ? -{one} : (({x} == {zero}) ? {zero} : {x}))"
        if node.op == "maximum":  # NaN-propagating, as numpy.maximum: (a >= b || isnan(a)) ? a : b
            return f"({a[0]} >= {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]}"
        if node.op == "minimum":
            return f"({a[0]} <= {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]}"
        if node.op == "where":
            return f"{a[0]} ? {a[1]} : {a[2]}"
        raise AssertionError(f"no C form for {node.op}")  # pragma: no cover

    lines = [f"// anyoptim: {trace.name}, T = {FUSED_DTYPES[dtype]}, parameter and slots updated in place"]
    for k, index in enumerate(trace.kernel_scalars):
        lines.append(f"// c{k} = {_scalar_expression(trace, index)} (computed on the host)")
    for index in live:
        node = nodes[index]
        if node.kind == SCALAR:
            continue
        names[index] = f"t{index}"
        ctype = "bool" if node.kind == BOOL else "T"
        lines.append(f"const {ctype} t{index} = {expression(node)};")
    outputs = [("param", "param", trace.param_output)]
    outputs += [
        (f"slot:{name}", slot_names[name], node)
        for name, node in zip(trace.slot_names, trace.slot_outputs, strict=True)
    ]
    for _, cname, index in outputs:
        lines.append(f"{cname} = {atom(index)};")

    inputs: list[tuple[str, Any]] = [("grad", None)]
    in_params = ["T grad"]
    for name in trace.hp_arrays:
        inputs.append(("hp_array", name))
        in_params.append(f"T {hp_names[name]}")
    loop_prep = ""
    if scalars_on_device:
        if trace.kernel_scalars:
            inputs.append(("scalar_table", None))
            in_params.append("raw float64 scalars")
            loop_prep = "\n".join(f"const T c{k} = (T)scalars[{k}];" for k in range(len(trace.kernel_scalars)))
    else:
        for k in range(len(trace.kernel_scalars)):
            inputs.append(("scalar", k))
            in_params.append(f"T c{k}")
    out_params = ["T param", *(f"T {slot_names[name]}" for name in trace.slot_names)]
    return KernelSource(
        name=kernel_name(trace),
        in_params=", ".join(in_params),
        out_params=", ".join(out_params),
        body="\n".join(lines),
        loop_prep=loop_prep,
        inputs=tuple(inputs),
        outputs=(("param", None), *(("slot", name) for name in trace.slot_names)),
        dtype=dtype,
    )


# --------------------------------------------------------------------------- interpreter


def evaluate(
    trace: Trace,
    xp: Any,
    p: Any,
    g: Any,
    slots: Mapping[str, Any],
    hp: Mapping[str, Any],
    *,
    scalars: Sequence[Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run a traced graph with Array API namespace ``xp``, as the CUDA kernel computes it.

    Host scalars come from :func:`fold_scalars` (or ``scalars``, the kernel's
    ``c{k}`` values, when given) and are rounded to the parameter's dtype, as are
    constants; operations follow :func:`cuda_source`'s choices (``x**2`` as
    ``x*x``, clip as maximum then minimum).  ``hp`` needs only the 0-D array
    entries when ``scalars`` is given.  Returns ``(new_p, new_slots)`` like a rule.
    """
    dtype = p.dtype
    host = fold_scalars(trace, hp) if scalars is None else list(scalars)
    folded = dict(zip(trace.kernel_scalars, host, strict=True))
    values: dict[int, Any] = {}

    def typed(number: Any) -> Any:
        return xp.asarray(number, dtype=dtype)

    def arg(index: int) -> Any:
        node = trace.nodes[index]
        if node.op == "const":
            return typed(node.value)
        if node.kind == SCALAR:
            return typed(folded[index])
        return values[index]

    for index in trace.live_nodes():
        node = trace.nodes[index]
        if node.kind == SCALAR:
            continue
        a = [arg(i) for i in node.args]
        op = node.op
        if op == "param":
            result = p
        elif op == "grad":
            result = g
        elif op == "slot":
            result = slots[node.value]
        elif op == "hp_array":
            result = xp.astype(hp[node.value], dtype)
        elif op in ("add", "sub", "mul", "div", "lt", "le", "gt", "ge", "eq", "ne"):
            result = getattr(operator, {"div": "truediv"}.get(op, op))(a[0], a[1])
        elif op == "neg":
            result = -a[0]
        elif op == "pow":
            exponent = trace.nodes[node.args[1]]
            constant = float(exponent.value) if exponent.op == "const" else None
            if constant == 2.0:
                result = a[0] * a[0]
            elif constant == 1.0:
                result = a[0]
            elif constant == 0.5:
                result = xp.sqrt(a[0])
            elif constant == 0.0:
                result = xp.ones_like(a[0])
            elif constant == -1.0:
                result = typed(1) / a[0]
            else:
                result = a[0] ** a[1]
        elif op in ("sqrt", "abs", "sign"):
            result = getattr(xp, op)(a[0])
        elif op in ("maximum", "minimum"):
            result = getattr(xp, op)(a[0], a[1])
        elif op == "where":
            result = xp.where(a[0], a[1], a[2])
        else:  # pragma: no cover
            raise AssertionError(op)
        values[index] = result

    def output(index: int) -> Any:
        result = arg(index)
        if tuple(result.shape) != tuple(p.shape):
            result = xp.broadcast_to(result, tuple(p.shape))
        return result

    return output(trace.param_output), {
        name: output(index) for name, index in zip(trace.slot_names, trace.slot_outputs, strict=True)
    }
