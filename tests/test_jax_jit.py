"""``jax.jit(opt.step)``: the state is a pytree, the count's scalars run on the device, a jitted step is the eager one.

Every configuration of the optimizer table (tests/cases.py: its rows and CONFIGS,
with clipping, weight decay, masks and a schedule), with ``on_nonfinite="skip"``
and a NaN drawn into some steps, takes the same steps under ``jax.jit`` as
eagerly over Hypothesis-drawn gradient sequences: float64 to 1e-12, float32 to
1e-6 (relative, with an absolute floor of the same size times the values' scale:
XLA fuses the rule's arithmetic, so its roundings may differ in the last place).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
from anyoptim import schedules
from tests.cases import CASE_BY_ID, CONFIGS, Config
from tests.helpers import load_namespace

jnp = load_namespace("jax")  # enables jax_enable_x64, as every JAX test here does
if jnp is None:
    pytest.skip("jax is not available here", allow_module_level=True)
import jax  # noqa: E402

from anyoptim.optimizers.traced import ClosedOverStateWarning  # noqa: E402

TOLERANCE = {"float64": 1e-12, "float32": 1e-6}
SHAPES = {"W": (2, 3), "b": (3,)}
STEPS = 4

#: Option sets on top of the table's configurations: a tree mask and the library's own schedules.
EXTRA: list[Config] = [
    Config(
        "sgd-tree-mask",
        lambda engine: CASE_BY_ID["sgd"].make(weight_decay=0.1, weight_decay_mask={"W": False, "b": True}),
    ),
    Config(
        "adam-warmup-cosine",
        lambda engine: CASE_BY_ID["adam"].make(
            learning_rate=schedules.warmup_cosine_decay(0.1, 2, 5, end_learning_rate=0.01)
        ),
    ),
    Config(
        "radam-piecewise",
        lambda engine: CASE_BY_ID["radam"].make(learning_rate=schedules.piecewise_constant([1, 3], [0.1, 0.05, 0.02])),
    ),
    Config(
        "momentum-exponential-staircase",
        lambda engine: CASE_BY_ID["momentum-ema"].make(
            learning_rate=schedules.exponential_decay(0.1, decay_steps=2, decay_rate=0.5, staircase=True)
        ),
    ),
    Config(
        "nadam-inverse-time",
        lambda engine: CASE_BY_ID["nadam"].make(learning_rate=schedules.inverse_time_decay(0.1, 3, 0.5)),
    ),
    Config(
        "adamw-join",
        lambda engine: CASE_BY_ID["adamw"].make(
            learning_rate=schedules.join([schedules.constant(0.05), schedules.cosine_decay(0.05, 3)], [2])
        ),
    ),
]
ALL_CONFIGS = [pytest.param(config, id=config.id) for config in [*CONFIGS, *EXTRA]]


def _optimizer(config: Config, **options) -> anyoptim.Optimizer:
    optimizer = config.make("auto")
    for name, value in options.items():
        setattr(optimizer, name, value)
    return optimizer


def _tree(values: dict[str, np.ndarray], dtype: str) -> dict:
    return {name: jnp.asarray(value, dtype=getattr(jnp, dtype)) for name, value in values.items()}


def _assert_trees_close(actual, expected, dtype: str, what: str) -> None:
    for name in expected:
        want = np.asarray(expected[name])
        scale = max(1.0, float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0)))
        np.testing.assert_allclose(
            np.asarray(actual[name]), want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale, err_msg=what
        )


def _assert_states_close(actual, expected, dtype: str) -> None:
    assert int(actual.count) == expected.count
    assert int(actual.skipped) == expected.skipped
    assert float(actual.learning_rate) == pytest.approx(expected.learning_rate, rel=TOLERANCE[dtype])
    assert list(actual.slots) == list(expected.slots)
    for slot in expected.slots:
        _assert_trees_close(actual.slots[slot], expected.slots[slot], dtype, f"slot {slot}")


def _gradient_sequences():
    element = st.floats(-3.0, 3.0, allow_nan=False, width=32)
    step = st.fixed_dictionaries(
        {
            name: st.lists(element, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
            for name, shape in SHAPES.items()
        }
    )
    return st.lists(st.tuples(step, st.booleans()), min_size=STEPS, max_size=STEPS)


def _as_gradients(drawn, dtype: str, with_nan: bool) -> list[dict]:
    sequence = []
    for values, nan in drawn:
        arrays = {name: np.reshape(np.asarray(values[name], dtype=np.float64), SHAPES[name]) for name in SHAPES}
        if nan and with_nan:
            arrays["W"][0, 1] = np.nan
        sequence.append(_tree(arrays, dtype))
    return sequence


PARAMS = {"W": np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]), "b": np.array([0.1, -0.2, 0.3])}
JITTED: dict[tuple[str, str, str], tuple[anyoptim.Optimizer, object]] = {}


def _jitted(config: Config, dtype: str, policy: str) -> tuple[anyoptim.Optimizer, object]:
    """One optimizer and one jitted step per configuration: every drawn example reuses the compiled step."""
    key = (config.id, dtype, policy)
    if key not in JITTED:
        optimizer = _optimizer(config, on_nonfinite=policy)
        JITTED[key] = optimizer, jax.jit(optimizer.step)
    return JITTED[key]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", ALL_CONFIGS)
@settings(max_examples=6)
@given(drawn=_gradient_sequences())
def test_jitted_step_equals_the_eager_step(config, dtype, drawn):
    optimizer, step = _jitted(config, dtype, "skip")
    params = eager_params = _tree(PARAMS, dtype)
    state = eager_state = optimizer.init(params)
    for grads in _as_gradients(drawn, dtype, with_nan=True):
        params, state = step(params, grads, state)
        eager_params, eager_state = optimizer.step(eager_params, grads, eager_state)
        assert params["W"].dtype == eager_params["W"].dtype == getattr(jnp, dtype)
        _assert_trees_close(params, eager_params, dtype, "params")
        _assert_states_close(state, eager_state, dtype)


@pytest.mark.parametrize("config_id", ["sgd", "adam-amsgrad-eps_root", "adam-schedule", "radam", "lion-decay-clip"])
@settings(max_examples=4)
@given(drawn=_gradient_sequences())
def test_jitted_step_equals_the_eager_step_without_a_policy(config_id, drawn):
    config = next(config for config in [*CONFIGS, *EXTRA] if config.id == config_id)
    optimizer, step = _jitted(config, "float64", "ignore")
    params = eager_params = _tree(PARAMS, "float64")
    state = eager_state = optimizer.init(params)
    for grads in _as_gradients(drawn, "float64", with_nan=False):
        params, state = step(params, grads, state)
        eager_params, eager_state = optimizer.step(eager_params, grads, eager_state)
    _assert_trees_close(params, eager_params, "float64", "params")
    _assert_states_close(state, eager_state, "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_radam_under_jit_crosses_its_rectification_threshold(dtype):
    optimizer = anyoptim.RAdam(0.1)  # rho_t > 5 from step 6 on
    step = jax.jit(optimizer.step)
    rng = np.random.default_rng(0)
    params = eager = _tree(PARAMS, dtype)
    state = eager_state = optimizer.init(params)
    for _ in range(12):
        grads = _tree({name: rng.normal(size=shape) for name, shape in SHAPES.items()}, dtype)
        params, state = step(params, grads, state)
        eager, eager_state = optimizer.step(eager, grads, eager_state)
        _assert_trees_close(params, eager, dtype, "params")
    assert int(state.count) == 12


def test_states_pass_between_jitted_and_eager_steps():
    optimizer = anyoptim.Adam(0.05, clip_global_norm=1.0)
    step = jax.jit(optimizer.step)
    rng = np.random.default_rng(1)
    sequence = [_tree({n: rng.normal(size=s) for n, s in SHAPES.items()}, "float64") for _ in range(6)]
    params = mixed = _tree(PARAMS, "float64")
    state = mixed_state = optimizer.init(params)
    for index, grads in enumerate(sequence):
        params, state = optimizer.step(params, grads, state)
        take = step if index % 2 == 0 else optimizer.step  # jitted, eager, jitted, ...
        mixed, mixed_state = take(mixed, grads, mixed_state)
    _assert_trees_close(mixed, params, "float64", "params")
    _assert_states_close(mixed_state, state, "float64")
    assert isinstance(mixed_state.count, int)  # an eager step after a jitted one counts on the host again


def test_a_jitted_loop_advances_instead_of_repeating_the_first_step():
    """The issue's symptom: jitted steps gave [0.8, -2.0] again and again; eager steps go on."""
    optimizer = anyoptim.Adam(0.1)
    step = jax.jit(optimizer.step)
    params = eager = {"w": jnp.asarray([1.0, -2.0])}
    state = eager_state = optimizer.init(params)
    grads = {"w": jnp.asarray([0.5, 1.5])}
    for _ in range(3):
        params, state = step(params, grads, state)
        eager, eager_state = optimizer.step(eager, grads, eager_state)
    np.testing.assert_allclose(np.asarray(params["w"]), np.asarray(eager["w"]), rtol=1e-12)
    assert int(state.count) == 3
    assert float(params["w"][0]) == pytest.approx(0.7, abs=1e-6)  # three steps of -0.1 sign(g)


def test_a_closed_over_state_warns():
    optimizer = anyoptim.Adam(0.1)
    params = {"w": jnp.asarray([1.0, -2.0])}
    state = optimizer.init(params)
    with pytest.warns(ClosedOverStateWarning, match="closed over"):
        jax.jit(lambda p, g: optimizer.step(p, g, state))(params, {"w": jnp.ones(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.jit(optimizer.step)(params, {"w": jnp.ones(2)}, state)  # the state as an argument: no warning
        jax.grad(lambda p: optimizer.step(p, {"w": jnp.ones(2)}, state)[0]["w"].sum())(params)  # a fixed state


def test_raise_under_jit_says_why_and_what_to_use():
    optimizer = anyoptim.SGD(0.1, on_nonfinite="raise")
    params = {"w": jnp.asarray([1.0, -2.0])}
    state = optimizer.init(params)
    with pytest.raises(TypeError, match=r"cannot run under jax.jit.*on_nonfinite='skip'"):
        jax.jit(optimizer.step)(params, {"w": jnp.asarray([np.nan, 1.0])}, state)
    with pytest.raises(FloatingPointError, match="grads\\['w'\\]"):  # eagerly it still raises on the values
        optimizer.step(params, {"w": jnp.asarray([np.nan, 1.0])}, state)


def test_skip_under_jit_keeps_params_and_state():
    optimizer = anyoptim.Adam(0.1, on_nonfinite="skip")
    step = jax.jit(optimizer.step)
    params = {"w": jnp.asarray([1.0, -2.0])}
    state = optimizer.init(params)
    params, state = step(params, {"w": jnp.asarray([0.5, 0.5])}, state)
    before, rate = np.asarray(params["w"]), float(state.learning_rate)
    params, state = step(params, {"w": jnp.asarray([np.inf, 0.5])}, state)
    np.testing.assert_array_equal(np.asarray(params["w"]), before)
    assert (int(state.count), int(state.skipped), float(state.learning_rate)) == (1, 1, rate)


def test_the_state_is_a_pytree():
    optimizer = anyoptim.Adam(anyoptim.schedules.cosine_decay(0.1, 8), amsgrad=True, on_nonfinite="skip")
    params = {"b": jnp.zeros(2), "W": jnp.ones((2, 2))}
    state = optimizer.init(params)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    assert len(leaves) == 3 + 3 * 2  # count, learning rate, skipped; three slots of two leaves
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert list(rebuilt.slots) == ["m", "v", "v_max"]  # the slots' order survives (JAX sorts dict keys)
    assert rebuilt.structure == state.structure and rebuilt.optimizer == "Adam" and rebuilt.static == ()
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert paths[:2] == [".count", ".learning_rate"] and ".slots['v_max']['W']" in paths and paths[-1] == ".skipped"
    doubled = jax.tree_util.tree_map(lambda x: x * 2, state)
    assert isinstance(doubled, anyoptim.OptimizerState) and doubled.learning_rate == 0.2


def test_a_constant_rate_and_the_skipped_count_are_static_data_unless_they_must_be_leaves():
    """What the optimizer keeps a Python number is static data of the pytree: a jitted step passes fewer arrays."""
    params = {"b": jnp.zeros(2), "W": jnp.ones((2, 2))}
    constant = anyoptim.Adam(0.1, amsgrad=True).init(params)
    assert constant.static == ("learning_rate", "skipped")
    leaves, treedef = jax.tree_util.tree_flatten(constant)
    assert len(leaves) == 1 + 3 * 2  # the count and the slots, as optax's ScaleByAdamState
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(constant)[0]]
    assert paths[0] == ".count" and ".learning_rate" not in paths and ".skipped" not in paths
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert (rebuilt.learning_rate, rebuilt.skipped, rebuilt.static) == (0.1, 0, constant.static)
    assert list(rebuilt.slots) == ["m", "v", "v_max"]
    assert jax.tree_util.tree_map(lambda x: x * 2, constant).learning_rate == 0.1  # not a leaf: not mapped
    # A state whose rate and skipped count are numbers of the same values but of another maker differs in its
    # static data, not in its leaves; one whose rate is an array keeps it a leaf whatever ``static`` says.
    other = anyoptim.OptimizerState(0, 0.2, constant.slots, 0, constant.structure, "Adam", constant.static)
    assert jax.tree_util.tree_structure(other) != treedef
    arrays = anyoptim.OptimizerState(0, jnp.asarray(0.1), constant.slots, jnp.asarray(0), None, None, constant.static)
    assert len(jax.tree_util.tree_leaves(arrays)) == 3 + 3 * 2
    for optimizer, static in [
        (anyoptim.Adam(0.1, on_nonfinite="skip"), ("learning_rate",)),
        (anyoptim.Adam(schedules.cosine_decay(0.1, 8)), ("skipped",)),
        (anyoptim.Adam(schedules.cosine_decay(0.1, 8), on_nonfinite="skip"), ()),
    ]:
        state = optimizer.init(params)
        assert state.static == static
        assert len(jax.tree_util.tree_leaves(state)) == 3 - len(static) + 2 * 2


def test_a_jitted_step_with_a_constant_rate_equals_eager_carries_no_rate_leaf_and_traces_once():
    optimizer = anyoptim.Adam(0.05)
    traces = []

    def step(params, grads, state):
        traces.append(1)
        return optimizer.step(params, grads, state)

    jitted = jax.jit(step, donate_argnums=(0, 2))
    rng = np.random.default_rng(2)
    params, eager = _tree(PARAMS, "float64"), _tree(PARAMS, "float64")  # donated: two sets of arrays
    state, eager_state = optimizer.init(params), optimizer.init(eager)
    for _ in range(4):
        grads = _tree({name: rng.normal(size=shape) for name, shape in SHAPES.items()}, "float64")
        params, state = jitted(params, grads, state)
        eager, eager_state = optimizer.step(eager, grads, eager_state)
        _assert_trees_close(params, eager, "float64", "params")
        _assert_states_close(state, eager_state, "float64")
        # The rate and the skipped count come back as the Python numbers they are; the count and slots as arrays.
        assert (state.learning_rate, state.skipped) == (0.05, 0) and type(state.learning_rate) is float
        assert len(jax.tree_util.tree_leaves(state)) == 1 + 2 * len(SHAPES)
    assert len(traces) == 1


def test_skip_under_jit_still_counts_skipped_steps_with_a_constant_rate():
    optimizer = anyoptim.Adam(0.1, on_nonfinite="skip")
    step = jax.jit(optimizer.step)
    params = eager = {"w": jnp.asarray([1.0, -2.0])}
    state = eager_state = optimizer.init(params)
    sequence = [[0.5, 0.5], [np.inf, 0.5], [0.25, -1.0], [np.nan, np.nan], [1.0, 1.0]]
    for values in sequence:
        grads = {"w": jnp.asarray(values)}
        params, state = step(params, grads, state)
        eager, eager_state = optimizer.step(eager, grads, eager_state)
        np.testing.assert_allclose(np.asarray(params["w"]), np.asarray(eager["w"]), rtol=1e-12)
        assert state.learning_rate == 0.1 and type(state.learning_rate) is float  # the same number either way
        assert state.static == ("learning_rate",)  # the skipped count is counted on the device: a leaf
    assert (int(state.count), int(state.skipped)) == (eager_state.count, eager_state.skipped) == (3, 2)
    # A rate assigned since the state was made: a skipped step keeps the old one, a taken step the new one, so the
    # rate is chosen on the device and becomes a leaf, as under a schedule.
    optimizer.learning_rate = 0.05
    step = jax.jit(optimizer.step)
    for values, rate in [([np.nan, 1.0], 0.1), ([1.0, 1.0], 0.05)]:
        grads = {"w": jnp.asarray(values)}
        params, state = step(params, grads, state)
        eager, eager_state = optimizer.step(eager, grads, eager_state)
        assert float(state.learning_rate) == eager_state.learning_rate == rate
        np.testing.assert_allclose(np.asarray(params["w"]), np.asarray(eager["w"]), rtol=1e-12)
    assert (int(state.count), int(state.skipped)) == (eager_state.count, eager_state.skipped) == (4, 3)


def test_a_leaf_stays_a_leaf_so_a_scan_carry_keeps_its_structure():
    """lax.scan needs one carry structure: a step keeps a scalar a leaf once it is one (a state made by hand)."""
    optimizer = anyoptim.SGD(0.1)
    params = {"w": jnp.asarray([1.0, -2.0])}
    state = optimizer.init(params)
    optimizer.learning_rate = 0.5

    def body(carry, g):
        return optimizer.step(carry[0], {"w": g}, carry[1]), None

    # A static rate of 0.1 in, one of 0.5 out: two structures, as the state's Notes say.
    with pytest.raises(TypeError, match="pytree structure"):
        jax.lax.scan(body, (params, state), jnp.ones((3, 2)))
    by_hand = anyoptim.OptimizerState(0, 0.1, state.slots, 0, state.structure, "SGD")
    for start in (replace(state, static=()), by_hand):
        (final, last), _ = jax.lax.scan(body, (params, start), jnp.ones((3, 2)))
        np.testing.assert_allclose(np.asarray(final["w"]), [-0.5, -3.5], rtol=1e-12)
        assert (int(last.count), float(last.learning_rate), int(last.skipped), last.static) == (3, 0.5, 0, ())
    _, eager = optimizer.step(params, {"w": jnp.ones(2)}, replace(state, static=()))
    assert eager.static == ()


def test_static_names_only_python_numbers_and_refuses_other_names():
    slots = {"m": {"w": jnp.zeros(2)}}
    both = ("learning_rate", "skipped")
    assert anyoptim.OptimizerState(0, jnp.asarray(0.1), slots, 0, static=both).static == ("skipped",)
    assert anyoptim.OptimizerState(0, 0.1, slots, np.int64(2), static=both).static == ("learning_rate",)
    assert anyoptim.OptimizerState(0, 0.1, slots, 0, static=["skipped", "learning_rate"]).static == both
    for bad in (("lr",), "learning_rate", ("learning_rate", 1), (["skipped"],), None):
        with pytest.raises(ValueError, match="static must be a tuple of names"):
            anyoptim.OptimizerState(0, 0.1, slots, 0, static=bad)
    # Not compared, not shown: states equal in every value are equal whatever their static.
    assert anyoptim.OptimizerState(0, 0.1, slots, 0, static=both) == anyoptim.OptimizerState(0, 0.1, slots, 0)
    assert "static" not in repr(anyoptim.OptimizerState(0, 0.1, {}, 0, static=both))


def test_a_jitted_step_runs_inside_lax_scan():
    optimizer = anyoptim.RAdam(anyoptim.schedules.cosine_decay(0.1, 8), on_nonfinite="skip")
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = jnp.asarray([[0.5, 1.0], [np.nan, 1.0], [-0.5, 0.25], [1.0, 1.0]] * 2)

    def body(carry, g):
        return optimizer.step(*carry[:1], {"w": g}, carry[1]), None

    (final, state), _ = jax.lax.scan(lambda c, g: body(c, g), (params, optimizer.init(params)), grads)
    eager, eager_state = params, optimizer.init(params)
    for g in grads:
        eager, eager_state = optimizer.step(eager, {"w": g}, eager_state)
    np.testing.assert_allclose(np.asarray(final["w"]), np.asarray(eager["w"]), rtol=1e-12)
    assert (int(state.count), int(state.skipped)) == (eager_state.count, eager_state.skipped) == (6, 2)


@pytest.mark.parametrize("count", [jnp.asarray(3), np.int64(3), np.asarray(3)])
def test_a_zero_d_integer_count_is_accepted_eagerly(count):
    optimizer = anyoptim.Adam(0.1)
    params = {"w": jnp.asarray([1.0, -2.0])}
    state = optimizer.init(params)
    given_state = anyoptim.OptimizerState(count, 0.1, state.slots, 0, state.structure, "Adam")
    _, new_state = optimizer.step(params, {"w": jnp.ones(2)}, given_state)
    assert new_state.count == 4 and isinstance(new_state.count, int)


@pytest.mark.parametrize(
    ("count", "known_when_traced"),
    [(jnp.asarray(1.0), True), (jnp.asarray([1, 2]), True), (jnp.asarray(True), True), (jnp.asarray(-1), False)],
)
def test_a_bad_count_is_refused_before_anything_changes(count, known_when_traced):
    optimizer = anyoptim.Adam(0.1)
    params = {"w": jnp.asarray([1.0, -2.0])}
    state = optimizer.init(params)
    bad = anyoptim.OptimizerState(count, 0.1, state.slots, 0, state.structure, "Adam")
    with pytest.raises(ValueError, match=r"state\.count"):
        optimizer.step(params, {"w": jnp.ones(2)}, bad)
    if known_when_traced:  # a traced count's dtype and shape are known, its sign is not
        with pytest.raises(ValueError, match=r"state\.count"):
            jax.jit(optimizer.step)(params, {"w": jnp.ones(2)}, bad)


RUN_WITHOUT_X64 = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, anyoptim
    from anyoptim import schedules
    assert not jax.config.jax_enable_x64
    rng = np.random.default_rng(0)
    optimizers = [anyoptim.Adam(0.1), anyoptim.RAdam(0.1), anyoptim.NAdam(0.1), anyoptim.Adamax(0.1),
                  anyoptim.AdamW(schedules.warmup_cosine_decay(0.1, 3, 12), weight_decay=0.1),
                  anyoptim.Adam(0.1, amsgrad=True, on_nonfinite="skip")]
    for optimizer in optimizers:
        step = jax.jit(optimizer.step)
        params = eager = {"W": jnp.asarray(rng.normal(size=(3, 2)), dtype=jnp.float32)}
        state = eager_state = optimizer.init(params)
        for index in range(12):
            grads = {"W": jnp.asarray(rng.normal(size=(3, 2)), dtype=jnp.float32)}
            params, state = step(params, grads, state)
            eager, eager_state = optimizer.step(eager, grads, eager_state)
        assert params["W"].dtype == jnp.float32 and state.count.dtype == jnp.int32
        want = np.asarray(eager["W"])
        np.testing.assert_allclose(np.asarray(params["W"]), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    print("ok")
    """
)


def test_jitted_float32_steps_equal_eager_ones_without_x64():
    """Without jax_enable_x64 the count is int32 and JAX computes in float32: the count's scalars still match."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_X64],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


@pytest.mark.parametrize("master_weights", [False, True])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_jitted_narrow_steps_equal_eager_ones(dtype, master_weights):
    """float16/bfloat16 compute in float32: under jit the count's scalars are float32 too, not rounded to 3 digits."""
    optimizer = anyoptim.Adam(0.01, master_weights=master_weights)
    step = jax.jit(optimizer.step)
    params = eager = {"w": jnp.asarray([1.0, -2.0, 3.0, 0.5], dtype=getattr(jnp, dtype))}
    state = eager_state = optimizer.init(params)
    grads = {"w": jnp.asarray([0.3, -0.1, 2.0, -1e-3], dtype=getattr(jnp, dtype))}
    for _ in range(4):
        params, state = step(params, grads, state)
        eager, eager_state = optimizer.step(eager, grads, eager_state)
    for slot, tree in eager_state.slots.items():  # float32 slots (master weights) or narrow ones, widened here
        want, got = np.asarray(tree["w"], dtype=np.float64), np.asarray(state.slots[slot]["w"], dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=slot)
    np.testing.assert_array_equal(np.asarray(params["w"], dtype=np.float64), np.asarray(eager["w"], dtype=np.float64))
