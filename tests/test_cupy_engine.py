"""The CuPy engine: fused agrees with generic, the span kernels with the ElementwiseKernel (bit for bit) on every
layout, one launch per flat model, no per-step allocation, the launch choice.

Tests marked ``gpu`` need a CUDA GPU (``pytest -m gpu``).  The others run on any machine; when
``ANYOPTIM_CUDA_INCLUDE`` names the CUDA include directory (and NVRTC is loadable), every generated
ElementwiseKernel is compiled with NVRTC for sm_90.  The span kernels on the CPU are in
``tests/test_cupy_spans.py``, CUDA graphs and the capturable product in ``tests/test_cupy_capture.py``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
import anyoptim.engines.cupy.launch as cupy_launch
from anyoptim.engines import select_engine
from anyoptim.engines.cupy import CupyEngine
from anyoptim.engines.cupy.device import COMPILE_OPTIONS, CupyDevice
from anyoptim.engines.cupy.printer import cuda_source
from tests.helpers import RTOL_SAME_BACKEND, load_namespace, to_numpy
from tests.test_trace import (
    ALL_TRACES,
    CONFIG_PARAMS,
    CONFIGS,
    DTYPES,
    Case,
    Config,
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
    device = select_engine(xp, "fused").device
    found: list[tuple[str, int]] = []
    launch = device.launch

    def counting(kernel: Any, args: Any) -> None:
        found.append(("elementwise", int(args[-1].size)))
        launch(kernel, args)

    def span_launcher(function: Any, size: int) -> Callable[..., None]:
        def counted(grid: tuple, block: tuple, args: tuple) -> None:
            found.append(("span", size))
            function(grid, block, args)

        return counted

    monkeypatch.setattr(device, "launch", counting)
    monkeypatch.setattr(device, "span_launcher", span_launcher)
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
        return compiled, dict(engine.device.span_kernels)

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
    if config.id in ("adam", "adam-clipped-l2", "rmsprop", "momentum-heavy_ball", "lion-decay-clip")
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
        monkeypatch.setattr(cupy_launch, "INDEX32_LIMIT", 0)
    size = 3_000_001
    rng = np.random.default_rng(5)
    layouts = {"w": (rng.normal(size=size).astype(np.float32), (1, 1, 1))}
    gradients = [{"w": rng.normal(size=size).astype(np.float32)} for _ in range(2)]
    monkeypatch.setattr(engine, "launch", "elementwise")
    p_elementwise, s_elementwise = _laid_out_run(cp_xp, lambda: config.make("fused"), layouts, gradients)
    monkeypatch.setattr(engine, "launch", "span")
    blocks: list[int] = []
    span_launcher = engine.device.span_launcher

    def recording(function: Any, span_size: int) -> Callable[..., None]:
        assert span_size == size
        launch = span_launcher(function, span_size)

        def recorded(grid: tuple, block: tuple, args: tuple) -> None:
            blocks.append(grid[0])
            launch(grid, block, args)

        return recorded

    monkeypatch.setattr(engine.device, "span_launcher", recording)
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
                source = cuda_source(trace, dtype, scalars_on_device=on_device)
                kernel = CupyDevice.elementwise_kernel(trace, source)  # the engine's own kernel object
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
    from anyoptim.engines.cupy.capture import MATMUL_BODY

    for dtype in ("float32", "float64"):
        kernel = cupy.ElementwiseKernel(
            "raw T a, raw T b, int64 columns, int64 depth", "T out", MATMUL_BODY, name="anyoptim_small_matmul"
        )
        operand = _kernel._ArgInfo(1, cupy.ndarray, np.dtype(dtype), 2, False, True)
        count = _kernel._ArgInfo(3, _scalar.CScalar, np.dtype("int64"), 0, True, True)
        infos = (operand, operand, count, count, array(dtype), indexer)
        type_map = _kernel._TypeMap((("T", np.dtype(dtype)),))
        code = headers + _kernel._get_elementwise_kernel_code(
            infos, type_map, kernel.params, kernel.operation, kernel.name, kernel.preamble, **kernel.kwargs
        )
        compiler._NVRTCProgram(code, "kern.cu", method="ptx").compile(options)


def test_launch_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="launch must be one of span, elementwise"):
        CupyEngine(launch="raw")
    monkeypatch.setenv("ANYOPTIM_CUPY_LAUNCH", "fast")
    with pytest.raises(ValueError, match="ANYOPTIM_CUPY_LAUNCH"):
        CupyEngine()
    monkeypatch.setenv("ANYOPTIM_CUPY_LAUNCH", "elementwise")
    assert CupyEngine().launch == "elementwise"
