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
  operations in the node's own dtype, no ``a * b + c`` is contracted into a fused
  multiply-add (``-ffp-contract=off``), ``maximum``/``minimum`` propagate NaN and return the second
  operand on ties as NumPy's loops do, ``sign`` is NumPy's.  The one fused operation is the rule's
  :func:`~anyoptim.engines.muladd.muladd`: float64 ``a*b + c`` rounded to float in the baseline, as the
  ufunc plan computes it, and the hardware's fused multiply-add (``__builtin_fmaf``, one ``vfmadd``) in a
  variant compiled for AVX2 with FMA, which a float32 kernel with a ``muladd`` gets beside the baseline,
  chosen per call by ``__builtin_cpu_supports`` (not ``target_clones``: one clone cannot ask for two
  features).  The results equal the ufunc plan's bit for bit, but for the FMA variant's ``muladd``
  where the double evaluation rounds twice (about one result in 2^29, one unit in the last place: the
  FMA variant's is the correctly rounded one).  ``**`` on arrays has no C form: NumPy's
  ``power`` is its own (SIMD) code, which no C library matches to the last bit,
  so a plan with one runs as ufuncs (no built-in rule has one);
* on x86-64 Linux the loop (without a float32 ``muladd``) is compiled twice, for AVX2 and for the baseline
  (``target_clones`` of GCC or Clang 18+: older Clang exports the dispatched
  function only as ``<name>.ifunc``, so it gets the baseline alone; the loader
  picks the one the CPU runs), so a
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
F16C (conversions in hardware; and FMA, for a plan with a float32 ``muladd``)
and the baseline (conversions in software, about 20 times slower), the CPU's
features choosing per call.  A compiler without ``_Float16``
(GCC < 12 or a non-x86 target) fails the build, and the spans run as ufuncs
(:mod:`anyoptim.engines.numpy.widened`).
"""

from __future__ import annotations

from collections.abc import Callable

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
#if __has_attribute(target_clones) && (!defined(__clang__) || __clang_major__ >= 18)
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
#include <immintrin.h>
#define ANYOPTIM_HALF_FAST __attribute__((target("avx2,f16c")))
#define ANYOPTIM_HALF_FAST_OK (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))
ANYOPTIM_HALF_FAST static inline void anyoptim_widen(float *out, const _Float16 *in, int64_t m)
{
    int64_t j = 0;
    for (; j + 8 <= m; j += 8)
        _mm256_storeu_ps(out + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + j))));
    for (; j < m; ++j)
        out[j] = (float)in[j];
}
ANYOPTIM_HALF_FAST static inline void anyoptim_narrow(_Float16 *out, const float *in, int64_t m)
{
    int64_t j = 0;
    for (; j + 8 <= m; j += 8)
        _mm_storeu_si128((__m128i *)(out + j), _mm256_cvtps_ph(_mm256_loadu_ps(in + j), _MM_FROUND_TO_NEAREST_INT));
    for (; j < m; ++j)
        out[j] = (_Float16)in[j];
}
#else
#define ANYOPTIM_HALF_FAST
#define ANYOPTIM_HALF_FAST_OK 0
static inline void anyoptim_widen(float *out, const _Float16 *in, int64_t m)
{
    for (int64_t j = 0; j < m; ++j)
        out[j] = (float)in[j];
}
static inline void anyoptim_narrow(_Float16 *out, const float *in, int64_t m)
{
    for (int64_t j = 0; j < m; ++j)
        out[j] = (_Float16)in[j];
}
#endif
"""

#: A float32 kernel with a multiply-add: the body twice, for AVX2 with FMA (``muladd`` is the hardware's fused
#: multiply-add, ``__builtin_fmaf``: one exact rounding, eight floats at a time) and the baseline (``muladd`` in
#: double), chosen per call by the CPU's features.
_FMA_DISPATCH = """\
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ANYOPTIM_FMA_FAST __attribute__((target("avx2,fma")))
#define ANYOPTIM_FMA_FAST_OK (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#define ANYOPTIM_HALF_FMA_FAST __attribute__((target("avx2,f16c,fma")))
#define ANYOPTIM_HALF_FMA_FAST_OK (ANYOPTIM_FMA_FAST_OK && __builtin_cpu_supports("f16c"))
#else
#define ANYOPTIM_FMA_FAST
#define ANYOPTIM_FMA_FAST_OK 0
#define ANYOPTIM_HALF_FMA_FAST
#define ANYOPTIM_HALF_FMA_FAST_OK 0
#endif
"""

#: Elements of a chunk of float16 columns widened at once (a float buffer of 1 KiB per column).
_CHUNK = 256


def _expression(op: str, a: list[str], ctype: str, fused: bool = False) -> str:
    """C for one operation on operands already in the operation's C type ``ctype`` (NumPy's semantics).

    ``fused``: a float ``muladd`` is the hardware's fused multiply-add (in a variant compiled for FMA only).
    """
    zero, one = f"(({ctype})0)", f"(({ctype})1)"
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
    if op == "muladd":  # anyoptim.engines.muladd: float in double (an exact product), rounded once to float
        if ctype == "float" and fused:  # vfmadd: the correctly rounded fma (no double rounding)
            return f"__builtin_fmaf({a[0]}, {a[1]}, {a[2]})"
        if ctype == "float":
            return f"(float)((double){a[0]} * (double){a[1]} + (double){a[2]})"
        return f"{a[0]} * {a[1]} + {a[2]}"
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

    read = {x for _, _, operands in plan.steps for x in operands} | {node for _, node in plan.outputs}
    role_input = {role: node for node, role in plan.roles.items()}
    roles_read = [role for node, role in sorted(plan.roles.items(), key=lambda item: item[1]) if node in read]
    written = [(role, node) for role, node in plan.outputs if role_input.get(role) != node]  # others unchanged

    def element(load: Callable[[int], str], store: Callable[[int, str], str], fused: bool) -> list[str]:
        """The loop body: read the columns, every operation, write the results (indented 12)."""
        body = [f"            const {column_type} x{role} = {load(role)};" for role in roles_read]
        for (node, op, operands), common in zip(plan.steps, plan.common_dtypes, strict=True):
            # where's condition is not cast; every other operand is, to the operation's common dtype
            arguments = [
                value_name[x] if op == "where" and position == 0 and x in plan.block_values else operand(x, common)
                for position, x in enumerate(operands)
            ]
            ctype = C_TYPES[common.name] if common.name in C_TYPES else column_type
            body.append(
                f"            const {C_TYPES[dtype_of(node)]} t{node} = {_expression(op, arguments, ctype, fused)};"
            )
        for role, node in written:
            value = value_name[node] if node in plan.block_values else holder[(node, plan.dtype)]
            body.append(f"            {store(role, value)}")
        return body

    def function(chunked: bool, fused: bool = False) -> list[str]:
        lines = ["{", "    const double *table = (const double *)(uintptr_t)frame[1];"]
        for position, (_, dtype) in enumerate(plan.broadcast_uses):
            ctype = C_TYPES[dtype.name]
            lines.append(f"    const {ctype} s{position} = ({ctype})table[{position}];")
        lines.append("    for (int64_t span = 0; span < frame[0]; ++span) {")
        lines.append(f"        const int64_t *at = frame + 2 + span * {columns + 1};")
        lines.append("        const int64_t n = at[0];")
        for column in range(columns):
            qualifier, ctype = ("const " if column == 1 else ""), stored[column]
            lines.append(f"        {qualifier}{ctype} *c{column} = ({qualifier}{ctype} *)(uintptr_t)at[{column + 1}];")
        if not chunked:
            lines.append("        for (int64_t i = 0; i < n; ++i) {")
            lines += element(lambda r: f"({column_type})c{r}[i]", lambda r, v: f"c{r}[i] = ({stored[r]}){v};", fused)
            return [*lines, "        }", "    }", "}", ""]
        # Half columns: widened a chunk at a time into float buffers (vector conversions), the float loop on
        # the chunk (it vectorises as the float kernels do), the written ones narrowed back.
        half = [role for role in range(columns) if stored[role] == "_Float16"]
        lines += [f"        float b{role}[{_CHUNK}];" for role in half]
        lines.append(f"        for (int64_t i0 = 0; i0 < n; i0 += {_CHUNK}) {{")
        lines.append(f"            const int64_t m = n - i0 < {_CHUNK} ? n - i0 : {_CHUNK};")
        lines += [f"            anyoptim_widen(b{r}, c{r} + i0, m);" for r in roles_read if r in half]
        lines.append("            for (int64_t j = 0; j < m; ++j) {")
        inner = element(
            lambda r: f"b{r}[j]" if r in half else f"c{r}[i0 + j]",
            lambda r, v: f"b{r}[j] = {v};" if r in half else f"c{r}[i0 + j] = ({stored[r]}){v};",
            fused,
        )
        lines += ["    " + line for line in inner]
        lines.append("            }")
        lines += [f"            anyoptim_narrow(c{r} + i0, b{r}, m);" for r, _ in written if r in half]
        return [*lines, "        }", "    }", "}", ""]

    # a float32 muladd: a variant compiled for FMA computes it with the hardware's one rounding
    fused = any(
        op == "muladd" and common.name == "float32"
        for (_, op, _), common in zip(plan.steps, plan.common_dtypes, strict=True)
    )
    if "_Float16" not in stored and not fused:
        return "\n".join([_PREAMBLE, f"ANYOPTIM_CLONES void {symbol}(const int64_t *frame)", *function(False)])
    if "_Float16" not in stored:
        fast, base = ("ANYOPTIM_FMA_FAST", function(False, fused=True)), function(False)
        return _dispatch(_PREAMBLE + _FMA_DISPATCH, symbol, fast, base)
    if plan.dtype.name != "float32":
        return None  # float16 columns of a float64 step (float64 state): the ufunc blocks
    attribute = "ANYOPTIM_HALF_FMA_FAST" if fused else "ANYOPTIM_HALF_FAST"
    preamble = _PREAMBLE + _HALF_DISPATCH + (_FMA_DISPATCH if fused else "")
    return _dispatch(preamble, symbol, (attribute, function(True, fused)), function(False))


def _dispatch(preamble: str, symbol: str, fast: tuple[str, list[str]], base: list[str]) -> str:
    """A kernel printed twice: ``fast`` (its target attribute macro, its body) where ``<macro>_OK`` holds, else
    ``base``, chosen per call (``target_clones`` cannot ask for two features in one clone)."""
    attribute, body = fast
    return "\n".join(
        [
            preamble,
            f"{attribute} static void {symbol}_fast(const int64_t *frame)",
            *body,
            f"static void {symbol}_base(const int64_t *frame)",
            *base,
            f"void {symbol}(const int64_t *frame)",
            "{",
            f"    if ({attribute}_OK) {symbol}_fast(frame); else {symbol}_base(frame);",
            "}",
            "",
        ]
    )
