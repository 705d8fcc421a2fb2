"""The CuPy engine: one fused CUDA kernel per contiguous run of parameters, traced from the rule.

The optimizer's :class:`~anyoptim.engines.program.Program` is traced once
(:mod:`anyoptim.engines._trace`) into an expression graph and printed as the
body of a CUDA kernel that reads the parameter, its gradient and the state
slots, and writes the parameter and the slots back in place.  Nothing here
types an update formula: the kernel is the rule.

* **One launch per run.**  Leaves that lie back to back in one allocation in
  every column (parameters, gradients, each slot) and share their scalars are
  joined into one 1-D span (:func:`anyoptim.engines._spans.contiguous_runs`).
  Parameters made by :func:`anyoptim.flatten`, with state from
  :meth:`CupyEngine.init_slots`, are one span: one launch updates the model.
* **Span kernels at the bandwidth limit.**  A span is updated by a kernel
  generated around the traced body (:func:`span_source`, compiled as a
  ``cupy.RawModule``): a grid-stride loop with 32-bit indices (64-bit only for
  spans of 2**31 elements or more) that moves 16 bytes per load and store
  (``float4`` / ``double2``) when every array of the span shares its alignment,
  each thread applying the traced body to every lane.  A prepared step builds
  the kernel's argument block once (a small host buffer: the pointers, the
  length, the scalars); a step then only writes its scalars into that block
  and launches.  The ``cupy.ElementwiseKernel`` printed from the same body
  remains for spans whose gradient is strided (copied each step) and, with
  ``ANYOPTIM_CUPY_LAUNCH=elementwise`` in the environment, for everything.
* **Typed scalars.**  Host scalars (the learning rate, ``1 - beta1``, bias
  corrections) are computed in Python as the generic engine computes them and
  rounded to the parameter dtype ``T``, so the kernel computes in ``T``
  throughout (the ``cupy.fuse`` trap, where Python floats become float16
  constants, cannot happen).  ``hp["grad_scale"]`` (global-norm clipping) is a
  0-D device array and stays on the device.
* **Same rounding as the generic path.**  Kernels are compiled with
  ``--fmad=false``: ``a*b + c`` is rounded twice, as when each operator is its
  own kernel, so fused and generic agree to the last bit in practice, and both
  launch paths run the same body, so they agree bit for bit.
* **Fallback.**  Leaves that are not C-contiguous, or whose dtype is not
  float32/float64, take the generic engine (new arrays, correct, slower).

:class:`GraphedStep` captures a whole training step (forward, backward,
update) in a CUDA graph and replays it, with the step's scalars kept in a small
device table that the host refreshes before each replay.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    import cupy
except ImportError:  # pragma: no cover - the module stays importable (docs, CPU tests of its logic)
    cupy = None

from ..fused import FusedEngine
from ..generic import GenericEngine
from ..program import Program
from ..spans import contiguous_runs
from ..trace import (
    FUSED_DTYPES,
    KernelSource,
    Trace,
    cuda_source,
    hp_signature,
    scalar_folder,
    trace_program,
)

__all__ = [
    "COMPILE_OPTIONS",
    "LAUNCH_CHOICES",
    "CupyEngine",
    "GraphedStep",
    "SpanSource",
    "capture",
    "capturing",
    "matmul",
    "span_layout",
    "span_source",
]

#: NVRTC options of every kernel: no contraction of a*b + c into one FMA, so
#: the fused kernel rounds each operation as the generic engine does.
COMPILE_OPTIONS = ("--fmad=false",)

#: How the engine launches its kernels: "span" (the generated span kernels,
#: ElementwiseKernel only where they do not apply) or "elementwise" (always the
#: ElementwiseKernel).  The default comes from ``ANYOPTIM_CUPY_LAUNCH``.
LAUNCH_CHOICES = ("span", "elementwise")

#: Threads per block of the span kernels (``__launch_bounds__`` of the generated source).
SPAN_BLOCK = 256

#: Spans shorter than this use 32-bit indices: ``i + stride`` then stays below 2**32.
INDEX32_LIMIT = 2**31

#: The 16-byte vector type of each dtype, its lanes and their member names.
_VECTORS = {"float32": ("float4", ("x", "y", "z", "w")), "float64": ("double2", ("x", "y"))}
_VECTOR_BYTES = 16


def _default_launch() -> str:
    choice = os.environ.get("ANYOPTIM_CUPY_LAUNCH", "span")
    if choice not in LAUNCH_CHOICES:
        raise ValueError(f"ANYOPTIM_CUPY_LAUNCH must be one of {', '.join(LAUNCH_CHOICES)}, got {choice!r}")
    return choice


def _argument_pointers_work() -> bool:
    """Whether this CuPy passes ``CPointer(address)`` to a kernel as that very address (as CuPy 14 does)."""
    try:
        from cupy.cuda.function import CPointer

        return int(CPointer(4096).ptr) == 4096
    except Exception:  # no CuPy, or one whose CPointer holds the address of a Python object
        return False


_ARGUMENT_POINTERS = cupy is not None and _argument_pointers_work()


@dataclass
class _Compiled:
    """A traced program, its host-scalar folder, and its kernels by (dtype name, scalars on device)."""

    trace: Trace
    fold: Callable[[Mapping[str, Any]], list[Any]]
    kernels: dict[tuple[str, bool], tuple[KernelSource, Any]] = field(default_factory=dict)
    spans: dict[tuple[str, bool], SpanSource] = field(default_factory=dict)


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
    """Wrap the body :func:`~anyoptim.engines._trace.cuda_source` prints for ``trace`` in span kernels.

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
        From :func:`~anyoptim.engines._trace.trace_program`.
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


def span_layout(addresses: Sequence[int], size: int, itemsize: int) -> tuple[bool, int]:
    """Whether a span can move 16 bytes per load, and how many elements come before its first 16-byte boundary.

    Vectorised loads need every array of the span (gradient, parameter,
    slots) at the same offset from a 16-byte boundary, a whole number of
    elements: then the first ``head`` elements are updated one by one and
    every later vector is aligned in every array.

    Parameters
    ----------
    addresses
        The device address of the span's first element in each array.
    size
        Elements in the span.
    itemsize
        Bytes per element (4 or 8).

    Returns
    -------
    (vectorised, head)
        ``head`` is 0 when not vectorised, and never more than ``size``.
    """
    offsets = {int(address) % _VECTOR_BYTES for address in addresses}
    if len(offsets) != 1:
        return False, 0
    (offset,) = offsets
    if offset % itemsize:
        return False, 0
    return True, min(size, (_VECTOR_BYTES - offset) % _VECTOR_BYTES // itemsize)


def span_grid(items: int, block: int, wave: int) -> int:
    """Blocks of a grid-stride launch over ``items`` work items: enough to cover them, at most one full wave."""
    return max(1, min(-(-items // block), wave))


class CupyEngine(FusedEngine):
    """Run a program as one fused, in-place CUDA kernel per contiguous run of leaves.

    The methods whose names start with ``_device`` are the only code that
    touches CuPy; the rest is backend-neutral, so the run detection, the
    binding of kernel arguments and the span kernels' argument blocks are
    tested on a CPU with NumPy stand-ins (and the span kernels themselves
    compiled by the host C++ compiler).

    Parameters
    ----------
    launch : {"span", "elementwise"}, optional
        How fused runs are launched (see the module notes); default from
        ``ANYOPTIM_CUPY_LAUNCH``, else "span".  Applies to steps prepared after
        it is set (the attribute :attr:`launch` may be changed).
    """

    name = "cupy"
    #: Threads per block of a span kernel launch (at most the generated ``__launch_bounds__``).
    span_block = SPAN_BLOCK

    def __init__(self, launch: str | None = None) -> None:
        self.launch = _default_launch() if launch is None else launch
        if self.launch not in LAUNCH_CHOICES:
            raise ValueError(f"launch must be one of {', '.join(LAUNCH_CHOICES)}, got {self.launch!r}")
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}
        self._generic = GenericEngine()
        self._plan: _ScalarPlan | None = None
        self._span_kernels: dict[tuple[Any, ...], tuple[Any, int]] = {}

    # -- the interface every engine has

    def prepare(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> _PreparedStep:
        """Bind ``program`` to these very arrays; the result, called with each step's ``hps``, runs a step.

        Finds the runs, builds the spans and their kernel arguments, and
        compiles the kernels once.  The arrays must stay the same objects with
        the same layout between calls, and ``hps`` must keep the grouping it has
        here (leaves sharing one mapping now share one later).
        """
        return _PreparedStep(self, program, xp, params, grads, slots, hps)

    # -- tracing and kernels

    def compiled(self, program: Program, slot_names: Sequence[str], hp: Mapping[str, Any]) -> _Compiled:
        """The trace of ``program`` for these slots and hyperparameter kinds (cached)."""
        key = (program, tuple(slot_names), hp_signature(hp))
        found = self._compiled.get(key)
        if found is None:
            trace = trace_program(program, slot_names, key[2])
            found = self._compiled[key] = _Compiled(trace, scalar_folder(trace))
        return found

    def kernel(self, compiled: _Compiled, dtype: str, scalars_on_device: bool) -> tuple[KernelSource, Any]:
        """The ElementwiseKernel source and kernel of a trace for one dtype (cached; compiled at its first launch)."""
        key = (dtype, scalars_on_device)
        found = compiled.kernels.get(key)
        if found is None:
            source = cuda_source(compiled.trace, dtype, scalars_on_device=scalars_on_device)
            found = compiled.kernels[key] = (source, self._device_kernel(compiled.trace, source))
        return found

    def span(self, compiled: _Compiled, dtype: str, scalars_on_device: bool) -> SpanSource:
        """The span kernels' source of a trace for one dtype (cached)."""
        key = (dtype, scalars_on_device)
        found = compiled.spans.get(key)
        if found is None:
            found = compiled.spans[key] = span_source(compiled.trace, dtype, scalars_on_device=scalars_on_device)
        return found

    def _launch(self, kernel: Any, args: Sequence[Any]) -> None:
        """Launch one ElementwiseKernel (the one place those launches go through; tests count them here)."""
        kernel(*args)

    def _span_launcher(self, function: Any, size: int) -> Callable[[tuple, tuple, tuple], None]:
        """What a span run calls as ``launcher(grid, block, args)``: the kernel function itself (tests wrap it)."""
        return function

    def _fusable(self, p: Any, g: Any, slot_leaves: Sequence[Any]) -> bool:
        arrays = [p, g, *slot_leaves]
        return (
            all(self._device_is_array(a) for a in arrays)
            and str(p.dtype) in FUSED_DTYPES
            and all(a.dtype == p.dtype for a in arrays)
            and all(a.flags.c_contiguous for a in (p, *slot_leaves))
        )

    @contextlib.contextmanager
    def _scalars_on_device(self, plan: _ScalarPlan) -> Iterator[None]:
        """While active, kernels read their scalars from ``plan``'s device table (for graph capture)."""
        if self._plan is not None:
            raise RuntimeError("a step is already being captured")
        self._plan = plan
        try:
            yield
        finally:
            self._plan = None

    # -- the parts that touch CuPy

    @staticmethod
    def _device_is_array(a: Any) -> bool:
        return cupy is not None and isinstance(a, cupy.ndarray)

    @staticmethod
    def _device_address(a: Any) -> int:
        return a.data.ptr

    @staticmethod
    def _device_owner(a: Any) -> Any:
        # The allocation itself: every view of one buffer shares this object, whatever its .base.
        return a.data.mem

    @staticmethod
    def _device_span(leaves: Sequence[Any]) -> Any:
        """One 1-D array over leaves that lie back to back in one allocation (checked by contiguous_runs)."""
        first = leaves[0]
        if len(leaves) == 1:
            return first.reshape(-1)
        total = sum(leaf.size for leaf in leaves)
        return cupy.ndarray((total,), dtype=first.dtype, memptr=first.data)

    @staticmethod
    def _device_contiguous(g: Any) -> Any:
        return g if g.flags.c_contiguous else cupy.ascontiguousarray(g)

    @staticmethod
    def _device_hp_array(value: Any, dtype: Any) -> Any:
        if isinstance(value, cupy.ndarray):
            return value if value.dtype == dtype else value.astype(dtype)
        return cupy.asarray(value, dtype=dtype)

    @staticmethod
    def _device_scalar(value: Any, dtype: Any) -> Any:
        return np.dtype(dtype).type(value)

    @staticmethod
    def _device_kernel(trace: Trace, source: KernelSource) -> Any:
        return cupy.ElementwiseKernel(
            source.in_params,
            source.out_params,
            source.body,
            name=source.name,
            loop_prep=source.loop_prep,
            options=COMPILE_OPTIONS,
            no_return=True,
        )

    @staticmethod
    def _device_span_ready(arrays: Sequence[Any]) -> bool:
        """Whether span kernels can run on these arrays (CuPy arrays, and a CuPy that passes argument blocks)."""
        ndarray = getattr(cupy, "ndarray", None)
        return _ARGUMENT_POINTERS and ndarray is not None and all(isinstance(a, ndarray) for a in arrays)

    def _device_span_kernel(self, source: SpanSource, name: str) -> tuple[Any, int]:
        """The compiled kernel ``name`` of ``source`` on the current device, and the blocks of one full wave there.

        A full wave is every block the device holds at once (multiprocessors
        times resident blocks of this kernel): a grid-stride loop needs no more.
        """
        device = cupy.cuda.runtime.getDevice()
        key = (source.code, name, device)
        found = self._span_kernels.get(key)
        if found is None:
            module = cupy.RawModule(code=source.code, options=COMPILE_OPTIONS)
            function = module.get_function(name).kernel  # compiles (or loads from CuPy's cache) for this device
            runtime = cupy.cuda.runtime
            processors = runtime.deviceGetAttribute(runtime.cudaDevAttrMultiProcessorCount, device)
            try:
                from cupy_backends.cuda.api import driver

                resident = driver.occupancyMaxActiveBlocksPerMultiprocessor(function.ptr, self.span_block, 0)
            except Exception:  # an older CuPy: assume the 2048 threads per multiprocessor of recent GPUs
                resident = 0
            wave = processors * (resident if resident > 0 else max(1, 2048 // self.span_block))
            found = self._span_kernels[key] = (function, max(1, wave))
        return found

    @staticmethod
    def _device_argument_block(words: np.ndarray) -> Any:
        """The kernel argument whose bytes are ``words`` (read by the driver at each launch)."""
        from cupy.cuda.function import CPointer

        return CPointer(words.ctypes.data)


class _Run:
    """One ElementwiseKernel launch of a prepared step: a span of leaves, its kernel, where its scalars come from."""

    __slots__ = (
        "copy_grad",
        "engine",
        "first",
        "first_param",
        "fold",
        "grad",
        "kernel",
        "outputs",
        "plan",
        "source",
        "trace",
    )

    def __init__(
        self,
        engine: CupyEngine,
        compiled: _Compiled,
        first: int,
        first_param: Any,
        p: Any,
        g: Any,
        slots: Mapping[str, Any],
        *,
        copy_grad: bool,
    ):
        self.engine = engine
        self.plan = engine._plan
        self.trace = compiled.trace
        self.fold = compiled.fold
        self.source, self.kernel = engine.kernel(compiled, str(p.dtype), self.plan is not None)
        self.first = first  # index of the run's first leaf in the step's lists
        self.first_param = first_param  # that leaf (a captured step's scalar plan knows leaves by identity)
        self.grad = g
        self.copy_grad = copy_grad  # a strided gradient, copied to a contiguous one at each step
        self.outputs = [p if role == "param" else slots[name] for role, name in self.source.outputs]

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> None:
        hp = hps[self.first]
        dtype = self.outputs[0].dtype
        scalars = self.fold(hp)
        engine = self.engine
        args: list[Any] = []
        for role, name in self.source.inputs:
            if role == "grad":
                args.append(engine._device_contiguous(self.grad).reshape(-1) if self.copy_grad else self.grad)
            elif role == "hp_array":
                args.append(engine._device_hp_array(hp[name], dtype))
            elif role == "scalar":
                args.append(engine._device_scalar(scalars[name], dtype))
            else:  # "scalar_table": a captured step reads its scalars from the device
                args.append(self.plan.table_for(self.trace, self.fold, self.first_param, scalars))
        args.extend(self.outputs)
        engine._launch(self.kernel, args)


class _SpanRun:
    """One span-kernel launch of a prepared step, its argument block built once.

    The block (:class:`SpanSource`) holds the span's pointers, length and head
    from the start; a step writes its scalars into it (or, for 0-D
    hyperparameter arrays and a captured step's scalar table, their current
    pointers) and launches.  The driver copies the block at each launch, so it
    can be rewritten for the next step at once.
    """

    __slots__ = (
        "args",
        "block",
        "engine",
        "first",
        "first_param",
        "fold",
        "grid",
        "hp_words",
        "keep",
        "launch",
        "launcher",
        "plan",
        "scalars",
        "source",
        "table_word",
        "trace",
        "words",
    )

    def __init__(
        self,
        engine: CupyEngine,
        compiled: _Compiled,
        first: int,
        first_param: Any,
        p: Any,
        g: Any,
        slots: Mapping[str, Any],
    ):
        self.engine = engine
        self.plan = engine._plan
        self.trace = compiled.trace
        self.fold = compiled.fold
        dtype = str(p.dtype)
        self.source = source = engine.span(compiled, dtype, self.plan is not None)
        self.first = first
        self.first_param = first_param
        arrays = {("grad", None): g, ("param", None): p, **{("slot", name): slots[name] for name in slots}}
        size = int(p.size)
        vectorised, head = span_layout([engine._device_address(a) for a in arrays.values()], size, p.itemsize)
        name = source.kernels[(vectorised, size >= INDEX32_LIMIT)]
        function, wave = engine._device_span_kernel(source, name)
        block = engine.span_block
        self.grid = (span_grid((size - head) // source.lanes if vectorised else size, block, wave),)
        self.block = (block,)
        self.words = words = np.zeros(source.words, dtype=np.uint64)
        self.hp_words: list[tuple[int, str]] = []
        self.table_word: int | None = None
        for index, key in enumerate(source.pointers):
            if key in arrays:
                words[index] = engine._device_address(arrays[key])
            elif key[0] == "hp_array":
                self.hp_words.append((index, key[1]))
            else:  # the scalar table, set at each launch (its slice is fixed only once the plan is frozen)
                self.table_word = index
        count = len(source.pointers)
        words[count] = size
        words[count + 1] = head
        # The scalars, rounded to T as they are written (NumPy rounds a Python float as np.float32() does).
        self.scalars = words[count + 2 :].view(np.dtype(dtype))[: source.scalar_count]
        self.args = (engine._device_argument_block(words),)
        self.launcher = engine._span_launcher(function, size)
        self.keep: list[Any] = []  # device arrays the last launch read, kept until the next
        if self.hp_words or self.table_word is not None:
            self.launch = self._launch_with_device_values
        else:
            self.launch = _scalar_launch(
                self.launcher, self.grid, self.block, self.args, self.fold, self.scalars, first
            )

    def _launch_with_device_values(self, hps: Sequence[Mapping[str, Any]]) -> None:
        hp = hps[self.first]
        engine, words = self.engine, self.words
        values = self.fold(hp)
        keep = []
        for index, name in self.hp_words:
            array = engine._device_hp_array(hp[name], self.scalars.dtype)
            keep.append(array)
            words[index] = engine._device_address(array)
        if self.table_word is not None:
            table = self.plan.table_for(self.trace, self.fold, self.first_param, values)
            keep.append(table)
            words[self.table_word] = engine._device_address(table)
        else:
            self.scalars[:] = values
        self.keep = keep
        self.launcher(self.grid, self.block, self.args)


def _scalar_launch(
    launcher: Callable[[tuple, tuple, tuple], None],
    grid: tuple[int],
    block: tuple[int],
    args: tuple[Any],
    fold: Callable[[Mapping[str, Any]], list[Any]],
    scalars: np.ndarray,
    first: int,
) -> Callable[[Sequence[Mapping[str, Any]]], None]:
    """The steady-state launch of a span run: fold the scalars into the argument block, launch."""
    if not len(scalars):

        def launch_without_scalars(hps: Sequence[Mapping[str, Any]]) -> None:
            launcher(grid, block, args)

        return launch_without_scalars

    def launch(hps: Sequence[Mapping[str, Any]]) -> None:
        scalars[:] = fold(hps[first])
        launcher(grid, block, args)

    return launch


class _PreparedStep:
    """A program bound to fixed arrays: kernels for the fused runs, the generic engine for the other leaves."""

    def __init__(
        self,
        engine: CupyEngine,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ):
        self.engine = engine
        self.program = program
        self.xp = xp
        self.params = list(params)
        self.grads = list(grads)
        self.slots = {name: list(values) for name, values in slots.items()}
        slot_names = tuple(slots)
        count = len(self.params)
        fused = [i for i in range(count) if engine._fusable(params[i], grads[i], [slots[s][i] for s in slot_names])]
        chosen = set(fused)
        self.others = [i for i in range(count) if i not in chosen]
        if self.others and engine._plan is not None:
            names = ", ".join(str(i) for i in self.others)
            raise ValueError(
                "a captured step needs every parameter, gradient and state slot to be a C-contiguous float32 or "
                f"float64 CuPy array of one dtype (use anyoptim.flatten(params)); leaves {names} are not"
            )
        #: Whether every leaf is updated in place; a step prepared for graph capture is never reused eagerly.
        self.in_place = not self.others and engine._plan is None
        self.runs: list[_Run | _SpanRun] = []
        # Leaves of one dtype and one scalars mapping may lie back to back in one buffer even when the leaf
        # list interleaves dtypes (anyoptim.flatten keeps one buffer per dtype): look for runs group by group.
        # A gradient that is not C-contiguous is copied at each step, so its leaf is a run of its own.
        groups: dict[tuple[str, int], list[int]] = {}
        for i in fused:
            key = (str(params[i].dtype), id(hps[i])) if grads[i].flags.c_contiguous else ("copy", i)
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            columns = [
                [params[i] for i in indices],
                [grads[i] for i in indices],
                *([slots[name][i] for i in indices] for name in slot_names),
            ]
            for start, stop in contiguous_runs(
                columns, [hps[i] for i in indices], address=engine._device_address, owner=engine._device_owner
            ):
                self.runs.append(self._run(program, indices[start:stop], hps))
        #: What each step calls, in order: each run's launch, taking the step's ``hps``.
        self.launches = [run.launch if isinstance(run, _SpanRun) else run for run in self.runs]
        if self.in_place and len(self.launches) == 1:
            self.update = self.launches[0]  # the optimizer's fast path calls it directly

    def _run(self, program: Program, leaves: list[int], hps: Sequence[Mapping[str, Any]]) -> _Run | _SpanRun:
        """The launch of one run of leaves: a span kernel where it applies, else the ElementwiseKernel."""
        engine, first, slot_names = self.engine, leaves[0], tuple(self.slots)
        compiled = engine.compiled(program, slot_names, hps[first])
        g = self.grads[first]
        if not g.flags.c_contiguous:  # then it is a run of one leaf, its gradient copied at each step
            slots = {name: engine._device_span([self.slots[name][first]]) for name in slot_names}
            p = engine._device_span([self.params[first]])
            return _Run(engine, compiled, first, self.params[first], p, g, slots, copy_grad=True)
        p = engine._device_span([self.params[i] for i in leaves])
        g = engine._device_span([self.grads[i] for i in leaves])
        slots = {name: engine._device_span([self.slots[name][i] for i in leaves]) for name in slot_names}
        if engine.launch == "span" and p.size > 0 and engine._device_span_ready([p, g, *slots.values()]):
            return _SpanRun(engine, compiled, first, self.params[first], p, g, slots)
        return _Run(engine, compiled, first, self.params[first], p, g, slots, copy_grad=False)

    def update(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run the step in place (only when :attr:`in_place`): ``hps`` as for :meth:`__call__`."""
        for launch in self.launches:
            launch(hps)

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run the step with this step's scalars ``hps`` (one mapping per leaf, grouped as when prepared)."""
        new_params = list(self.params)
        new_slots = {name: list(values) for name, values in self.slots.items()}
        if self.others:
            others = self.others
            fallback_p, fallback_slots = self.engine._generic.apply(
                self.program,
                self.xp,
                [self.params[i] for i in others],
                [self.grads[i] for i in others],
                {name: [values[i] for i in others] for name, values in self.slots.items()},
                [hps[i] for i in others],
            )
            for position, i in enumerate(others):
                new_params[i] = fallback_p[position]
                for name in self.slots:
                    new_slots[name][i] = fallback_slots[name][position]
        for launch in self.launches:
            launch(hps)
        return new_params, new_slots


# --------------------------------------------------------------------------- CUDA graphs

_capture_state = threading.local()


def capturing() -> bool:
    """Whether this thread is recording a :class:`GraphedStep` (its warm-up run or its capture).

    Model code can test it to pick operations a CUDA graph can hold, such as
    :func:`matmul` instead of ``@``.
    """
    return getattr(_capture_state, "active", False)


@contextlib.contextmanager
def _recording() -> Iterator[None]:
    previous = capturing()
    _capture_state.active = True
    try:
        yield
    finally:
        _capture_state.active = previous


_MATMUL_BODY = """
const ptrdiff_t row = i / columns;
const ptrdiff_t column = i - row * columns;
T total = 0;
for (ptrdiff_t k = 0; k < depth; ++k) {
    const ptrdiff_t left[2] = {row, k};
    const ptrdiff_t right[2] = {k, column};
    total += a[left] * b[right];
}
out = total;
"""
_matmul_kernel: Any = None


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for small float matrices, without cuBLAS, so that a CUDA graph can capture it.

    CuPy refuses every cuBLAS call while a stream is being captured
    (``NotImplementedError: calling cuBLAS API during stream capture is
    currently unsupported``), so a forward or backward pass written with ``@``
    cannot be part of a :class:`GraphedStep`.  This product computes one output
    element per thread (a loop over the shared dimension), reads strided
    operands in place (``x.T`` costs no copy), and for the small matrices of
    the models that graphs are for (a few hundred elements) is as fast as
    cuBLAS's launch.

    Parameters
    ----------
    a, b : cupy.ndarray
        1-D or 2-D, the same float dtype, ``a.shape[-1] == b.shape[0]``.

    Returns
    -------
    cupy.ndarray
        A new C-contiguous array of shape ``a.shape[:-1] + b.shape[1:]``, as ``a @ b``.
    """
    global _matmul_kernel
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, cupy.ndarray) or x.ndim not in (1, 2) or str(x.dtype) not in FUSED_DTYPES:
            raise TypeError(f"matmul: {name} must be a 1-D or 2-D float32 or float64 CuPy array")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a is {a.dtype} but b is {b.dtype}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align")
    left = a if a.ndim == 2 else a[None, :]
    right = b if b.ndim == 2 else b[:, None]
    out = cupy.empty((left.shape[0], right.shape[1]), dtype=a.dtype)
    if _matmul_kernel is None:
        _matmul_kernel = cupy.ElementwiseKernel(
            "raw T a, raw T b, int64 columns, int64 depth", "T out", _MATMUL_BODY, name="anyoptim_small_matmul"
        )
    _matmul_kernel(left, right, right.shape[1], left.shape[1], out)
    return out.reshape(tuple(a.shape[:-1]) + tuple(b.shape[1:]))


class _ScalarPlan:
    """Where each kernel of a captured step reads its host scalars: slices of one float64 device table.

    While warming up, every launch is recorded (trace, leaf, offset) and gets a
    table of its own; once frozen, launches must come in the same order and
    read their slice of the shared table, which the host refills before each
    replay with :meth:`fill`.
    """

    def __init__(self, leaf_index: Mapping[int, int]):
        self.leaf_index = dict(leaf_index)  # id(parameter leaf) -> its index in the optimizer's leaf list
        # (trace, its scalar folder, leaf index, offset, count) per launch, in launch order
        self.entries: list[tuple[Trace, Callable[..., list[Any]], int, int, int]] = []
        self.size = 0
        self.table: Any = None
        self._cursor = 0

    def table_for(self, trace: Trace, fold: Callable[..., list[Any]], first_param: Any, values: Sequence[float]) -> Any:
        index = self.leaf_index.get(id(first_param))
        if index is None:
            raise ValueError("a captured step updated an array that is not one of the parameters it was given")
        if self.table is None:
            self.entries.append((trace, fold, index, self.size, len(values)))
            self.size += len(values)
            return cupy.asarray(np.asarray(values, dtype=np.float64))
        entry = self.entries[self._cursor] if self._cursor < len(self.entries) else None
        if entry is None or entry[0] is not trace or entry[2] != index:
            raise RuntimeError("the step launched other kernels while captured than while warming up")
        _, _, _, offset, count = entry
        self._cursor += 1
        return self.table[offset : offset + count]

    def freeze(self) -> None:
        self.table = cupy.zeros((max(self.size, 1),), dtype=np.float64)
        self._cursor = 0

    def fill(self, row: np.ndarray, hps: Sequence[Mapping[str, Any]]) -> None:
        for _, fold, index, offset, count in self.entries:
            row[offset : offset + count] = fold(hps[index])


class GraphedStep:
    """A whole training step (forward, backward, update) captured once as a CUDA graph, then replayed.

    For small models a GPU step is dominated by launch overhead: each of the
    dozens of small kernels of a forward, a backward and an update costs a few
    microseconds of CPU time.  Replaying a captured graph costs one launch.
    The arrays a graph touches are fixed at capture, so the model works on
    *static* buffers: the parameters and state are updated in place, the inputs
    are copied into the buffers given at construction, and the loss and
    gradients are written to the same arrays at every replay.  The step's host
    scalars (learning rate, bias corrections, RAdam's branch: everything
    :class:`~anyoptim.Optimizer` computes from the step count) live in a small
    device table that the host refreshes with one asynchronous copy before each
    replay, so schedules and bias corrections stay right.

    Parameters
    ----------
    optimizer : anyoptim.Optimizer
        With ``on_nonfinite="ignore"`` (the default; the other policies read the
        device from the host) and ``engine`` "auto" or "fused".
    params : tree of cupy.ndarray
        C-contiguous float32/float64 arrays, updated in place at every replay;
        best made with :func:`anyoptim.flatten` (one kernel for the whole update).
    state : OptimizerState
        From ``optimizer.init(params)``; its slot arrays are updated in place.
    loss_and_grads : callable
        ``loss_and_grads(params, *inputs) -> (loss, grads)``: the forward and
        backward pass, on the device only (no ``.item()``, no host copies, no
        boolean-mask indexing, which synchronise with the host) and without
        cuBLAS, which CuPy refuses during a capture: use :func:`matmul` for
        products (:func:`capturing` tells model code when it is recorded).
    *inputs : cupy.ndarray
        Static input buffers (a batch, its targets).  Each call copies new data
        into them.
    ring : int, default 8
        Pinned host rows for the scalars, so the host can run that many steps
        ahead of the device.

    Notes
    -----
    Construction runs the step once eagerly (to compile kernels and size the
    memory pool), restores the parameters and state, and captures the step on a
    private stream and memory pool; it changes nothing.  Replays run on the
    caller's current stream; keep calling from one stream.  ``state`` and
    ``params`` of this object are the truth after replays: ``state.count``
    counts the replays.

    Examples
    --------
    .. code-block:: python

        params = anyoptim.flatten(init_mlp(...))            # cupy arrays
        opt = anyoptim.Adam(learning_rate=anyoptim.schedules.cosine_decay(0.01, 5000))
        x, y = cupy.zeros((64, 2), "float32"), cupy.zeros((64, 1), "float32")
        step = GraphedStep(opt, params, opt.init(params), loss_and_grads, x, y)
        for xb, yb in batches:
            loss = step(xb, yb)          # copy the batch in, replay forward + backward + Adam
        params, state = step.params, step.state
    """

    def __init__(
        self,
        optimizer: Any,
        params: Any,
        state: Any,
        loss_and_grads: Callable[..., tuple[Any, Any]],
        *inputs: Any,
        ring: int = 8,
    ):
        from ..._namespace import check_leaves
        from ...tree import tree_flatten
        from .. import select_engine

        if cupy is None:
            raise RuntimeError("GraphedStep needs CuPy")
        if getattr(optimizer, "on_nonfinite", "ignore") != "ignore":
            raise ValueError(
                f"on_nonfinite={optimizer.on_nonfinite!r} reads the gradients back to the host every step, "
                "which a CUDA graph cannot do; use on_nonfinite='ignore' with GraphedStep"
            )
        if getattr(optimizer, "engine", "auto") not in ("auto", "fused"):
            raise ValueError(f"GraphedStep needs the fused engine; the optimizer has engine={optimizer.engine!r}")
        if not callable(loss_and_grads):
            raise TypeError("loss_and_grads must be callable: loss_and_grads(params, *inputs) -> (loss, grads)")
        if int(ring) < 1:
            raise ValueError(f"ring must be >= 1, got {ring!r}")
        self._names, self._param_leaves, self._treedef = tree_flatten(params)
        xp, _ = check_leaves(self._names, self._param_leaves, what="params")
        engine = select_engine(xp, "fused")
        if not isinstance(engine, CupyEngine):
            raise TypeError("GraphedStep needs CuPy arrays")
        for name, leaf in zip(self._names, self._param_leaves, strict=True):
            if str(leaf.dtype) not in FUSED_DTYPES or not leaf.flags.c_contiguous:
                raise ValueError(
                    f"params[{name!r}] must be a C-contiguous float32 or float64 array (use anyoptim.flatten); "
                    f"it is {leaf.dtype}, {'C-contiguous' if leaf.flags.c_contiguous else 'not C-contiguous'}"
                )
        for position, array in enumerate(inputs):
            if not isinstance(array, cupy.ndarray):
                raise TypeError(
                    f"inputs[{position}] must be a CuPy array (a static buffer), got {type(array).__name__}"
                )
        _, slot_leaves, _ = tree_flatten(list(state.slots.values()))
        self._engine = engine
        self._optimizer = optimizer
        self._host_scalars = optimizer.host_scalars(params)
        self._params = params
        self._captured_state = state
        self._inputs = inputs
        self._loss_and_grads = loss_and_grads
        self._count = state.count
        self._learning_rate = state.learning_rate
        self._pool = cupy.cuda.MemoryPool()
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._plan = _ScalarPlan({id(leaf): i for i, leaf in enumerate(self._param_leaves)})
        # A step the optimizer prepared eagerly on these very arrays (a loss_and_grads that fills static
        # gradient buffers) would be taken again by its fast path, scalars baked in: the capture must not.
        optimizer.forget_prepared()

        touched = [*self._param_leaves, *slot_leaves]
        saved = [leaf.copy() for leaf in touched]
        cupy.cuda.get_current_stream().synchronize()  # our stream does not wait for the caller's
        with cupy.cuda.using_allocator(self._pool.malloc), self._stream:
            try:
                self._record()  # warm-up: compiles the kernels, fills the pool, fixes the plan
            finally:
                self._loss = self._grads = None  # give the warm-up's buffers back for the capture to reuse
                for leaf, original in zip(touched, saved, strict=True):
                    leaf[...] = original  # undo the warm-up step, even a failed one
        self._stream.synchronize()
        del saved
        self._plan.freeze()
        self._graph = self._capture()
        self._stream.synchronize()
        self._host_rows = _pinned((int(ring), max(self._plan.size, 1)))
        self._row_free = [cupy.cuda.Event(disable_timing=True) for _ in range(int(ring))]

    def _record(self) -> None:
        with _recording():
            loss, grads = self._loss_and_grads(self._params, *self._inputs)
            with self._engine._scalars_on_device(self._plan):
                new_params, _ = self._optimizer.step(self._params, grads, self._captured_state)
        from ...tree import tree_flatten

        _, new_leaves, _ = tree_flatten(new_params)
        if any(new is not old for new, old in zip(new_leaves, self._param_leaves, strict=True)):
            raise RuntimeError("the captured update did not run in place")  # pragma: no cover
        self._loss = loss
        self._grads = grads

    def _capture(self) -> Any:
        with cupy.cuda.using_allocator(self._pool.malloc), self._stream:
            self._stream.begin_capture()
            try:
                self._record()
            except BaseException as error:
                with contextlib.suppress(Exception):
                    self._stream.end_capture()  # leave capture mode; the partial graph is dropped
                if isinstance(error, Exception):
                    raise RuntimeError(_capture_failure(error)) from error
                raise
            try:
                return self._stream.end_capture()
            except Exception as error:  # an operation invalidated the capture without raising itself
                raise RuntimeError(_capture_failure(error)) from error

    def __call__(self, *inputs: Any) -> Any:
        """Copy ``inputs`` into the static input buffers (if given), take one step, and return the loss array.

        The returned loss is the same static array at every call: copy it if it
        must outlive the next step.
        """
        if inputs:
            if len(inputs) != len(self._inputs):
                raise ValueError(f"expected {len(self._inputs)} inputs, got {len(inputs)}")
            for position, (static, new) in enumerate(zip(self._inputs, inputs, strict=True)):
                if tuple(new.shape) != tuple(static.shape):
                    raise ValueError(
                        f"inputs[{position}] has shape {tuple(new.shape)}, but the graph was captured with "
                        f"{tuple(static.shape)}"
                    )
            for static, new in zip(self._inputs, inputs, strict=True):
                static[...] = new
        stream = cupy.cuda.get_current_stream()
        count = self._count
        hps, learning_rate = self._host_scalars(count)
        if self._plan.size:
            slot = count % len(self._row_free)
            self._row_free[slot].synchronize()  # the copy that last read this row has finished
            row = self._host_rows[slot]
            self._plan.fill(row, hps)
            self._plan.table.data.copy_from_host_async(row.ctypes.data, row.nbytes, stream)
            self._row_free[slot].record(stream)
        self._graph.launch(stream)
        self._count = count + 1
        self._learning_rate = learning_rate
        return self._loss

    @property
    def params(self) -> Any:
        """The parameters (the static arrays, updated in place by every replay)."""
        return self._params

    @property
    def state(self) -> Any:
        """The optimizer state after the replays so far."""
        from dataclasses import replace

        return replace(self._captured_state, count=self._count, learning_rate=self._learning_rate)

    @property
    def loss(self) -> Any:
        """The static loss array the last replay wrote."""
        return self._loss

    @property
    def grads(self) -> Any:
        """The static gradient arrays the last replay wrote."""
        return self._grads

    @property
    def inputs(self) -> tuple[Any, ...]:
        """The static input buffers."""
        return self._inputs


def _capture_failure(error: Exception) -> str:
    hint = (
        " CuPy refuses cuBLAS calls during a capture: use anyoptim.engines.cupy.matmul instead of @ "
        "(anyoptim.engines.cupy.capturing() tells model code when it is recorded)."
        if "cuBLAS" in str(error)
        else ""
    )
    return (
        "capturing the training step as a CUDA graph failed: everything in loss_and_grads and the update must run "
        "on the device without synchronising with the host (no .item(), float(), host copies or boolean-mask "
        f"indexing), and without cuBLAS.{hint} The error was: {error!r}"
    )


def _pinned(shape: tuple[int, ...]) -> np.ndarray:
    import cupyx

    row = cupyx.empty_pinned(shape, dtype=np.float64)
    row[...] = 0.0
    return row


def capture(
    optimizer: Any, params: Any, state: Any, loss_and_grads: Callable[..., tuple[Any, Any]], *inputs: Any
) -> GraphedStep:
    """Capture ``loss_and_grads`` plus ``optimizer``'s update as a replayable CUDA graph.

    Shorthand for :class:`GraphedStep` (see there for the parameters and an example).
    """
    return GraphedStep(optimizer, params, state, loss_and_grads, *inputs)
