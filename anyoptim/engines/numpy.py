"""The NumPy engine: the program traced once into ufunc calls, run in place on cache-sized blocks of flat spans.

Evaluating an elementwise rule on a whole array makes a full-size temporary for
every operator and streams each one through memory.  This engine instead

1. **traces** the program once per (program, dtype, kinds of scalars): it calls
   the rule with stand-in arrays and scalars that record every operation, so
   the list of NumPy calls is derived from the one rule, never written twice;
2. **splits the recording**: operations between scalars only (``1 - beta1``)
   run once per step in plain Python, exactly as the rule would compute them;
   operations on arrays become ufunc calls with ``out=``;
3. **binds** those calls to blocks of a few thousand elements of each flat span
   (leaves that lie back to back in one buffer, see :func:`anyoptim.flatten`,
   are one span), with a handful of block-sized scratch buffers, and writes
   each result straight into the parameter or state buffer when the old value
   is no longer needed.

So a step allocates nothing parameter-sized, its temporaries stay in the CPU
cache, and a small model costs one pass of the rule, not one per leaf.  Scalars
reach the ufuncs as 0-D arrays of the dtype NumPy would have cast them to
(NEP 50), refreshed in place each step, so results are bit-identical to
evaluating the rule with ``numpy`` on the same blocks.

Parameters and state are updated in place and returned; leaves that are not
C-contiguous or not writeable get new arrays instead (the rule evaluated on the
whole leaf).  A rule that the tracer cannot follow (data-dependent control
flow, an unsupported function) is evaluated directly on each block instead.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..rules import Program
from ._spans import contiguous_runs, flat_slots

__all__ = ["DEFAULT_BLOCK_BYTES", "NumpyEngine"]

#: Bytes of one array per block (32 Ki float32 or 16 Ki float64 elements).  Measured on one
#: core of this project's CPU machines (Xeon, 2 MiB L2), Adam on 2**23 parameters: blocks of
#: 128-256 KiB per array were fastest in both dtypes, a block's p, g, slots and 3 scratch
#: buffers then still fitting L2 (benchmarks/README.md has the table).
DEFAULT_BLOCK_BYTES = 128 * 1024


# --------------------------------------------------------------------------- tracing


class _Untraceable(Exception):
    """The rule did something the tracer cannot record; the engine evaluates it directly."""


class _Value:
    """A stand-in for an array or a scalar while a program is traced; operators record nodes."""

    __slots__ = ("node", "tracer")

    def __init__(self, tracer: _Tracer, node: int):
        self.tracer = tracer
        self.node = node

    def _binary(self, name: str, other: Any, reflected: bool = False) -> _Value:
        operands = (other, self) if reflected else (self, other)
        return self.tracer.apply(name, operands)

    def __add__(self, other):
        return self._binary("add", other)

    def __radd__(self, other):
        return self._binary("add", other, True)

    def __sub__(self, other):
        return self._binary("sub", other)

    def __rsub__(self, other):
        return self._binary("sub", other, True)

    def __mul__(self, other):
        return self._binary("mul", other)

    def __rmul__(self, other):
        return self._binary("mul", other, True)

    def __truediv__(self, other):
        return self._binary("truediv", other)

    def __rtruediv__(self, other):
        return self._binary("truediv", other, True)

    def __pow__(self, other):
        return self._binary("pow", other)

    def __rpow__(self, other):
        return self._binary("pow", other, True)

    def __lt__(self, other):
        return self._binary("lt", other)

    def __le__(self, other):
        return self._binary("le", other)

    def __gt__(self, other):
        return self._binary("gt", other)

    def __ge__(self, other):
        return self._binary("ge", other)

    def __eq__(self, other):  # type: ignore[override]
        return self._binary("eq", other)

    def __ne__(self, other):  # type: ignore[override]
        return self._binary("ne", other)

    def __neg__(self):
        return self.tracer.apply("neg", (self,))

    def __pos__(self):
        return self

    def __abs__(self):
        return self.tracer.apply("abs", (self,))

    def __bool__(self):
        raise _Untraceable("the rule branches on an array value")

    __hash__ = None  # type: ignore[assignment]


# name -> (how two Python scalars combine, the NumPy function for arrays).  Scalar-only
# operations use Python's operators so that they round exactly as the rule would.
_OPERATIONS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "add": (operator.add, np.add),
    "sub": (operator.sub, np.subtract),
    "mul": (operator.mul, np.multiply),
    "truediv": (operator.truediv, np.true_divide),
    "pow": (operator.pow, np.power),
    "lt": (operator.lt, np.less),
    "le": (operator.le, np.less_equal),
    "gt": (operator.gt, np.greater),
    "ge": (operator.ge, np.greater_equal),
    "eq": (operator.eq, np.equal),
    "ne": (operator.ne, np.not_equal),
    "neg": (operator.neg, np.negative),
    "positive": (operator.pos, np.positive),
    "abs": (operator.abs, np.absolute),
    # The namespace functions a rule may call: on scalars too they are NumPy's, as in the rule run with numpy.
    "sqrt": (np.sqrt, np.sqrt),
    "sign": (np.sign, np.sign),
    "maximum": (np.maximum, np.maximum),
    "minimum": (np.minimum, np.minimum),
    "where": (np.where, np.where),
    "clip": (np.clip, np.clip),
}


class _Namespace:
    """The ``xp`` a traced rule sees: exactly the functions that rules.py allows."""

    def __init__(self, tracer: _Tracer):
        self._tracer = tracer

    def sqrt(self, x):
        return self._tracer.apply("sqrt", (x,))

    def abs(self, x):
        return self._tracer.apply("abs", (x,))

    def sign(self, x):
        return self._tracer.apply("sign", (x,))

    def maximum(self, x, y):
        return self._tracer.apply("maximum", (x, y))

    def minimum(self, x, y):
        return self._tracer.apply("minimum", (x, y))

    def where(self, condition, x, y):
        return self._tracer.apply("where", (condition, x, y))

    def clip(self, x, min=None, max=None):  # the Array API's argument names
        if min is None or max is None:
            raise _Untraceable("clip with a missing bound")
        return self._tracer.apply("clip", (x, min, max))


class _Scalars(Mapping):
    """The ``hp`` a traced rule sees: each value read becomes a scalar input node."""

    def __init__(self, tracer: _Tracer, values: Mapping[str, Any]):
        self._tracer = tracer
        self._values = values
        self._nodes: dict[str, _Value] = {}

    def __getitem__(self, key: str) -> _Value:
        if key not in self._nodes:
            self._nodes[key] = self._tracer.scalar_input(key, self._values[key])
        return self._nodes[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class _Tracer:
    """Records a program as nodes: array inputs, scalar inputs and constants, and operations.

    Every node carries a *sample*: for an array a 1-element NumPy array of its
    dtype, for a scalar its value at trace time.  Computing each operation on the
    samples with NumPy itself gives every node the dtype NumPy would give it.
    """

    def __init__(self):
        self.samples: list[Any] = []
        self.is_array: list[bool] = []
        self.inputs: list[tuple[int, int]] = []  # (node, role): role 0 is p, 1 is g, 2.. the slots
        self.hp_inputs: list[tuple[int, str]] = []
        self.constants: list[tuple[int, Any]] = []
        self.operations: list[tuple[int, str, tuple[int, ...]]] = []  # (node, name, operand nodes)

    def _node(self, sample: Any, is_array: bool) -> _Value:
        self.samples.append(sample)
        self.is_array.append(is_array)
        return _Value(self, len(self.samples) - 1)

    def array_input(self, role: int, dtype: np.dtype) -> _Value:
        value = self._node(np.ones(1, dtype=dtype), True)
        self.inputs.append((value.node, role))
        return value

    def scalar_input(self, key: str, sample: Any) -> _Value:
        value = self._node(sample, False)
        self.hp_inputs.append((value.node, key))
        return value

    def _operand(self, operand: Any) -> int:
        if isinstance(operand, _Value):
            if operand.tracer is not self:
                raise _Untraceable("a value from another trace")
            return operand.node
        if isinstance(operand, (bool, int, float)):
            value = self._node(operand, False)
            self.constants.append((value.node, operand))
            return value.node
        raise _Untraceable(f"an operand of type {type(operand).__name__}")

    def apply(self, name: str, operands: tuple[Any, ...]) -> _Value:
        nodes = tuple(self._operand(operand) for operand in operands)
        scalar_function, array_function = _OPERATIONS[name]
        samples = [self.samples[node] for node in nodes]
        is_array = any(self.is_array[node] for node in nodes)
        with np.errstate(all="ignore"):
            sample = array_function(*samples) if is_array else scalar_function(*samples)
        if is_array and not (isinstance(sample, np.ndarray) and sample.shape == (1,)):
            raise _Untraceable(f"{name} did not give an array")
        value = self._node(sample, is_array)
        self.operations.append((value.node, name, nodes))
        return value


def _trace(program: Program, dtype: np.dtype, slot_names: Sequence[str], hp: Mapping[str, Any]) -> _Plan:
    """Record ``program`` on stand-ins of ``dtype`` (and ``hp``'s kinds of scalars) and plan its calls."""
    tracer = _Tracer()
    p = tracer.array_input(0, dtype)
    g = tracer.array_input(1, dtype)
    slots = {name: tracer.array_input(2 + index, dtype) for index, name in enumerate(slot_names)}
    new_p, new_slots = program(_Namespace(tracer), p, g, slots, _Scalars(tracer, hp))
    if set(new_slots) != set(slot_names):
        raise _Untraceable("the rule returned other slots than it was given")
    results = [new_p, *(new_slots[name] for name in slot_names)]
    roles = [0, *range(2, 2 + len(slot_names))]
    inputs = dict(tracer.inputs)
    outputs = []
    for role, result in zip(roles, results, strict=True):
        node = tracer._operand(result)
        if inputs.get(node, role) != role:
            # Another input returned as is (a swap, g kept as a slot): copy it by an operation of its own,
            # so that where it lands is decided like any other result's.
            node = tracer.apply("positive", (result,)).node
        outputs.append((role, node))
    return _Plan(tracer, outputs)


# --------------------------------------------------------------------------- the compiled plan


def _where(condition: np.ndarray, x: Any, y: Any, out: np.ndarray) -> None:
    np.copyto(out, y)
    np.copyto(out, x, where=condition)


# NumPy 2.4 deprecates a positional ``out`` for these two; every other ufunc takes it positionally (faster).
def _maximum(x: Any, y: Any, out: np.ndarray) -> None:
    np.maximum(x, y, out=out)


def _minimum(x: Any, y: Any, out: np.ndarray) -> None:
    np.minimum(x, y, out=out)


_CALLS = {"where": _where, "maximum": _maximum, "minimum": _minimum}


class _Plan:
    """A traced program, split into per-step scalar work and per-block array calls.

    ``scalar_steps`` compute the scalar nodes from ``hp`` once per step.  Each
    array operation reads operands (array nodes, or scalar nodes through 0-D
    arrays of the dtype NumPy casts them to) and writes one output buffer: a
    block of the parameter or a state slot where that is safe, else a scratch
    buffer.  Scratch buffers are reused once their value is dead.
    """

    def __init__(self, tracer: _Tracer, outputs: list[tuple[int, int]]):
        self.samples = tracer.samples
        self.is_array = tracer.is_array
        self.inputs = dict(tracer.inputs)  # node -> role
        self.dtype = tracer.samples[0].dtype
        self.slot_roles = [role for _, role in tracer.inputs if role >= 2]
        self.outputs = outputs  # (role, node)
        self.hp_inputs = tracer.hp_inputs
        self.constants = tracer.constants
        self.scalar_steps = [
            (node, _OPERATIONS[name][0], operands)
            for node, name, operands in tracer.operations
            if not tracer.is_array[node]
        ]
        self.array_steps = [step for step in tracer.operations if tracer.is_array[step[0]]]
        self._operand_dtypes()
        self._allocate()
        self._source()

    def _operand_dtypes(self) -> None:
        """For each scalar operand of an array operation, the dtype NumPy casts it to there."""
        self.scalar_uses: list[tuple[int, np.dtype]] = []
        self.common_dtypes: list[np.dtype] = []
        for _, _, operands in self.array_steps:
            common = np.result_type(*[self.samples[node] for node in operands])
            self.common_dtypes.append(common)
            for node in operands:
                if not self.is_array[node] and (node, common) not in self.scalar_uses:
                    self.scalar_uses.append((node, common))
        for _, node in self.outputs:
            if not self.is_array[node] and (node, self.dtype) not in self.scalar_uses:
                self.scalar_uses.append((node, self.dtype))

    def _allocate(self) -> None:
        """Choose where every array operation writes: a destination block or a scratch buffer."""
        last_read: dict[int, int] = {}
        for position, (_, _, operands) in enumerate(self.array_steps):
            for node in operands:
                last_read[node] = position
        role_input = {role: node for node, role in self.inputs.items()}
        produced_at = {node: position for position, (node, _, _) in enumerate(self.array_steps)}
        # Outputs written straight into their destination, and the copies left for the end.
        self.direct: dict[int, int] = {}  # node -> role
        self.final_copies: list[tuple[int, int]] = []  # (role, node)
        copies_needed = []
        for role, node in self.outputs:
            if role_input.get(role) == node:
                continue  # unchanged: the destination already holds it
            copies_needed.append((role, node))
        for role, node in copies_needed:
            # A result goes straight into its destination when the destination's old value is not read
            # after the operation that makes it (reading it in that very operation is fine: elementwise).
            position = produced_at.get(node)
            old_value = role_input[role]
            safe = (
                position is not None
                and node not in self.direct
                and self.samples[node].dtype == self.samples[old_value].dtype
                and self.array_steps[position][1] != "where"
                and last_read.get(old_value, -1) <= position
            )
            if safe:
                self.direct[node] = role
            else:
                self.final_copies.append((role, node))
        kept = {node for _, node in self.final_copies}
        # Linear scan: a scratch buffer is free again after the last read of its value.
        self.scratch_dtypes: list[np.dtype] = []
        self.location: dict[int, int] = {}  # node -> scratch index
        free: dict[np.dtype, list[int]] = {}
        releases: dict[int, list[int]] = {}
        for position, (node, _, _) in enumerate(self.array_steps):
            if node not in self.direct:
                dtype = self.samples[node].dtype
                pool = free.setdefault(dtype, [])
                if pool:
                    index = pool.pop()
                else:
                    index = len(self.scratch_dtypes)
                    self.scratch_dtypes.append(dtype)
                self.location[node] = index
                if node not in kept:
                    releases.setdefault(last_read.get(node, position), []).append(node)
            for dead in releases.pop(position, []):
                free[self.samples[dead].dtype].append(self.location[dead])

    def _source(self) -> None:
        """Write the plan as the Python source of one function, ``run(hp, blocks)``, and compile it.

        The function first computes this step's scalars from ``hp`` (Python
        arithmetic, as the rule would) and stores them in the 0-D arrays
        ``s0, s1, ...``; then, for each block, calls the ufuncs ``k0, k1, ...``
        on registers ``r0, r1, ...`` (the block's p, g and slots, then the
        scratch buffers).  It is generated from the trace, never written by
        hand: a call per recorded operation, in the recorded order.  Local
        names make each call as cheap as Python allows, which is what a small
        model's step costs.
        """
        roles = 2 + len(self.slot_roles)
        register = {node: f"r{role}" for node, role in self.inputs.items()}
        register.update({node: f"r{roles + index}" for node, index in self.location.items()})
        register.update({node: f"r{role}" for node, role in self.direct.items()})
        scalar_name = {use: f"s{index}" for index, use in enumerate(self.scalar_uses)}
        self.functions: dict[str, Callable[..., Any]] = {}
        lines = ["def run(hp, blocks):"]
        lines += [f"    v{node} = hp[{key!r}]" for node, key in self.hp_inputs]
        lines += [f"    v{node} = c{node}" for node, _ in self.constants]
        for node, function, operands in self.scalar_steps:
            self.functions[f"f{node}"] = function
            lines.append(f"    v{node} = f{node}({', '.join(f'v{operand}' for operand in operands)})")
        constant = dict(self.constants)
        for use, name in scalar_name.items():
            if use[0] not in constant:  # constants are stored once, when the arrays are made
                lines.append(f"    {name}[()] = v{use[0]}")
        self.registers = roles + len(self.scratch_dtypes)
        lines.append(f"    for {', '.join(f'r{index}' for index in range(self.registers))} in blocks:")
        for position, ((node, name, operands), common) in enumerate(
            zip(self.array_steps, self.common_dtypes, strict=True)
        ):
            self.functions[f"k{position}"] = _CALLS.get(name, _OPERATIONS[name][1])
            arguments = [register[op] if self.is_array[op] else scalar_name[(op, common)] for op in operands]
            lines.append(f"        k{position}({', '.join([*arguments, register[node]])})")
        self.functions["copyto"] = np.copyto
        for role, node in self.final_copies:
            source = register[node] if self.is_array[node] else scalar_name[(node, self.dtype)]
            lines.append(f"        copyto(r{role}, {source})")
        if not self.array_steps and not self.final_copies:
            lines.append("        pass")
        self.source = "\n".join(lines) + "\n"
        self.code = compile(self.source, "<anyoptim.engines.numpy traced program>", "exec")

    def compile(self) -> tuple[Callable[[Mapping[str, Any], list[tuple]], None], list[np.ndarray]]:
        """A fresh ``run(hp, blocks)`` with its own 0-D scalar arrays (constants filled in), and those arrays."""
        namespace: dict[str, Any] = dict(self.functions)
        namespace.update({f"c{node}": value for node, value in self.constants})
        arrays = []
        constant = dict(self.constants)
        for index, (node, dtype) in enumerate(self.scalar_uses):
            array = np.empty((), dtype=dtype)
            if node in constant:
                array[()] = constant[node]
            namespace[f"s{index}"] = array
            arrays.append(array)
        exec(self.code, namespace)  # the generated source of _source(), from the trace alone
        return namespace["run"], arrays

    def blocks(self, columns: Sequence[np.ndarray], scratch: Sequence[np.ndarray], block_size: int) -> list[tuple]:
        """The registers of every block of one span: its slices of p, g and the slots, then the scratch."""
        size = columns[0].shape[0]
        found = []
        for start in range(0, size, block_size):
            stop = min(start + block_size, size)
            length = stop - start
            found.append((*(column[start:stop] for column in columns), *(buffer[:length] for buffer in scratch)))
        return found


# --------------------------------------------------------------------------- running plans on spans


class _TracedSpans:
    """A compiled plan over the blocks of some spans.

    Consecutive spans that share one scalars mapping form one segment: its
    scalars are computed once and its blocks run in one call.
    """

    def __init__(self, plan: _Plan, spans: list[list[np.ndarray]], leaves: list[int], hps: list[Any], block_size: int):
        self.run_blocks, _ = plan.compile()
        longest = max(columns[0].shape[0] for columns in spans)
        scratch = [np.empty(min(block_size, longest), dtype=dtype) for dtype in plan.scratch_dtypes]
        self.segments: list[tuple[int, list[tuple]]] = []
        for index, columns in enumerate(spans):
            if index == 0 or hps[index] is not hps[index - 1]:
                self.segments.append((leaves[index], []))
            self.segments[-1][1].extend(plan.blocks(columns, scratch, block_size))
        if len(self.segments) == 1:  # the usual case, a flat model: one call less per step
            run_blocks, (leaf, blocks) = self.run_blocks, self.segments[0]

            def run_one(hps: Sequence[Mapping[str, Any]]) -> None:
                run_blocks(hps[leaf], blocks)

            self.run = run_one

    def run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run every span with the scalars of its leaves in ``hps`` (one mapping per leaf)."""
        for leaf, blocks in self.segments:
            self.run_blocks(hps[leaf], blocks)


class _DirectSpans:
    """The program evaluated as written on each block, results copied back (for rules the tracer cannot follow)."""

    def __init__(
        self,
        program: Program,
        slot_names: Sequence[str],
        spans: list[list[np.ndarray]],
        leaves: list[int],
        block_size: int,
    ):
        self.program = program
        self.slot_names = slot_names
        self.spans = spans
        self.leaves = leaves
        self.block_size = block_size

    def run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run every span with the scalars of its leaves in ``hps`` (one mapping per leaf)."""
        for columns, leaf in zip(self.spans, self.leaves, strict=True):
            hp = hps[leaf]
            p, g, *slots = columns
            for start in range(0, p.shape[0], self.block_size):
                block = slice(start, start + self.block_size)
                new_p, new_slots = self.program(
                    np, p[block], g[block], {name: s[block] for name, s in zip(self.slot_names, slots, strict=True)}, hp
                )
                p[block] = new_p
                for name, s in zip(self.slot_names, slots, strict=True):
                    s[block] = new_slots[name]


# --------------------------------------------------------------------------- layout helpers


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _owner(array: np.ndarray) -> np.ndarray | None:
    base = array.base
    if isinstance(base, np.ndarray) and base.flags.c_contiguous:
        return base
    return None


def _span(leaves: Sequence[np.ndarray]) -> np.ndarray:
    """One writeable 1-D view over leaves that lie back to back (as checked by contiguous_runs)."""
    first = leaves[0]
    if len(leaves) == 1:
        return first.reshape(-1)
    owner = _owner(first)
    offset = (_address(first) - _address(owner)) // first.itemsize
    total = sum(leaf.size for leaf in leaves)
    return owner.reshape(-1)[offset : offset + total]


def _writable_contiguous(array: Any) -> bool:
    return isinstance(array, np.ndarray) and array.flags.c_contiguous and array.flags.writeable


def _scalar_kind(value: Any) -> Any:
    """What decides how a scalar promotes: its Python type, or its NumPy dtype."""
    dtype = getattr(value, "dtype", None)
    return type(value) if dtype is None else (type(value), dtype)


class _Step:
    """One prepared step over fixed arrays: the in-place spans plus the leaves updated out of place."""

    def __init__(self, engine: NumpyEngine, program: Program, params, grads, slots, hps):
        self.program = program
        self.slot_names = list(slots)
        self.params = list(params)
        self.grads = list(grads)
        self.slots = {name: list(values) for name, values in slots.items()}
        columns = [self.params, self.grads, *self.slots.values()]
        count = len(self.params)
        self.in_place_leaves = [
            i
            for i in range(count)
            if all(_writable_contiguous(column[i]) for column in (self.params, *self.slots.values()))
            and isinstance(self.grads[i], np.ndarray)
            and self.grads[i].flags.c_contiguous
        ]
        chosen = set(self.in_place_leaves)
        #: Whether every leaf is updated in place (the returned arrays are the ones given).
        self.out_of_place = [i for i in range(count) if i not in chosen]
        self.in_place = not self.out_of_place
        runs = contiguous_runs(
            [[column[i] for i in self.in_place_leaves] for column in columns],
            [hps[i] for i in self.in_place_leaves],
            address=_address,
            owner=_owner,
        )
        groups: dict[Any, list[tuple[list[np.ndarray], int]]] = {}
        for start, stop in runs:
            indices = self.in_place_leaves[start:stop]
            span_columns = [_span([column[i] for i in indices]) for column in columns]
            hp = hps[indices[0]]
            key = (span_columns[0].dtype, tuple(sorted((k, _scalar_kind(v)) for k, v in hp.items())))
            groups.setdefault(key, []).append((span_columns, indices[0]))
        # One plan and one set of scratch buffers per dtype and kind of scalars.
        self.runners: list[Any] = []
        for (dtype, kinds), spans in groups.items():
            span_columns = [columns for columns, _ in spans]
            firsts = [first for _, first in spans]
            plan = engine.plan(program, dtype, self.slot_names, hps[firsts[0]], kinds)
            if plan is None:
                self.runners.append(
                    _DirectSpans(program, self.slot_names, span_columns, firsts, engine.elements_per_block(dtype))
                )
            else:
                self.runners.append(
                    _TracedSpans(plan, span_columns, firsts, [hps[i] for i in firsts], engine.elements_per_block(dtype))
                )

        if len(self.runners) == 1:
            self.update = self.runners[0].run  # one call less per step

    def update(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run the step in place (only when :attr:`in_place`): ``hps`` as for :meth:`__call__`."""
        for runner in self.runners:
            runner.run(hps)

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run the step with this step's scalars ``hps`` (one mapping per leaf, grouped as when prepared).

        Returns the new parameters and slots, leaf by leaf: the very arrays
        given for leaves updated in place, new arrays for the others.
        """
        new_params = list(self.params)
        new_slots = {name: list(values) for name, values in self.slots.items()}
        for i in self.out_of_place:
            leaf_slots = {name: values[i] for name, values in self.slots.items()}
            new_p, updated = self.program(np, np.asarray(self.params[i]), np.asarray(self.grads[i]), leaf_slots, hps[i])
            # NumPy arithmetic on 0-D arrays gives scalars: keep every leaf an array.
            new_params[i] = np.asarray(new_p)
            for name in self.slot_names:
                new_slots[name][i] = np.asarray(updated[name])
        self.update(hps)
        return new_params, new_slots


class NumpyEngine:
    """Blocked, in-place evaluation of a program on NumPy arrays.

    Parameters
    ----------
    block_size : int, optional
        Elements per block.  By default :data:`DEFAULT_BLOCK_BYTES` worth of
        the arrays' dtype: small enough that a block's operands and scratch
        stay in the CPU cache, large enough that NumPy's per-call cost is
        small beside the work.
    """

    name = "numpy"

    def __init__(self, block_size: int | None = None):
        if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.block_size = block_size
        self._plans: dict[tuple, _Plan | None] = {}

    def elements_per_block(self, dtype: np.dtype) -> int:
        """How many elements of ``dtype`` one block holds."""
        if self.block_size is not None:
            return self.block_size
        return max(1, DEFAULT_BLOCK_BYTES // np.dtype(dtype).itemsize)

    def init_slots(self, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
        """State slots as views of one flat buffer per slot and dtype, laid out like ``leaves``."""
        return flat_slots(xp, leaves, fills)

    def plan(
        self, program: Program, dtype: np.dtype, slot_names: Sequence[str], hp: Mapping[str, Any], kinds: tuple
    ) -> _Plan | None:
        """The traced plan of ``program`` for arrays of ``dtype`` (None if the rule cannot be traced); cached."""
        key = (program, np.dtype(dtype), tuple(slot_names), kinds)
        if key not in self._plans:
            try:
                self._plans[key] = _trace(program, np.dtype(dtype), slot_names, hp)
            except Exception:  # any failure to trace means: evaluate the rule as written
                self._plans[key] = None
        return self._plans[key]

    def prepare(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> _Step:
        """Bind ``program`` to these very arrays; the result, called with each step's ``hps``, runs a step.

        The arrays must stay the same objects with the same layout between calls
        (the optimizer checks this before reusing a prepared step).  ``hps`` must
        be grouped as here: leaves sharing one mapping now share one later.
        """
        return _Step(self, program, params, grads, slots, hps)

    def apply(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run ``program`` over every leaf, in place where the arrays allow it."""
        return self.prepare(program, xp, params, grads, slots, hps)(hps)
