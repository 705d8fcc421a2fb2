"""The NumPy engine's plan printed as one C loop: a whole step in one pass over memory, in one call.

The ufunc plan of :mod:`anyoptim.engines.numpy` makes one NumPy call per
operation of the rule (Adam: 14) on each block.  That is one pass over the
block per operation and about 0.2 µs of Python per call, which is most of a
small model's step.  This module prints the *same plan* (the same nodes, in the
same order, with the dtype NumPy gives each one and the same casts of scalars)
as the body of a C loop over every span, compiled by :mod:`anyoptim.engines.numpy.native`:

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
  each column]`` (:class:`~anyoptim.engines.numpy.runners.CompiledSpans`).

A plan with ``**`` on arrays, or whose values include a dtype other than
float32, float64 or bool, gets no C form (:func:`c_source` returns None) and
runs as ufuncs.

Columns may be *stored* in another dtype than the plan computes in
(``column_dtypes``): float16 parameters and state run the float32 plan
(:mod:`anyoptim.engines.precision`), each element read as ``_Float16`` and
widened exactly, each result rounded once (to nearest even, as NumPy's
``astype``) when it is stored.  Those kernels are printed twice, for AVX2 with
F16C (conversions in hardware) and the baseline (conversions in software, about
20 times slower), the CPU's features choosing per call.  A compiler without ``_Float16``
(GCC < 12 or a non-x86 target) fails the build, and the spans run as ufuncs
(:mod:`anyoptim.engines.numpy.widened`).
"""

from __future__ import annotations

import numpy as np

from ..trace import C_OPERATORS
from .plan import Plan

__all__ = ["C_TYPES", "c_source"]

#: The C type of each dtype a kernel may compute in.
C_TYPES = {"float32": "float", "float64": "double", "bool": "bool"}

#: The C type of each dtype a kernel's columns may be stored in.
STORAGE_TYPES = {"float16": "_Float16", "float32": "float", "float64": "double"}


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

#: A kernel with float16 columns: the body twice, for AVX2 with F16C (hardware conversions) and the baseline,
#: chosen per call by the CPU's features (``target_clones`` cannot ask for two features in one clone).
_HALF_DISPATCH = """\
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ANYOPTIM_HALF_FAST __attribute__((target("avx2,f16c")))
#define ANYOPTIM_HALF_FAST_OK (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))
#else
#define ANYOPTIM_HALF_FAST
#define ANYOPTIM_HALF_FAST_OK 0
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


def c_source(plan: Plan, symbol: str, column_dtypes: tuple[str, ...] | None = None) -> str | None:
    """The plan as ``void symbol(const int64_t *frame)``, or None if it has no C form (see the module notes).

    ``column_dtypes`` names the dtype each column (p, g, slots) is stored in; by default every column is the
    plan's dtype.

    The frame is ``[spans, scalar table address, (length, column addresses...) per span]``;
    the table holds one float64 per broadcast use of the plan (host scalars,
    constants, 0-D array hyperparameters), converted in the kernel to the dtype
    NumPy casts it to in that use.
    """
    if not plan.dtype.isnative:  # the kernel reads memory as this machine's floats
        return None
    dtypes = {plan.dtype.name, *(dtype.name for _, dtype in plan.broadcast_uses)}
    dtypes |= {plan.dtype_of(node).name for node, _, _ in plan.steps}
    if plan.dtype.name not in ("float32", "float64") or not dtypes <= set(C_TYPES):
        return None
    if any(op == "pow" for _, op, _ in plan.steps):
        return None
    column_type = C_TYPES[plan.dtype.name]
    columns = 2 + len(plan.trace.slot_names)
    stored = [STORAGE_TYPES.get(name) for name in column_dtypes or [plan.dtype.name] * columns]
    if len(stored) != columns or None in stored:
        return None
    holder = {use: f"s{index}" for index, use in enumerate(plan.broadcast_uses)}
    value_name = {node: f"x{role}" for node, role in plan.roles.items()}
    value_name.update({node: f"t{node}" for node, _, _ in plan.steps})

    def dtype_of(node: int) -> str:
        return plan.dtype_of(node).name

    def operand(node: int, common: np.dtype) -> str:
        if node not in plan.block_values:
            return holder[(node, common)]
        if dtype_of(node) == common.name:
            return value_name[node]
        return f"(({C_TYPES[common.name]}){value_name[node]})"

    lines = ["{"]
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
            f"        {qualifier}{stored[column]} *c{column} = "
            f"({qualifier}{stored[column]} *)(uintptr_t)at[{column + 1}];"
        )
    lines.append("        for (int64_t i = 0; i < n; ++i) {")
    read = {x for _, _, operands in plan.steps for x in operands} | {node for _, node in plan.outputs}
    for node, role in sorted(plan.roles.items(), key=lambda item: item[1]):
        if node in read:
            lines.append(f"            const {column_type} x{role} = ({column_type})c{role}[i];")
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
        lines.append(f"            c{role}[i] = ({stored[role]}){value};")
    lines += ["        }", "    }", "}", ""]
    if "_Float16" not in stored:
        return "\n".join([_PREAMBLE, f"ANYOPTIM_CLONES void {symbol}(const int64_t *frame)", *lines])
    return "\n".join(
        [
            _PREAMBLE + _HALF_DISPATCH,
            f"ANYOPTIM_HALF_FAST static void {symbol}_fast(const int64_t *frame)",
            *lines,
            f"static void {symbol}_base(const int64_t *frame)",
            *lines,
            f"void {symbol}(const int64_t *frame)",
            "{",
            f"    if (ANYOPTIM_HALF_FAST_OK) {symbol}_fast(frame); else {symbol}_base(frame);",
            "}",
            "",
        ]
    )
