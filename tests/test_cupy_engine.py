"""The CuPy engine on a GPU: fused agrees with generic, one launch per flat model, no per-step allocation,
CUDA-graph replay equals eager steps.

Every test here but the last needs a CUDA GPU (``pytest -m gpu``).  The last
compiles every generated kernel with NVRTC, which needs no GPU, only NVRTC and
the CUDA headers: it runs when ``ANYOPTIM_CUDA_INCLUDE`` names the CUDA include
directory (and NVRTC is loadable), and is skipped otherwise.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
from anyoptim.engines import _trace, select_engine
from tests.helpers import RTOL_SAME_BACKEND, load_namespace, to_numpy
from tests.test_trace import ALL_TRACES, CONFIG_PARAMS, Case, Config, cases

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


def _count_launches(monkeypatch: pytest.MonkeyPatch, xp: Any) -> list[int]:
    engine = select_engine(xp, "fused")
    sizes: list[int] = []
    launch = type(engine)._launch

    def counting(kernel: Any, args: Any) -> None:
        sizes.append(int(args[-1].size))
        launch(engine, kernel, args)

    monkeypatch.setattr(engine, "_launch", counting)
    return sizes


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
    sizes = _count_launches(monkeypatch, cp_xp)
    for _ in range(3):
        params, state = optimizer.step(params, grads, state)
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
    before = {key: dict(compiled.kernels) for key, compiled in engine._compiled.items()}
    other = anyoptim.Lion(1e-3, clip_value=0.5)  # equal settings: the same program
    other_state = other.init(params)
    for _ in range(2):
        params, other_state = other.step(params, grads, other_state)
    after = {key: dict(compiled.kernels) for key, compiled in engine._compiled.items()}
    assert after == before


# --------------------------------------------------------------------------- CUDA graphs


def _linear_problem(xp: Any, dtype: str, steps: int) -> tuple[dict, list[tuple[Any, Any]]]:
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    batches = [(rng.normal(size=(16, 4)), rng.normal(size=(16, 3))) for _ in range(steps)]
    cast = {name: xp.asarray(value.astype(dtype)) for name, value in params.items()}
    return cast, [(xp.asarray(x.astype(dtype)), xp.asarray(y.astype(dtype))) for x, y in batches]


def loss_and_grads(params: dict, x: Any, y: Any) -> tuple[Any, dict]:
    """Mean squared error of a linear model, with its gradients: device work only, no cuBLAS (graph-capturable)."""
    from anyoptim.engines.cupy import matmul

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
    from anyoptim.engines.cupy import matmul

    rng = np.random.default_rng(4)
    pairs = [((64, 2), (2, 5)), ((5,), (5, 3)), ((4, 6), (6,)), ((1, 0), (0, 3))]
    for left, right in pairs:
        a, b = (cp_xp.asarray(rng.normal(size=shape).astype(dtype)) for shape in (left, right))
        _assert_same(matmul(a, b), a @ b, "float32", f"{left} @ {right}")  # summation order may differ
    a = cp_xp.asarray(rng.normal(size=(6, 64)).astype(dtype))
    b = cp_xp.asarray(rng.normal(size=(3, 6)).astype(dtype))
    _assert_same(matmul(a.T, b.T), a.T @ b.T, "float32", "strided operands")
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
    from anyoptim.engines.cupy import GraphedStep

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
    from anyoptim.engines.cupy import GraphedStep

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
    from anyoptim.engines.cupy import GraphedStep

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

    from anyoptim.engines.cupy import COMPILE_OPTIONS

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
                kernel = cupy.ElementwiseKernel(
                    source.in_params,
                    source.out_params,
                    source.body,
                    name=source.name,
                    loop_prep=source.loop_prep,
                    options=COMPILE_OPTIONS,
                    no_return=True,
                )
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
    from anyoptim.engines.cupy import _MATMUL_BODY

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

    from anyoptim.engines.cupy import _MATMUL_BODY

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
