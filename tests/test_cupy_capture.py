"""CUDA graphs: a captured training step replays as eager steps do; the capturable product equals ``@``.

Tests marked ``gpu`` need a CUDA GPU (``pytest -m gpu``).  On any machine the product's CUDA body is compiled
by the host C++ compiler; the scalar table of a captured step is simulated on NumPy in ``tests/test_trace.py``
(ElementwiseKernel) and ``tests/test_cupy_spans.py`` (span kernels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import anyoptim
from anyoptim.engines.cupy import GraphedStep, matmul
from anyoptim.engines.cupy.capture import MATMUL_BODY
from tests.helpers import RTOL_SAME_BACKEND, load_namespace, to_numpy

gpu = pytest.mark.gpu


@pytest.fixture
def cp_xp() -> Any:
    """The array-api-compat CuPy namespace; skips without a usable GPU."""
    xp = load_namespace("cupy")
    if xp is None:
        pytest.skip("CuPy with a CUDA GPU is not available here")
    return xp


def _assert_same(actual: Any, expected: Any, dtype: str, what: str) -> None:
    np.testing.assert_allclose(
        to_numpy(actual), to_numpy(expected), rtol=RTOL_SAME_BACKEND[dtype], atol=0, err_msg=what
    )


# --------------------------------------------------------------------------- CUDA graphs


def _linear_problem(xp: Any, dtype: str, steps: int) -> tuple[dict, list[tuple[Any, Any]]]:
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    batches = [(rng.normal(size=(16, 4)), rng.normal(size=(16, 3))) for _ in range(steps)]
    cast = {name: xp.asarray(value.astype(dtype)) for name, value in params.items()}
    return cast, [(xp.asarray(x.astype(dtype)), xp.asarray(y.astype(dtype))) for x, y in batches]


def loss_and_grads(params: dict, x: Any, y: Any) -> tuple[Any, dict]:
    """Mean squared error of a linear model, with its gradients: device work only, no cuBLAS (graph-capturable)."""
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


def test_matmul_kernel_body_on_the_cpu(tmp_path: Any) -> None:
    """The capturable matrix product's CUDA body, compiled with the host C++ compiler around a stand-in of
    CuPy's raw strided 2-D arrays, equals NumPy's ``@`` (transposed operands included)."""
    import ctypes
    import shutil
    import subprocess

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
        {MATMUL_BODY}
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
