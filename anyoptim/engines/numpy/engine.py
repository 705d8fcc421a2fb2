"""The NumPy engine: a program's trace run as ufunc calls, in place, on cache-sized blocks of flat spans.

Evaluating an elementwise rule on a whole array makes a full-size temporary for
every operator and streams each one through memory.  This engine instead

1. **traces** the program once per (program, dtype, kinds of scalars) with the
   tracer the CuPy engine prints its kernels from
   (:func:`anyoptim.engines._trace.trace_program`), so the list of NumPy calls
   comes from the one rule through the one expression graph, never written twice;
2. **splits the graph**: its scalar part (``1 - beta1``) runs once per step on
   the host, in plain Python, exactly as the rule computes it
   (:func:`~anyoptim.engines._trace.scalar_statements`); every array operation
   becomes a ufunc call with ``out=``, each node given the dtype NumPy itself
   gives it (found by running the graph once on 1-element samples);
3. **binds** those calls to blocks of a few thousand elements of each flat span
   (leaves that lie back to back in one buffer, see :func:`anyoptim.flatten`,
   are one span), with a handful of block-sized scratch buffers, and writes
   each result straight into the parameter or state buffer when the old value
   is no longer needed.

So a step allocates nothing parameter-sized, its temporaries stay in the CPU
cache, and a small model costs one pass of the rule, not one per leaf.

Where a C compiler is found, the same plan is also printed as one C loop over
every span (:mod:`anyoptim.engines._compiled`, built and cached by
:mod:`anyoptim.engines._native`) and that runs instead: one pass over memory
and one call per step, with the same bits.  ``kernels=`` (or
``ANYOPTIM_NUMPY_KERNELS``) chooses; the ufunc calls remain for machines
without a compiler, for plans with no C form and for arrays a kernel must not
touch through raw addresses.  Scalars
(and 0-D array hyperparameters) reach the ufuncs as 0-D arrays of the dtype
NumPy would have cast them to (NEP 50), refreshed in place each step, so results
are bit-identical to evaluating the rule with ``numpy`` on the same blocks.

Parameters and state are updated in place and returned; leaves that are not
C-contiguous or not writeable get new arrays instead (the rule evaluated on the
whole leaf).  A rule that the tracer cannot follow (data-dependent control
flow, a function outside the rule contract) is evaluated directly on each
block instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..fused import FusedEngine
from ..program import Program
from ..spans import contiguous_runs
from ..trace import SCALAR, Trace, fold_scalars, hp_signature, kernel_name, scalar_statements, trace_program
from . import native as _native
from .compiled import CompiledSpans, c_source, spans_fit_a_kernel

__all__ = ["DEFAULT_BLOCK_BYTES", "NumpyEngine"]

#: Bytes of one array per block (32 Ki float32 or 16 Ki float64 elements).  Measured on one
#: core of this project's CPU machines (Xeon, 2 MiB L2), Adam on 2**23 parameters: blocks of
#: 128-256 KiB per array were fastest in both dtypes, a block's p, g, slots and 3 scratch
#: buffers then still fitting L2 (benchmarks/README.md has the table).
DEFAULT_BLOCK_BYTES = 128 * 1024


# --------------------------------------------------------------------------- a trace as ufunc calls


def _where(condition: np.ndarray, x: Any, y: Any, out: np.ndarray) -> None:
    np.copyto(out, y)
    np.copyto(out, x, where=condition)


# NumPy 2.4 deprecates a positional ``out`` for these two; every other ufunc takes it positionally (faster).
def _maximum(x: Any, y: Any, out: np.ndarray) -> None:
    np.maximum(x, y, out=out)


def _minimum(x: Any, y: Any, out: np.ndarray) -> None:
    np.minimum(x, y, out=out)


#: The NumPy function of each array operation of a trace (see :class:`~anyoptim.engines._trace.Node`),
#: plus ``"copy"``, which the plan adds for a result that is another input (a swapped slot, ``g`` kept).
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "pow": np.power,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "eq": np.equal,
    "ne": np.not_equal,
    "neg": np.negative,
    "abs": np.absolute,
    "sqrt": np.sqrt,
    "sign": np.sign,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "where": np.where,
    "copy": np.positive,
}

#: Each operation called with its output buffer last.
_CALLS: dict[str, Callable[..., Any]] = {**_FUNCTIONS, "where": _where, "maximum": _maximum, "minimum": _minimum}


def _input_roles(trace: Trace) -> dict[int, int]:
    """Node -> column of the span it reads: 0 the parameter, 1 the gradient, 2.. the slots in order."""
    slot_role = {name: 2 + index for index, name in enumerate(trace.slot_names)}
    roles = {}
    for index, node in enumerate(trace.nodes):
        if node.op == "param":
            roles[index] = 0
        elif node.op == "grad":
            roles[index] = 1
        elif node.op == "slot":
            roles[index] = slot_role[node.value]
    return roles


def _sample(op: str, operands: Sequence[Any]) -> np.ndarray:
    """``op`` run by NumPy on samples of its operands: the result has the dtype NumPy gives the operation."""
    with np.errstate(all="ignore"):
        return np.asarray(_FUNCTIONS[op](*operands))


class _Plan:
    """A trace, split into per-step host work and per-block ufunc calls.

    The values of the graph fall in two groups.  *Block values* are the
    parameter, gradient and slot blocks (registers ``r0, r1, r2, ...``) and
    every array or boolean operation, written into a destination block where
    that is safe, else into a scratch buffer reused once its value is dead.
    *Broadcast values* are the host scalars (computed each step by the trace's
    :func:`~anyoptim.engines._trace.scalar_statements`), the constants, and the
    hyperparameters that are 0-D arrays: an operation reads each through a 0-D
    array of the dtype NumPy casts it to in that operation.

    Parameters
    ----------
    trace
        From :func:`~anyoptim.engines._trace.trace_program`.
    dtype
        The dtype of the span's columns.
    hp
        Scalars of the kinds the plan is for: their types (Python number, NumPy
        scalar, 0-D array and its dtype) decide every node's dtype, as in NumPy.

    Raises
    ------
    ArithmeticError
        If ``hp``'s host scalars cannot be computed (as the rule would raise).
    """

    def __init__(self, trace: Trace, dtype: np.dtype, hp: Mapping[str, Any]):
        self.trace = trace
        self.dtype = np.dtype(dtype)
        self.roles = _input_roles(trace)  # node -> column
        self._steps_and_samples(hp)
        self._operand_dtypes()
        self._allocate()
        self._source()
        #: The C kernel's host function, compiled once (:func:`anyoptim.engines._compiled.host_code`).
        self.host_code: tuple[Any, dict[str, Any]] | None = None

    def _steps_and_samples(self, hp: Mapping[str, Any]) -> None:
        """The ufunc calls in graph order, and a sample of every value they read or write.

        A block value's sample is a 1-element array of its dtype; a broadcast
        value's is its value now (a Python number, a NumPy scalar, a 0-D array).
        """
        trace = self.trace
        host = dict(zip(trace.kernel_scalars, fold_scalars(trace, hp), strict=True))
        samples: dict[int, Any] = {}
        self.steps: list[tuple[int, str, tuple[int, ...]]] = []  # (node, operation, operand nodes)
        for index in trace.live_nodes():
            node = trace.nodes[index]
            if index in self.roles:
                samples[index] = np.ones(1, dtype=self.dtype)
            elif node.op == "hp_array":
                samples[index] = hp[node.value]
            elif node.op == "const":
                samples[index] = node.value
            elif node.kind == SCALAR:
                if index in host:  # scalars that only feed other scalars are needed on the host alone
                    samples[index] = host[index]
            else:
                samples[index] = _sample(node.op, [samples[arg] for arg in node.args])
                self.steps.append((index, node.op, node.args))
        # Where each result goes: (column, node).  A result that is another input (a swap, g kept as a
        # slot) is copied by an operation of its own, so that where it lands is decided like any other's.
        self.outputs: list[tuple[int, int]] = []
        results = [trace.param_output, *trace.slot_outputs]
        for role, index in zip((0, *range(2, 2 + len(trace.slot_names))), results, strict=True):
            if self.roles.get(index, role) != role:
                copy = len(trace.nodes) + len(self.outputs)  # a node number the graph does not use
                samples[copy] = _sample("copy", [samples[index]])
                self.steps.append((copy, "copy", (index,)))
                index = copy
            self.outputs.append((role, index))
        self.samples = samples
        self.block_values = set(self.roles) | {node for node, _, _ in self.steps}

    def _operand_dtypes(self) -> None:
        """For each broadcast operand of a ufunc call, the dtype NumPy casts it to there."""
        self.broadcast_uses: list[tuple[int, np.dtype]] = []
        self.common_dtypes: list[np.dtype] = []
        for _, _, operands in self.steps:
            common = np.result_type(*[self.samples[node] for node in operands])
            self.common_dtypes.append(common)
            for node in operands:
                if node not in self.block_values and (node, common) not in self.broadcast_uses:
                    self.broadcast_uses.append((node, common))
        for _, node in self.outputs:
            if node not in self.block_values and (node, self.dtype) not in self.broadcast_uses:
                self.broadcast_uses.append((node, self.dtype))

    def _allocate(self) -> None:
        """Choose where every ufunc call writes: a destination block or a scratch buffer."""
        last_read: dict[int, int] = {}
        for position, (_, _, operands) in enumerate(self.steps):
            for node in operands:
                last_read[node] = position
        role_input = {role: node for node, role in self.roles.items()}
        produced_at = {node: position for position, (node, _, _) in enumerate(self.steps)}
        # Outputs written straight into their destination, and the copies left for the end.
        self.direct: dict[int, int] = {}  # node -> role
        self.final_copies: list[tuple[int, int]] = []  # (role, node)
        for role, node in self.outputs:
            if role_input.get(role) == node:
                continue  # unchanged: the destination already holds it
            # A result goes straight into its destination when the destination's old value is not read
            # after the operation that makes it (reading it in that very operation is fine: elementwise).
            position = produced_at.get(node)
            old_value = role_input[role]
            safe = (
                position is not None
                and node not in self.direct
                and self.samples[node].dtype == self.dtype
                and self.steps[position][1] != "where"  # it writes its output in two passes
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
        for position, (node, _, _) in enumerate(self.steps):
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

        The function first computes this step's host scalars ``v{node}`` with
        the trace's own statements (Python arithmetic, as the rule would) and
        stores them and the 0-D array hyperparameters in the 0-D arrays ``s0,
        s1, ...``; then, for each block, calls the ufuncs ``k0, k1, ...`` on
        registers ``r0, r1, ...`` (the block's p, g and slots, then the scratch
        buffers).  It is generated from the trace, never written by hand: a
        call per array node, in the graph's order.  Local names make each call
        as cheap as Python allows, which is what a small model's step costs.
        """
        trace = self.trace
        columns = 2 + len(trace.slot_names)
        register = {node: f"r{role}" for node, role in self.roles.items()}
        register.update({node: f"r{columns + index}" for node, index in self.location.items()})
        register.update({node: f"r{role}" for node, role in self.direct.items()})
        holder = {use: f"s{index}" for index, use in enumerate(self.broadcast_uses)}
        host, names = self.host_lines(lambda position: f"s{position}[()]")
        self.functions: dict[str, Any] = {**names, "copyto": np.copyto}
        lines = ["def run(hp, blocks):", *(f"    {line}" for line in host)]
        self.registers = columns + len(self.scratch_dtypes)
        lines.append(f"    for {', '.join(f'r{index}' for index in range(self.registers))} in blocks:")
        for position, ((node, op, operands), common) in enumerate(zip(self.steps, self.common_dtypes, strict=True)):
            self.functions[f"k{position}"] = _CALLS[op]
            arguments = [register[x] if x in self.block_values else holder[(x, common)] for x in operands]
            lines.append(f"        k{position}({', '.join([*arguments, register[node]])})")
        for role, node in self.final_copies:
            source = register[node] if node in self.block_values else holder[(node, self.dtype)]
            lines.append(f"        copyto(r{role}, {source})")
        if not self.steps and not self.final_copies:
            lines.append("        pass")
        self.source = "\n".join(lines) + "\n"
        self.code = compile(self.source, f"<anyoptim.engines.numpy: {trace.name}>", "exec")

    def host_lines(self, destination: Callable[[int], str]) -> tuple[list[str], dict[str, Any]]:
        """Python lines that compute this step's host scalars from ``hp`` and store each broadcast value.

        The trace's own statements (``v{node} = ...``, Python arithmetic as in the
        rule), then one store per broadcast use, at ``destination(position)``
        (its position in :attr:`broadcast_uses`): a host scalar or a 0-D array
        hyperparameter; constants are stored once, by whoever makes the storage.
        Returns the lines and the names they read (hyperparameter names enter as
        values, never as source text).
        """
        trace = self.trace
        statements, names = scalar_statements(trace)
        lines = list(statements)
        for position, (node, _) in enumerate(self.broadcast_uses):
            op = trace.nodes[node].op
            if op == "hp_array":
                lines.append(f"{destination(position)} = hp[H[{trace.hp_arrays.index(trace.nodes[node].value)}]]")
            elif op != "const":
                lines.append(f"{destination(position)} = v{node}")
        return lines, {**names, "H": trace.hp_arrays}

    def compile(self) -> tuple[Callable[[Mapping[str, Any], list[tuple]], None], list[np.ndarray]]:
        """A fresh ``run(hp, blocks)`` with its own 0-D arrays (constants filled in), and those arrays."""
        namespace: dict[str, Any] = dict(self.functions)
        arrays = []
        for index, (node, dtype) in enumerate(self.broadcast_uses):
            array = np.empty((), dtype=dtype)
            if self.trace.nodes[node].op == "const":
                array[()] = self.trace.nodes[node].value
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
    # Spans are cut from the owner in the owner's dtype: a float32 view of a float64 (or uint8) arena
    # must not be joined, or offsets would count the wrong elements.
    if isinstance(base, np.ndarray) and base.flags.c_contiguous and base.dtype == array.dtype:
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
            kernel = None if plan is None or not spans_fit_a_kernel(span_columns, dtype) else engine.kernel(plan)
            if plan is None:
                self.runners.append(
                    _DirectSpans(program, self.slot_names, span_columns, firsts, engine.elements_per_block(dtype))
                )
            elif kernel is not None:
                self.runners.append(CompiledSpans(plan, kernel, span_columns, firsts, [hps[i] for i in firsts]))
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


class NumpyEngine(FusedEngine):
    """In-place evaluation of a program on NumPy arrays: one compiled C loop, or ufuncs on blocks.

    Parameters
    ----------
    block_size : int, optional
        Elements per block of the ufunc plan.  By default
        :data:`DEFAULT_BLOCK_BYTES` worth of the arrays' dtype: small enough that
        a block's operands and scratch stay in the CPU cache, large enough that
        NumPy's per-call cost is small beside the work.
    kernels : {"auto", "c", "ufunc"}, optional
        How a traced plan runs: ``"c"``, the plan printed as one C loop and
        compiled with the system's C compiler (:mod:`anyoptim.engines._compiled`),
        cached on disk; ``"ufunc"``, NumPy ufunc calls on blocks; ``"auto"``,
        C when a working compiler is found, else ufuncs.  Default from
        ``ANYOPTIM_NUMPY_KERNELS``, else ``"auto"``.  Both give the same bits.

    Raises
    ------
    KernelBuildError
        If ``kernels="c"`` and no C compiler is found.
    """

    name = "numpy"

    def __init__(self, block_size: int | None = None, kernels: str | None = None):
        if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        kernels = _native.kernels_choice() if kernels is None else kernels
        if kernels not in _native.KERNEL_CHOICES:
            raise ValueError(f"kernels must be one of {', '.join(_native.KERNEL_CHOICES)}, got {kernels!r}")
        if kernels == "c":
            _native.compiler()  # raises now, not in the middle of a step
        elif kernels == "auto" and not _native.compiler_found():
            kernels = "ufunc"
        #: "c" or "ufunc" once resolved ("auto" stays "auto" until a kernel fails to build).
        self.kernels = kernels
        self.block_size = block_size
        self._plans: dict[tuple, _Plan | None] = {}
        self._kernels: dict[int, Callable[[int], None] | None] = {}  # id(plan) -> its C function

    def elements_per_block(self, dtype: np.dtype) -> int:
        """How many elements of ``dtype`` one block holds."""
        if self.block_size is not None:
            return self.block_size
        return max(1, DEFAULT_BLOCK_BYTES // np.dtype(dtype).itemsize)

    def plan(
        self, program: Program, dtype: np.dtype, slot_names: Sequence[str], hp: Mapping[str, Any], kinds: tuple
    ) -> _Plan | None:
        """The plan of ``program`` for arrays of ``dtype`` and scalars like ``hp``; cached.

        None if the rule cannot be traced (it steps outside the rule contract):
        the engine then evaluates it as written, block by block.

        Raises
        ------
        ArithmeticError
            If the rule's host scalars cannot be computed from ``hp`` (``lr / 0``),
            as the rule itself raises; nothing is cached then.
        """
        key = (program, np.dtype(dtype), tuple(slot_names), kinds)
        if key not in self._plans:
            try:
                trace = trace_program(program, slot_names, hp_signature(hp))
            except Exception:  # whatever stops the tracer, the rule run as written raises it again if it is real
                self._plans[key] = None
            else:
                self._plans[key] = _Plan(trace, dtype, hp)
        return self._plans[key]

    def kernel(self, plan: _Plan) -> Callable[[int], None] | None:
        """The compiled C function of ``plan``, or None where the plan runs as ufuncs; cached.

        With ``kernels="auto"`` a kernel that fails to build warns once
        (:class:`~anyoptim.engines._native.KernelBuildWarning`) and the engine
        runs ufuncs from then on; with ``"c"`` the failure raises.
        """
        if self.kernels == "ufunc":
            return None
        key = id(plan)  # plans live as long as the engine (self._plans)
        if key not in self._kernels:
            symbol = f"{kernel_name(plan.trace)}_{plan.dtype.name}"
            source = c_source(plan, symbol)
            if source is None:
                self._kernels[key] = None
            else:
                try:
                    self._kernels[key] = _native.load_kernel(source, symbol)
                except _native.KernelBuildError as error:
                    if self.kernels == "c":
                        raise
                    _native.warn_fallback(error)
                    self.kernels = "ufunc"
                    return None
        return self._kernels[key]

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
