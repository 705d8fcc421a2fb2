"""The NumPy engine's plan: a traced program split into per-step host work and per-block ufunc calls.

A :class:`Plan` is made once per (program, dtype, kinds of scalars) by
:meth:`anyoptim.engines.numpy.NumpyEngine.plan`.  It is what both ways of
running a step read: the ufunc runner (:mod:`anyoptim.engines.numpy.runners`)
calls its generated ``run(hp, blocks)``, and the C printer
(:mod:`anyoptim.engines.numpy.c_printer`) prints the same nodes, in the same
order, with the same dtypes, as one C loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..trace import SCALAR, Trace, fold_scalars, scalar_statements

__all__ = ["Plan"]


def _where(condition: np.ndarray, x: Any, y: Any, out: np.ndarray) -> None:
    np.copyto(out, y)
    np.copyto(out, x, where=condition)


# NumPy 2.4 deprecates a positional ``out`` for these two; every other ufunc takes it positionally (faster).
def _maximum(x: Any, y: Any, out: np.ndarray) -> None:
    np.maximum(x, y, out=out)


def _minimum(x: Any, y: Any, out: np.ndarray) -> None:
    np.minimum(x, y, out=out)


_SCRATCH = threading.local()  # one float64 block per thread for _muladd's product: a step allocates nothing


def _muladd(a: Any, b: Any, c: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``a * b + c`` as :func:`anyoptim.engines.muladd.muladd` defines it: in float32 widened to float64 and rounded
    once (float64 multiplies two float32 numbers exactly), in float64 a product and a sum.

    The product goes to a per-thread float64 buffer (``out`` may be ``c``'s block), reused by every call.
    """
    if out is None:  # a sample, or a call outside a plan
        out = np.empty(np.broadcast_shapes(*(np.shape(x) for x in (a, b, c))), np.result_type(a, b, c))
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.size < out.size:
        buffer = _SCRATCH.buffer = np.empty(out.size, np.float64)
    wide = buffer[: out.size].reshape(out.shape)
    np.multiply(a, b, out=wide, dtype=np.float64)  # the float64 loop: without dtype, float32 inputs round first
    if out.dtype == np.float32:
        np.add(wide, c, out=wide)
        np.copyto(out, wide, casting="same_kind")
    else:
        np.add(wide, c, out=out)
    return out


#: The NumPy function of each array operation of a trace (see :class:`~anyoptim.engines.trace.Node`),
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
    "muladd": _muladd,
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


class Plan:
    """A trace, split into per-step host work and per-block ufunc calls.

    The values of the graph fall in two groups.  *Block values* are the
    parameter, gradient and slot blocks (registers ``r0, r1, r2, ...``) and
    every array or boolean operation, written into a destination block where
    that is safe, else into a scratch buffer reused once its value is dead.
    *Broadcast values* are the host scalars (computed each step by the trace's
    :func:`~anyoptim.engines.trace.scalar_statements`), the constants, and the
    hyperparameters that are 0-D arrays: an operation reads each through a 0-D
    array of the dtype NumPy casts it to in that operation.

    Values are named by their node number in :attr:`trace` (a copy the plan
    adds gets a number past the trace's last node).  A *column* (or *role*) is
    an array of a span: 0 the parameter, 1 the gradient, ``2 + i`` the slot
    ``trace.slot_names[i]``.  The attributes below are read by the ufunc runner
    and by the C printer; nothing outside the plan writes them.

    Parameters
    ----------
    trace
        From :func:`~anyoptim.engines.trace.trace_program`.
    dtype
        The dtype of the span's columns.
    hp
        Scalars of the kinds the plan is for: their types (Python number, NumPy
        scalar, 0-D array and its dtype) decide every node's dtype, as in NumPy.

    Attributes
    ----------
    trace : Trace
        The traced program.
    dtype : numpy.dtype
        The dtype of every column.
    roles : dict of int to int
        Input node -> the column it reads.
    steps : list of (int, str, tuple of int)
        The array operations in graph order: (result node, operation, operand
        nodes).  Operations are those of :class:`~anyoptim.engines.trace.Node`,
        plus ``"copy"`` for a result that is another input.
    samples : dict of int to object
        A sample of every value read or written: a 1-element array of its dtype
        for a block value, the value itself for a broadcast value.  Use
        :meth:`dtype_of` for a block value's dtype.
    common_dtypes : list of numpy.dtype
        For each step, the dtype NumPy computes that operation in (its operands are cast to it).
    outputs : list of (int, int)
        Where each result goes: (column, node), the parameter first, then the slots.
    block_values : set of int
        The nodes that are blocks (inputs and results of steps); every other operand is broadcast.
    broadcast_uses : list of (int, numpy.dtype)
        Each broadcast value with the dtype one operation casts it to, in the
        order of the 0-D arrays ``s0, s1, ...`` (and of the C kernel's scalar table).
    direct : dict of int to int
        Results written straight into their column: node -> column.
    final_copies : list of (int, int)
        Results copied into their column after the block's last operation: (column, node).
    scratch_dtypes : list of numpy.dtype
        The dtype of each block-sized scratch buffer a runner must provide.
    location : dict of int to int
        Node -> the scratch buffer it is written to.
    registers : int
        Registers of one block: the columns, then the scratch buffers.
    source : str
        The generated Python source of ``run(hp, blocks)`` (see :meth:`compile`).

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
        self._kernel_step: tuple[Any, dict[str, Any]] | None = None  # kernel_step_code(), compiled once

    def dtype_of(self, node: int) -> np.dtype:
        """The dtype of the block value ``node`` (an input column, or the result of a step)."""
        return self.samples[node].dtype

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

    def kernel_step_code(self) -> tuple[Any, dict[str, Any]]:
        """The code of a C kernel's step function ``run(hps)``, and the names it reads; compiled once per plan.

        ``run(hps)`` computes the host scalars of ``hps[LEAF]`` with
        :meth:`host_lines`, stores each broadcast use at its position in the
        float64 array ``table``, then calls ``kernel(FRAME)``.  The caller
        executes the code in a namespace holding those names plus ``LEAF``
        (int), ``table``, ``kernel`` and ``FRAME`` (the frame's address): see
        :class:`~anyoptim.engines.numpy.runners.CompiledSpans`.
        """
        if self._kernel_step is None:
            host, names = self.host_lines(lambda position: f"table[{position}]")
            lines = ["def run(hps):", "    hp = hps[LEAF]", *(f"    {line}" for line in host), "    kernel(FRAME)"]
            code = compile("\n".join(lines) + "\n", f"<anyoptim.engines.numpy kernel step: {self.trace.name}>", "exec")
            self._kernel_step = (code, names)
        return self._kernel_step

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
