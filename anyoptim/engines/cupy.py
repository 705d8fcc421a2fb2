"""The CuPy engine: one fused CUDA kernel per contiguous run of parameters, traced from the rule.

The optimizer's :class:`~anyoptim.rules.Program` is traced once
(:mod:`anyoptim.engines._trace`) into an expression graph and printed as the
body of a ``cupy.ElementwiseKernel`` that reads the parameter, its gradient and
the state slots, and writes the parameter and the slots back in place.  Nothing
here types an update formula: the kernel is the rule.

* **One launch per run.**  Leaves that lie back to back in one allocation in
  every column (parameters, gradients, each slot) and share their scalars are
  joined into one 1-D span (:func:`anyoptim.engines._spans.contiguous_runs`).
  Parameters made by :func:`anyoptim.flatten`, with state from
  :meth:`CupyEngine.init_slots`, are one span: one launch updates the model.
* **Typed scalars.**  Host scalars (the learning rate, ``1 - beta1``, bias
  corrections) are computed in Python as the generic engine computes them and
  passed as NumPy scalars of the parameter dtype, so the kernel computes in
  ``T`` throughout (the ``cupy.fuse`` trap, where Python floats become float16
  constants, cannot happen).  ``hp["grad_scale"]`` (global-norm clipping) is a
  0-D device array and stays on the device.
* **Same rounding as the generic path.**  Kernels are compiled with
  ``--fmad=false``: ``a*b + c`` is rounded twice, as when each operator is its
  own kernel, so fused and generic agree to the last bit in practice.
* **Fallback.**  Leaves that are not C-contiguous, or whose dtype is not
  float32/float64, take the generic engine (new arrays, correct, slower).

:class:`GraphedStep` captures a whole training step (forward, backward,
update) in a CUDA graph and replays it, with the step's scalars kept in a small
device table that the host refreshes before each replay.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    import cupy
except ImportError:  # pragma: no cover - the module stays importable (docs, CPU tests of its logic)
    cupy = None

from ..rules import Program
from ._spans import contiguous_runs, flat_slots
from ._trace import (
    FUSED_DTYPES,
    KernelSource,
    Trace,
    cuda_source,
    hp_signature,
    scalar_folder,
    trace_program,
)
from .generic import GenericEngine

__all__ = ["COMPILE_OPTIONS", "CupyEngine", "GraphedStep", "capture", "capturing", "matmul"]

#: NVRTC options of every kernel: no contraction of a*b + c into one FMA, so
#: the fused kernel rounds each operation as the generic engine does.
COMPILE_OPTIONS = ("--fmad=false",)


@dataclass
class _Compiled:
    """A traced program and its kernels by (dtype name, scalars on device)."""

    trace: Trace
    kernels: dict[tuple[str, bool], tuple[KernelSource, Any]] = field(default_factory=dict)


class CupyEngine:
    """Run a program as one fused, in-place CUDA kernel per contiguous run of leaves.

    The static methods whose names start with ``_device`` are the only code
    that touches CuPy; the rest is backend-neutral, so the run detection and
    the binding of kernel arguments are tested on a CPU with NumPy stand-ins.
    """

    name = "cupy"

    def __init__(self) -> None:
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}
        self._generic = GenericEngine()
        self._plan: _ScalarPlan | None = None

    # -- the interface every engine has

    def init_slots(self, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
        """State slots as views of one flat buffer per slot and dtype, laid out like ``leaves``."""
        return flat_slots(xp, leaves, fills)

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

        Finds the runs, builds the spans and compiles the kernels once.  The
        arrays must stay the same objects with the same layout between calls,
        and ``hps`` must keep the grouping it has here (leaves sharing one
        mapping now share one later).
        """
        return _PreparedStep(self, program, xp, params, grads, slots, hps)

    def apply(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run ``program`` on every leaf; fused leaves are updated in place and returned."""
        return self.prepare(program, xp, params, grads, slots, hps)(hps)

    # -- tracing and kernels

    def compiled(self, program: Program, slot_names: Sequence[str], hp: Mapping[str, Any]) -> _Compiled:
        """The trace of ``program`` for these slots and hyperparameter kinds (cached)."""
        key = (program, tuple(slot_names), hp_signature(hp))
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = _Compiled(trace_program(program, slot_names, key[2]))
        return found

    def kernel(self, compiled: _Compiled, dtype: str, scalars_on_device: bool) -> tuple[KernelSource, Any]:
        """The kernel source and kernel of a trace for one dtype (cached; CuPy compiles it at its first launch)."""
        key = (dtype, scalars_on_device)
        found = compiled.kernels.get(key)
        if found is None:
            source = cuda_source(compiled.trace, dtype, scalars_on_device=scalars_on_device)
            found = compiled.kernels[key] = (source, self._device_kernel(compiled.trace, source))
        return found

    def _launch(self, kernel: Any, args: Sequence[Any]) -> None:
        """Launch one kernel (the one place launches go through; tests count them here)."""
        kernel(*args)

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


class _Run:
    """One kernel launch of a prepared step: a span of leaves, its kernel, and where its scalars come from."""

    __slots__ = ("copy_grad", "engine", "first", "fold", "grad", "kernel", "outputs", "plan", "source", "trace")

    def __init__(
        self,
        engine: CupyEngine,
        program: Program,
        first: int,
        p: Any,
        g: Any,
        slots: Mapping[str, Any],
        hp: Any,
        *,
        copy_grad: bool,
    ):
        compiled = engine.compiled(program, tuple(slots), hp)
        self.engine = engine
        self.plan = engine._plan
        self.trace = compiled.trace
        self.fold = scalar_folder(compiled.trace)
        self.source, self.kernel = engine.kernel(compiled, str(p.dtype), self.plan is not None)
        self.first = first  # index of the run's first leaf in the step's lists
        self.grad = g
        self.copy_grad = copy_grad  # a strided gradient, copied to a contiguous one at each step
        self.outputs = [p if role == "param" else slots[name] for role, name in self.source.outputs]

    def __call__(self, hps: Sequence[Mapping[str, Any]], first_param: Any) -> None:
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
                args.append(self.plan.table_for(self.trace, self.fold, first_param, scalars))
        args.extend(self.outputs)
        engine._launch(self.kernel, args)


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
        self.runs: list[tuple[_Run, int]] = []
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
                leaves = indices[start:stop]
                copy_grad = not grads[leaves[0]].flags.c_contiguous  # then it is a run of one leaf
                run = _Run(
                    engine,
                    program,
                    leaves[0],
                    engine._device_span([params[i] for i in leaves]),
                    grads[leaves[0]] if copy_grad else engine._device_span([grads[i] for i in leaves]),
                    {name: engine._device_span([slots[name][i] for i in leaves]) for name in slot_names},
                    hps[leaves[0]],
                    copy_grad=copy_grad,
                )
                self.runs.append((run, leaves[0]))

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
        for run, first in self.runs:
            run(hps, self.params[first])
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


class _HostScalars:
    """Every host scalar of a step, from the optimizer's own code, without touching the device.

    The leaf groups are fixed with the arrays; the scalars of a step are asked
    of a copy of the optimizer without global-norm clipping (inside a graph the
    clip factor is computed on the device, by the captured step itself).
    """

    def __init__(self, optimizer: Any, xp: Any, names: list[str], param_leaves: list[Any], treedef: Any):
        self.optimizer = optimizer
        self.xp = xp
        self.keys, self.key_of_leaf, _ = optimizer._leaf_groups(names, param_leaves, treedef)
        self.host_optimizer = copy.copy(optimizer)
        self.host_optimizer.clip_global_norm = None

    def __call__(self, count: int) -> tuple[list[dict[str, Any]], float]:
        """Each leaf's scalars for the step after ``count`` steps, and that step's learning rate."""
        learning_rate = self.optimizer.learning_rate_at(count)
        hps = self.host_optimizer._step_scalars_of_leaves(
            self.xp, self.keys, self.key_of_leaf, [], count, learning_rate
        )
        return hps, learning_rate


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
        from .._namespace import check_leaves
        from ..tree import tree_flatten
        from . import select_engine

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
        self._host_scalars = _HostScalars(optimizer, xp, self._names, self._param_leaves, self._treedef)
        self._params = params
        self._captured_state = state
        self._inputs = inputs
        self._loss_and_grads = loss_and_grads
        self._count = state.count
        self._learning_rate = state.learning_rate
        self._pool = cupy.cuda.MemoryPool()
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._plan = _ScalarPlan({id(leaf): i for i, leaf in enumerate(self._param_leaves)})

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
        from ..tree import tree_flatten

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
