"""Adadelta (Zeiler, 2012) against the paper's Algorithm 1, torch.optim.Adadelta and optax.adadelta.

Every check runs on the generic engine and on the fused NumPy engine, both as
ufunc calls and as a compiled C kernel, on plain and on flattened parameters.
:func:`ref_adadelta` is an independent transcription of the paper, one array at
a time in float64 NumPy, in the shape of the references of
``tests/test_reference.py`` (``update(theta, g, state, t, lr)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import anyoptim
from anyoptim.engines.numpy import NumpyEngine
from anyoptim.engines.numpy import native as _native
from anyoptim.engines.numpy.compiled import CompiledSpans, c_source
from anyoptim.engines.program import Program
from anyoptim.optimizers.adaptive import adadelta

HAS_COMPILER = _native.compiler_found()


@dataclass(frozen=True)
class Reference:
    init: Callable[[np.ndarray], dict[str, np.ndarray]]
    update: Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]]


def ref_adadelta(rho: float, epsilon: float) -> Reference:
    """Zeiler (2012), "ADADELTA: An Adaptive Learning Rate Method", Algorithm 1, with RMS[y] = sqrt(E[y^2] + eps).

    The paper applies x <- x + dx; torch.optim and optax multiply dx by a
    learning rate (1 in the paper), applied after E[dx^2] is accumulated.
    """

    def init(theta: np.ndarray) -> dict[str, np.ndarray]:
        return {"E_g2": np.zeros_like(theta), "E_dx2": np.zeros_like(theta)}  # line 1

    def update(theta, g, s, t, lr):
        E_g2 = rho * s["E_g2"] + (1 - rho) * g**2  # line 4: accumulate the gradient
        rms_dx_previous = np.sqrt(s["E_dx2"] + epsilon)  # RMS[dx]_{t-1}
        rms_g = np.sqrt(E_g2 + epsilon)  # RMS[g]_t
        dx = -(rms_dx_previous / rms_g) * g  # line 5: compute the update
        E_dx2 = rho * s["E_dx2"] + (1 - rho) * dx**2  # line 6: accumulate the updates
        return theta + lr * dx, {"E_g2": E_g2, "E_dx2": E_dx2}  # line 7: apply the update

    return Reference(init, update)


def _engines() -> list[Any]:
    engines = [
        pytest.param(lambda: "generic", id="generic"),
        pytest.param(lambda: NumpyEngine(kernels="ufunc"), id="fused-ufunc"),
    ]
    compiled = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
    engines.append(pytest.param(lambda: NumpyEngine(kernels="c"), id="fused-c", marks=compiled))
    return engines


ENGINES = _engines()
LAYOUTS = [pytest.param(False, id="plain"), pytest.param(True, id="flat")]


def _start(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(size=(3, 2)), "b1": rng.normal(size=2), "W2": rng.normal(size=(2, 4))}


def _params(start: dict[str, np.ndarray], flat: bool) -> dict[str, np.ndarray]:
    params = {key: value.copy() for key, value in start.items()}
    return anyoptim.flatten(params) if flat else params


# --------------------------------------------------------------------------- the paper


@pytest.mark.parametrize("make_engine", ENGINES)
@pytest.mark.parametrize("flat", LAYOUTS)
@pytest.mark.parametrize(
    ("learning_rate", "rho", "epsilon", "weight_decay"),
    [(1.0, 0.9, 1e-6, 0.0), (0.5, 0.95, 1e-7, 0.0), (2.0, 0.0, 1e-3, 0.0), (1.0, 0.8, 1e-5, 0.1)],
)
def test_adadelta_follows_the_paper(make_engine, flat, learning_rate, rho, epsilon, weight_decay):
    start = _start(0)
    optimizer = anyoptim.Adadelta(learning_rate, rho, epsilon, weight_decay=weight_decay, engine=make_engine())
    params = _params(start, flat)
    state = optimizer.init(params)
    reference = ref_adadelta(rho, epsilon)
    expected = {key: value.copy() for key, value in start.items()}
    ref_state = {key: reference.init(value) for key, value in start.items()}
    rng = np.random.default_rng(1)
    grads = _params({key: np.zeros_like(value) for key, value in start.items()}, flat)
    for t in range(1, 9):
        for key, value in start.items():
            grads[key][...] = rng.normal(scale=10.0 ** rng.integers(-3, 3), size=value.shape)
        for key in start:
            g = grads[key] + weight_decay * expected[key]  # L2 added to the gradient, as torch and optax
            expected[key], ref_state[key] = reference.update(expected[key], g, ref_state[key], t, learning_rate)
        params, state = optimizer.step(params, grads, state)
        assert state.count == t
        for key in start:
            np.testing.assert_allclose(params[key], expected[key], rtol=1e-12, atol=1e-15, err_msg=f"{key} t={t}")
            for ours, theirs in (("s", "E_g2"), ("u", "E_dx2")):
                np.testing.assert_allclose(
                    state.slots[ours][key], ref_state[key][theirs], rtol=1e-12, atol=1e-300, err_msg=f"{ours} {key}"
                )


def test_adadelta_in_float32_follows_the_paper():
    start = _start(2)
    optimizer = anyoptim.Adadelta()
    params = {key: value.astype(np.float32) for key, value in start.items()}
    state = optimizer.init(params)
    reference = ref_adadelta(0.9, 1e-6)
    expected = dict(start)
    ref_state = {key: reference.init(value) for key, value in start.items()}
    rng = np.random.default_rng(3)
    for t in range(1, 6):
        grads = {key: rng.normal(size=value.shape) for key, value in start.items()}
        for key in start:
            expected[key], ref_state[key] = reference.update(expected[key], grads[key], ref_state[key], t, 1.0)
        params, state = optimizer.step(params, {k: g.astype(np.float32) for k, g in grads.items()}, state)
        for key in start:
            assert params[key].dtype == np.float32
            np.testing.assert_allclose(params[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_the_first_step_is_set_by_epsilon():
    """With u = 0 the first step is sqrt(eps / (eps + (1 - rho) g^2)) g: about sqrt(eps / (1 - rho)) sign(g)."""
    optimizer = anyoptim.Adadelta()
    params, _ = optimizer.step({"w": np.array([1.0])}, {"w": np.array([2.0])}, optimizer.init({"w": np.ones(1)}))
    assert params["w"][0] == pytest.approx(1.0 - np.sqrt(1e-6 / (1e-6 + 0.1 * 4.0)) * 2.0, rel=1e-15)


# --------------------------------------------------------------------------- torch.optim and optax

#: (label, anyoptim's, torch.optim's) — the equivalences the docstring promises.
TORCH_EQUIVALENTS = [
    ("defaults", lambda e: anyoptim.Adadelta(engine=e), lambda p, torch: torch.optim.Adadelta(p)),
    (
        "lr rho eps",
        lambda e: anyoptim.Adadelta(0.5, 0.8, 1e-5, engine=e),
        lambda p, torch: torch.optim.Adadelta(p, lr=0.5, rho=0.8, eps=1e-5),
    ),
    (
        "weight_decay",
        lambda e: anyoptim.Adadelta(0.5, 0.8, 1e-5, weight_decay=0.1, engine=e),
        lambda p, torch: torch.optim.Adadelta(p, lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1),
    ),
]

#: (label, anyoptim's, optax.adadelta's keyword arguments).
OPTAX_EQUIVALENTS = [
    ("defaults", lambda e: anyoptim.Adadelta(engine=e), {"learning_rate": 1.0}),
    (
        "lr rho eps",
        lambda e: anyoptim.Adadelta(0.5, 0.8, 1e-5, engine=e),
        {"learning_rate": 0.5, "rho": 0.8, "eps": 1e-5},
    ),
    (
        "weight_decay",
        lambda e: anyoptim.Adadelta(0.5, 0.8, 1e-5, weight_decay=0.1, engine=e),
        {"learning_rate": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.1},
    ),
]


@pytest.mark.parametrize("make_engine", ENGINES)
@pytest.mark.parametrize("flat", LAYOUTS)
@pytest.mark.parametrize(("label", "ours", "theirs"), TORCH_EQUIVALENTS, ids=[e[0] for e in TORCH_EQUIVALENTS])
def test_adadelta_equals_torch(make_engine, flat, label, ours, theirs):
    torch = pytest.importorskip("torch")
    start = _start(3)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    reference = theirs([tensors[k] for k in sorted(tensors)], torch)
    optimizer = ours(make_engine())
    params = _params(start, flat)
    state = optimizer.init(params)
    rng = np.random.default_rng(4)
    for _ in range(8):
        grads = {k: rng.normal(size=v.shape) for k, v in start.items()}
        for k, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[k])
        reference.step()
        params, state = optimizer.step(params, grads, state)
        for k in start:
            np.testing.assert_allclose(params[k], tensors[k].detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
    for k in start:
        torch_state = reference.state[tensors[k]]
        np.testing.assert_allclose(state.slots["s"][k], torch_state["square_avg"].numpy(), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(state.slots["u"][k], torch_state["acc_delta"].numpy(), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("make_engine", ENGINES)
@pytest.mark.parametrize("flat", LAYOUTS)
@pytest.mark.parametrize(("label", "ours", "kwargs"), OPTAX_EQUIVALENTS, ids=[e[0] for e in OPTAX_EQUIVALENTS])
def test_adadelta_equals_optax(make_engine, flat, label, ours, kwargs):
    optax = pytest.importorskip("optax")
    import jax

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    start = _start(5)
    transform = optax.adadelta(**kwargs)
    theirs = {k: jnp.asarray(v) for k, v in start.items()}
    their_state = transform.init(theirs)
    optimizer = ours(make_engine())
    params = _params(start, flat)
    state = optimizer.init(params)
    rng = np.random.default_rng(6)
    for _ in range(8):
        grads = {k: rng.normal(size=v.shape) for k, v in start.items()}
        updates, their_state = transform.update({k: jnp.asarray(g) for k, g in grads.items()}, their_state, theirs)
        theirs = optax.apply_updates(theirs, updates)
        params, state = optimizer.step(params, grads, state)
        for k in start:
            np.testing.assert_allclose(params[k], np.asarray(theirs[k]), rtol=1e-12, atol=1e-14, err_msg=k)


# --------------------------------------------------------------------------- the engines


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adadelta_compiles_to_c(dtype):
    optimizer = anyoptim.Adadelta(0.5, weight_decay=0.1)
    hp = {"learning_rate": 0.5, **optimizer._step_scalars(0)}
    program = Program(rule=adadelta, slot_names=("s", "u"))
    engine = NumpyEngine(kernels="c")
    plan = engine.plan(program, np.dtype(dtype), ("s", "u"), hp, ())
    assert c_source(plan, "adadelta_test") is not None
    p, g = np.ones(7, dtype), np.full(7, 0.5, dtype)
    step = engine.prepare(program, np, [p], [g], {"s": [np.zeros(7, dtype)], "u": [np.zeros(7, dtype)]}, [hp])
    assert [type(runner) for runner in step.runners] == [CompiledSpans]
    # and through the optimizer, with a kernel that must build (kernels="c" raises otherwise)
    optimizer.engine = NumpyEngine(kernels="c")
    params = anyoptim.flatten({"W": np.ones((3, 2), dtype), "b": np.ones(2, dtype)})
    state = optimizer.init(params)
    for _ in range(3):
        params, state = optimizer.step(params, {"W": np.ones((3, 2), dtype), "b": np.ones(2, dtype)}, state)
    assert state.count == 3 and params["W"].dtype == dtype


def test_adadelta_is_registered_and_declared():
    assert anyoptim.optimizers.REGISTRY["adadelta"] is anyoptim.Adadelta
    assert "Adadelta" in anyoptim.__all__ and "Adadelta" in anyoptim.optimizers.__all__
    assert anyoptim.Adadelta.rule is adadelta
    assert list(anyoptim.Adadelta().init({"w": np.zeros(2)}).slots) == ["s", "u"]


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_rho_is_checked(value):
    with pytest.raises(ValueError, match=r"rho must"):
        anyoptim.Adadelta(rho=value)
    optimizer = anyoptim.Adadelta()
    with pytest.raises(ValueError, match=r"rho must"):
        optimizer.rho = value
    assert optimizer.rho == 0.9
