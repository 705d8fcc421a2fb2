"""The CuPy engine: fused agrees with generic, the span kernels with the ElementwiseKernel (bit for bit) on every
layout, one launch per flat model, no per-step allocation, CUDA-graph replay equals eager steps.

Tests marked ``gpu`` need a CUDA GPU (``pytest -m gpu``).  The others run on any machine: the span kernels'
layout and launch logic with NumPy stand-ins, the generated span kernels compiled by the host C++ compiler and
run thread by thread (every head, vector and tail loop, every alignment), and, when ``ANYOPTIM_CUDA_INCLUDE``
names the CUDA include directory (and NVRTC is loadable), every generated kernel compiled with NVRTC for sm_90.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
import anyoptim.engines.cupy.engine as cupy_engine
from anyoptim.engines import select_engine
from anyoptim.engines import trace as _trace
from anyoptim.engines.cupy.engine import CupyEngine, SpanSource, span_grid, span_layout, span_source
from tests.graph_simulation import check_replays, warm_up_for_capture
from tests.helpers import RTOL_SAME_BACKEND, load_namespace, to_numpy
from tests.test_trace import (
    ALL_TRACES,
    CONFIG_PARAMS,
    CONFIGS,
    CUSTOM_RULES,
    DTYPES,
    XP,
    Case,
    Config,
    Harness,
    NumpyStandInEngine,
    _leaf_steps,
    _state_before_last_step,
    _trace_of,
    cases,
)

gpu = pytest.mark.gpu


@pytest.fixture
def cp_xp() -> Any:
    """The array-api-compat CuPy namespace; skips without a usable GPU."""
    xp = load_namespace("cupy")
    if xp is None:
        pytest.skip("CuPy with a CUDA GPU is not available here")
    return xp


def _to_device(xp: Any, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    return {name: xp.asarray(np.ascontiguousarray(value)) for name, value in tree.items()}


def _assert_same(actual: Any, expected: Any, dtype: str, what: str) -> None:
    np.testing.assert_allclose(
        to_numpy(actual), to_numpy(expected), rtol=RTOL_SAME_BACKEND[dtype], atol=0, err_msg=what
    )


def _run_fused_and_generic(xp: Any, config: Config, case: Case, *, flat: bool) -> tuple[dict, Any, dict, Any]:
    """Both engines on CuPy; the fused one gets one gradient buffer, refilled each step like a training loop."""
    fused, generic = config.make("fused"), config.make("generic")
    p_fused = _to_device(xp, case.params)
    p_generic = _to_device(xp, case.params)
    buffer = _to_device(xp, case.grads[0])
    if flat:
        p_fused = anyoptim.flatten(p_fused)
        buffer = anyoptim.flatten(buffer)
    s_fused, s_generic = fused.init(p_fused), generic.init(p_generic)
    for grads in case.grads:
        device_grads = _to_device(xp, grads)
        for name, value in device_grads.items():
            buffer[name][...] = value
        p_fused, s_fused = fused.step(p_fused, buffer, s_fused)
        p_generic, s_generic = generic.step(p_generic, device_grads, s_generic)
    return p_fused, s_fused, p_generic, s_generic


# --------------------------------------------------------------------------- agreement


@gpu
@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=6)
@given(case=cases(max_steps=8), flat=st.booleans())
def test_fused_kernel_matches_generic_engine(cp_xp: Any, config: Config, case: Case, flat: bool) -> None:
    p_fused, s_fused, p_generic, s_generic = _run_fused_and_generic(cp_xp, config, case, flat=flat)
    for name in p_generic:
        assert p_fused[name].dtype == p_generic[name].dtype
        _assert_same(p_fused[name], p_generic[name], case.dtype, f"params[{name}]")
    for slot, tree in s_generic.slots.items():
        for name in tree:
            _assert_same(s_fused.slots[slot][name], tree[name], case.dtype, f"slot {slot}[{name}]")
    assert s_fused.count == s_generic.count == len(case.grads)


@gpu
def test_float16_and_strided_leaves_fall_back_to_generic(cp_xp: Any) -> None:
    rng = np.random.default_rng(1)
    base = cp_xp.asarray(rng.normal(size=(4, 3)))
    params = {"T": base.T, "h": cp_xp.asarray(rng.normal(size=5).astype(np.float16)), "w": cp_xp.ones(6)}
    reference = {name: cp_xp.asarray(value, copy=True) for name, value in params.items()}
    fused, generic = anyoptim.Adam(0.1, engine="fused"), anyoptim.Adam(0.1, engine="generic")
    s_fused, s_generic = fused.init(params), generic.init(reference)
    grads = {name: cp_xp.ones_like(value) for name, value in params.items()}
    for _ in range(3):
        params, s_fused = fused.step(params, grads, s_fused)
        reference, s_generic = generic.step(reference, grads, s_generic)
    for name in params:
        dtype = "float64" if name != "h" else "float32"  # float16 went the generic way on both sides
        _assert_same(params[name], reference[name], dtype, name)


# --------------------------------------------------------------------------- launches and memory


def _record_launches(monkeypatch: pytest.MonkeyPatch, xp: Any) -> list[tuple[str, int]]:
    """``(kind, size)`` of every launch from now on: ``"elementwise"`` (the ElementwiseKernel) or ``"span"`` (a span
    kernel, of steps prepared from now on)."""
    engine = select_engine(xp, "fused")
    found: list[tuple[str, int]] = []
    launch = type(engine)._launch

    def counting(kernel: Any, args: Any) -> None:
        found.append(("elementwise", int(args[-1].size)))
        launch(engine, kernel, args)

    def span_launcher(function: Any, size: int) -> Callable[..., None]:
        def counted(grid: tuple, block: tuple, args: tuple) -> None:
            found.append(("span", size))
            function(grid, block, args)

        return counted

    monkeypatch.setattr(engine, "_launch", counting)
    monkeypatch.setattr(engine, "_span_launcher", span_launcher)
    return found


def _model(xp: Any, dtype: str = "float32") -> dict[str, Any]:
    rng = np.random.default_rng(0)
    shapes = {"W1": (2, 5), "b1": (5,), "W2": (5, 2), "b2": (2,), "W3": (2, 1), "b3": (1,)}
    return {name: xp.asarray(rng.normal(size=shape).astype(dtype)) for name, shape in shapes.items()}


@gpu
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-leaf"])
def test_one_launch_per_step_for_a_flat_model(cp_xp: Any, monkeypatch: pytest.MonkeyPatch, flat: bool) -> None:
    params = _model(cp_xp)
    grads = {name: cp_xp.ones_like(value) for name, value in params.items()}
    if flat:
        params, grads = anyoptim.flatten(params), anyoptim.flatten(grads)
    optimizer = anyoptim.Adam(0.01)
    state = optimizer.init(params)
    launches = _record_launches(monkeypatch, cp_xp)
    for _ in range(3):
        params, state = optimizer.step(params, grads, state)
    assert {kind for kind, _ in launches} == {"span"}
    sizes = [size for _, size in launches]
    total = sum(int(value.size) for value in params.values())
    if flat:
        assert sizes == [total] * 3
    else:
        assert sorted(sizes) == sorted([int(value.size) for value in params.values()] * 3)


@gpu
def test_no_parameter_sized_allocation_per_step(cp_xp: Any) -> None:
    import cupy

    rng = np.random.default_rng(0)
    params = anyoptim.flatten(
        {"W": cp_xp.asarray(rng.normal(size=(1024, 1024)).astype(np.float32)), "b": cp_xp.zeros(1024, dtype="float32")}
    )
    grads = anyoptim.flatten({name: cp_xp.ones_like(value) for name, value in params.items()})
    optimizer = anyoptim.AdamW(1e-3, clip_value=1.0, weight_decay_mask=anyoptim.decay_all)
    state = optimizer.init(params)
    for _ in range(2):  # warm up: kernels compiled, plans made
        params, state = optimizer.step(params, grads, state)
    cupy.cuda.Device().synchronize()
    pool = cupy.get_default_memory_pool()
    used = pool.used_bytes()
    sizes: list[int] = []

    def recording_malloc(size: int) -> Any:
        sizes.append(size)
        return pool.malloc(size)

    with cupy.cuda.using_allocator(recording_malloc):
        for _ in range(3):
            params, state = optimizer.step(params, grads, state)
    cupy.cuda.Device().synchronize()
    smallest_leaf = min(int(value.nbytes) for value in params.values())
    assert all(size < smallest_leaf for size in sizes), sizes
    assert pool.used_bytes() == used


@gpu
def test_kernels_are_compiled_once_per_program_and_dtype(cp_xp: Any) -> None:
    engine = select_engine(cp_xp, "fused")
    params = anyoptim.flatten(_model(cp_xp))
    grads = anyoptim.flatten({name: cp_xp.ones_like(value) for name, value in params.items()})
    optimizer = anyoptim.Lion(1e-3, clip_value=0.5)
    state = optimizer.init(params)
    params, state = optimizer.step(params, grads, state)

    def kernels() -> tuple[dict, dict]:
        compiled = {key: (dict(c.kernels), dict(c.spans)) for key, c in engine._compiled.items()}
        return compiled, dict(engine._span_kernels)

    before = kernels()
    other = anyoptim.Lion(1e-3, clip_value=0.5)  # equal settings: the same program
    other_state = other.init(params)
    for _ in range(2):
        params, other_state = other.step(params, grads, other_state)
    assert kernels() == before


# --------------------------------------------------------------------------- span kernels on the GPU

#: Leaf layouts: elements, and the offset in elements from a 16-byte boundary of (parameter, gradient, slots).
#: Equal offsets vectorise after a scalar head; unequal ones take the scalar kernel.  The sizes give every
#: tail length mod 4 (and mod 2) with every head.
OFFSETS = {"aligned": (0, 0, 0), "head1": (1, 1, 1), "head2": (2, 2, 2), "head3": (3, 3, 3), "mixed": (0, 1, 2)}
SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 37, 4099)


def _address(a: Any) -> int:
    return a.data.ptr if hasattr(a, "data") and hasattr(a.data, "ptr") else a.__array_interface__["data"][0]


def _placed(xp: Any, values: np.ndarray, offset: int) -> Any:
    """A C-contiguous array equal to ``values``, alone in its buffer, starting ``offset`` elements past a
    16-byte boundary."""
    base = xp.zeros(values.size + 16, dtype=values.dtype)
    start = ((offset * values.itemsize - _address(base)) % 16) // values.itemsize
    view = base[start : start + values.size].reshape(values.shape)
    view[...] = xp.asarray(values)
    return view


def _layouts(rng: np.random.Generator, dtype: str) -> dict[str, tuple[np.ndarray, tuple[int, int, int]]]:
    """Every size with every offset pattern, plus a 2-D leaf (decayed by the default weight-decay mask)."""
    found = {
        f"n{size}_{name}": (rng.normal(size=size).astype(dtype), offsets)
        for size in SIZES
        for name, offsets in OFFSETS.items()
    }
    found["W"] = (rng.normal(size=(5, 7)).astype(dtype), OFFSETS["head3"])
    return found


def _laid_out_run(
    xp: Any, make: Callable[[], anyoptim.Optimizer], layouts: dict, gradients: list[dict[str, np.ndarray]]
) -> tuple[dict, Any]:
    """Steps of ``make()`` on leaves placed as ``layouts`` says (state and one gradient buffer placed too)."""
    optimizer = make()
    params = {name: _placed(xp, values, offsets[0]) for name, (values, offsets) in layouts.items()}
    grads = {name: _placed(xp, gradients[0][name], offsets[1]) for name, (_, offsets) in layouts.items()}
    state = optimizer.init(params)
    slots = {
        slot: {name: _placed(xp, to_numpy(tree[name]), layouts[name][1][2]) for name in tree}
        for slot, tree in state.slots.items()
    }
    state = dataclasses.replace(state, slots=slots)
    for step_grads in gradients:
        for name, value in step_grads.items():
            grads[name][...] = xp.asarray(value)
        params, state = optimizer.step(params, grads, state)
    return params, state


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_span_kernels_equal_elementwise_and_generic_on_every_layout(
    cp_xp: Any, monkeypatch: pytest.MonkeyPatch, config: Config, dtype: str
) -> None:
    """Every optimizer, float32 and float64: the span kernels (vectorised with every head, scalar for mixed
    alignments, every tail) give the ElementwiseKernel's results bit for bit, and the generic engine's to
    the same-backend tolerance."""
    engine = select_engine(cp_xp, "fused")
    rng = np.random.default_rng(11)
    layouts = _layouts(rng, dtype)
    gradients = [
        {name: (rng.normal(size=values.shape) * 3).astype(dtype) for name, (values, _) in layouts.items()}
        for _ in range(3)
    ]
    launches = _record_launches(monkeypatch, cp_xp)
    monkeypatch.setattr(engine, "launch", "elementwise")
    p_elementwise, s_elementwise = _laid_out_run(cp_xp, lambda: config.make("fused"), layouts, gradients)
    monkeypatch.setattr(engine, "launch", "span")
    p_span, s_span = _laid_out_run(cp_xp, lambda: config.make("fused"), layouts, gradients)
    steps = len(layouts) * len(gradients)  # one launch per leaf and step: each leaf is alone in its buffer
    assert [kind for kind, _ in launches] == ["elementwise"] * steps + ["span"] * steps
    p_generic, s_generic = _laid_out_run(cp_xp, lambda: config.make("generic"), layouts, gradients)
    for name in layouts:
        np.testing.assert_array_equal(to_numpy(p_span[name]), to_numpy(p_elementwise[name]), err_msg=name)
        _assert_same(p_span[name], p_generic[name], dtype, f"params[{name}]")
        for slot in s_generic.slots:
            span_slot, elementwise_slot = s_span.slots[slot][name], s_elementwise.slots[slot][name]
            np.testing.assert_array_equal(to_numpy(span_slot), to_numpy(elementwise_slot), err_msg=f"{slot}[{name}]")
            _assert_same(span_slot, s_generic.slots[slot][name], dtype, f"slot {slot}[{name}]")


LARGE_CONFIGS = [
    pytest.param(config, id=config.id)
    for config in CONFIGS
    if config.id in ("adam", "adam-clipped-l2", "rmsprop", "momentum-heavy-ball", "lion-decay-clip")
]


@gpu
@pytest.mark.parametrize("wide", [False, True], ids=["index32", "index64"])
@pytest.mark.parametrize("config", LARGE_CONFIGS)
def test_span_kernels_loop_over_a_large_span(
    cp_xp: Any, monkeypatch: pytest.MonkeyPatch, config: Config, wide: bool
) -> None:
    """A span larger than one wave of threads (each thread loops), with a head and a tail, with 32-bit and (forced)
    64-bit indices: the same bits as the ElementwiseKernel, compared on the device."""
    import cupy

    engine = select_engine(cp_xp, "fused")
    if wide:
        monkeypatch.setattr(cupy_engine, "INDEX32_LIMIT", 0)
    size = 3_000_001
    rng = np.random.default_rng(5)
    layouts = {"w": (rng.normal(size=size).astype(np.float32), (1, 1, 1))}
    gradients = [{"w": rng.normal(size=size).astype(np.float32)} for _ in range(2)]
    monkeypatch.setattr(engine, "launch", "elementwise")
    p_elementwise, s_elementwise = _laid_out_run(cp_xp, lambda: config.make("fused"), layouts, gradients)
    monkeypatch.setattr(engine, "launch", "span")
    blocks: list[int] = []
    span_launcher = engine._span_launcher

    def recording(function: Any, span_size: int) -> Callable[..., None]:
        assert span_size == size
        launch = span_launcher(function, span_size)

        def recorded(grid: tuple, block: tuple, args: tuple) -> None:
            blocks.append(grid[0])
            launch(grid, block, args)

        return recorded

    monkeypatch.setattr(engine, "_span_launcher", recording)
    p_span, s_span = _laid_out_run(cp_xp, lambda: config.make("fused"), layouts, gradients)
    assert len(blocks) == len(gradients)
    assert blocks[0] * engine.span_block * 4 < size  # one wave of threads is too few: every thread loops
    p_generic, _ = _laid_out_run(cp_xp, lambda: config.make("generic"), layouts, gradients)
    assert bool(cupy.array_equal(p_span["w"], p_elementwise["w"]))
    for slot, tree in s_elementwise.slots.items():
        assert bool(cupy.array_equal(s_span.slots[slot]["w"], tree["w"])), slot
    rtol = RTOL_SAME_BACKEND["float32"]
    assert bool(cupy.all(cupy.abs(p_span["w"] - p_generic["w"]) <= rtol * cupy.abs(p_generic["w"])))


@gpu
def test_strided_gradients_take_the_elementwise_kernel(cp_xp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    launches = _record_launches(monkeypatch, cp_xp)
    rng = np.random.default_rng(2)
    params = anyoptim.flatten({"a": cp_xp.asarray(rng.normal(size=(3, 4))), "b": cp_xp.asarray(rng.normal(size=5))})
    reference = {name: cp_xp.asarray(value, copy=True) for name, value in params.items()}
    strided = cp_xp.asarray(rng.normal(size=(4, 3))).T  # the gradient of "a", not C-contiguous
    grads = {"a": strided, "b": cp_xp.asarray(rng.normal(size=5))}
    fused, generic = anyoptim.Adam(0.1), anyoptim.Adam(0.1, engine="generic")
    s_fused, s_generic = fused.init(params), generic.init(reference)
    for _ in range(3):
        params, s_fused = fused.step(params, grads, s_fused)
        reference, s_generic = generic.step(reference, grads, s_generic)
    for name in params:
        _assert_same(params[name], reference[name], "float64", name)
    # "a", its gradient copied at each step, by the ElementwiseKernel; "b" by a span kernel.
    assert sorted(launches) == [("elementwise", 12)] * 3 + [("span", 5)] * 3


# --------------------------------------------------------------------------- CUDA graphs


def _linear_problem(xp: Any, dtype: str, steps: int) -> tuple[dict, list[tuple[Any, Any]]]:
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    batches = [(rng.normal(size=(16, 4)), rng.normal(size=(16, 3))) for _ in range(steps)]
    cast = {name: xp.asarray(value.astype(dtype)) for name, value in params.items()}
    return cast, [(xp.asarray(x.astype(dtype)), xp.asarray(y.astype(dtype))) for x, y in batches]


def loss_and_grads(params: dict, x: Any, y: Any) -> tuple[Any, dict]:
    """Mean squared error of a linear model, with its gradients: device work only, no cuBLAS (graph-capturable)."""
    from anyoptim.engines.cupy.engine import matmul

    n = x.shape[0]
    residual = matmul(x, params["W"]) + params["b"] - y
    loss = (residual * residual).sum() / n
    return loss, {"W": matmul(x.T, residual) * (2.0 / n), "b": residual.sum(axis=0) * (2.0 / n)}


def loss_and_grads_with_cublas(params: dict, x: Any, y: Any) -> tuple[Any, dict]:
    """The same with ``@``, which CuPy sends to cuBLAS."""
    n = x.shape[0]
    residual = x @ params["W"] + params["b"] - y
    return (residual * residual).sum() / n, {"W": (x.T @ residual) * (2.0 / n), "b": residual.sum(axis=0) * (2.0 / n)}


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_capturable_matmul_equals_the_operator(cp_xp: Any, dtype: str) -> None:
    from anyoptim.engines.cupy.engine import matmul

    def assert_product(actual: Any, a: Any, b: Any, what: str) -> None:
        # cuBLAS sums in another order: bound the difference by the rounding of sum |a_ik b_kj|, so that a
        # result that cancels to near zero is held to the accuracy of its terms, not of itself.
        eps = float(np.finfo(dtype).eps)
        depth = a.shape[-1]
        scale = to_numpy(abs(a) @ abs(b))
        difference = np.abs(to_numpy(actual) - to_numpy(a @ b))
        assert np.all(difference <= 2 * depth * eps * scale), what

    rng = np.random.default_rng(4)
    pairs = [((64, 2), (2, 5)), ((5,), (5, 3)), ((4, 6), (6,)), ((1, 0), (0, 3))]
    for left, right in pairs:
        a, b = (cp_xp.asarray(rng.normal(size=shape).astype(dtype)) for shape in (left, right))
        assert_product(matmul(a, b), a, b, f"{left} @ {right}")
    a = cp_xp.asarray(rng.normal(size=(6, 64)).astype(dtype))
    b = cp_xp.asarray(rng.normal(size=(3, 6)).astype(dtype))
    assert_product(matmul(a.T, b.T), a.T, b.T, "strided operands")
    with pytest.raises(ValueError, match="align"):
        matmul(a, b)
    with pytest.raises(TypeError, match="float32"):
        matmul(a, b.T.astype("float16"))


GRAPH_CONFIGS = [
    pytest.param(lambda: anyoptim.Adam(anyoptim.schedules.exponential_decay(0.05, 1, 0.8)), id="adam-schedule"),
    pytest.param(lambda: anyoptim.AdamW(0.02, weight_decay=0.1), id="adamw-masked"),
    pytest.param(lambda: anyoptim.RAdam(0.02), id="radam-both-branches"),
    pytest.param(lambda: anyoptim.Momentum(0.05, nesterov=True, form="heavy_ball"), id="nesterov"),
    pytest.param(lambda: anyoptim.RMSprop(0.01, centered=True, momentum=0.5), id="rmsprop-centered-momentum"),
    pytest.param(lambda: anyoptim.Lion(1e-3, clip_value=0.5, weight_decay=0.1), id="lion-clipped"),
]


def _eager_and_graphed(xp: Any, make: Any, dtype: str, steps: int) -> tuple[dict, Any, Any, Any, Any]:
    from anyoptim.engines.cupy.engine import GraphedStep

    params, batches = _linear_problem(xp, dtype, steps)
    eager_params = anyoptim.flatten({name: xp.asarray(value, copy=True) for name, value in params.items()})
    graph_params = anyoptim.flatten({name: xp.asarray(value, copy=True) for name, value in params.items()})
    eager, graphed_optimizer = make(), make()
    eager_state = eager.init(eager_params)
    eager_loss = None
    for x, y in batches:
        eager_loss, grads = loss_and_grads(eager_params, x, y)
        eager_params, eager_state = eager.step(eager_params, grads, eager_state)
    x_static, y_static = xp.zeros_like(batches[0][0]), xp.zeros_like(batches[0][1])
    graphed = GraphedStep(
        graphed_optimizer, graph_params, graphed_optimizer.init(graph_params), loss_and_grads, x_static, y_static
    )
    for name in params:  # capturing changed nothing
        _assert_same(graphed.params[name], params[name], dtype, f"params[{name}] after capture")
    assert graphed.state.count == 0
    graph_loss = None
    for x, y in batches:
        graph_loss = graphed(x, y)
    return (eager_params, eager_state, eager_loss), graphed, graph_loss


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", GRAPH_CONFIGS)
def test_graph_replay_equals_eager_steps(cp_xp: Any, make: Any, dtype: str) -> None:
    steps = 9  # RAdam switches branch at step 6
    (eager_params, eager_state, eager_loss), graphed, graph_loss = _eager_and_graphed(cp_xp, make, dtype, steps)
    for name in eager_params:
        _assert_same(graphed.params[name], eager_params[name], dtype, f"params[{name}]")
    for slot, tree in eager_state.slots.items():
        for name in tree:
            _assert_same(graphed.state.slots[slot][name], tree[name], dtype, f"slot {slot}[{name}]")
    assert graphed.state.count == eager_state.count == steps
    assert graphed.state.learning_rate == eager_state.learning_rate
    _assert_same(graph_loss, eager_loss, dtype, "loss")


@gpu
def test_graph_after_eager_steps_on_static_gradient_buffers(cp_xp: Any) -> None:
    """Eager steps first, then a graph of the same optimizer on the same arrays, with a loss_and_grads that
    fills static gradient buffers: the graph reads each step's scalars from its table, not the eager step's."""
    from anyoptim.engines.cupy.engine import GraphedStep, matmul

    params, batches = _linear_problem(cp_xp, "float32", 8)
    params = anyoptim.flatten(params)
    reference_params = {name: cp_xp.asarray(value, copy=True) for name, value in params.items()}
    static = anyoptim.flatten({name: cp_xp.zeros_like(value) for name, value in params.items()})

    def into_static(p: dict, x: Any, y: Any) -> tuple[Any, dict]:
        n = x.shape[0]
        residual = matmul(x, p["W"]) + p["b"] - y
        static["W"][...] = matmul(x.T, residual) * (2.0 / n)
        static["b"][...] = residual.sum(axis=0) * (2.0 / n)
        return (residual * residual).sum() / n, static

    make = lambda: anyoptim.Adam(anyoptim.schedules.exponential_decay(0.05, 1, 0.8))  # noqa: E731
    optimizer, reference = make(), make()
    state, reference_state = optimizer.init(params), reference.init(reference_params)
    for x, y in batches[:2]:
        _, grads = into_static(params, x, y)
        params, state = optimizer.step(params, grads, state)
    assert optimizer._prepared is not None  # the eager fast path is armed on these arrays
    graphed = GraphedStep(
        optimizer, params, state, into_static, cp_xp.zeros_like(batches[0][0]), cp_xp.zeros_like(batches[0][1])
    )
    for x, y in batches[2:]:
        graphed(x, y)
    for x, y in batches:
        _, grads = loss_and_grads(reference_params, x, y)
        reference_params, reference_state = reference.step(reference_params, grads, reference_state)
    for name in params:
        _assert_same(graphed.params[name], reference_params[name], "float32", f"params[{name}]")
    assert graphed.state.count == reference_state.count == len(batches)


@gpu
def test_graph_with_global_norm_clipping(cp_xp: Any) -> None:
    """Global-norm clipping computes its factor on the device inside the graph."""
    make = lambda: anyoptim.Adam(0.05, clip_global_norm=0.5)  # noqa: E731
    try:
        (eager_params, eager_state, _), graphed, _ = _eager_and_graphed(cp_xp, make, "float32", 4)
    except RuntimeError as error:
        # array-api-compat's clip on CuPy uses boolean-mask indexing, a host synchronisation that a capture refuses.
        pytest.xfail(f"the optimizer's global-norm clip synchronises with the host: {error}")
    for name in eager_params:
        _assert_same(graphed.params[name], eager_params[name], "float32", f"params[{name}]")
    assert graphed.state.count == eager_state.count


@gpu
def test_capturing_cublas_fails_with_a_hint(cp_xp: Any) -> None:
    from anyoptim.engines.cupy.engine import GraphedStep

    params, batches = _linear_problem(cp_xp, "float32", 1)
    params = anyoptim.flatten(params)
    before = {name: cp_xp.asarray(value, copy=True) for name, value in params.items()}
    optimizer = anyoptim.Adam(0.1)
    state = optimizer.init(params)
    x, y = batches[0]
    with pytest.raises(RuntimeError, match=r"anyoptim\.engines\.cupy\.matmul"):
        GraphedStep(optimizer, params, state, loss_and_grads_with_cublas, x, y)
    for name in params:  # the warm-up step was undone
        _assert_same(params[name], before[name], "float32", name)


@gpu
def test_graphed_step_refuses_what_a_graph_cannot_do(cp_xp: Any) -> None:
    from anyoptim.engines.cupy.engine import GraphedStep

    params, batches = _linear_problem(cp_xp, "float32", 1)
    x, y = batches[0]
    with pytest.raises(ValueError, match="on_nonfinite"):
        optimizer = anyoptim.Adam(on_nonfinite="skip")
        GraphedStep(optimizer, params, optimizer.init(params), loss_and_grads, x, y)
    with pytest.raises(ValueError, match="fused engine"):
        optimizer = anyoptim.Adam(engine="generic")
        GraphedStep(optimizer, params, optimizer.init(params), loss_and_grads, x, y)
    strided = {"W": cp_xp.asarray(np.ones((3, 4), np.float32)).T, "b": params["b"]}
    with pytest.raises(ValueError, match="C-contiguous"):
        optimizer = anyoptim.Adam()
        GraphedStep(optimizer, strided, optimizer.init(strided), loss_and_grads, x, y)


# --------------------------------------------------------------------------- NVRTC, no GPU needed


def test_every_kernel_compiles_with_nvrtc() -> None:
    """Compile the CuPy-generated source of every kernel variant with NVRTC for sm_90, and read the PTX:
    no fused multiply-add (``--fmad=false``) and no double arithmetic in a float32 kernel."""
    include = os.environ.get("ANYOPTIM_CUDA_INCLUDE")
    if not include:
        pytest.skip("set ANYOPTIM_CUDA_INCLUDE to the CUDA include directory (NVRTC must be loadable) to run")
    cupy = pytest.importorskip("cupy")
    from cupy._core import _kernel, _scalar
    from cupy.cuda import compiler

    from anyoptim.engines.cupy.engine import COMPILE_OPTIONS

    headers = "".join(
        f"#include <{name}>\n"
        for name in ("cupy/complex.cuh", "cupy/carray.cuh", "cupy/atomics.cuh", "cupy/math_constants.h")
    )
    options = (
        "-arch=compute_90",
        "--device-as-default-execution-space",
        "--std=c++17",
        "-I" + os.path.join(os.path.dirname(cupy.__file__), "_core", "include"),
        "-I" + include,
        "-I" + os.path.join(include, "cccl"),
        *COMPILE_OPTIONS,
    )

    def array(dtype: str, contiguous: bool = True) -> Any:
        return _kernel._ArgInfo(1, cupy.ndarray, np.dtype(dtype), 1, contiguous, True)

    indexer = _kernel._ArgInfo(2, cupy._core._carray.Indexer, None, 1, True, True)
    compiled = 0
    for name, trace in ALL_TRACES:
        for dtype in ("float32", "float64"):
            for on_device in (False, True):
                source = _trace.cuda_source(trace, dtype, scalars_on_device=on_device)
                kernel = CupyEngine._device_kernel(trace, source)  # the engine's own kernel object
                infos = []
                for role, _ in source.inputs:
                    if role == "scalar":
                        infos.append(_kernel._ArgInfo(3, _scalar.CScalar, np.dtype(dtype), 0, True, True))
                    elif role == "scalar_table":
                        infos.append(array("float64"))
                    else:  # a 0-D hyperparameter array is broadcast with stride 0
                        infos.append(array(dtype, role != "hp_array"))
                infos += [array(dtype) for _ in source.outputs] + [indexer]
                type_map = _kernel._TypeMap((("T", np.dtype(dtype)),))
                code = headers + _kernel._get_elementwise_kernel_code(
                    tuple(infos),
                    type_map,
                    kernel.params,
                    kernel.operation,
                    kernel.name,
                    kernel.preamble,
                    **kernel.kwargs,
                )
                ptx, _ = compiler._NVRTCProgram(code, "kern.cu", method="ptx").compile(options)
                lines = [line.strip() for line in ptx.decode().splitlines()]
                compiled += 1
                if name == "kitchen-sink":
                    continue  # pow() brings the math library's own FMAs
                assert not any(line.startswith("fma.") for line in lines), (name, dtype)
                if dtype == "float32":
                    doubles = [line for line in lines if ".f64" in line and not line.startswith(".reg")]
                    allowed = ("cvt.rn.f32.f64", "ld.global.f64", "ld.global.nc.f64")
                    assert all(line.startswith(allowed) for line in doubles), (name, on_device, doubles)
                    assert on_device or not doubles, (name, doubles)
    assert compiled == 4 * len(ALL_TRACES)

    # The graph-capturable matrix product: raw strided 2-D operands, one output element per thread.
    from anyoptim.engines.cupy.engine import _MATMUL_BODY

    for dtype in ("float32", "float64"):
        kernel = cupy.ElementwiseKernel(
            "raw T a, raw T b, int64 columns, int64 depth", "T out", _MATMUL_BODY, name="anyoptim_small_matmul"
        )
        operand = _kernel._ArgInfo(1, cupy.ndarray, np.dtype(dtype), 2, False, True)
        count = _kernel._ArgInfo(3, _scalar.CScalar, np.dtype("int64"), 0, True, True)
        infos = (operand, operand, count, count, array(dtype), indexer)
        type_map = _kernel._TypeMap((("T", np.dtype(dtype)),))
        code = headers + _kernel._get_elementwise_kernel_code(
            infos, type_map, kernel.params, kernel.operation, kernel.name, kernel.preamble, **kernel.kwargs
        )
        compiler._NVRTCProgram(code, "kern.cu", method="ptx").compile(options)


def test_matmul_kernel_body_on_the_cpu(tmp_path: Any) -> None:
    """The capturable matrix product's CUDA body, compiled with the host C++ compiler around a stand-in of
    CuPy's raw strided 2-D arrays, equals NumPy's ``@`` (transposed operands included)."""
    import ctypes
    import shutil
    import subprocess

    from anyoptim.engines.cupy.engine import _MATMUL_BODY

    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    source = f"""
#include <cstddef>
typedef double T;
struct Raw {{
    const T* data; std::ptrdiff_t s0, s1;
    const T& operator[](const std::ptrdiff_t (&idx)[2]) const {{ return data[idx[0] * s0 + idx[1] * s1]; }}
}};
extern "C" void product(const T* a_data, long long a0, long long a1, const T* b_data, long long b0, long long b1,
                        long long rows, long long columns, long long depth, T* out_data) {{
    const Raw a{{a_data, a0, a1}}, b{{b_data, b0, b1}};
    for (std::ptrdiff_t i = 0; i < rows * columns; ++i) {{
        T& out = out_data[i];
        {_MATMUL_BODY}
    }}
}}
"""
    (tmp_path / "matmul.cpp").write_text(source)
    library = tmp_path / "matmul.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", str(tmp_path / "matmul.cpp"), "-o", str(library)], check=True)
    product = ctypes.CDLL(str(library)).product
    rng = np.random.default_rng(5)
    for a, b in [
        (rng.normal(size=(7, 3)), rng.normal(size=(3, 4))),
        (rng.normal(size=(3, 7)).T, rng.normal(size=(4, 3)).T),  # strided views, as x.T @ delta
        (rng.normal(size=(1, 64)), rng.normal(size=(64, 1))),
        (rng.normal(size=(5, 0)), rng.normal(size=(0, 2))),
    ]:
        out = np.empty((a.shape[0], b.shape[1]))
        item = a.itemsize

        def pointer(x: np.ndarray) -> ctypes.c_void_p:
            return ctypes.c_void_p(x.__array_interface__["data"][0])

        product(
            pointer(a), ctypes.c_longlong(a.strides[0] // item), ctypes.c_longlong(a.strides[1] // item),
            pointer(b), ctypes.c_longlong(b.strides[0] // item), ctypes.c_longlong(b.strides[1] // item),
            ctypes.c_longlong(out.shape[0]), ctypes.c_longlong(out.shape[1]), ctypes.c_longlong(a.shape[1]),
            pointer(out),
        )  # fmt: skip
        np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)


def test_every_span_kernel_compiles_with_nvrtc() -> None:
    """Compile every span module with NVRTC for sm_90 as CuPy's RawModule does (no headers; CuPy adds
    ``-ftz=true``), and read the PTX: 16-byte vector stores in the vectorised kernels and none in the others, no
    local memory (the argument block and the lanes stay in registers), no fused multiply-add, no double
    arithmetic in a float32 kernel; a few are carried on to sm_90 machine code."""
    include = os.environ.get("ANYOPTIM_CUDA_INCLUDE")
    if not include:
        pytest.skip("set ANYOPTIM_CUDA_INCLUDE to the CUDA include directory (NVRTC must be loadable) to run")
    pytest.importorskip("cupy")
    import re

    from cupy.cuda import compiler

    from anyoptim.engines.cupy.engine import COMPILE_OPTIONS

    options = ("-std=c++14", "-ftz=true", *COMPILE_OPTIONS)
    compiled = 0
    for name, trace in ALL_TRACES:
        for dtype in DTYPES:
            for on_device in (False, True):
                source = span_source(trace, dtype, scalars_on_device=on_device)
                ptx, _ = compiler._NVRTCProgram(source.code, "span.cu", method="ptx").compile(
                    ("-arch=compute_90", *options)
                )
                text = ptx.decode()
                compiled += 1
                vector_store = "st.global.v4.f32" if dtype == "float32" else "st.global.v2.f64"
                for (vectorised, _), kernel in source.kernels.items():
                    start = text.index(f".entry {kernel}(")
                    end = text.find(".entry ", start + 1)
                    lines = [line.strip() for line in text[start : end if end > 0 else None].splitlines()]
                    assert any(line.startswith(vector_store) for line in lines) == vectorised, (name, kernel)
                    assert not any(".local" in line for line in lines), (name, kernel)
                    assert re.search(r"\.param \.align 8 \.b8 \w+_param_0\[(\d+)\]", text[start:]).group(1) == str(
                        source.words * 8
                    ), (name, kernel)  # the struct is exactly the engine's argument block
                    if name != "kitchen-sink":  # pow() brings the math library's own FMAs
                        assert not any(line.startswith("fma.") for line in lines), (name, kernel)
                    if dtype == "float32":
                        doubles = [line for line in lines if ".f64" in line and not line.startswith(".reg")]
                        allowed = ("cvt.rn.ftz.f32.f64", "ld.global.f64", "ld.global.nc.f64")
                        assert all(line.startswith(allowed) for line in doubles), (name, kernel, doubles)
                        assert on_device or not doubles, (name, kernel, doubles)
                if name == "adam" or (name == "rmsprop" and on_device):
                    compiler._NVRTCProgram(source.code, "span.cu", method="cubin").compile(("-arch=sm_90", *options))
    assert compiled == 4 * len(ALL_TRACES)


# --------------------------------------------------------------------------- span kernels on the CPU

_CXX = shutil.which("g++") or shutil.which("c++")

#: What the generated CUDA needs from the CUDA toolkit, for the host compiler: the qualifiers vanish, the
#: thread coordinates are globals that the simulator sets before calling a kernel once per thread.
_CUDA_STAND_INS = """
#include <cmath>
using std::sqrt;
using std::fabs;
using std::pow;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
struct anyoptim_dim3 { unsigned int x; };
static anyoptim_dim3 threadIdx, blockIdx, blockDim, gridDim;
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
"""


def _every_span_source() -> list[SpanSource]:
    """The span modules of every trace, dtype and scalar mode (each code once)."""
    found: dict[str, SpanSource] = {}
    for _, trace in ALL_TRACES:
        for dtype in DTYPES:
            for on_device in (False, True):
                source = span_source(trace, dtype, scalars_on_device=on_device)
                found.setdefault(source.code, source)
    return list(found.values())


#: Runs every thread of a launch of kernel ``kernel`` of module ``m{index}``, one after another.
_SIMULATE = """
extern "C" void simulate{index}(int kernel, unsigned grid, unsigned block, const void* args) {{
    const m{index}::anyoptim_span_args& a = *static_cast<const m{index}::anyoptim_span_args*>(args);
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {{
        for (unsigned t = 0; t < block; ++t) {{
            blockIdx.x = b;
            threadIdx.x = t;
            switch (kernel) {{ {calls} }}
        }}
    }}
}}
"""


class SpanSimulator:
    """Every generated span module compiled by the host C++ compiler into one library; a launch runs every
    thread of the grid in turn.

    Each element is updated by exactly one thread of a real launch, and threads share nothing, so running
    them one after another computes what the GPU computes; an element visited twice (or never) shows in
    the results.  The library is built with ``-fsanitize=alignment`` where the compiler has it, and every
    vectorised launch is checked to read and write 16-byte-aligned vectors only.
    """

    def __init__(self, directory: Any):
        self.directory = directory
        self.modules: dict[str, tuple[Any, int]] = {}  # source code -> (library, index of its module)
        self.sanitized = self._build(_every_span_source(), "spans")

    def _build(self, sources: list[SpanSource], stem: str) -> bool:
        """Compile ``sources`` into one library; whether the alignment sanitizer is in it."""
        chunks = [_CUDA_STAND_INS]
        first = len(self.modules)
        for index, source in enumerate(sources, start=first):
            calls = " ".join(f"case {k}: m{index}::{name}(a); break;" for k, name in enumerate(source.kernels.values()))
            code = source.code.replace('extern "C" ', "")  # C++ names, unique per namespace
            chunks.append(f"namespace m{index} {{\n{code}\n}}\n" + _SIMULATE.format(index=index, calls=calls))
        path = self.directory / f"{stem}.cpp"
        path.write_text("\n".join(chunks))
        library = self.directory / f"{stem}.so"
        # -ffp-contract=off: like --fmad=false on the GPU, no fused multiply-add (the bodies then round as the
        # ElementwiseKernel stand-in of tests/test_trace.py rounds them).
        command = [_CXX, "-O1", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC"]
        built = subprocess.run([*command, "-fsanitize=alignment", str(path), "-o", str(library)], capture_output=True)
        if built.returncode != 0:
            subprocess.run([*command, str(path), "-o", str(library)], check=True, capture_output=True)
        loaded = ctypes.CDLL(str(library))
        for index, source in enumerate(sources, start=first):
            self.modules[source.code] = (loaded, index)
        return built.returncode == 0

    def function(self, source: SpanSource, name: str) -> Callable[[tuple, tuple, tuple], None]:
        """A stand-in of the compiled kernel ``name``: called as CuPy calls a kernel, with the argument block."""
        if source.code not in self.modules:  # a rule setting outside ALL_TRACES: built on demand
            self._build([source], f"spans{len(self.modules)}")
        library, index = self.modules[source.code]
        simulate = getattr(library, f"simulate{index}")
        kernel = list(source.kernels.values()).index(name)
        vectorised = next(key[0] for key, value in source.kernels.items() if value == name)
        itemsize = np.dtype(source.dtype).itemsize
        arrays = [i for i, (role, _) in enumerate(source.pointers) if role in ("grad", "param", "slot")]

        def launch(grid: tuple, block: tuple, args: tuple) -> None:
            (words,) = args
            assert words.dtype == np.uint64 and words.size == source.words
            size, head = (int(value) for value in words[len(source.pointers) : len(source.pointers) + 2])
            if vectorised and size - head >= source.lanes:
                for i in arrays:  # every vector load and store of this launch is aligned
                    assert (int(words[i]) + head * itemsize) % 16 == 0, (name, source.pointers[i], head)
            simulate(
                ctypes.c_int(kernel),
                ctypes.c_uint(grid[0]),
                ctypes.c_uint(block[0]),
                ctypes.c_void_p(words.ctypes.data),
            )

        return launch


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: Any) -> SpanSimulator:
    if _CXX is None:
        pytest.skip("no C++ compiler to build the generated span kernels")
    return SpanSimulator(tmp_path_factory.mktemp("spans"))


@pytest.fixture(scope="module")
def elementwise_harness(tmp_path_factory: Any) -> Harness:
    """The ElementwiseKernel bodies compiled the same way (tests/test_trace.py): the span kernels' reference."""
    if _CXX is None:
        pytest.skip("no C++ compiler to build the generated kernel bodies")
    return Harness(tmp_path_factory.mktemp("elementwise"))


class SpanStandInEngine(NumpyStandInEngine):
    """The CuPy engine on NumPy arrays with span kernels: the simulator runs them, with small blocks and waves so
    that spans of a few thousand elements loop in every thread.  Records each span launch."""

    span_block = 32

    def __init__(self, simulator: SpanSimulator, wave: int = 3):
        super().__init__()
        self.launch = "span"
        self.simulator = simulator
        self.wave = wave
        self.span_launches: list[tuple[str, int, int]] = []  # (kernel, size, blocks)

    @staticmethod
    def _device_span_ready(arrays: Any) -> bool:
        return all(isinstance(a, np.ndarray) for a in arrays)

    def _device_span_kernel(self, source: SpanSource, name: str) -> tuple[Any, int]:
        function = self.simulator.function(source, name)

        def launch(grid: tuple, block: tuple, args: tuple) -> None:
            self.span_launches.append((name, size_of(args), grid[0]))
            function(grid, block, args)

        def size_of(args: tuple) -> int:
            return int(args[0][len(source.pointers)])

        return launch, self.wave

    @staticmethod
    def _device_argument_block(words: np.ndarray) -> Any:
        return words


@pytest.fixture
def span_stand_in(monkeypatch: pytest.MonkeyPatch, simulator: SpanSimulator) -> SpanStandInEngine:
    """Make optimizers on NumPy arrays run the CuPy engine's span path (with engine="fused" or "auto")."""
    import anyoptim.optimizers.base

    engine = SpanStandInEngine(simulator)

    def choose(xp: Any, choice: str) -> Any:
        return select_engine(xp, "generic") if choice == "generic" else engine

    monkeypatch.setattr(anyoptim.optimizers.base, "select_engine", choose)
    return engine


def test_span_layout_vectorises_only_what_shares_an_alignment() -> None:
    assert span_layout([0, 256, 4096], 100, 4) == (True, 0)
    assert span_layout([4, 260, 20], 100, 4) == (True, 3)  # every array 4 bytes past a boundary: 3 elements first
    assert span_layout([12, 28], 100, 4) == (True, 1)
    assert span_layout([12, 28], 0, 4) == (True, 0)  # the head never exceeds the span
    assert span_layout([8, 24], 1, 4) == (True, 1)
    assert span_layout([8, 24], 100, 8) == (True, 1)
    assert span_layout([0, 4], 100, 4) == (False, 0)  # different offsets: one element at a time
    assert span_layout([2, 18], 100, 4) == (False, 0)  # not a whole number of elements
    assert span_grid(0, 256, 100) == 1
    assert span_grid(257, 256, 100) == 2
    assert span_grid(10**9, 256, 100) == 100  # at most one wave: the loop covers the rest


@pytest.mark.parametrize(("trace", "dtype", "on_device"), [
    pytest.param(trace, dtype, on_device, id=f"{name}-{dtype}-{'table' if on_device else 'args'}-{i}")
    for i, (name, trace) in enumerate(ALL_TRACES)
    for dtype in DTYPES
    for on_device in (False, True)
])  # fmt: skip
def test_span_source_wraps_the_elementwise_body(trace: _trace.Trace, dtype: str, on_device: bool) -> None:
    """The span kernels run the very body of the ElementwiseKernel (never a second formula), read every scalar
    once per thread, and describe their argument block as the engine fills it."""
    elementwise = _trace.cuda_source(trace, dtype, scalars_on_device=on_device)
    source = span_source(trace, dtype, scalars_on_device=on_device)
    lines = source.code.splitlines()
    for line in elementwise.body.splitlines():
        assert "    " + line in lines
    assert source.code.count("anyoptim_update(") == 3 + source.lanes  # defined, then called: head, lanes, tail
    slots = list(trace.slot_names)
    roles = [("grad", None), ("param", None), *(("slot", name) for name in slots)]
    roles += [("hp_array", name) for name in trace.hp_arrays]
    count = len(trace.kernel_scalars)
    roles += [("scalar_table", None)] if on_device and count else []
    assert list(source.pointers) == roles
    assert source.scalar_count == (0 if on_device else count)
    itemsize = np.dtype(dtype).itemsize
    assert source.words == len(roles) + 2 + -(-source.scalar_count * itemsize // 8)
    assert source.lanes == 16 // itemsize
    struct = source.code[source.code.index("struct anyoptim_span_args {") : source.code.index("};")]
    assert struct.count("* p_") == len(roles)
    assert ("T c[" in struct) == bool(source.scalar_count)
    assert sorted(source.kernels) == [(False, False), (False, True), (True, False), (True, True)]
    assert all(f"{name}(const anyoptim_span_args a)" in source.code for name in source.kernels.values())
    if dtype == "float32":  # T throughout; only the scalar table is double
        assert source.code.count("double") == (2 if ("scalar_table", None) in roles else 0)


#: Every optimizer's traces and the custom rules, as (id, make the leaf steps).
SPAN_RULES = [pytest.param(config, id=config.id) for config in CONFIGS] + [
    pytest.param(rule, id=rule.id) for rule in CUSTOM_RULES
]


def _one_leaf_step(subject: Any, dtype: str, size: int, rng: np.random.Generator, as_array: bool) -> Any:
    """One leaf of ``size`` elements as an engine receives it, with state from a few generic steps first."""
    from tests.test_trace import LeafStep

    params = {"w": rng.normal(size=size).astype(dtype)}
    if isinstance(subject, Config):
        grads = [{"w": (rng.normal(size=size) * 2).astype(dtype)} for _ in range(3)]
        case = Case(dtype, params, grads)
        optimizer, current, state = _state_before_last_step(subject, case)
        return _leaf_steps(optimizer, current, grads[-1], state, clip_factor_as_array=as_array)[0]
    slots = {name: rng.normal(size=size).astype(dtype) for name in subject.program.slot_names}
    return LeafStep(subject.program, params["w"], rng.normal(size=size).astype(dtype), slots, subject.hp)


def _run_spans(engine: SpanStandInEngine, step: Any, offsets: tuple[int, int, int], on_device: bool) -> tuple:
    """One engine step on copies of the leaf placed at ``offsets``; with ``on_device`` the scalars come from a
    scalar table as in a captured graph's warm-up."""
    p, g = _placed(np, step.p, offsets[0]), _placed(np, step.g, offsets[1])
    slots = {name: _placed(np, value, offsets[2]) for name, value in step.slots.items()}
    arguments = (step.program, XP, [p], [g], {name: [value] for name, value in slots.items()}, [step.hp])
    if on_device:
        plan = cupy_engine._ScalarPlan({id(p): 0})
        with engine._scalars_on_device(plan):
            engine.apply(*arguments)
    else:
        engine.apply(*arguments)
    return p, slots


@pytest.mark.parametrize("subject", SPAN_RULES)
@settings(max_examples=12)
@given(data=st.data())
def test_simulated_span_kernels_equal_the_elementwise_body(
    simulator: SpanSimulator,
    elementwise_harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    subject: Any,
    data: Any,
) -> None:
    """Every rule, drawn sizes and alignments (heads, tails, mixed offsets), 32- and 64-bit indices, scalars by
    value or from the table: the span kernels compute the ElementwiseKernel body's bits (and the optimizers'
    rules' values)."""
    import types

    monkeypatch.setattr(cupy_engine, "cupy", types.SimpleNamespace(asarray=np.asarray, zeros=np.zeros))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    size = data.draw(st.one_of(st.integers(1, 40), st.integers(2000, 5000)), label="size")
    pattern = data.draw(st.sampled_from(sorted(OFFSETS)), label="offsets")
    on_device, as_array, wide = (data.draw(st.booleans(), label=label) for label in ("table", "0-D hp", "64-bit"))
    monkeypatch.setattr(cupy_engine, "INDEX32_LIMIT", 0 if wide else 2**31)  # set for each example
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    step = _one_leaf_step(subject, dtype, size, rng, as_array)
    engine = SpanStandInEngine(simulator)
    p, slots = _run_spans(engine, step, OFFSETS[pattern], on_device)
    [(kernel, launched, _)] = engine.span_launches
    assert launched == size and kernel.endswith("64" if wide else "32")
    assert ("vector" in kernel) == (pattern != "mixed")
    trace = _trace_of(step)
    source = _trace.cuda_source(trace, dtype, scalars_on_device=on_device)
    expected_p = np.array(step.p, copy=True)
    expected_slots = {name: np.array(value, copy=True) for name, value in step.slots.items()}
    elementwise_harness.run(source, expected_p, step.g, expected_slots, step.hp, _trace.fold_scalars(trace, step.hp))
    np.testing.assert_array_equal(p, expected_p)
    for name in slots:
        np.testing.assert_array_equal(slots[name], expected_slots[name], err_msg=name)
    if isinstance(subject, Config):  # (the custom rules' NumPy forms compute partly in float64)
        rule_p, rule_slots = step.program(XP, step.p, step.g, step.slots, step.hp)
        _assert_same(p, rule_p, dtype, "param")
        for name in slots:
            _assert_same(slots[name], rule_slots[name], dtype, f"slot {name}")
    assert "runtime error" not in capfd.readouterr().err  # the alignment sanitizer saw nothing


@pytest.mark.parametrize("dtype", DTYPES)
def test_simulated_span_kernels_cover_every_head_and_tail(
    simulator: SpanSimulator, elementwise_harness: Harness, dtype: str
) -> None:
    """Adam on 1 to 12 elements at every offset, vectorised or not: every element updated once."""
    config = next(c for c in CONFIGS if c.id == "adam")
    rng = np.random.default_rng(3)
    kernels = set()
    for size in range(1, 13):
        step = _one_leaf_step(config, dtype, size, rng, False)
        trace = _trace_of(step)
        expected_p = np.array(step.p, copy=True)
        expected_slots = {name: np.array(value, copy=True) for name, value in step.slots.items()}
        source = _trace.cuda_source(trace, dtype)
        elementwise_harness.run(
            source, expected_p, step.g, expected_slots, step.hp, _trace.fold_scalars(trace, step.hp)
        )
        for pattern, offsets in OFFSETS.items():
            engine = SpanStandInEngine(simulator, wave=1)
            p, slots = _run_spans(engine, step, offsets, False)
            np.testing.assert_array_equal(p, expected_p, err_msg=f"{size} elements, {pattern}")
            for name in slots:
                np.testing.assert_array_equal(slots[name], expected_slots[name], err_msg=f"{size}, {pattern}, {name}")
            kernels.add(engine.span_launches[0][0])
    assert kernels == {"anyoptim_adam_vector32", "anyoptim_adam_scalar32"}


def _flat_case_params(case: Case) -> dict:
    return anyoptim.flatten({name: np.array(value, copy=True) for name, value in case.params.items()})


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=8)
@given(case=cases(max_steps=4), flat=st.booleans())
def test_span_path_through_the_optimizer_matches_generic(
    span_stand_in: SpanStandInEngine, config: Config, case: Case, flat: bool
) -> None:
    """Optimizer steps on the span path (the first step validated, the rest on the fast path, a gradient buffer
    refilled each step) equal the generic engine's."""
    span_stand_in.span_launches.clear()
    fused, generic = config.make("fused"), config.make("generic")
    p_fused = _flat_case_params(case) if flat else {name: np.array(v, copy=True) for name, v in case.params.items()}
    p_generic = {name: np.array(value, copy=True) for name, value in case.params.items()}
    s_fused, s_generic = fused.init(p_fused), generic.init(p_generic)
    buffer = {name: np.zeros_like(value) for name, value in case.params.items()}
    for grads in case.grads:
        for name, value in grads.items():
            buffer[name][...] = value
        p_fused, s_fused = fused.step(p_fused, buffer, s_fused)
        p_generic, s_generic = generic.step(p_generic, grads, s_generic)
    for name in p_generic:
        _assert_same(p_fused[name], p_generic[name], case.dtype, f"params[{name}]")
    for slot, tree in s_generic.slots.items():
        for name in tree:
            _assert_same(s_fused.slots[slot][name], tree[name], case.dtype, f"slot {slot}[{name}]")
    assert span_stand_in.span_launches and not span_stand_in.launches  # no ElementwiseKernel launch


def test_steady_state_span_step_writes_only_its_scalars(
    span_stand_in: SpanStandInEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first step the fast path calls the span run's launch directly: the same argument block and grid
    at every step, with only the scalars rewritten (bias corrections and the scheduled learning rate change)."""
    created: list[Any] = []
    original = cupy_engine._SpanRun.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(cupy_engine._SpanRun, "__init__", recording)
    rng = np.random.default_rng(4)
    params = anyoptim.flatten({"W": rng.normal(size=(3, 5)), "b": rng.normal(size=5)})
    grads = anyoptim.flatten({name: rng.normal(size=value.shape) for name, value in params.items()})
    optimizer = anyoptim.Adam(anyoptim.schedules.exponential_decay(0.1, 1, 0.5))
    state = optimizer.init(params)
    params, state = optimizer.step(params, grads, state)
    (run,) = created
    assert optimizer._prepared.runs == [(run.launch, None)]  # the fast path calls the launch itself
    words, args, grid = run.words.copy(), run.args, run.grid
    fixed = len(run.source.pointers) + 2  # pointers, n, head
    seen = [run.scalars.copy()]
    for _ in range(3):
        params, state = optimizer.step(params, grads, state)
        assert run.args is args and run.grid is grid
        np.testing.assert_array_equal(run.words[:fixed], words[:fixed])
        seen.append(run.scalars.copy())
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(seen))
    assert len(created) == 1 and len(span_stand_in.span_launches) == 4


def test_launch_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="launch must be one of span, elementwise"):
        CupyEngine(launch="raw")
    monkeypatch.setenv("ANYOPTIM_CUPY_LAUNCH", "fast")
    with pytest.raises(ValueError, match="ANYOPTIM_CUPY_LAUNCH"):
        CupyEngine()
    monkeypatch.setenv("ANYOPTIM_CUPY_LAUNCH", "elementwise")
    assert CupyEngine().launch == "elementwise"


SCALAR_TABLE_CONFIGS = [
    pytest.param(
        lambda e: anyoptim.AdamW(anyoptim.schedules.exponential_decay(0.05, 1, 0.8), weight_decay=0.1, engine=e),
        id="adamw-schedule-masked",
    ),
    pytest.param(lambda e: anyoptim.RAdam(0.02, engine=e), id="radam-both-branches"),
    pytest.param(lambda e: anyoptim.RMSprop(0.01, centered=True, momentum=0.5, engine=e), id="rmsprop"),
]


@pytest.mark.parametrize("make", SCALAR_TABLE_CONFIGS)
def test_span_kernels_replay_a_captured_scalar_table(
    span_stand_in: SpanStandInEngine, monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    """What GraphedStep does, on the CPU with span kernels: a warm-up step in scalar-table mode (undone), a
    capture that keeps each launch's argument block as the driver copies it, then replays of those blocks while
    the host refills the frozen table from the optimizer's own step scalars."""
    capture = warm_up_for_capture(monkeypatch, span_stand_in, make, seed=8, extra=5)
    recorded: list[tuple[Any, tuple, tuple, np.ndarray]] = []

    def capturing(function: Any, size: int) -> Callable[..., None]:
        def record(grid: tuple, block: tuple, args: tuple) -> None:
            recorded.append((function, grid, block, args[0].copy()))  # kernel parameters are copied at launch

        return record

    monkeypatch.setattr(span_stand_in, "_span_launcher", capturing)
    with span_stand_in._scalars_on_device(capture.plan):
        capture.optimizer.step(capture.params, capture.grads, capture.state)
    assert len(recorded) == len(capture.plan.entries) == (2 if capture.optimizer.weight_decay else 1)

    def replay() -> None:
        for function, grid, block, words in recorded:
            function(grid, block, (words,))

    check_replays(capture, replay)
