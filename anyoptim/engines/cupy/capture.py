"""CUDA graphs: a whole training step captured once and replayed, and the product a capture can hold.

:class:`GraphedStep` captures forward, backward and update on a private stream
and replays them with one launch per step; the update's kernels read their host
scalars from a :class:`~anyoptim.engines.cupy.scalar_table.ScalarPlan` that the
host refills before each replay.  CuPy refuses cuBLAS during a capture, so
model code multiplies with :func:`matmul` while :func:`capturing` is true (see
:func:`anyoptim.engines.matmul`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

try:
    import cupy
except ImportError:  # pragma: no cover - the module stays importable (docs, CPU tests of its logic)
    cupy = None

from ..trace import FUSED_DTYPES
from .scalar_table import ScalarPlan, scalars_on_device

__all__ = ["MATMUL_BODY", "GraphedStep", "capture", "capturing", "matmul"]

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


#: The CUDA body of :func:`matmul`'s ElementwiseKernel: one output element per thread.
MATMUL_BODY = """
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
            "raw T a, raw T b, int64 columns, int64 depth", "T out", MATMUL_BODY, name="anyoptim_small_matmul"
        )
    _matmul_kernel(left, right, right.shape[1], left.shape[1], out)
    return out.reshape(tuple(a.shape[:-1]) + tuple(b.shape[1:]))


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
        from ...tree import tree_flatten

        self._names, self._param_leaves, self._treedef = _checked_params(
            optimizer, params, loss_and_grads, inputs, ring
        )
        _, slot_leaves, _ = tree_flatten(list(state.slots.values()))
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
        self._plan = ScalarPlan({id(leaf): i for i, leaf in enumerate(self._param_leaves)})
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
            with scalars_on_device(self._plan):
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
        """The parameters (the static arrays, updated in place by every replay).

        Examples
        --------
        Needs CuPy and a CUDA GPU (``step`` a :class:`GraphedStep`), so it is not run here:

        .. code-block:: python

            loss = step(X, y); W = step.params["W"]  # the very array the model reads; a replay updates it
        """
        return self._params

    @property
    def state(self) -> Any:
        """The optimizer state after the replays so far.

        Examples
        --------
        Needs CuPy and a CUDA GPU (``step`` a :class:`GraphedStep`), so it is not run here:

        .. code-block:: python

            step(X, y); step(X, y); assert step.state.count == 2
        """
        from dataclasses import replace

        return replace(self._captured_state, count=self._count, learning_rate=self._learning_rate)

    @property
    def loss(self) -> Any:
        """The static loss array the last replay wrote.

        Examples
        --------
        Needs CuPy and a CUDA GPU (``step`` a :class:`GraphedStep`), so it is not run here:

        .. code-block:: python

            step(X, y); print(float(step.loss))  # the array step() returned
        """
        return self._loss

    @property
    def grads(self) -> Any:
        """The static gradient arrays the last replay wrote.

        Examples
        --------
        Needs CuPy and a CUDA GPU (``step`` a :class:`GraphedStep`), so it is not run here:

        .. code-block:: python

            step(X, y); g = step.grads  # the parameters' tree, static arrays
        """
        return self._grads

    @property
    def inputs(self) -> tuple[Any, ...]:
        """The static input buffers.

        Examples
        --------
        Needs CuPy and a CUDA GPU (``step`` a :class:`GraphedStep`), so it is not run here:

        .. code-block:: python

            X_buffer, y_buffer = step.inputs  # step(X, y) copies X and y in here
        """
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


def _checked_params(
    optimizer: Any, params: Any, loss_and_grads: Any, inputs: tuple[Any, ...], ring: int
) -> tuple[list[str], list[Any], Any]:
    """:class:`GraphedStep`'s checks of its arguments, in order; the names, leaves and structure of ``params``."""
    from ..._namespace import backend_name, check_leaves
    from ...tree import tree_flatten

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
    names, leaves, treedef = tree_flatten(params)
    xp, _ = check_leaves(names, leaves, what="params")
    if backend_name(xp) != "cupy":
        raise TypeError("GraphedStep needs CuPy arrays")
    for name, leaf in zip(names, leaves, strict=True):
        if str(leaf.dtype) not in FUSED_DTYPES or not leaf.flags.c_contiguous:
            raise ValueError(
                f"params[{name!r}] must be a C-contiguous float32 or float64 array (use anyoptim.flatten); "
                f"it is {leaf.dtype}, {'C-contiguous' if leaf.flags.c_contiguous else 'not C-contiguous'}"
            )
    for position, array in enumerate(inputs):
        if not isinstance(array, cupy.ndarray):
            raise TypeError(f"inputs[{position}] must be a CuPy array (a static buffer), got {type(array).__name__}")
    return names, leaves, treedef
