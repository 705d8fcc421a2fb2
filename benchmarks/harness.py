"""The optimizer-step benchmark: anyoptim beside torch.optim and optax, on one device, in one process.

Run it from a checkout as ``python benchmarks/step.py``::

    python benchmarks/step.py --backend numpy --compare torch,optax --json bench.json
    python benchmarks/step.py --backend cupy --compare torch,optax --quick

It lives outside the wheel with the lesson's own code it races against
(``lesson_numpy.py`` beside it), so the whole harness is always present.

Workloads (float32 unless said otherwise; on ``numpy`` the large ones are smaller):

=====================  ====================================================  ==================
name                   what                                                  bytes the step moves
=====================  ====================================================  ==================
adam-1-tensor          Adam on one tensor of 2**27 (GPU) / 2**23 (CPU)       28 B/param
adam-200-tensors       Adam on 100 weights (w, w) and 100 biases (w,):       28 B/param
                       w = 853, 72.8 M params (GPU) / w = 200, 4.0 M (CPU)
adam-mlp-6-tensors     Adam on the lesson's 2-5-2-1 MLP (6 tensors, 30)      28 B/param
momentum-1-tensor      heavy-ball momentum 0.9 on the one tensor             20 B/param
rmsprop-1-tensor       RMSprop (decay 0.9) on the one tensor                 20 B/param
train-mlp-64           forward + backward + Adam of the 2-5-2-1 MLP on a     -
                       64-sample moons batch
lesson-end-to-end      (numpy only) the lesson's 5000-epoch Adam run: its    -
                       own NumPy code (benchmarks/lesson_numpy.py, float64)
                       against ``anyoptim.fit``
=====================  ====================================================  ==================

Implementations: anyoptim with ``engine="fused"`` (the NumPy or CuPy engine;
on NumPy also the engine pinned to ufunc calls, "fused ufuncs", beside its
compiled C kernels) and ``engine="generic"``, with parameters in one flat buffer
(:func:`anyoptim.flatten`) and as separate arrays; torch.optim with
``foreach=False`` (for-loop), ``foreach=True`` and ``fused=True``; optax,
its update and ``apply_updates`` compiled with ``jax.jit`` (buffers donated).

Every time is the best of a few timings of many steps each, after a warm-up,
with the device synchronised before each clock read.  The memory-bandwidth
limit is measured in the same run by two device-to-device streams, a copy and
an in-place ``b += a`` (bytes read plus written per second; the faster counts,
see :func:`copy_bandwidth`); a step's *fraction of the limit* is the time the bytes
it must move would take at that bandwidth, divided by its time.  Ratios are to
torch's fused step of the same workload (its for-loop where fused is missing),
and for the end-to-end run to the lesson's code.

On the CPU every library is pinned to one thread: ``torch.set_num_threads(1)``,
``XLA_FLAGS`` for JAX (set before JAX is imported), and threadpoolctl when it
is installed.  A failing workload or library prints an error row; the rest go on.

This module imports NumPy, and CuPy, torch and JAX when asked for them: timing
libraries against each other is its whole purpose.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import itertools
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from array_api_compat import array_namespace

__all__ = ["Row", "main", "run"]

BACKENDS = ("numpy", "cupy")
LIBRARIES = ("torch", "optax")
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

#: Bytes an update must read and write per fp32 parameter: Adam reads p, g, m, v and
#: writes p, m, v; momentum and RMSprop read p, g and one slot and write p and the slot.
BYTES_PER_PARAM = {"adam": 28, "momentum": 20, "rmsprop": 20}

LESSON_DIMS = (2, 5, 2, 1)


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: a workload run by one implementation."""

    workload: str
    implementation: str
    seconds: float | None = None  # per step (per run for end-to-end)
    ratio: float | None = None  # to the workload's reference
    bandwidth_fraction: float | None = None
    bytes_moved: int | None = None  # what one step must read and write
    error: str | None = None
    note: str = ""


@dataclass
class Workload:
    """What one workload times, and how each library builds it."""

    name: str
    optimizer: str  # adam, momentum, rmsprop; or "train" / "end-to-end"
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    reference: tuple[str, ...] = ("torch fused", "torch for-loop")

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def bytes_moved(self) -> int | None:
        per_param = BYTES_PER_PARAM.get(self.optimizer)
        return None if per_param is None else per_param * self.size


def workloads(backend: str, *, quick: bool) -> list[Workload]:
    """The workloads for ``backend``: GPU sizes on cupy, CPU sizes on numpy."""
    gpu = backend == "cupy"
    one = [(2**27,)] if gpu else [(2**23,)]
    width = 853 if gpu else 200
    many = [shape for _ in range(100) for shape in ((width, width), (width,))]
    mlp = _mlp_shapes(LESSON_DIMS)
    found = [
        Workload("adam-1-tensor", "adam", one),
        Workload("adam-200-tensors", "adam", many),
        Workload("adam-mlp-6-tensors", "adam", mlp),
        Workload("momentum-1-tensor", "momentum", one),
        Workload("rmsprop-1-tensor", "rmsprop", one),
        Workload("train-mlp-64", "train", mlp),
    ]
    if not gpu:
        found.append(Workload("lesson-end-to-end", "end-to-end", reference=("lesson NumPy code",)))
    return found


def _mlp_shapes(dims: Sequence[int]) -> list[tuple[int, ...]]:
    """anyoptim's MLP layout: W_l (n_{l-1}, n_l), b_l (n_l,)."""
    shapes: list[tuple[int, ...]] = []
    for n_in, n_out in itertools.pairwise(dims):
        shapes += [(n_in, n_out), (n_out,)]
    return shapes


# --------------------------------------------------------------------------- devices and timing


class Device:
    """The array library anyoptim runs on, how to synchronise it, and the matching torch device."""

    def __init__(self, backend: str):
        import numpy

        self.backend = backend
        self.np = numpy
        if backend == "cupy":
            import cupy  # only when asked for: the GPU run

            self.xp = cupy
            self.torch_device = "cuda"
            self.name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
        else:
            self.xp = numpy
            self.torch_device = "cpu"
            self.name = _cpu_name()

    def sync(self) -> None:
        if self.backend == "cupy":
            self.xp.cuda.Device().synchronize()

    def asarray(self, host: Any) -> Any:
        return self.xp.asarray(host)

    def release(self) -> None:
        """Give cached device memory back between implementations."""
        gc.collect()
        if self.backend == "cupy":
            self.xp.get_default_memory_pool().free_all_blocks()
        torch = sys.modules.get("torch")
        if torch is not None and self.backend == "cupy":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def time_per_step(
    step: Callable[[], Any], sync: Callable[[], Any], *, min_time: float, repeats: int, warmup: int = 3
) -> float:
    """Seconds per call of ``step``: the best of ``repeats`` timings of enough calls to last ``min_time``.

    ``sync`` waits for the device; it runs before every clock read, never inside the timed loop.
    """
    for _ in range(warmup):
        step()
    sync()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            step()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 4 or calls >= 1 << 20:
            break
        calls *= 4 if elapsed < min_time / 64 else 2
    calls = max(1, math.ceil(calls * min_time / max(elapsed, 1e-9)))
    best = elapsed / calls if calls == 1 else math.inf
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            step()
        sync()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def copy_bandwidth(device: Device, *, min_time: float, repeats: int) -> dict[str, float]:
    """Bytes per second (read + written) of two device-to-device streams over one buffer pair.

    ``copy`` is ``b[:] = a`` (8 B per float32 element); ``in place`` is ``b += a``
    (12 B: reads a and b, writes b), the pattern of an in-place optimizer.  On a
    CPU a copy into another buffer also reads each target line before writing
    it (write-allocate), so it understates what an in-place update can reach;
    the limit used for the fractions is the faster of the two.  The buffers are
    as large as the one-tensor workload's state: 2**28 elements each on a GPU,
    2**24 on a CPU.
    """
    xp = device.xp
    count = 2**28 if device.backend == "cupy" else 2**24
    source = xp.ones(count, dtype=xp.float32)
    target = xp.ones_like(source)
    timing = {"min_time": min_time, "repeats": repeats, "warmup": 2}
    copy = time_per_step(lambda: xp.copyto(target, source), device.sync, **timing)
    in_place = time_per_step(lambda: xp.add(target, source, out=target), device.sync, **timing)
    return {"copy": 8 * count / copy, "in place": 12 * count / in_place, "buffer bytes": 4 * count}


# --------------------------------------------------------------------------- one-thread pinning


def pin_threads(backend: str) -> list[str]:
    """Pin the CPU libraries to one thread where the run is on the CPU; return notes on what was done."""
    notes = []
    if backend == "numpy":
        if "jax" in sys.modules:
            notes.append("jax was imported before the benchmark: XLA_FLAGS could not pin it to one thread")
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
            notes.append("threadpoolctl: BLAS/OpenMP pools limited to 1 thread")
        except ImportError:
            notes.append("threadpoolctl not installed: BLAS pools not pinned (elementwise NumPy is single-threaded)")
    else:
        # JAX takes 75 % of GPU memory at its first use unless told not to; CuPy and torch need it too.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return notes


def _torch(backend: str) -> Any:
    import torch

    if backend == "numpy":
        torch.set_num_threads(1)
        with contextlib.suppress(RuntimeError):  # only possible before torch's first parallel work
            torch.set_num_interop_threads(1)
    return torch


def _jax(backend: str) -> tuple[Any, Any, Any]:
    import jax
    import jax.numpy as jnp
    import optax

    if backend == "cupy" and jax.default_backend() == "cpu":
        raise RuntimeError("this JAX has no GPU backend (CPU only): not comparable on the GPU")
    return jax, jnp, optax


# --------------------------------------------------------------------------- data


def _host_tree(np: Any, shapes: Sequence[tuple[int, ...]], seed: int, scale: float) -> list[Any]:
    rng = np.random.default_rng(seed)  # host RNG: the same values for every library
    return [(rng.standard_normal(shape) * scale).astype(np.float32) for shape in shapes]


def _names(count: int) -> list[str]:
    return [f"p{index:03d}" for index in range(count)]


def _anyoptim_optimizer(kind: str, engine: Any) -> Any:
    import anyoptim

    if kind == "momentum":
        return anyoptim.Momentum(0.01, beta=0.9, form="heavy_ball", engine=engine)
    if kind == "rmsprop":
        return anyoptim.RMSprop(1e-3, beta=0.9, epsilon=1e-8, engine=engine)
    return anyoptim.Adam(1e-3, engine=engine)


def _torch_optimizer(torch: Any, kind: str, params: list[Any], variant: str) -> Any:
    options = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[variant]
    if kind == "momentum":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, **options)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-8, **options)
    return torch.optim.Adam(params, lr=1e-3, **options)


def _optax_transform(optax: Any, kind: str) -> Any:
    if kind == "momentum":
        return optax.sgd(0.01, momentum=0.9)
    if kind == "rmsprop":
        try:
            return optax.rmsprop(1e-3, decay=0.9, eps=1e-8, eps_in_sqrt=False)
        except TypeError:  # an older optax without eps_in_sqrt
            return optax.rmsprop(1e-3, decay=0.9, eps=1e-8)
    return optax.adam(1e-3)


# --------------------------------------------------------------------------- the implementations
# Each returns (step, sync, note): step() runs one step, sync() waits for the device.


def _anyoptim_step(device: Device, workload: Workload, engine: Any, flat: bool):
    import anyoptim

    names = _names(len(workload.shapes))
    host_p = _host_tree(device.np, workload.shapes, 0, 1.0)
    host_g = _host_tree(device.np, workload.shapes, 1, 0.01)
    params = {name: device.asarray(value) for name, value in zip(names, host_p, strict=True)}
    grads = {name: device.asarray(value) for name, value in zip(names, host_g, strict=True)}
    if flat:
        params, grads = anyoptim.flatten(params), anyoptim.flatten(grads)
    optimizer = _anyoptim_optimizer(workload.optimizer, engine)
    box = [params, optimizer.init(params)]

    def step() -> None:
        box[0], box[1] = optimizer.step(box[0], grads, box[1])

    return step, device.sync, ""


def _torch_step(device: Device, workload: Workload, variant: str):
    torch = _torch(device.backend)
    params = []
    for value, grad in zip(
        _host_tree(device.np, workload.shapes, 0, 1.0), _host_tree(device.np, workload.shapes, 1, 0.01), strict=True
    ):
        tensor = torch.tensor(value, device=device.torch_device, requires_grad=True)
        tensor.grad = torch.tensor(grad, device=device.torch_device)
        params.append(tensor)
    optimizer = _torch_optimizer(torch, workload.optimizer, params, variant)
    sync = torch.cuda.synchronize if device.backend == "cupy" else (lambda: None)
    return optimizer.step, sync, ""


def _optax_step(device: Device, workload: Workload):
    jax, jnp, optax = _jax(device.backend)
    params = [jnp.asarray(value) for value in _host_tree(device.np, workload.shapes, 0, 1.0)]
    grads = [jnp.asarray(value) for value in _host_tree(device.np, workload.shapes, 1, 0.01)]
    transform = _optax_transform(optax, workload.optimizer)

    def update(params, grads, state):
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    update = jax.jit(update, donate_argnums=(0, 2))
    box = [params, transform.init(params)]

    def step() -> None:
        box[0], box[1] = update(box[0], grads, box[1])

    return step, (lambda: jax.block_until_ready(box[0])), f"jax on {jax.default_backend()}"


# -- the training iteration of the lesson's MLP


def _moons_batch(device: Device, size: int = 64) -> tuple[Any, Any]:
    """The first ``size`` of the lesson's 300 moons, float32, on the host."""
    from anyoptim import datasets

    X, y = datasets.make_moons(n_samples=300, noise=0.2, seed=0)
    np = device.np
    return np.asarray(X[:size], dtype=np.float32), np.asarray(y[:size], dtype=np.float32)


def _anyoptim_train(device: Device, engine: Any, flat: bool, graphed: bool = False):
    import anyoptim

    host_X, host_y = _moons_batch(device)
    X, y = device.asarray(host_X), device.asarray(host_y)
    model = anyoptim.MLP(list(LESSON_DIMS), hidden_activation="relu", output="sigmoid", init="he")
    params = model.init(seed=0, like=X)
    optimizer = anyoptim.Adam(1e-3, engine=engine)
    if flat:
        params = anyoptim.flatten(params)
        grads = anyoptim.flatten({name: device.xp.zeros_like(value) for name, value in params.items()})
    else:
        grads = None  # new gradient arrays every step, as without flat buffers
    state = optimizer.init(params)
    # What fit runs each step: targets checked and prepared once, then the unchecked pass
    # (the checked loss_and_grad reads a flag back from the device, which a graph cannot hold).
    xp = array_namespace(X)
    targets = model.targets(y, xp, X.dtype)
    if graphed:
        from anyoptim.engines.cupy import GraphedStep

        def loss_and_grads(params: Any, X: Any, t: Any) -> tuple[Any, Any]:
            return model.value_and_grad(xp, params, X, t, out=grads)

        graph = GraphedStep(optimizer, params, state, loss_and_grads, X, targets)
        return (lambda: graph(X, targets)), device.sync, "CUDA graph replay"
    box = [params, state]

    def step() -> None:
        _, gradients = model.value_and_grad(xp, box[0], X, targets, out=grads)
        box[0], box[1] = optimizer.step(box[0], gradients, box[1])

    return step, device.sync, ""


def _torch_train(device: Device, variant: str):
    torch = _torch(device.backend)
    host_X, host_y = _moons_batch(device)
    X = torch.tensor(host_X, device=device.torch_device)
    y = torch.tensor(host_y, device=device.torch_device).reshape(-1, 1)
    torch.manual_seed(0)
    layers = []
    for n_in, n_out in itertools.pairwise(LESSON_DIMS):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device.torch_device)  # sigmoid lives in the loss
    loss_function = torch.nn.BCEWithLogitsLoss()
    optimizer = _torch_optimizer(torch, "adam", list(model.parameters()), variant)

    def step() -> None:
        optimizer.zero_grad()
        loss_function(model(X), y).backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device.backend == "cupy" else (lambda: None)
    return step, sync, "nn.Sequential + BCEWithLogitsLoss + autograd"


def _optax_train(device: Device):
    jax, jnp, optax = _jax(device.backend)
    host_X, host_y = _moons_batch(device)
    X, y = jnp.asarray(host_X), jnp.asarray(host_y)
    host_params = _host_tree(device.np, _mlp_shapes(LESSON_DIMS), 0, 0.5)
    params = [jnp.asarray(value) for value in host_params]
    transform = optax.adam(1e-3)

    def loss(params, X, y):  # the JAX user's own MLP: relu, relu, logits; mean BCE
        a = X
        for layer in range(0, len(params) - 2, 2):
            a = jax.nn.relu(a @ params[layer] + params[layer + 1])
        logits = (a @ params[-2] + params[-1])[:, 0]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

    def update(params, state, X, y):
        grads = jax.grad(loss)(params, X, y)
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    update = jax.jit(update, donate_argnums=(0, 1))
    box = [params, transform.init(params)]

    def step() -> None:
        box[0], box[1] = update(box[0], box[1], X, y)

    return step, (lambda: jax.block_until_ready(box[0])), f"jax.jit of grad + update, jax on {jax.default_backend()}"


def _anyoptim_engines(backend: str) -> dict[str, Any]:
    """The anyoptim engines to time: label -> ``engine`` option."""
    engines: dict[str, Any] = {"fused": "fused"}
    if backend == "numpy":
        from anyoptim.engines.numpy import NumpyEngine

        if NumpyEngine().kernels != "ufunc":  # compiled kernels are the default: time the ufunc plan beside them
            engines["fused ufuncs"] = NumpyEngine(kernels="ufunc")
    engines["generic"] = "generic"
    return engines


def _numpy_kernels_note() -> str:
    """Which kernels the NumPy engine runs here, and with which compiler."""
    from anyoptim.engines.numpy import NumpyEngine
    from anyoptim.engines.numpy import native as _native

    kernels = NumpyEngine().kernels
    if kernels == "ufunc":
        return "NumPy engine: ufunc calls (no C compiler, or ANYOPTIM_NUMPY_KERNELS=ufunc)"
    _, identity = _native.compiler()
    return f"NumPy engine: compiled C kernels ({identity.splitlines()[0] if identity else 'C compiler'})"


def _implementations(device: Device, workload: Workload, compare: Sequence[str]) -> list[tuple[str, Callable]]:
    """(name, builder) for every implementation of ``workload``; builders return (step, sync, note)."""
    engines = _anyoptim_engines(device.backend)
    layouts = (True, False) if len(workload.shapes) > 1 else (True,)
    found: list[tuple[str, Callable]] = []

    def layout_name(flat: bool) -> str:
        return "" if len(workload.shapes) == 1 else (", flat" if flat else ", per tensor")

    if workload.optimizer == "train":
        for label, engine in engines.items():
            for flat in (True, False):
                found.append(
                    (f"anyoptim {label}{layout_name(flat)}", lambda e=engine, f=flat: _anyoptim_train(device, e, f))
                )
        if device.backend == "cupy":
            found.append(
                ("anyoptim fused, flat, graphed", lambda: _anyoptim_train(device, "fused", True, graphed=True))
            )
        if "torch" in compare:
            for variant in ("for-loop", "foreach", "fused"):
                found.append((f"torch {variant}", lambda v=variant: _torch_train(device, v)))
        if "optax" in compare:
            found.append(("optax (jit)", lambda: _optax_train(device)))
        return found
    for label, engine in engines.items():
        for flat in layouts:
            found.append(
                (
                    f"anyoptim {label}{layout_name(flat)}",
                    lambda e=engine, f=flat: _anyoptim_step(device, workload, e, f),
                )
            )
    if "torch" in compare:
        for variant in ("for-loop", "foreach", "fused"):
            found.append((f"torch {variant}", lambda v=variant: _torch_step(device, workload, v)))
    if "optax" in compare:
        found.append(("optax (jit)", lambda: _optax_step(device, workload)))
    return found


# --------------------------------------------------------------------------- end to end


def _lesson_module() -> Any:
    """lesson_numpy.py, the lesson's own code, beside this file."""
    path = Path(__file__).resolve().parent / "lesson_numpy.py"
    spec = importlib.util.spec_from_file_location("anyoptim_lesson_numpy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _end_to_end(epochs: int, repeats: int) -> list[Row]:
    """The lesson's own code against ``anyoptim.fit``, same network, data size, batch, epochs (float64)."""
    import anyoptim
    from anyoptim import datasets

    name = f"lesson-end-to-end ({epochs} epochs)"
    rows = []
    lesson_seconds = None
    try:
        lesson = _lesson_module()
        lesson_seconds, cost, accuracy = min(lesson.run(num_epochs=epochs) for _ in range(repeats))
        rows.append(
            Row(name, "lesson NumPy code", lesson_seconds, note=f"final cost {cost:.4f}, accuracy {accuracy:.3f}")
        )
    except Exception as error:  # one failure is a row, not the end of the run
        rows.append(Row(name, "lesson NumPy code", error=_describe(error)))
    try:
        X, y = datasets.make_moons(n_samples=300, noise=0.2, seed=3)
        model = anyoptim.MLP(list(LESSON_DIMS), hidden_activation="relu", output="sigmoid", init="he")
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            result = anyoptim.fit(
                model, anyoptim.Adam(0.0007), X, y, epochs=epochs, batch_size=64, seed=0, progress=False
            )
            best = min(best, time.perf_counter() - start)
        accuracy = anyoptim.accuracy(model, result.params, X, y)
        rows.append(
            Row(
                name,
                "anyoptim.fit",
                best,
                ratio=None if lesson_seconds is None else best / lesson_seconds,
                note=f"final cost {result.history.cost[-1]:.4f}, accuracy {accuracy:.3f}",
            )
        )
    except Exception as error:
        rows.append(Row(name, "anyoptim.fit", error=_describe(error)))
    if lesson_seconds is not None:
        rows[0].ratio = 1.0
    return rows


# --------------------------------------------------------------------------- the run


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


def _measure(device: Device, workload: Workload, name: str, build: Callable, *, min_time: float, repeats: int) -> Row:
    row = Row(workload.name, name, bytes_moved=workload.bytes_moved)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. JAX: "some donated buffers were not usable" on the CPU
            step, sync, row.note = build()
            row.seconds = time_per_step(step, sync, min_time=min_time, repeats=repeats)
    except Exception as error:  # one failure is a row, not the end of the run
        row.error = _describe(error)
    finally:
        step = sync = build = None
        device.release()
    return row


def _finish(rows: list[Row], workload: Workload, bandwidth: float | None) -> None:
    """Fill in the ratios to the workload's reference and the fractions of the bandwidth limit."""
    times = {row.implementation: row.seconds for row in rows if row.seconds}
    reference = next((times[name] for name in workload.reference if name in times), None)
    for row in rows:
        if row.seconds:
            if reference:
                row.ratio = row.seconds / reference
            if bandwidth and row.bytes_moved:
                row.bandwidth_fraction = row.bytes_moved / bandwidth / row.seconds


def run(
    backend: str = "numpy",
    compare: Sequence[str] = ("torch", "optax"),
    *,
    quick: bool = False,
    only: Sequence[str] | None = None,
    epochs: int | None = None,
    out: Any = None,
) -> dict[str, Any]:
    """Run the benchmark and return ``{"meta": ..., "rows": [...]}``; rows are printed as they come.

    Parameters
    ----------
    backend : {"numpy", "cupy"}
    compare : sequence of {"torch", "optax"}
    quick : bool
        Shorter timings (and 1000 instead of 5000 epochs end to end).
    only : sequence of str, optional
        Workload names (or prefixes) to run; default all.
    epochs : int, optional
        Epochs of the end-to-end run (default 5000, or 1000 with ``quick``).
    out : file, optional
        Where the progress lines go (default ``sys.stdout``).
    """
    out = sys.stdout if out is None else out
    notes = pin_threads(backend)
    if backend == "numpy":
        notes.append(_numpy_kernels_note())
    device = Device(backend)
    if backend == "cupy":  # GPU timings are steady: fewer, shorter repeats keep the run under 3 minutes
        min_time, repeats = (0.03, 2) if quick else (0.1, 3)
    else:
        min_time, repeats = (0.05, 2) if quick else (0.25, 5)
    meta = _meta(device, compare, notes)
    print(_header(meta), file=out, flush=True)
    rows: list[Row] = []
    try:
        streams = copy_bandwidth(device, min_time=min_time, repeats=repeats)
        bandwidth = max(streams["copy"], streams["in place"])
        meta["bandwidth_bytes_per_second"] = bandwidth
        meta["streams_bytes_per_second"] = streams
        print(
            f"memory bandwidth (read + written): copy {streams['copy'] / 1e9:.1f} GB/s, "
            f"in place {streams['in place'] / 1e9:.1f} GB/s, {int(streams['buffer bytes']) >> 20} MiB buffers; "
            f"the limit for 'of BW' is {bandwidth / 1e9:.1f} GB/s\n",
            file=out,
        )
    except Exception as error:
        bandwidth = None
        print(f"memory bandwidth: error {_describe(error)}\n", file=out)
    print(_table_header(), file=out, flush=True)
    for workload in workloads(backend, quick=quick):
        if only and not any(workload.name.startswith(prefix) for prefix in only):
            continue
        if workload.optimizer == "end-to-end":
            chosen = epochs if epochs is not None else (1000 if quick else 5000)
            found = _end_to_end(chosen, 1 if quick else 2)
        else:
            found = [
                _measure(device, workload, name, build, min_time=min_time, repeats=repeats)
                for name, build in _implementations(device, workload, compare)
            ]
            _finish(found, workload, bandwidth)
        for row in found:
            print(_table_line(row), file=out, flush=True)
        print(f"{'':20s}(ratios to: {' or '.join(workload.reference)})", file=out, flush=True)
        rows += found
    return {"meta": meta, "rows": [asdict(row) for row in rows]}


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("anyoptim", "numpy", "cupy", "torch", "jax", "optax", "array_api_compat"):
        module = sys.modules.get(name)
        if module is None:
            with contextlib.suppress(Exception):
                if importlib.util.find_spec(name) is not None and name in ("anyoptim", "numpy", "array_api_compat"):
                    module = importlib.import_module(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", "?"))
    return found


_ENV_SHOWN = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "XLA_FLAGS", "OMP_NUM_THREADS")


def _meta(device: Device, compare: Sequence[str], notes: list[str]) -> dict[str, Any]:
    for name in compare:  # import now so that versions are known (and failures show early)
        with contextlib.suppress(Exception):
            if name == "torch":
                _torch(device.backend)
            elif name == "optax":
                importlib.import_module("optax")
    return {
        "backend": device.backend,
        "device": device.name,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "versions": _versions(),
        "compare": list(compare),
        "notes": notes,
        "env": {
            key: os.environ[key] for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "XLA_FLAGS") if key in os.environ
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _header(meta: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    lines = [f"anyoptim benchmark on {meta['backend']}: {meta['device']} ({meta['machine']})", versions]
    lines += [f"note: {note}" for note in meta["notes"]]
    lines += [f"env: {key}={value}" for key, value in meta["env"].items()]
    return "\n".join(lines)


def _format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.2f} us"


def _table_header() -> str:
    return f"{'workload':28s} {'implementation':32s} {'time/step':>12s} {'ratio':>7s} {'of BW':>6s}  note"


def _table_line(row: Row) -> str:
    if row.error:
        return f"{row.workload:28s} {row.implementation:32s} {'error':>12s} {'':>7s} {'':>6s}  {row.error}"
    ratio = f"{row.ratio:.3f}" if row.ratio is not None else "-"
    fraction = f"{100 * row.bandwidth_fraction:.0f}%" if row.bandwidth_fraction is not None else "-"
    time_text = _format_time(row.seconds)
    return f"{row.workload:28s} {row.implementation:32s} {time_text:>12s} {ratio:>7s} {fraction:>6s}  {row.note}"


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr, exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _usable(backend: str, compare: Sequence[str]) -> str | None:
    """Why the run cannot start here (a library not installed, no GPU), or None; asked before any timing."""
    for library in compare:
        if any(
            importlib.util.find_spec(name) is None for name in {"torch": ["torch"], "optax": ["jax", "optax"]}[library]
        ):
            return f"--compare {library}: {library} is not installed"
    if backend == "cupy":
        from anyoptim.lesson.backends import ExperimentError, load_backend

        try:
            load_backend("cupy")
        except ExperimentError as error:
            return f"--backend cupy: {error}"
    return None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python benchmarks/step.py",
        description="Time anyoptim's optimizer step beside torch.optim and optax, on one device, in one process.",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="numpy (CPU, one thread) or cupy (GPU)")
    parser.add_argument(
        "--compare",
        default="",
        metavar="LIBS",
        help="comma-separated libraries to time beside anyoptim: torch, optax (default: none)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows (and machine, versions) as JSON")
    parser.add_argument("--quick", action="store_true", help="shorter timings; 1000 epochs end to end")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated workload names or prefixes to run")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs of the end-to-end run (default 5000)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The benchmark's command line: parse ``argv``, run, print the table, write ``--json``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    compare = [name.strip() for name in args.compare.split(",") if name.strip()]
    unknown = [name for name in compare if name not in LIBRARIES]
    if unknown:
        parser.error(f"--compare: unknown libraries {', '.join(unknown)} (choose from {', '.join(LIBRARIES)})")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be a positive integer, got {args.epochs}")
    if args.json:
        target = Path(args.json)
        if target.parent and not target.parent.exists():
            parser.error(f"--json: the folder {target.parent} does not exist")
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only is not None else None
    if only is not None:
        names = [workload.name for workload in workloads(args.backend, quick=args.quick)]
        unmatched = [prefix for prefix in only if not any(name.startswith(prefix) for name in names)]
        if unmatched or not only:
            parser.error(
                f"--only: no workload named {', '.join(unmatched) or '(none)'} (choose from {', '.join(names)})"
            )
    why = _usable(args.backend, compare)
    if why is not None:
        parser.error(why)
    try:
        result = run(args.backend, compare, quick=args.quick, only=only, epochs=args.epochs)
    except Exception as error:  # no such backend here (no CuPy, no GPU); every workload is guarded inside
        print(f"benchmarks/step.py: cannot run on {args.backend}: {_describe(error)}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
