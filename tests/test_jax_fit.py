"""``fit`` on JAX compiles each epoch (anyoptim/nn/jitted.py) and gives the eager loop's cost history; count_math and
the pytree registration, which the jitted step stands on."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
from anyoptim import count_math, schedules
from tests.helpers import load_namespace

jnp = load_namespace("jax")
if jnp is None:
    pytest.skip("jax is not available here", allow_module_level=True)
import jax  # noqa: E402

TOLERANCE = {"float64": 1e-12, "float32": 1e-6}


def _moons(dtype: str, n_samples: int = 90):
    return anyoptim.datasets.make_moons(n_samples=n_samples, noise=0.2, seed=3, xp=jnp, dtype=getattr(jnp, dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: anyoptim.Adam(0.02),
        lambda: anyoptim.RAdam(schedules.inverse_time_decay(0.1, decay_steps=10, decay_rate=1.0, staircase=True)),
        lambda: anyoptim.Momentum(0.1, clip_global_norm=1.0, on_nonfinite="skip"),
        lambda: anyoptim.AdamW(schedules.warmup_cosine_decay(0.05, 5, 40), weight_decay=0.01),
    ],
    ids=["adam", "radam-stepped-decay", "momentum-clip-skip", "adamw-warmup-cosine"],
)
def test_jitted_fit_equals_eager_fit(make, dtype):
    X, y = _moons(dtype)  # 90 samples in batches of 32: two full batches and one of 26
    model = anyoptim.MLP([2, 6, 1], hidden_activation="tanh")
    runs = {
        jit: anyoptim.fit(model, make(), X, y, epochs=8, batch_size=32, seed=1, progress=False, jit=jit)
        for jit in (True, False)
    }
    jitted, eager = runs[True], runs[False]
    np.testing.assert_allclose(jitted.history.cost, eager.history.cost, rtol=TOLERANCE[dtype])
    np.testing.assert_allclose(jitted.history.learning_rate, eager.history.learning_rate, rtol=TOLERANCE[dtype])
    for name, value in eager.params.items():
        np.testing.assert_allclose(
            np.asarray(jitted.params[name]), np.asarray(value), rtol=10 * TOLERANCE[dtype], atol=TOLERANCE[dtype]
        )
    assert jitted.state.count == eager.state.count == 24 and isinstance(jitted.state.count, int)
    assert jitted.params["W1"].dtype == getattr(jnp, dtype)
    # The compiled epoch carries every scalar as a leaf, and gives back the static scalars the eager loop keeps.
    assert jitted.state.static == eager.state.static == anyoptim.optimizers.traced.static_of(make())


def test_fit_jits_by_default_on_jax_and_callbacks_see_the_host_state():
    X, y = _moons("float64", 64)
    seen = []
    result = anyoptim.fit(
        anyoptim.MLP([2, 4, 1]),
        anyoptim.Adam(0.01),
        X,
        y,
        epochs=3,
        batch_size=64,
        progress=False,
        callbacks=[lambda epoch, cost, params, state: seen.append((epoch, state.count, type(state.learning_rate)))],
    )
    assert seen == [(0, 1, float), (1, 2, float), (2, 3, float)]
    assert len(result.history) == 3


def test_fit_resumes_a_jitted_run_bit_for_bit():
    X, y = _moons("float64")
    model = anyoptim.MLP([2, 5, 1], hidden_activation="tanh")
    whole = anyoptim.fit(model, anyoptim.Adam(0.02), X, y, epochs=4, batch_size=32, seed=2, progress=False)
    first = anyoptim.fit(model, anyoptim.Adam(0.02), X, y, epochs=2, batch_size=32, seed=2, progress=False)
    rest = anyoptim.fit(
        model,
        anyoptim.Adam(0.02),
        X,
        y,
        epochs=4,
        batch_size=32,
        seed=2,
        progress=False,
        params=first.params,
        state=first.state,
        initial_epoch=2,
    )
    assert rest.history.cost == whole.history.cost[2:]


def test_jit_true_needs_jax_arrays():
    X, y = anyoptim.datasets.make_moons(n_samples=20, seed=0)
    with pytest.raises(ValueError, match="jit=True compiles the training step with JAX"):
        anyoptim.fit(anyoptim.MLP([2, 3, 1]), anyoptim.SGD(0.1), X, y, epochs=1, progress=False, jit=True)
    with pytest.raises(ValueError, match="jit must be True, False or None"):
        anyoptim.fit(anyoptim.MLP([2, 3, 1]), anyoptim.SGD(0.1), X, y, epochs=1, progress=False, jit="yes")


def test_fit_trains_eagerly_under_raise_and_says_how_when_a_step_cannot_be_traced():
    X, y = _moons("float64", 40)
    model = anyoptim.MLP([2, 3, 1])
    result = anyoptim.fit(model, anyoptim.SGD(0.1, on_nonfinite="raise"), X, y, epochs=2, progress=False)
    assert result.state.count == 2  # jit=None chose the eager loop: "raise" reads the gradients on the host

    host_schedule = anyoptim.SGD(lambda count: 0.1 * math.cos(count / 100))  # math.cos of a traced count
    with pytest.raises(TypeError, match="pass jit=False"):
        anyoptim.fit(model, host_schedule, X, y, epochs=1, progress=False, jit=True)
    eager = anyoptim.fit(model, host_schedule, X, y, epochs=3, batch_size=16, progress=False, jit=False)
    with pytest.warns(UserWarning, match="trains eagerly.*anyoptim.count_math") as caught:  # jit=None chooses
        chosen = anyoptim.fit(model, host_schedule, X, y, epochs=3, batch_size=16, progress=False)
    assert len(caught) == 1  # once, at the first epoch, which then runs eagerly as the rest
    assert chosen.history.cost == eager.history.cost and chosen.state.count == eager.state.count == 9


def test_a_scikit_learn_estimator_on_jax_trains_with_a_schedule_jit_cannot_trace():
    """The estimators cannot pass jit=False: fit's jit=None trains eagerly (with a warning) where it cannot compile."""
    pytest.importorskip("sklearn")
    from sklearn.exceptions import ConvergenceWarning

    from anyoptim.sklearn import MLPClassifier

    X, y = _moons("float64", 40)
    clf = MLPClassifier((3,), learning_rate=lambda count: 0.05 * math.cos(count / 1000), max_iter=3, random_state=0)
    with pytest.warns(UserWarning, match="trains eagerly"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # three epochs
        clf.fit(X, np.asarray(y))
    assert len(clf.loss_curve_) == 3


# --------------------------------------------------------------------------- count_math


def _formula(t, beta):
    rho_inf = 2.0 / (1.0 - beta) - 1.0 if beta else 1.0
    rectified = t > 3
    return (
        count_math.select(rectified, lambda: count_math.sqrt(t / 4.0), lambda: 0.0)
        + count_math.cos(count_math.minimum(t, 1000) / 1000 * math.pi)
        + count_math.floor(t / 7)
        + (1.0 - beta ** (t + 1))
        + rho_inf
    )


TRACED_FORMULA = jax.jit(_formula, static_argnums=1)


@settings(max_examples=25)
@given(count=st.integers(0, 5000), beta=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]))
def test_the_count_math_is_the_host_math_on_the_host_and_agrees_on_the_device(count, beta):
    host = _formula(count, beta)
    expected = (
        (math.sqrt(count / 4.0) if count > 3 else 0.0)
        + math.cos(min(count, 1000) / 1000 * math.pi)
        + math.floor(count / 7)
        + (1.0 - beta ** (count + 1))
        + (2.0 / (1.0 - beta) - 1.0 if beta else 1.0)
    )
    assert host == expected  # bit for bit: the host path is Python's arithmetic
    assert float(TRACED_FORMULA(count, beta)) == pytest.approx(host, rel=1e-12)


def test_select_computes_one_branch_on_the_host():
    def fail():
        raise AssertionError("the branch not taken was computed")

    assert count_math.select(True, lambda: 1.0, fail) == 1.0
    assert count_math.select(False, fail, lambda: 2.0) == 2.0


SCHEDULES = [
    schedules.constant(0.1),
    schedules.exponential_decay(0.1, 7, 0.5),
    schedules.exponential_decay(0.1, 7, 0.9, staircase=True),
    schedules.inverse_time_decay(0.1, 10, 0.5, staircase=True),
    schedules.piecewise_constant([10, 100, 200], [1.0, 0.5, 0.25, 0.1]),
    schedules.cosine_decay(0.1, 150, alpha=0.1),
    schedules.join([schedules.constant(0.5), schedules.exponential_decay(0.5, 10, 0.5)], [50]),
    schedules.warmup_cosine_decay(1.0, 20, 250, initial_learning_rate=0.1, end_learning_rate=0.01),
]
TRACED_SCHEDULES = jax.jit(lambda count: [schedule(count) for schedule in SCHEDULES])


@settings(max_examples=20)
@given(count=st.integers(0, 300))
def test_every_schedule_traced_equals_its_host_value(count):
    traced = [float(value) for value in TRACED_SCHEDULES(count)]
    assert traced == pytest.approx([schedule(count) for schedule in SCHEDULES], rel=1e-12, abs=1e-15)


def test_evaluate_runs_the_formula_in_double_precision_without_x64():
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        from anyoptim.count_math import evaluate
        correction = jax.jit(lambda t: evaluate(lambda c: (1.0 - 0.999 ** (c + 1)).astype(jnp.float32), t))(0)
        naive = jax.jit(lambda t: 1.0 - 0.999 ** (t + 1))(0)
        assert correction == jnp.float32(0.001), correction
        assert abs(float(naive) - 0.001) > 5e-9, naive  # what float32 alone gives: 0.999 rounds first
        print("ok")
        """
    )
    result = _run(script, JAX_ENABLE_X64="0")
    assert result.stdout.strip() == "ok", result.stderr[-3000:]


# --------------------------------------------------------------------------- registration as a pytree


def _run(script: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
    )


@pytest.mark.parametrize("jax_first", [True, False], ids=["jax-imported-first", "anyoptim-imported-first"])
def test_the_state_is_registered_whichever_library_comes_first(jax_first):
    imports = (
        "import jax, anyoptim" if jax_first else "import anyoptim, sys; assert 'jax' not in sys.modules; import jax"
    )
    script = textwrap.dedent(
        f"""
        {imports}
        import jax.numpy as jnp
        state = anyoptim.OptimizerState(0, 0.1, {{"m": {{"w": jnp.zeros(2)}}}})
        assert len(jax.tree_util.tree_leaves(state)) == 4, jax.tree_util.tree_leaves(state)
        opt = anyoptim.Adam(0.1)
        params = {{"w": jnp.asarray([1.0, -2.0])}}
        params, state = jax.jit(opt.step)(params, {{"w": jnp.ones(2)}}, opt.init(params))
        print(int(state.count))
        """
    )
    result = _run(script)
    assert result.stdout.strip() == "1", result.stderr[-3000:]


def test_registration_is_idempotent_and_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    from anyoptim.state import register_with_jax

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: register_with_jax(), range(16)))
    state = anyoptim.OptimizerState(1, 0.1, {})
    assert jax.tree_util.tree_leaves(state) == [1, 0.1, 0]


def test_the_jax_benchmark_times_anyoptim_beside_optax():
    """``benchmarks/jax_jit.py`` (outside the wheel): a short run of its step timings."""
    pytest.importorskip("optax")
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import jax_jit

    rows = {row["workload"]: row for row in jax_jit.step_times(quick=True)}
    assert set(rows) == {"adam-1-tensor", "adam-mlp-6-tensors"}
    assert rows["adam-1-tensor"]["parameters"] == 2**23 and rows["adam-mlp-6-tensors"]["parameters"] == 30
    assert all(row["anyoptim_s"] > 0 and row["optax_s"] > 0 and row["ratio"] > 0 for row in rows.values())


def test_jitted_fit_equals_eager_fit_in_float32_without_x64():
    """The lesson's ``--dtype float32`` on JAX: int32 counts, the step's scalars in float64 inside the scan."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, anyoptim
        assert not jax.config.jax_enable_x64
        X, y = anyoptim.datasets.make_moons(n_samples=90, noise=0.2, seed=3, xp=jnp, dtype=jnp.float32)
        model = anyoptim.MLP([2, 6, 1], hidden_activation="tanh")
        decay = anyoptim.schedules.inverse_time_decay(0.1, 10, 1.0, staircase=True)
        for make in (lambda: anyoptim.Adam(0.02), lambda: anyoptim.RAdam(decay, on_nonfinite="skip")):
            runs = [anyoptim.fit(model, make(), X, y, epochs=8, batch_size=32, seed=1, progress=False, jit=jit)
                    for jit in (True, False)]
            np.testing.assert_allclose(runs[0].history.cost, runs[1].history.cost, rtol=1e-6)
            assert runs[0].state.count == runs[1].state.count == 24
            assert runs[0].params["W1"].dtype == jnp.float32
        print("ok")
        """
    )
    result = _run(script, JAX_ENABLE_X64="0")
    assert result.stdout.strip() == "ok", result.stderr[-3000:]


def test_jitted_fit_sees_settings_a_callback_assigns():
    """A callback lowering the rate: the compiled epoch is traced anew, as the eager loop reads it at every step."""
    X, y = _moons("float64", 64)
    runs = {}
    for jit in (True, False):
        optimizer = anyoptim.SGD(0.5)

        def lower(epoch, cost, params, state, optimizer=optimizer):
            optimizer.learning_rate = 0.5 if epoch < 1 else 0.0  # assigned every epoch: equal values trace once
            optimizer.weight_decay = 0.0

        model, traces = anyoptim.MLP([2, 4, 1]), []
        value_and_grad = model.value_and_grad
        model.value_and_grad = lambda *args, traces=traces, value_and_grad=value_and_grad, **kwargs: (
            traces.append(1) or value_and_grad(*args, **kwargs)
        )
        runs[jit] = anyoptim.fit(
            model, optimizer, X, y, epochs=4, batch_size=32, progress=False, callbacks=[lower], jit=jit
        )
        if jit:
            assert len(traces) == 2  # traced at the first epoch and once more after the rate changed
    jitted, eager = runs[True], runs[False]
    np.testing.assert_allclose(jitted.history.cost, eager.history.cost, rtol=1e-12)
    assert jitted.history.learning_rate == eager.history.learning_rate == [0.5, 0.5, 0.0, 0.0]
    assert jitted.history.cost[2] == jitted.history.cost[3]  # a rate of 0 leaves the params as they are


def test_a_jitted_float16_epoch_cost_is_summed_in_float32():
    """The compiled epoch sums float16 losses in float32, as the eager loop does: equal histories, near the truth."""
    X, y = _moons("float64", 20_000)
    model = anyoptim.MLP([2, 8, 1])
    params = {key: value.astype(jnp.float16) for key, value in model.init(seed=0, like=X).items()}
    half = X.astype(jnp.float16)
    runs = {
        jit: anyoptim.fit(
            model, anyoptim.SGD(0.0), half, y, epochs=1, batch_size=64, params=params, progress=False, jit=jit
        )
        for jit in (True, False)
    }
    want = float(
        model.loss({key: value.astype(jnp.float64) for key, value in params.items()}, half.astype(jnp.float64), y)
    )
    assert runs[True].history.cost[0] == pytest.approx(runs[False].history.cost[0], rel=1e-6)
    assert runs[True].history.cost[0] == pytest.approx(want, rel=2e-3)


def test_fit_keeps_its_compiled_epoch_between_calls_of_one_epoch():
    """partial_fit runs fit for one epoch per call: the compiled epoch is kept for the same optimizer and model (and
    traced anew when one of their settings changed), and the run equals the eager one."""
    X, y = _moons("float64", 64)
    runs = {}
    for jit in (None, False):
        model, optimizer, traces = anyoptim.MLP([2, 4, 1]), anyoptim.Adam(0.05), []
        value_and_grad = model.value_and_grad
        model.value_and_grad = lambda *args, traces=traces, value_and_grad=value_and_grad, **kwargs: (
            traces.append(1) or value_and_grad(*args, **kwargs)
        )
        result, costs = None, []
        for epoch in range(4):
            if epoch == 3:
                optimizer.learning_rate = 0.01
            more = {} if result is None else {"params": result.params, "state": result.state}
            result = anyoptim.fit(
                model, optimizer, X, y, epochs=epoch + 1, initial_epoch=epoch, batch_size=32, progress=False,
                jit=jit, **more,
            )  # fmt: skip
            costs += result.history.cost
        runs[jit] = costs
        if jit is None:
            assert len(traces) == 2  # once for the first three calls, once more for the new rate
    np.testing.assert_allclose(runs[None], runs[False], rtol=1e-12)


def test_the_kept_compiled_epoch_does_not_keep_its_optimizer_alive():
    import gc
    import weakref

    X, y = _moons("float32", 32)
    optimizer = anyoptim.Adam(0.01)
    anyoptim.fit(anyoptim.MLP([2, 3, 1]), optimizer, X, y, epochs=1, batch_size=16, progress=False)
    gone = weakref.ref(optimizer)
    del optimizer
    gc.collect()
    assert gone() is None
