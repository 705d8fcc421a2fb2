"""The NumPy engine's plan printed as one C loop: a whole step in one pass over memory, in one call.

The ufunc plan of :mod:`anyoptim.engines.numpy` makes one NumPy call per
operation of the rule (Adam: 14) on each block.  That is one pass over the
block per operation and about 0.2 µs of Python per call, which is most of a
small model's step.  This module prints the *same plan* (the same nodes, in the
same order, with the dtype NumPy gives each one and the same casts of scalars)
as the body of a C loop over every span, compiled by :mod:`anyoptim.engines._native`:

* every parameter, gradient and slot element is read once, every result is
  kept in a register and written once: a step moves the bytes it must and no
  more;
* each operation rounds as NumPy's does: ``+ - * /`` and ``sqrt`` are IEEE
  operations in the node's own dtype, nothing is contracted into a fused
  multiply-add, ``maximum``/``minimum`` propagate NaN and return the second
  operand on ties as NumPy's loops do, ``sign`` is NumPy's.  The results equal
  the ufunc plan's bit for bit.  ``**`` on arrays has no C form: NumPy's
  ``power`` is its own (SIMD) code, which no C library matches to the last bit,
  so a plan with one runs as ufuncs (no built-in rule has one);
* on x86-64 Linux the loop is compiled twice, for AVX2 and for the baseline
  (GCC/Clang ``target_clones``; the loader picks the one the CPU runs), so a
  cached library stays portable while a recent CPU divides and takes square
  roots eight floats at a time.  (An AVX-512 clone was measured too: no faster
  on 2^23 parameters here, and slower on the 30-parameter model's short
  loop.)  Vector ``+ - * / sqrt`` round as scalar ones do, so the bits do not
  depend on the clone;
* a step is a handful of stores of this step's scalars into a table and one
  ``ctypes`` call with the address of a frame built once: ``[number of spans,
  address of the scalar table, then per span: its length and the address of
  each column]``.

A plan with ``**`` on arrays, or whose values include a dtype other than
float32, float64 or bool, gets no C form (:func:`c_source` returns None) and
runs as ufuncs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..trace import C_OPERATORS

if TYPE_CHECKING:
    from .engine import _Plan

__all__ = ["CompiledSpans", "c_source", "spans_fit_a_kernel"]

#: The C type of each dtype a kernel may compute in.
C_TYPES = {"float32": "float", "float64": "double", "bool": "bool"}


_PREAMBLE = """\
#include <float.h>
#include <stdbool.h>
#include <stdint.h>
#include <tgmath.h>
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "anyoptim kernels need float and double arithmetic without excess precision"
#endif
#if defined(__has_attribute) && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
#if __has_attribute(target_clones)
#define ANYOPTIM_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef ANYOPTIM_CLONES
#define ANYOPTIM_CLONES
#endif
"""


def _expression(op: str, a: list[str], zero: str, one: str) -> str:
    """C for one operation on operands already in the operation's dtype (NumPy's semantics)."""
    if op in C_OPERATORS:
        return f"{a[0]} {C_OPERATORS[op]} {a[1]}"
    if op == "copy":
        return a[0]
    if op == "neg":
        return f"-{a[0]}"
    if op == "sqrt":  # <tgmath.h>: sqrtf for float, sqrt for double
        return f"sqrt({a[0]})"
    if op == "abs":
        return f"fabs({a[0]})"
    if op == "sign":  # numpy.sign: +0 for either zero, NaN stays NaN
        x = a[0]
        return f"({x} > {zero}) ? {one} : (({x} < {zero}) ? -{one} : (({x} == {zero}) ? {zero} : {x}))"
    if op == "maximum":  # numpy.maximum: NaN from either side; the second operand on ties (signed zeros)
        return f"({a[0]} > {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]}"
    if op == "minimum":
        return f"({a[0]} < {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]}"
    if op == "where":
        return f"{a[0]} ? {a[1]} : {a[2]}"
    raise AssertionError(f"no C form for {op}")  # pragma: no cover


def c_source(plan: _Plan, symbol: str) -> str | None:
    """The plan as ``void symbol(const int64_t *frame)``, or None if it has no C form (see the module notes).

    The frame is ``[spans, scalar table address, (length, column addresses...) per span]``;
    the table holds one float64 per broadcast use of the plan (host scalars,
    constants, 0-D array hyperparameters), converted in the kernel to the dtype
    NumPy casts it to in that use.
    """
    if not plan.dtype.isnative:  # the kernel reads memory as this machine's floats
        return None
    dtypes = {plan.dtype.name, *(dtype.name for _, dtype in plan.broadcast_uses)}
    dtypes |= {plan.samples[node].dtype.name for node, _, _ in plan.steps}
    if plan.dtype.name not in ("float32", "float64") or not dtypes <= set(C_TYPES):
        return None
    if any(op == "pow" for _, op, _ in plan.steps):
        return None
    column_type = C_TYPES[plan.dtype.name]
    columns = 2 + len(plan.trace.slot_names)
    holder = {use: f"s{index}" for index, use in enumerate(plan.broadcast_uses)}
    value_name = {node: f"x{role}" for node, role in plan.roles.items()}
    value_name.update({node: f"t{node}" for node, _, _ in plan.steps})

    def dtype_of(node: int) -> str:
        return plan.samples[node].dtype.name

    def operand(node: int, common: np.dtype) -> str:
        if node not in plan.block_values:
            return holder[(node, common)]
        if dtype_of(node) == common.name:
            return value_name[node]
        return f"(({C_TYPES[common.name]}){value_name[node]})"

    lines = [_PREAMBLE, f"ANYOPTIM_CLONES void {symbol}(const int64_t *frame)", "{"]
    lines.append("    const double *table = (const double *)(uintptr_t)frame[1];")
    for position, (_, dtype) in enumerate(plan.broadcast_uses):
        ctype = C_TYPES[dtype.name]
        lines.append(f"    const {ctype} s{position} = ({ctype})table[{position}];")
    lines.append("    for (int64_t span = 0; span < frame[0]; ++span) {")
    lines.append(f"        const int64_t *at = frame + 2 + span * {columns + 1};")
    lines.append("        const int64_t n = at[0];")
    for column in range(columns):
        qualifier = "const " if column == 1 else ""
        lines.append(
            f"        {qualifier}{column_type} *c{column} = ({qualifier}{column_type} *)(uintptr_t)at[{column + 1}];"
        )
    lines.append("        for (int64_t i = 0; i < n; ++i) {")
    read = {x for _, _, operands in plan.steps for x in operands} | {node for _, node in plan.outputs}
    for node, role in sorted(plan.roles.items(), key=lambda item: item[1]):
        if node in read:
            lines.append(f"            const {column_type} x{role} = c{role}[i];")
    for (node, op, operands), common in zip(plan.steps, plan.common_dtypes, strict=True):
        # where's condition is not cast; every other operand is, to the operation's common dtype
        arguments = [
            value_name[x] if op == "where" and position == 0 and x in plan.block_values else operand(x, common)
            for position, x in enumerate(operands)
        ]
        ctype = C_TYPES[common.name] if common.name in C_TYPES else column_type
        zero, one = f"(({ctype})0)", f"(({ctype})1)"
        lines.append(f"            const {C_TYPES[dtype_of(node)]} t{node} = {_expression(op, arguments, zero, one)};")
    role_input = {role: node for node, role in plan.roles.items()}
    for role, node in plan.outputs:
        if role_input.get(role) == node:
            continue  # unchanged
        value = value_name[node] if node in plan.block_values else holder[(node, plan.dtype)]
        lines.append(f"            c{role}[i] = ({column_type}){value};")
    lines += ["        }", "    }", "}", ""]
    return "\n".join(lines)


def spans_fit_a_kernel(spans: Sequence[Sequence[Any]], dtype: np.dtype) -> bool:
    """Whether a kernel may read and write these spans' memory through raw addresses.

    The kernel trusts its frame: every column (p, g, slots) of a span must be a
    1-D, C-contiguous, aligned NumPy array of ``dtype`` in native byte order,
    as long as the span's parameter column, and writeable except the gradient
    (column 1).  The optimizer's checks guarantee this; a direct
    ``NumpyEngine.apply`` with other arrays runs as ufuncs instead, which cast
    or raise as NumPy does.
    """
    dtype = np.dtype(dtype)
    if not dtype.isnative:
        return False
    for columns in spans:
        length = columns[0].shape
        for index, column in enumerate(columns):
            if not (
                isinstance(column, np.ndarray)
                and column.dtype == dtype
                and column.shape == length
                and len(length) == 1
                and column.flags.c_contiguous
                and column.flags.aligned
                and (index == 1 or column.flags.writeable)
            ):
                return False
    return True


class CompiledSpans:
    """A compiled plan bound to some spans: ``run(hps)`` is one C call per run of spans sharing scalars.

    Parameters
    ----------
    plan
        The NumPy engine's plan; its host statements compute each step's scalars.
    kernel
        The loaded C function of :func:`c_source` for this plan.
    spans
        The columns (p, g, slots: 1-D C-contiguous arrays of the plan's dtype,
        all but the gradient writeable) of each span.
    leaves, hps
        The first leaf of each span and its scalars mapping (consecutive spans
        with the same mapping object share one call).
    """

    def __init__(
        self,
        plan: _Plan,
        kernel: Callable[[int], None],
        spans: list[list[np.ndarray]],
        leaves: list[int],
        hps: list[Any],
    ):
        groups: list[list[int]] = []
        for index in range(len(spans)):
            if index == 0 or hps[index] is not hps[index - 1]:
                groups.append([])
            groups[-1].append(index)
        self.calls = [
            _segment_call(plan, kernel, [spans[index] for index in group], leaves[group[0]]) for group in groups
        ]
        if len(self.calls) == 1:  # the usual case, a flat model: one call less per step
            self.run = self.calls[0]

    def run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run every span with the scalars of its leaves in ``hps`` (one mapping per leaf)."""
        for call in self.calls:
            call(hps)


def _segment_call(
    plan: _Plan, kernel: Callable[[int], None], spans: list[list[np.ndarray]], leaf: int
) -> Callable[[Sequence[Mapping[str, Any]]], None]:
    """``run(hps)`` for spans sharing the scalars of ``hps[leaf]``: this step's scalars into a table, then the kernel.

    The function (:func:`host_code`) computes the scalars with the plan's own
    host lines (:meth:`~anyoptim.engines.numpy._Plan.host_lines`), as the ufunc
    plan's step does.  Its globals hold the table, the frame and the spans, so the
    addresses in the frame stay valid as long as the function lives.
    """
    trace = plan.trace
    table = np.zeros(max(1, len(plan.broadcast_uses)), dtype=np.float64)
    for position, (node, _) in enumerate(plan.broadcast_uses):
        if trace.nodes[node].op == "const":  # constants are stored once, here
            table[position] = trace.nodes[node].value
    frame = [len(spans), table.ctypes.data]
    for columns in spans:
        frame += [columns[0].shape[0], *(column.ctypes.data for column in columns)]
    frame_array = np.array(frame, dtype=np.int64)
    code, names = host_code(plan)
    namespace: dict[str, Any] = {
        **names,
        "LEAF": leaf,
        "kernel": kernel,
        "table": table,
        "FRAME": frame_array.ctypes.data,
        "_alive": (frame_array, spans),  # what the frame's addresses point into
    }
    exec(code, namespace)
    return namespace["run"]


def host_code(plan: _Plan) -> tuple[Any, dict[str, Any]]:
    """The compiled ``run(hps)`` of a plan's segments, and the names it reads; cached on the plan."""
    if plan.host_code is None:
        host, names = plan.host_lines(lambda position: f"table[{position}]")
        lines = ["def run(hps):", "    hp = hps[LEAF]", *(f"    {line}" for line in host), "    kernel(FRAME)"]
        code = compile("\n".join(lines) + "\n", f"<anyoptim.engines._compiled: {plan.trace.name}>", "exec")
        plan.host_code = (code, names)
    return plan.host_code
