"""The CUDA printer: a :class:`~anyoptim.engines.trace.Trace` as CUDA source.

:func:`cuda_source` prints a trace as the body of one ``cupy.ElementwiseKernel``
(:class:`KernelSource`): one typed temporary per node, parameter and state slots
as in-out arguments written at the end.  :func:`span_source` wraps that very body
in the CuPy engine's span kernels (:class:`SpanSource`, compiled as a
``cupy.RawModule``): grid-stride loops with 32- or 64-bit indices, moving 16
bytes per load and store where a span's arrays share their alignment.

This module is pure Python: it imports neither NumPy nor CuPy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..trace import BOOL, C_OPERATORS, FUSED_DTYPES, SCALAR, Node, Trace, c_literal, kernel_name

__all__ = ["FUSED_DTYPES", "SPAN_BLOCK", "KernelSource", "SpanSource", "cuda_source", "span_source"]

#: Threads per block of the span kernels (``__launch_bounds__`` of the generated source).
SPAN_BLOCK = 256

#: The 16-byte vector type of each dtype, its lanes and their member names.
_VECTORS = {"float32": ("float4", ("x", "y", "z", "w")), "float64": ("double2", ("x", "y"))}


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
    engine rounds it; the node ``"muladd"`` (:func:`anyoptim.engines.muladd.muladd`) is
    the hardware's ``fmaf`` in float32 (rounded once) and ``a*b + c`` in float64, as on the CPU.
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
        if node.op == "muladd":  # anyoptim.engines.muladd: float32's one rounding by the GPU's fmaf, not in double
            return f"fmaf({a[0]}, {a[1]}, {a[2]})" if dtype == "float32" else f"{a[0]} * {a[1]} + {a[2]}"
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


# --------------------------------------------------------------------------- span kernels


@dataclass(frozen=True)
class SpanSource:
    """A CUDA module of four kernels that apply one traced body to a contiguous span, in place.

    Every kernel takes one argument, a struct ``anyoptim_span_args`` that the
    host fills once per prepared step: 8-byte words (the pointers of
    :attr:`pointers`, then the span's length ``n`` and its ``head``), then, when
    the scalars are passed by value, ``T c[scalar_count]``.

    Attributes
    ----------
    code : str
        The CUDA source (self-contained: no headers).
    dtype : {"float32", "float64"}
    kernels : dict
        ``(vectorised, wide) -> name``: the kernel that moves 16 bytes per
        load (``float4`` / ``double2``) after a scalar head, or one element at a
        time; with 32-bit (``wide`` False) or 64-bit indices.
    pointers : tuple of (str, object)
        The role of each pointer word, in order: ``("grad", None)``,
        ``("param", None)``, ``("slot", name)`` per slot, ``("hp_array", name)``
        per 0-D hyperparameter array, and ``("scalar_table", None)`` when the
        scalars are read from a float64 device table (for CUDA graphs).
    scalar_count : int
        Entries of ``c``: the host scalars passed by value (0 with a table).
    words : int
        Size of the argument block in 8-byte words.
    lanes : int
        Elements per 16-byte vector (4 for float32, 2 for float64).
    """

    code: str
    dtype: str
    kernels: Mapping[tuple[bool, bool], str]
    pointers: tuple[tuple[str, Any], ...]
    scalar_count: int
    words: int
    lanes: int


def _declared_names(params: str) -> list[str]:
    """The names in a CuPy parameter list (``"T grad, raw float64 scalars"`` -> ``["grad", "scalars"]``)."""
    return [declaration.split()[-1] for declaration in params.split(",") if declaration.strip()]


def span_source(trace: Trace, dtype: str, *, scalars_on_device: bool = False) -> SpanSource:
    """Wrap the body :func:`cuda_source` prints for ``trace`` in span kernels.

    The body becomes a device function ``anyoptim_update(param, slots..., grad,
    hp arrays..., scalars...)`` taking the outputs by reference; each kernel
    calls it once per element: for the vectorised kernels, on each lane of the
    16-byte vectors it loads, after a scalar loop over the ``head`` elements
    that come before the first 16-byte boundary, and before a scalar loop over
    the last ``(n - head) % lanes``.  Scalars and 0-D hyperparameter arrays are
    read once per thread.

    Parameters
    ----------
    trace
        From :func:`~anyoptim.engines.trace.trace_program`.
    dtype : {"float32", "float64"}
    scalars_on_device : bool, default False
        As for ``cuda_source``: False passes the scalars in the argument block
        (``T c[k]``), True reads them from a float64 device table whose
        pointer is in the block (a captured CUDA graph keeps the pointer and
        the host refills the table).
    """
    source = cuda_source(trace, dtype, scalars_on_device=scalars_on_device)
    vector, members = _VECTORS[dtype]
    inputs = list(zip(source.inputs, _declared_names(source.in_params), strict=True))
    outputs = list(zip(source.outputs, _declared_names(source.out_params), strict=True))
    grad = next(name for (role, _), name in inputs if role == "grad")
    hp_arrays = [(key, name) for key, name in inputs if key[0] == "hp_array"]
    tables = [name for (role, _), name in inputs if role == "scalar_table"]
    # The scalars' names (c0, c1, ...): arguments of the by-value source, locals of the table source's loop_prep.
    by_value = cuda_source(trace, dtype) if scalars_on_device else source
    scalars = [
        name
        for (role, _), name in zip(by_value.inputs, _declared_names(by_value.in_params), strict=True)
        if role == "scalar"
    ]
    in_block = [] if tables else scalars  # the scalars the argument block carries
    outs = [name for _, name in outputs]

    fields = [f"const T* p_{grad};", *(f"T* p_{name};" for name in outs)]
    fields += [f"const T* p_{name};" for _, name in hp_arrays]
    fields += [f"const double* p_{name};" for name in tables]
    pointers = (("grad", None), *(key for key, _ in outputs), *(key for key, _ in hp_arrays))
    pointers += tuple(("scalar_table", None) for _ in tables)
    fields += ["unsigned long long n;     // elements in the span", "unsigned long long head;  // see span_layout"]
    if in_block:
        fields.append(f"T c[{len(in_block)}];  // the host scalars, rounded to T")
    itemsize = 4 if dtype == "float32" else 8
    words = len(pointers) + 2 + -(-len(in_block) * itemsize // 8)

    # The scalars and 0-D arrays every element reads, loaded once per thread.
    prologue = [f"const T {name} = a.c[{k}];" for k, name in enumerate(in_block)]
    if tables:
        prologue.append(f"const double* const {tables[0]} = a.p_{tables[0]};")
        prologue += [line for line in source.loop_prep.splitlines() if line.strip()]
    prologue += [f"const T {name} = *a.p_{name};" for _, name in hp_arrays]
    values = [*(name for _, name in hp_arrays), *scalars]
    parameters = [*(f"T& {name}" for name in outs), f"const T {grad}", *(f"const T {name}" for name in values)]

    def call(targets: Sequence[str], gradient: str) -> str:
        return f"anyoptim_update({', '.join([*targets, gradient, *values])});"

    def element(index: str) -> str:
        return call([f"a.p_{name}[{index}]" for name in outs], f"a.p_{grad}[{index}]")

    lanes = len(members)
    vector_pointers = [f"const V* const v_{grad} = reinterpret_cast<const V*>(a.p_{grad} + head);"]
    vector_pointers += [f"V* const v_{name} = reinterpret_cast<V*>(a.p_{name} + head);" for name in outs]
    vector_loop = [f"const V x_{grad} = v_{grad}[k];", *(f"V x_{name} = v_{name}[k];" for name in outs)]
    vector_loop += [call([f"x_{name}.{lane}" for name in outs], f"x_{grad}.{lane}") for lane in members]
    vector_loop += [f"v_{name}[k] = x_{name};" for name in outs]

    def indented(lines: Sequence[str], depth: int) -> str:
        return "\n".join("    " * depth + line for line in lines)

    base = source.name
    kernels = {
        (vectorised, wide): f"{base}_{'vector' if vectorised else 'scalar'}{64 if wide else 32}"
        for vectorised in (True, False)
        for wide in (False, True)
    }
    entries = "\n".join(
        f'extern "C" __global__ void __launch_bounds__({SPAN_BLOCK}) {name}(const anyoptim_span_args a)\n'
        f"{{\n    anyoptim_span<{'unsigned long long' if wide else 'unsigned int'}, "
        f"{'true' if vectorised else 'false'}>(a);\n}}\n"
        for (vectorised, wide), name in kernels.items()
    )
    code = f"""// anyoptim span kernels: {trace.name}, T = {FUSED_DTYPES[dtype]}, {lanes} lanes per 16-byte vector
typedef {FUSED_DTYPES[dtype]} T;
typedef {vector} V;

struct anyoptim_span_args {{
{indented(fields, 1)}
}};

// The traced rule, element by element: outputs by reference.
__device__ __forceinline__ void anyoptim_update({", ".join(parameters)})
{{
{indented(source.body.splitlines(), 1)}
}}

// Grid-stride loops over the span: a scalar head up to the first 16-byte boundary, {lanes}-lane vectors, a
// scalar tail.  I is unsigned: with n < 2**31 (32-bit) no i + stride can wrap.
template <typename I, bool VECTORISED>
__device__ __forceinline__ void anyoptim_span(const anyoptim_span_args& a)
{{
{indented(prologue, 1)}
    const I n = (I)a.n;
    const I stride = (I)blockDim.x * (I)gridDim.x;
    const I thread = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x;
    I tail = 0;
    if (VECTORISED) {{
        const I head = (I)a.head;
        for (I i = thread; i < head; i += stride) {{
            {element("i")}
        }}
        const I vectors = (n - head) / {lanes};
{indented(vector_pointers, 2)}
        for (I k = thread; k < vectors; k += stride) {{
{indented(vector_loop, 3)}
        }}
        tail = head + vectors * {lanes};
    }}
    for (I i = tail + thread; i < n; i += stride) {{
        {element("i")}
    }}
}}

{entries}"""
    return SpanSource(
        code=code,
        dtype=dtype,
        kernels=kernels,
        pointers=pointers,
        scalar_count=len(in_block),
        words=words,
        lanes=lanes,
    )
