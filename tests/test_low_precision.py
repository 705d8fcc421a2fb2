"""float16 and bfloat16 parameters: computed in float32, rounded once on store; master weights.

* Epsilon safety in low precision: zero, subnormal, huge and mixed-sign gradients never give NaN or inf, for every
  optimizer of the table, on every backend that has the dtype (NumPy: float16; torch and JAX: both), with and
  without master weights (the float32/float64 property is in ``test_properties.py``).
* The issue's example: Adam, float16 gradients ``[0, 1e-5, 1e-2, 1]``, three steps: finite, and equal to an
  independent float32 transcription whose results are rounded to float16 once per store.
* Every NumPy engine path (C kernels where chosen, ufunc plan, flat spans, the prepared step) agrees bit for bit
  with the generic engine: the same float32 operations run on the same widened values.
* Master weights: 10,000 steps at lr 1e-4 move a bfloat16 parameter within 1 % of the float32 run (without them
  it does not move at all); invalid settings and mismatched states are refused before anything changes.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim.engines import GenericEngine
from anyoptim.engines.numpy import NumpyEngine
from tests.cases import CASES, CONFIG_PARAMS, case_params
from tests.helpers import Backend, to_numpy

#: (backend, dtype name) pairs that exist: NumPy has float16 only (bfloat16 through ml_dtypes is refused).
NARROW = [
    (Backend.NUMPY, "float16"),
    (Backend.TORCH, "float16"),
    (Backend.TORCH, "bfloat16"),
    (Backend.JAX, "float16"),
    (Backend.JAX, "bfloat16"),
    (Backend.CUPY, "float16"),
]
NARROW_PARAMS = [
    pytest.param(backend, dtype, id=f"{backend}-{dtype}", marks=backend.pytest_param().marks)
    for backend, dtype in NARROW
]


def _namespace(backend: Backend):
    xp = backend.namespace()
    if xp is None:
        pytest.skip(f"{backend} is not available here")
    return xp


def _dtype(backend: Backend, name: str):
    if backend is Backend.TORCH:
        import torch

        return getattr(torch, name)
    if backend is Backend.JAX:
        import jax.numpy as jnp

        return getattr(jnp, name)
    return getattr(_namespace(backend), name)


def _array(backend: Backend, values: np.ndarray, dtype: str):
    """``values`` (float64) rounded once to ``dtype`` on ``backend`` (through float32, exact for the values used)."""
    xp = _namespace(backend)
    return xp.astype(xp.asarray(np.array(values, dtype=np.float32, copy=True)), _dtype(backend, dtype))


def _finfo(dtype: str):
    return ml_dtypes.finfo(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.finfo(dtype)


def _leaves(tree) -> list:
    return anyoptim.tree.tree_flatten(tree)[1]


def _finite(leaf) -> bool:
    return bool(np.all(np.isfinite(to_numpy(_as_float32(leaf)))))


def _as_float32(leaf):
    # NumPy cannot hold torch's or JAX's bfloat16 through every conversion: widen on the backend first (exact).
    if type(leaf).__module__.startswith("torch"):
        import torch

        return leaf.to(torch.float32)
    if type(leaf).__module__.startswith("jax"):
        return leaf.astype("float32")
    return leaf.astype(np.float32)


# --------------------------------------------------------------------------- epsilon safety


def _extreme_values(dtype: str) -> list[float]:
    info = _finfo(dtype)
    # Huge, but with a square (and a few summed squares: Adagrad) that still fits the dtype.
    huge = float(np.sqrt(float(info.max))) / 4
    tiny = float(info.smallest_subnormal)
    return [0.0, tiny, -tiny, float(info.smallest_normal), -float(info.smallest_normal), 1.0, -1.0, huge, -huge]


@pytest.mark.parametrize(("backend", "dtype"), NARROW_PARAMS)
@pytest.mark.parametrize("master_weights", [False, True], ids=["plain", "master"])
@pytest.mark.parametrize("case", case_params())
@settings(max_examples=3)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=1, max_side=5), n_steps=st.integers(1, 5), data=st.data())
def test_extreme_gradients_never_give_nan_or_inf(backend, dtype, master_weights, case, shape, n_steps, data):
    elements = st.sampled_from(_extreme_values(dtype))
    theta = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.5, -2.0, 8.0])), label="theta")
    options = {"weight_decay": 0.01} if case.decoupled else {}
    optimizer = case.make(master_weights=master_weights, **options)
    params = {"W": _array(backend, theta.reshape(1, -1), dtype), "b": _array(backend, theta, dtype)}
    state = optimizer.init(params)
    for step in range(n_steps):
        g = data.draw(hnp.arrays(np.float64, shape, elements=elements), label=f"g{step}")
        grads = {"W": _array(backend, g.reshape(1, -1), dtype), "b": _array(backend, g, dtype)}
        params, state = optimizer.step(params, grads, state)
        assert all(map(_finite, _leaves(params))), f"{case.id}: non-finite params after step {step + 1}"
        for slot, tree in state.slots.items():
            assert all(map(_finite, _leaves(tree))), f"{case.id}: non-finite slot {slot!r} after step {step + 1}"


@pytest.mark.parametrize("case", case_params())
def test_float16_gradients_whose_squares_overflow_float16_give_finite_steps(case):
    """Gradients whose squares overflow float16 (not float32).  Params stay finite; with master weights (float32
    state) the state does too, while float16 state may hold inf (Adagrad's running sum past 65504), which then
    only stops the step."""
    g = np.array([1000.0, -1000.0, 300.0, 0.0, 6e-8], dtype=np.float16)
    for master_weights in (False, True):
        options = {"weight_decay": 0.01} if case.decoupled else {}
        opt = case.make(master_weights=master_weights, **options)
        params = {"w": np.ones(5, np.float16)}
        state = opt.init(params)
        for _ in range(4):
            params, state = opt.step(params, {"w": g}, state)
            assert np.all(np.isfinite(params["w"])), (case.id, master_weights)
            if master_weights:
                assert all(np.all(np.isfinite(tree["w"])) for tree in state.slots.values()), case.id


# --------------------------------------------------------------------------- the issue's example


def _adam_float32(theta, g, steps, lr, state_dtype):
    """Adam (Kingma & Ba, Algorithm 1) in float32, each stored value rounded to ``state_dtype`` (an independent
    transcription: the operations in the order of anyoptim's rule, which is the paper's)."""
    f32 = np.float32
    theta, m, v = theta.astype(state_dtype), np.zeros_like(theta, state_dtype), np.zeros_like(theta, state_dtype)
    g = g.astype(f32)
    for t in range(1, steps + 1):
        m32 = f32(0.9) * m.astype(f32) + f32(1 - 0.9) * g
        v32 = f32(0.999) * v.astype(f32) + f32(1 - 0.999) * (g * g)
        m_hat, v_hat = m32 / f32(1 - 0.9**t), v32 / f32(1 - 0.999**t)
        theta32 = theta.astype(f32) - f32(lr) * m_hat / (np.sqrt(v_hat) + f32(1e-8))
        theta, m, v = theta32.astype(state_dtype), m32.astype(state_dtype), v32.astype(state_dtype)
    return theta


@pytest.mark.parametrize("engine", ["generic", "auto", NumpyEngine(kernels="ufunc")], ids=["generic", "auto", "ufunc"])
def test_the_issue_example_is_finite_and_a_float32_computation_rounded_on_store(engine):
    g = np.array([0.0, 1e-5, 1e-2, 1.0], dtype=np.float16)
    theta = np.ones(4, dtype=np.float16)
    opt = anyoptim.Adam(0.001, engine=engine)
    params = {"w": theta.copy()}
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.step(params, {"w": g}, state)
    assert params["w"].dtype == np.float16 and np.all(np.isfinite(params["w"]))
    # float16 state, each stored value rounded once: exactly the float32 transcription with float16 storage.
    np.testing.assert_array_equal(params["w"], _adam_float32(theta, g, 3, 0.001, np.float16))
    # With master weights the state is float32: the float32 run, rounded once at the end.
    opt = anyoptim.Adam(0.001, engine=engine, master_weights=True)
    params = {"w": theta.copy()}
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.step(params, {"w": g}, state)
    expected = _adam_float32(theta, g, 3, 0.001, np.float32)
    np.testing.assert_array_equal(state.slots["master"]["w"], expected)
    np.testing.assert_array_equal(params["w"], expected.astype(np.float16))


def test_float16_arithmetic_would_give_nan():
    """The failure the float32 computation prevents: Adam's rule evaluated in float16 itself (eps = 1e-8 is 0)."""
    g = np.float16(0.0)
    with np.errstate(invalid="ignore"):
        update = (np.float16(0.1) * g) / (np.sqrt(np.float16(0.001) * g * g) + np.float16(1e-8))
    assert np.isnan(update)


# --------------------------------------------------------------------------- every engine agrees with the generic one


def _run(config, engine, master_weights, flat, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"W": (3, 5), "b": (5,), "s": ()}
    params = {name: rng.normal(size=shape).astype(np.float16) for name, shape in shapes.items()}
    if flat:
        params = anyoptim.flatten(params)
    opt = config.make(engine)
    opt.master_weights = master_weights
    state = opt.init(params)
    for _ in range(steps):
        grads = {
            name: (rng.normal(size=shape) * 10.0 ** rng.integers(-6, 2)).astype(np.float16)
            for name, shape in shapes.items()
        }
        grads["b"][0] = 0.0
        params, state = opt.step(params, grads, state)
    return params, state


@pytest.mark.parametrize("master_weights", [False, True], ids=["plain", "master"])
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_numpy_engines_agree_bitwise_with_the_generic_engine(config, master_weights):
    expected_params, expected_state = _run(config, GenericEngine(), master_weights, flat=False)
    for engine in ("auto", NumpyEngine(kernels="ufunc"), NumpyEngine(kernels="ufunc", block_size=4)):
        for flat in (False, True):
            params, state = _run(config, engine, master_weights, flat=flat)
            for name, value in expected_params.items():
                assert params[name].dtype == np.float16
                np.testing.assert_array_equal(params[name], value, err_msg=f"{config.id} {engine} flat={flat}")
            for slot, tree in expected_state.slots.items():
                for name, value in tree.items():
                    assert state.slots[slot][name].dtype == value.dtype
                    np.testing.assert_array_equal(state.slots[slot][name], value, err_msg=f"{slot} {name}")


def test_the_prepared_step_runs_in_place_and_agrees_with_the_generic_engine():
    config = next(param.values[0] for param in CONFIG_PARAMS if param.id == "adam")
    expected, _ = _run(config, GenericEngine(), True, flat=False, steps=6)
    rng = np.random.default_rng(0)
    shapes = {"W": (3, 5), "b": (5,), "s": ()}
    params = anyoptim.flatten({name: rng.normal(size=shape).astype(np.float16) for name, shape in shapes.items()})
    W = params["W"]
    opt = config.make("auto")
    opt.master_weights = True
    state = opt.init(params)
    grads = anyoptim.flatten({name: np.zeros(shape, np.float16) for name, shape in shapes.items()})
    for _ in range(6):
        for name, shape in shapes.items():
            value = (rng.normal(size=shape) * 10.0 ** rng.integers(-6, 2)).astype(np.float16)
            value.reshape(-1)[:1] = 0.0 if name == "b" else value.reshape(-1)[:1]
            grads[name][...] = value
        params, state = opt.step_again(params, grads, state)
    assert params["W"] is W  # updated in place, by the prepared step
    for name, value in expected.items():
        np.testing.assert_array_equal(params[name], value)


def test_a_strided_float16_leaf_takes_the_out_of_place_path_and_agrees_with_the_generic_engine():
    base = np.linspace(-1, 1, 12).astype(np.float16)
    grads = {"w": np.array([0.0, 1e-6, -3.0, 200.0, 1e-2, 0.5], np.float16)}
    results = []
    for engine in (GenericEngine(), "auto"):
        opt = anyoptim.Adam(0.01, engine=engine)
        params = {"w": base.copy()[::2]}  # not C-contiguous: the NumPy engine returns a new array for it
        state = opt.init(params)
        for _ in range(3):
            params, state = opt.step(params, grads, state)
        results.append(params["w"])
    assert results[1].dtype == np.float16 and np.all(np.isfinite(results[1]))
    np.testing.assert_array_equal(results[1], results[0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_and_jax_agree_in_low_precision(dtype):
    """The same float32 operations on two libraries: within one unit in the last place of the narrow dtype."""
    for backend in (Backend.TORCH, Backend.JAX):
        _namespace(backend)
    results = []
    for backend in (Backend.TORCH, Backend.JAX):
        opt = anyoptim.Adam(0.01, master_weights=False)
        theta = np.linspace(-2, 2, 9)
        params = {"w": _array(backend, theta, dtype)}
        state = opt.init(params)
        for step in range(5):
            g = np.sin(theta * (step + 1)) * 10.0 ** (-step)
            params, state = opt.step(params, {"w": _array(backend, g, dtype)}, state)
        results.append(to_numpy(_as_float32(params["w"])))
    spacing = np.abs(results[0]) * float(_finfo(dtype).eps) + float(_finfo(dtype).smallest_subnormal)
    assert np.all(np.abs(results[0] - results[1]) <= spacing)


# --------------------------------------------------------------------------- master weights


def _moved(backend, dtype, master_weights, steps=10_000):
    opt = anyoptim.Adam(1e-4, master_weights=master_weights)
    params = {"w": _array(backend, np.array([1.0, -3.0, 40.0]), dtype)}
    grads = {"w": _array(backend, np.array([0.5, -2.0, 1e-3]), dtype)}
    state = opt.init(params)
    for _ in range(steps):
        params, state = opt.step(params, grads, state)
    return to_numpy(_as_float32(params["w"])).astype(np.float64) - np.array([1.0, -3.0, 40.0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "dtype"), [(Backend.TORCH, "bfloat16"), (Backend.JAX, "bfloat16"), (Backend.NUMPY, "float16")]
)
def test_master_weights_move_a_bfloat16_parameter_as_float32_does(backend, dtype):
    reference = _moved(backend, "float32", False)
    np.testing.assert_allclose(_moved(backend, dtype, True), reference, rtol=0.01)
    # Without master weights each step of 1e-4 is rounded away: the parameter hardly moves.
    assert np.all(np.abs(_moved(backend, dtype, False)) < 0.1 * np.abs(reference))


def test_fit_a_float16_network_with_master_weights_follows_the_float32_run():
    """anyoptim.fit on a float16 MLP (flat buffers, the prepared step): at lr 1e-4 the float16 run stalls, the run
    with master weights tracks the float32 one."""
    X = np.random.default_rng(0).normal(size=(256, 4))
    y = (X[:, 0] > 0).astype(np.int64)
    costs = {}
    for dtype, master_weights in ((np.float32, False), (np.float16, False), (np.float16, True)):
        opt = anyoptim.Adam(1e-4, master_weights=master_weights)
        result = anyoptim.fit(
            anyoptim.MLP([4, 8, 1]), opt, X.astype(dtype), y, epochs=100, batch_size=32, progress=False
        )
        assert result.params["W1"].dtype == dtype
        costs[(np.dtype(dtype).name, master_weights)] = result.history.cost[-1]
        if dtype == np.float32:
            start = result.history.cost[0]  # after the first epoch
    descent = start - costs[("float32", False)]
    assert abs(costs[("float16", True)] - costs[("float32", False)]) < 0.02 * descent
    assert start - costs[("float16", False)] < 0.6 * descent


def test_master_weights_state_holds_float32_copies():
    opt = anyoptim.Adam(0.1, master_weights=True)
    params = {"h": np.arange(3, dtype=np.float16), "f": np.ones(2, np.float32), "d": np.ones(2)}
    state = opt.init(params)
    assert opt.slot_fills() == {"m": 0.0, "v": 0.0, "master": None}
    assert list(state.slots) == ["m", "v", "master"]
    assert {slot: tree["h"].dtype for slot, tree in state.slots.items()} == dict.fromkeys(state.slots, np.float32)
    assert {slot: tree["d"].dtype for slot, tree in state.slots.items()} == dict.fromkeys(state.slots, np.float64)
    np.testing.assert_array_equal(state.slots["master"]["h"], [0.0, 1.0, 2.0])
    assert state.slots["master"]["f"] is not params["f"]


@pytest.mark.parametrize("value", ["yes", 1, None, 0.0])
def test_invalid_master_weights_are_refused(value):
    with pytest.raises(ValueError, match="master_weights must be True or False"):
        anyoptim.Adam(0.1, master_weights=value)
    opt = anyoptim.Adam(0.1, master_weights=True)
    with pytest.raises(ValueError, match="master_weights must be True or False"):
        opt.master_weights = value
    assert opt.master_weights is True


def test_a_state_without_master_weights_is_refused_before_anything_changes():
    params = {"w": np.ones(3, np.float16)}
    plain = anyoptim.Adam(0.1)
    state = plain.init(params)
    master = anyoptim.Adam(0.1, master_weights=True)
    with pytest.raises(ValueError, match="master"):
        master.step(params, {"w": np.ones(3, np.float16)}, state)
    np.testing.assert_array_equal(params["w"], 1.0)
    # and the other way: float32 state is refused for a float32 param... unless its dtype is the param's own
    wrong = anyoptim.OptimizerState(0, 0.1, {"m": {"w": np.zeros(3)}, "v": {"w": np.zeros(3)}})
    with pytest.raises(ValueError, match="dtype float64"):
        plain.step(params, {"w": np.ones(3, np.float16)}, wrong)
    np.testing.assert_array_equal(params["w"], 1.0)


def test_master_weights_survive_save_and_load_and_the_run_continues_bit_for_bit(tmp_path):
    pytest.importorskip("safetensors")
    opt = anyoptim.Adam(0.01, master_weights=True)
    params = {"w": np.linspace(-1, 1, 5).astype(np.float16), "b": np.ones(2, np.float32)}
    grads = {"w": np.full(5, 1e-3, np.float16), "b": np.ones(2, np.float32)}
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.step(params, grads, state)
    path = tmp_path / "run.safetensors"
    anyoptim.save(path, params, state, optimizer=opt)
    saved_m = state.slots["m"]["w"].copy()  # the arrays are updated in place by the steps below
    loaded, loaded_state = anyoptim.load(path, like=params, optimizer=opt)
    for slot, tree in state.slots.items():
        for name, value in tree.items():
            assert loaded_state.slots[slot][name].dtype == value.dtype == np.float32
            np.testing.assert_array_equal(loaded_state.slots[slot][name], value)
    for _ in range(2):
        params, state = opt.step(params, grads, state)
        loaded, loaded_state = opt.step(loaded, grads, loaded_state)
    np.testing.assert_array_equal(loaded["w"], params["w"])
    np.testing.assert_array_equal(loaded_state.slots["master"]["w"], state.slots["master"]["w"])
    # a partial load fills a skipped leaf's master with its parameter, widened
    like = {"w": np.full(5, 0.5, np.float16), "b": np.ones(3, np.float32)}
    with pytest.warns(anyoptim.checkpoint.CheckpointWarning):
        _, partial = anyoptim.load(path, like=like, optimizer=opt, strict=False)
    assert partial.slots["master"]["b"].dtype == np.float32
    np.testing.assert_array_equal(partial.slots["master"]["b"], 1.0)
    np.testing.assert_array_equal(partial.slots["m"]["w"], saved_m)


def test_a_checkpoint_saved_before_master_weights_existed_loads_strictly(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    import json

    opt = anyoptim.Adam(0.01)
    params = {"w": np.ones(3)}
    path = tmp_path / "old.safetensors"
    anyoptim.save(path, params, opt.init(params), optimizer=opt)
    tensors = safetensors_numpy.load_file(path)
    from safetensors import safe_open

    with safe_open(path, "np") as handle:
        metadata = handle.metadata()
    record = json.loads(metadata["optimizer"])
    del record["settings"]["master_weights"]  # as anyoptim wrote it before the setting existed
    metadata["optimizer"] = json.dumps(record)
    safetensors_numpy.save_file(tensors, path, metadata=metadata)
    _, state = anyoptim.load(path, like=params, optimizer=opt)
    assert list(state.slots) == ["m", "v"]
    with pytest.raises(ValueError, match="master_weights: saved False, given True"):
        anyoptim.load(path, like=params, optimizer=anyoptim.Adam(0.01, master_weights=True))


def test_numpy_bfloat16_is_refused_clearly():
    params = {"w": np.ones(3, dtype=ml_dtypes.bfloat16)}
    with pytest.raises(TypeError, match="bfloat16"):
        anyoptim.Adam(0.1).init(params)


def test_every_case_runs_float16_on_the_fused_engine():
    """Every row of the table, float16, on the NumPy engine: in place (the same arrays come back)."""
    for case in CASES:
        params = anyoptim.flatten({"w": np.ones(4, np.float16), "b": np.zeros(2, np.float16)})
        w = params["w"]
        opt = case.make()
        params, _ = opt.step(params, {"w": np.full(4, 0.5, np.float16), "b": np.zeros(2, np.float16)}, opt.init(params))
        assert params["w"] is w and np.all(np.isfinite(w)), case.id


# --------------------------------------------------------------------------- the C kernels of float16 columns


def _half_kernel_step(config_id, force_baseline):
    """The NumPy engine's prepared step of a float16 model, its C kernel optionally forced to the baseline body."""
    from anyoptim.engines.numpy import native
    from anyoptim.engines.numpy.c_printer import c_source
    from anyoptim.engines.numpy.runners import CompiledSpans

    if not native.compiler_found():
        pytest.skip("no C compiler here")
    config = next(param.values[0] for param in CONFIG_PARAMS if param.id == config_id)
    rng = np.random.default_rng(1)
    n = 1000  # chunks of 256 and a tail that is not a multiple of 8
    params = [rng.normal(size=n).astype(np.float16)]
    grads = [(rng.normal(size=n) * 10.0 ** rng.integers(-6, 2, size=n)).astype(np.float16)]
    opt = config.make("auto")
    engine = NumpyEngine(kernels="c")
    slots = engine.init_slots(np, params, opt.slot_fills())
    hps = opt.host_scalars({"w": params[0]})(0)[0]
    program = opt._program(bool(opt.weight_decay))  # as the optimizer makes it (tests/test_numpy_engine.py too)
    step = engine.prepare(program, np, params, grads, slots, hps)
    (runner,) = step.runners
    assert isinstance(runner, CompiledSpans)
    if force_baseline:
        columns = ("float16",) * (2 + len(slots))
        kinds = tuple(sorted((k, type(v)) for k, v in hps[0].items()))
        plan = engine.plan(program, np.float32, list(slots), hps[0], kinds)
        source = c_source(plan, "half_baseline_check", columns)
        assert "_mm256_cvtph_ps" in source and "_Float16 *c0" in source
        source = source.replace("#define ANYOPTIM_HALF_FAST_OK (", "#define ANYOPTIM_HALF_FAST_OK (0 && ")
        kernel = native.load_kernel(source, "half_baseline_check")
        spans = [[params[0], grads[0], *(values[0] for values in slots.values())]]
        runner = CompiledSpans(plan, kernel, spans, [0], hps)
    runner.run(hps)
    return params[0], slots


@pytest.mark.parametrize("config_id", ["adam", "rmsprop-centered", "adagrad", "lion", "sgd-l2"])
def test_the_baseline_body_of_a_float16_kernel_gives_the_same_bits(config_id):
    fast, fast_slots = _half_kernel_step(config_id, force_baseline=False)
    slow, slow_slots = _half_kernel_step(config_id, force_baseline=True)
    np.testing.assert_array_equal(fast, slow)
    for name in fast_slots:
        np.testing.assert_array_equal(fast_slots[name][0], slow_slots[name][0])


@pytest.mark.parametrize("engine", ["generic", "auto", NumpyEngine(kernels="ufunc")], ids=["generic", "auto", "ufunc"])
def test_the_global_norm_clip_factor_of_a_float16_parameter_is_float32(engine):
    """The factor max_norm / norm (1e-3 / 6e4 here) rounded to float16 is 0, and the step vanished: it is computed
    and used in float32, as the rest of the step, and only the result is rounded."""
    grads = {"w": np.full(4, 3e4, np.float16)}
    optimizer = anyoptim.SGD(1.0, clip_global_norm=1e-3, engine=engine)
    params = {"w": np.ones(4, np.float16)}
    params, _ = optimizer.step(params, grads, optimizer.init(params))
    factor = np.float32(1e-3) / np.float32(6e4)
    expected = (np.float32(1.0) - np.float32(3e4) * factor).astype(np.float16)
    np.testing.assert_array_equal(params["w"], np.full(4, expected))
    assert expected != 1.0


@pytest.mark.parametrize("with_optimizer", [True, False], ids=["optimizer", "no-optimizer"])
def test_a_partial_load_gives_a_skipped_float16_leaf_the_state_init_gives_it(tmp_path, with_optimizer):
    """A leaf the file lacks starts as init makes it: with master weights, float32 slots and its master the
    parameter (a master of 0 would pull the parameter to 0 at the next step), with or without the optimizer."""
    pytest.importorskip("safetensors")
    opt = anyoptim.Adam(0.01, master_weights=True)
    params = {"w": np.linspace(-1, 1, 5).astype(np.float16)}
    state = opt.init(params)
    params, state = opt.step(params, {"w": np.full(5, 1e-3, np.float16)}, state)
    path = tmp_path / "run.safetensors"
    anyoptim.save(path, params, state, optimizer=opt)
    like = {"w": params["w"], "new": np.full(3, 0.5, np.float16)}
    with pytest.warns(anyoptim.checkpoint.CheckpointWarning):
        loaded, loaded_state = anyoptim.load(path, like=like, optimizer=opt if with_optimizer else None, strict=False)
    fresh = opt.init({"new": like["new"]})
    for slot, tree in loaded_state.slots.items():
        assert tree["new"].dtype == np.float32, slot
        np.testing.assert_array_equal(tree["new"], fresh.slots[slot]["new"], err_msg=slot)
    loaded, _ = opt.step(loaded, {"w": np.zeros(5, np.float16), "new": np.zeros(3, np.float16)}, loaded_state)
    np.testing.assert_array_equal(loaded["new"], 0.5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_traced_scalars_of_a_narrow_leaf_are_float32_under_jax_jit(dtype):
    """Under jax.jit the count's scalars (bias corrections) are 0-D arrays cast to the dtype the leaf computes in:
    float32, as the Python floats of an eager step are, not the leaf's dtype (1e-4 in bfloat16 is 1.0014e-4)."""
    from anyoptim.optimizers.groups import step_scalars

    xp = _namespace(Backend.JAX)
    jax = pytest.importorskip("jax")
    optimizer = anyoptim.Adam(1e-4)
    narrow = getattr(xp, dtype)

    def scalars(count):
        hps = step_scalars(xp, optimizer._step_scalars, count, 1e-4, None, None, 0.0, [(narrow, False)], [0])
        return {name: value for name, value in hps[0].items() if hasattr(value, "dtype")}

    found = jax.eval_shape(scalars, xp.asarray(3, dtype=xp.int32))
    assert found and {value.dtype for value in found.values()} == {np.dtype(np.float32)}
