"""The NumPy engine and the optimizer's fast path for repeated buffers.

* Fused (the NumPy engine) and generic engines agree for every optimizer on
  Hypothesis-drawn trees of mixed layouts: one flat buffer, separate arrays,
  non-contiguous and read-only leaves, float32 beside float64; gradients as
  fresh arrays or one buffer refilled each step (which takes the fast path).
  Float64 to 1e-12 and float32 to 1e-6 relative; in fact bit for bit.
* Spans longer than a block, blocks of any size, and rules the tracer cannot
  follow (they are evaluated as written) give the generic results too.
* The plan is built from the one tracer the CuPy engine uses too
  (``engines.trace``): every optimizer is planned, one ufunc call per array
  node of its trace; the plan's corners (0-D array hyperparameters, one-sided
  clip, dead and repeated expressions, one node for two slots, scalars and
  other inputs as results, a float64 scalar lifting float32 blocks) match the
  generic engine bit for bit, and host scalars that raise raise as the rule does.
* No parameter-sized temporary per step (tracemalloc), on the fast path and
  on the fully validated one.
* In-place semantics: returned arrays are the truth, writable contiguous
  leaves are updated in place, the flat layout is kept, read-only and
  non-contiguous arrays are never written.
* The fast path changes nothing observable: replaced leaves, edited state,
  in-place reshapes and dtype changes, changed settings and bad input are all
  seen as on the validated path.

Every test runs twice: with the plans compiled to C kernels and with NumPy
ufuncs (``kernels="c"`` and ``"ufunc"``); ``tests/test_compiled_kernels.py``
has what only the compiled path does.
"""

from __future__ import annotations

import itertools
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim import engines
from anyoptim.engines import GenericEngine
from anyoptim.engines import trace as _trace
from anyoptim.engines.numpy import DEFAULT_BLOCK_BYTES, NumpyEngine
from anyoptim.engines.numpy import native as _native
from anyoptim.engines.program import Program
from anyoptim.state import OptimizerState
from tests.cases import CONFIG_PARAMS, Config
from tests.helpers import RTOL_SAME_BACKEND, load_namespace

XP = load_namespace("numpy")  # the array-api-compat namespace the generic engine runs NumPy arrays with
KERNELS = ["c", "ufunc"] if _native.compiler_found() else ["ufunc"]


@pytest.fixture(autouse=True, params=KERNELS)
def kernels(request, monkeypatch) -> str:
    """Run the test with the NumPy engine in this kernels mode (the optimizers' engine and any made here)."""
    monkeypatch.setenv("ANYOPTIM_NUMPY_KERNELS", request.param)
    monkeypatch.setitem(engines._FUSED, "numpy", NumpyEngine())
    return request.param


# --------------------------------------------------------------------------- the optimizer table


def _close(actual: Any, expected: Any, what: str) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=RTOL_SAME_BACKEND[actual.dtype.name], atol=0, err_msg=what)


def _assert_same_state(fused: tuple, generic: tuple) -> None:
    (p_fused, s_fused), (p_generic, s_generic) = fused, generic
    for name in p_generic:
        _close(p_fused[name], p_generic[name], f"params[{name!r}]")
    assert s_fused.count == s_generic.count
    assert s_fused.learning_rate == s_generic.learning_rate
    for slot in s_generic.slots:
        for name in p_generic:
            _close(s_fused.slots[slot][name], s_generic.slots[slot][name], f"slot {slot!r} of {name!r}")


# --------------------------------------------------------------------------- trees of mixed layouts

LAYOUTS = ("flat", "plain", "transposed", "strided", "read-only")


@dataclass
class Case:
    """Leaves (name -> values), how each is laid out, and the gradient steps."""

    values: dict[str, np.ndarray]
    layouts: dict[str, str]
    grads: list[dict[str, np.ndarray]]
    grad_buffer: bool  # refill one flat gradient buffer each step (the training-loop pattern)


def _lay_out(values: dict[str, np.ndarray], layouts: dict[str, str]) -> dict[str, np.ndarray]:
    """The same values, each leaf laid out as asked; the "flat" leaves share one buffer per dtype."""
    flat_names = [name for name in values if layouts[name] == "flat"]
    tree = anyoptim.flatten({name: values[name].copy() for name in flat_names}) if flat_names else {}
    for name, value in values.items():
        layout = layouts[name]
        if layout == "plain":
            tree[name] = value.copy()
        elif layout == "transposed":  # not C-contiguous when 2-D with both sides > 1
            tree[name] = value.copy(order="F")
        elif layout == "strided":  # a view of every other element of a bigger array
            bigger = np.zeros((2 * value.size,), dtype=value.dtype)
            bigger[::2] = value.reshape(-1)
            tree[name] = bigger[::2].reshape(value.shape)
        elif layout == "read-only":
            tree[name] = value.copy()
            tree[name].setflags(write=False)
    return tree


@st.composite
def cases(draw: Any, max_steps: int = 3) -> Case:
    count = draw(st.integers(1, 5))
    values, layouts = {}, {}
    for index in range(count):
        dtype = draw(st.sampled_from([np.float32, np.float64]))
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
        elements = st.floats(-3, 3, width=32 if dtype == np.float32 else 64)
        name = f"{'Wb'[index % 2]}{index}"
        values[name] = draw(hnp.arrays(dtype, shape, elements=elements))
        layouts[name] = draw(st.sampled_from(LAYOUTS))
    steps = draw(st.integers(1, max_steps))
    grads = []
    for _ in range(steps):
        step = {}
        for name, value in values.items():
            elements = st.floats(-2, 2, width=32 if value.dtype == np.float32 else 64)
            step[name] = draw(hnp.arrays(value.dtype, value.shape, elements=elements))
        grads.append(step)
    return Case(values, layouts, grads, draw(st.booleans()))


def _run(config: Config, case: Case, engine: str) -> tuple[dict, OptimizerState]:
    optimizer = config.make(engine)
    params = _lay_out(case.values, case.layouts)
    state = optimizer.init(params)
    buffer = anyoptim.flatten({name: value.copy() for name, value in case.grads[0].items()})
    for grads in case.grads:
        if case.grad_buffer:  # both engines see the same gradient layout, so the global norm sums alike
            for name, value in grads.items():
                buffer[name][...] = value
            given_grads = buffer
        else:
            given_grads = _lay_out(grads, case.layouts)
        params, state = optimizer.step(params, given_grads, state)
    return params, state


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=25)
@given(case=cases())
def test_fused_matches_generic_on_mixed_layouts(config: Config, case: Case) -> None:
    _assert_same_state(_run(config, case, "fused"), _run(config, case, "generic"))


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_is_bit_identical_to_generic(config: Config, dtype: Any) -> None:
    """The traced calls are the rule's own operations in its order, with NumPy's scalar casts: same bits."""
    rng = np.random.default_rng(7)
    shapes = {"W1": (3, 4), "b1": (4,), "W2": (4, 1), "b2": (1,)}
    start = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    runs = {}
    for engine in ("fused", "generic"):
        optimizer = config.make(engine)
        params = anyoptim.flatten({name: value.copy() for name, value in start.items()})
        state = optimizer.init(params)
        grads = anyoptim.flatten({name: np.zeros_like(value) for name, value in start.items()})
        for step in range(6):
            for name in shapes:
                grads[name][...] = np.random.default_rng(step).standard_normal(shapes[name])
            params, state = optimizer.step(params, grads, state)
        runs[engine] = (params, state)
    for name in shapes:
        np.testing.assert_array_equal(runs["fused"][0][name], runs["generic"][0][name])
        for slot in runs["generic"][1].slots:
            np.testing.assert_array_equal(runs["fused"][1].slots[slot][name], runs["generic"][1].slots[slot][name])


# --------------------------------------------------------------------------- the engine alone: blocks and spans


def _program_and_scalars(config: Config, count: int, dtype: Any) -> tuple[Program, dict, list[str], dict]:
    optimizer = config.make("fused")
    fills = optimizer._slot_fills()
    hp = {"learning_rate": optimizer.learning_rate_at(count), **optimizer._step_scalars(count)}
    if optimizer.clip_value is not None:
        hp["clip_value"] = optimizer.clip_value
    if optimizer.clip_global_norm is not None:
        hp["grad_scale"] = np.asarray(0.5, dtype=dtype)
    decayed = bool(optimizer.weight_decay)
    if decayed:
        hp.update(weight_decay=optimizer.weight_decay, decay=hp["learning_rate"] * optimizer.weight_decay)
    return optimizer._program(decayed), hp, list(fills), fills


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=15)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    block_size=st.integers(1, 17),
    dtype=st.sampled_from([np.float32, np.float64]),
    count=st.integers(0, 30),
    data=st.data(),
)
def test_blocks_of_any_size_match_the_generic_engine(config, sizes, block_size, dtype, count, data) -> None:
    """Spans cut into blocks (a last short one included) give what the rule gives on the whole arrays."""
    program, hp, slot_names, fills = _program_and_scalars(config, count, dtype)
    total = sum(sizes)
    width = 32 if dtype == np.float32 else 64
    buffers = {
        role: data.draw(hnp.arrays(dtype, (total,), elements=st.floats(-2, 2, width=width)), label=role)
        for role in ("p", "g", *slot_names)
    }
    for name in slot_names:  # slots the rule needs non-negative (second moments, accumulators)
        buffers[name] = np.abs(buffers[name]) + fills[name]
    if "mean_g" in buffers:  # centered RMSprop takes the root of s - mean_g**2
        buffers["s"] += buffers["mean_g"] ** 2
    offsets = np.cumsum([0, *sizes])

    def leaves(role: str) -> list[np.ndarray]:
        return [buffers[role][start:stop] for start, stop in itertools.pairwise(offsets)]

    expected_p, expected_slots = GenericEngine().apply(
        program, XP, leaves("p"), leaves("g"), {name: leaves(name) for name in slot_names}, [hp] * len(sizes)
    )
    expected_p = [value.copy() for value in expected_p]
    expected_slots = {name: [value.copy() for value in values] for name, values in expected_slots.items()}
    new_p, new_slots = NumpyEngine(block_size).apply(
        program, np, leaves("p"), leaves("g"), {name: leaves(name) for name in slot_names}, [hp] * len(sizes)
    )
    for index in range(len(sizes)):
        _close(new_p[index], expected_p[index], f"p[{index}]")
        for name in slot_names:
            _close(new_slots[name][index], expected_slots[name][index], f"{name}[{index}]")


def _branching_rule(xp, p, g, slots, hp):
    """A rule the tracer cannot follow: it branches on a scalar."""
    if hp["learning_rate"] > 0:
        return p - hp["learning_rate"] * xp.exp(-(g * g)) * g, {}
    return p, {}


class BranchingSGD(anyoptim.Optimizer):
    rule = staticmethod(_branching_rule)


def test_rules_the_tracer_cannot_follow_are_evaluated_as_written() -> None:
    rng = np.random.default_rng(0)
    start = {"W": rng.standard_normal((40, 3)), "b": rng.standard_normal(3)}
    results = {}
    for engine in ("fused", "generic"):
        optimizer = BranchingSGD(0.1, engine=engine)
        params = anyoptim.flatten({name: value.copy() for name, value in start.items()})
        state = optimizer.init(params)
        for step in range(3):
            grads = {name: np.full_like(value, 0.1 * step) for name, value in start.items()}
            params, state = optimizer.step(params, grads, state)
        results[engine] = params
    for name in start:
        _close(results["fused"][name], results["generic"][name], name)
    assert not np.array_equal(results["fused"]["W"], start["W"])


def _shuffling_rule(xp, p, g, slots, hp):
    """A rule that moves values between slots and keeps the gradient: results that are other inputs."""
    return p - hp["learning_rate"] * slots["a"], {"a": slots["b"], "b": g, "c": slots["c"] * 0.5 + slots["a"]}


class ShufflingOptimizer(anyoptim.Optimizer):
    rule = staticmethod(_shuffling_rule)

    def _slot_fills(self) -> dict[str, float]:
        return {"a": 1.0, "b": 2.0, "c": 3.0}


def test_results_that_are_other_inputs_land_where_they_belong() -> None:
    rng = np.random.default_rng(1)
    start = {"W": rng.standard_normal((20, 3)), "b": rng.standard_normal(3)}
    results = {}
    for engine in ("fused", "generic"):
        optimizer = ShufflingOptimizer(0.1, engine=engine)
        params = anyoptim.flatten({name: value.copy() for name, value in start.items()})
        state = optimizer.init(params)
        for step in range(4):
            grads = {name: np.full_like(value, float(step)) for name, value in start.items()}
            params, state = optimizer.step(params, grads, state)
        results[engine] = (params, state)
    (p_fused, s_fused), (p_generic, s_generic) = results["fused"], results["generic"]
    for name in start:
        np.testing.assert_array_equal(p_fused[name], p_generic[name])
        for slot in ("a", "b", "c"):
            np.testing.assert_array_equal(s_fused.slots[slot][name], s_generic.slots[slot][name])


# --------------------------------------------------------------------------- the plan is the one trace's array part


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_optimizer_runs_as_the_plan_of_its_trace(config: Config, dtype: Any) -> None:
    """No optimizer falls back to the rule run as written: its plan is one ufunc call per array node of the trace."""
    program, hp, slot_names, _ = _program_and_scalars(config, 3, dtype)
    plan = NumpyEngine().plan(program, np.dtype(dtype), slot_names, hp, ())
    assert plan is not None
    trace = _trace.trace_program(program, slot_names, _trace.hp_signature(hp))
    assert plan.trace == trace  # the graph the CuPy engine prints its kernel from
    array_nodes = [
        index
        for index in trace.live_nodes()
        if trace.nodes[index].kind != _trace.SCALAR
        and trace.nodes[index].op not in ("param", "grad", "slot", "hp_array")  # leaves: blocks and 0-D inputs
    ]
    assert [node for node, op, _ in plan.steps if op != "copy"] == array_nodes


def _corner_case_rule(xp, p, g, slots, hp):
    """The rule contract's constructs, and the corners of a plan (each commented)."""
    scale = hp["scale"] * 2.0  # a 0-D array hyperparameter: an array node that reads no block
    clipped = xp.clip(g * scale, min=-1.0)  # clip with one bound
    _ = xp.sqrt(xp.abs(p)) * 3.0  # dead: never computed
    step = hp["lr"] * (clipped**3 + xp.sign(g) * (1 - hp["beta"]))
    again = hp["lr"] * (clipped**3 + xp.sign(g) * (1 - hp["beta"]))  # the same expression: one node
    kept = xp.where(g > 0, slots["a"], 0.5)  # a scalar branch; where never writes into its destination
    bigger = xp.maximum(slots["a"], xp.minimum(-g, hp["beta"]))
    new_slots = {
        "a": bigger,
        "b": hp["beta"],  # a host scalar as a slot
        "c": kept,
        "d": bigger,  # one node for two slots
        "e": slots["a"] / hp["base"] ** hp["power"],  # reads a's old value after a's new one is made
        "f": g,  # another input: copied
    }
    return p - step + 0 * again, new_slots


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lr", [0.1, np.float32(0.1), np.float64(0.1)], ids=["python", "float32", "float64"])
def test_plan_corner_cases_give_the_generic_results(dtype: Any, lr: Any) -> None:
    """Bit for bit, the values NumPy's promotion gives (a float64 scalar lifts float32 blocks), cast into place."""
    program = Program(rule=_corner_case_rule, slot_names=tuple("abcdef"))
    hp = {"lr": lr, "beta": 0.9, "scale": np.asarray(0.5, dtype=dtype), "base": 2.0, "power": 3}
    slot_names = list(program.slot_names)
    rng = np.random.default_rng(5)
    sizes = [9, 1, 20]
    start = {role: rng.uniform(-2, 2, sum(sizes)).astype(dtype) for role in ("p", "g", *slot_names)}
    offsets = np.cumsum([0, *sizes])

    def leaves(buffers: dict[str, np.ndarray], role: str) -> list[np.ndarray]:
        return [buffers[role][a:b] for a, b in itertools.pairwise(offsets)]

    expected = GenericEngine().apply(
        program, XP, leaves(start, "p"), leaves(start, "g"), {s: leaves(start, s) for s in slot_names}, [hp] * 3
    )
    buffers = {role: value.copy() for role, value in start.items()}
    given_p = leaves(buffers, "p")
    given_slots = {s: leaves(buffers, s) for s in slot_names}
    engine = NumpyEngine(block_size=7)
    assert engine.plan(program, np.dtype(dtype), slot_names, hp, ()) is not None
    new_p, new_slots = engine.apply(program, np, given_p, leaves(buffers, "g"), given_slots, [hp] * 3)
    for index, size in enumerate(sizes):
        assert new_p[index] is given_p[index]  # in place
        np.testing.assert_array_equal(new_p[index], np.asarray(expected[0][index]).astype(dtype))
        for name in slot_names:
            assert new_slots[name][index] is given_slots[name][index]
            want = np.broadcast_to(np.asarray(expected[1][name][index]), (size,)).astype(dtype)
            np.testing.assert_array_equal(new_slots[name][index], want, err_msg=f"slot {name}")


def _ratio_rule(xp, p, g, slots, hp):
    """A host scalar that Python cannot always compute: ``lr / steps`` with ``steps == 0``."""
    return p - hp["lr"] / hp["steps"] * g, {}


def test_host_scalars_that_raise_raise_as_the_rule_does_and_change_nothing() -> None:
    program = Program(rule=_ratio_rule)
    engine = NumpyEngine()
    p, g = np.ones(5), np.full(5, 0.5)
    for steps in (0.0, 2.0, 0.0):  # fails before the plan exists, works, fails with the plan cached
        before = p.copy()
        if steps == 0.0:
            with pytest.raises(ZeroDivisionError):
                _ratio_rule(XP, p, g, {}, {"lr": 0.1, "steps": steps})
            with pytest.raises(ZeroDivisionError):
                engine.apply(program, np, [p], [g], {}, [{"lr": 0.1, "steps": steps}])
            np.testing.assert_array_equal(p, before)
        else:
            (new_p,), _ = engine.apply(program, np, [p], [g], {}, [{"lr": 0.1, "steps": steps}])
            assert new_p is p
            np.testing.assert_array_equal(p, before - 0.1 / 2.0 * g)
    assert engine.plan(program, np.dtype(np.float64), [], {"lr": 0.1, "steps": 2.0}, ()) is not None


def test_a_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        NumpyEngine(0)
    default = NumpyEngine()
    assert default.elements_per_block(np.float32) * 4 == default.elements_per_block(np.float64) * 8
    assert default.elements_per_block(np.float64) * 8 == DEFAULT_BLOCK_BYTES
    assert NumpyEngine(100).elements_per_block(np.float32) == 100


# --------------------------------------------------------------------------- no parameter-sized temporaries


def _peak_bytes_of_steps(optimizer, params, grads_per_step, state) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for grads in grads_per_step:
            params, state = optimizer.step(params, grads, state)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize("same_grads", [True, False], ids=["same-buffers", "new-grads-each-step"])
@pytest.mark.parametrize("make", [lambda: anyoptim.Adam(1e-3), lambda: anyoptim.RMSprop(1e-3, centered=True)])
def test_a_step_allocates_nothing_parameter_sized(make, flat: bool, same_grads: bool) -> None:
    """Adam on 2**20 float64 parameters (8 MiB per array) allocates far less than one array per step."""
    size = 2**20
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal(size), "v": rng.standard_normal(size // 4)}
    if flat:
        params = anyoptim.flatten(params)
    optimizer = make()
    state = optimizer.init(params)
    fresh = [{name: np.full_like(value, 0.01 * (i + 1)) for name, value in params.items()} for i in range(3)]
    grads_per_step = [fresh[0]] * 3 if same_grads else fresh
    params, state = optimizer.step(params, fresh[0], state)  # the first step traces and compiles
    peak = _peak_bytes_of_steps(optimizer, params, grads_per_step, state)
    one_parameter = params["w"].nbytes
    assert peak < one_parameter / 8, f"a step allocated {peak} bytes at its peak; one parameter is {one_parameter}"


# --------------------------------------------------------------------------- in-place semantics


def test_writable_contiguous_leaves_are_updated_in_place_and_the_flat_layout_is_kept() -> None:
    params = anyoptim.flatten({"W": np.ones((3, 2)), "b": np.zeros(2)})
    buffer = params["W"].base
    optimizer = anyoptim.Adam(0.1)
    state = optimizer.init(params)
    before = {name: value for name, value in params.items()}
    new_params, state = optimizer.step(params, {"W": np.full((3, 2), 0.5), "b": np.full(2, -0.5)}, state)
    for name in before:
        assert new_params[name] is before[name]  # the same arrays, updated
        assert new_params[name].base is buffer  # still views of the one buffer
    np.testing.assert_allclose(new_params["W"], 0.9)
    np.testing.assert_allclose(new_params["b"], 0.1)


def test_read_only_and_non_contiguous_leaves_are_never_written() -> None:
    frozen = np.ones(4)
    frozen.setflags(write=False)
    transposed = np.asfortranarray(np.ones((3, 2)))
    params = {"frozen": frozen, "transposed": transposed, "plain": np.ones(2)}
    optimizer = anyoptim.SGD(0.5)
    state = optimizer.init(params)
    grads = {"frozen": np.ones(4), "transposed": np.ones((3, 2)), "plain": np.ones(2)}
    new_params, state = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(frozen, 1.0)
    np.testing.assert_array_equal(transposed, 1.0)
    for name in params:  # the returned arrays are the truth
        np.testing.assert_allclose(new_params[name], 0.5)
    assert new_params["plain"] is params["plain"]
    assert new_params["frozen"] is not frozen and new_params["transposed"] is not transposed


@pytest.mark.parametrize("writeable", [True, False], ids=["writeable", "read-only"])
def test_zero_dimensional_leaves_stay_arrays(writeable: bool) -> None:
    w = np.array(1.5)
    w.flags.writeable = writeable
    optimizer = anyoptim.Adam(0.1)
    params = {"w": w, "v": np.ones(2)}
    state = optimizer.init(params)
    for _ in range(3):
        params, state = optimizer.step(params, {"w": np.array(0.5), "v": np.ones(2)}, state)
    for tree in (params, *state.slots.values()):
        assert isinstance(tree["w"], np.ndarray) and tree["w"].shape == () and tree["w"].dtype == np.float64
    assert (params["w"] is w) == writeable


# --------------------------------------------------------------------------- the fast path changes nothing observable


def _mlp_setup(optimizer: anyoptim.Optimizer | None = None) -> tuple:
    rng = np.random.default_rng(3)
    shapes = {"W1": (2, 5), "b1": (5,), "W2": (5, 1), "b2": (1,)}
    params = anyoptim.flatten({name: rng.standard_normal(shape) for name, shape in shapes.items()})
    grads = anyoptim.flatten({name: rng.standard_normal(shape) for name, shape in shapes.items()})
    optimizer = optimizer or anyoptim.Adam(0.01)
    return optimizer, params, grads, optimizer.init(params)


def test_repeated_buffers_give_the_same_steps_as_fresh_arrays() -> None:
    optimizer, params, grads, state = _mlp_setup()
    reference, ref_params, _, ref_state = _mlp_setup()
    for step in range(5):
        for name in grads:
            grads[name][...] = np.sin(np.arange(grads[name].size) + step).reshape(grads[name].shape)
        params, state = optimizer.step(params, grads, state)  # the same buffers: the fast path after step 1
        fresh = {name: value.copy() for name, value in grads.items()}
        ref_params, ref_state = reference.step(ref_params, fresh, ref_state)  # new arrays: validated every step
        assert optimizer._prepared is not None
    for name in params:
        np.testing.assert_array_equal(params[name], ref_params[name])
    assert (state.count, state.learning_rate) == (ref_state.count, ref_state.learning_rate)


def test_a_replaced_leaf_is_seen() -> None:
    optimizer, params, grads, state = _mlp_setup(anyoptim.SGD(1.0))
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)
    replacement = np.zeros((2, 5))
    params["W1"] = replacement
    params, state = optimizer.step(params, grads, state)
    assert params["W1"] is replacement
    np.testing.assert_array_equal(replacement, -grads["W1"])


def test_an_edited_state_is_seen() -> None:
    optimizer, params, grads, state = _mlp_setup(anyoptim.Momentum(1.0, 0.5, form="heavy_ball"))
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)
    state.slots["v"]["b2"] = np.full(1, 100.0)
    before = params["b2"].copy()
    params, state = optimizer.step(params, grads, state)
    np.testing.assert_allclose(params["b2"], before - (0.5 * 100.0 + grads["b2"]))


def test_an_in_place_reshape_or_dtype_change_is_still_an_error() -> None:
    optimizer, params, grads, state = _mlp_setup()
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)
    snapshot = {name: value.copy() for name, value in params.items()}
    grads["W1"].shape = (5, 2)
    with pytest.raises(ValueError, match=r"grads\['W1'\] has shape \(5, 2\) but params\['W1'\] has shape \(2, 5\)"):
        optimizer.step(params, grads, state)
    grads["W1"].shape = (2, 5)
    params["b1"].dtype = np.int64  # NumPy allows this on an existing array
    with pytest.raises(TypeError, match=r"params\['b1'\] has dtype int64"):
        optimizer.step(params, grads, state)
    params["b1"].dtype = np.float64
    for name, value in snapshot.items():  # nothing changed
        np.testing.assert_array_equal(params[name], value)


def test_changed_settings_take_effect() -> None:
    optimizer, params, grads, state = _mlp_setup(anyoptim.SGD(0.1))
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)
    optimizer.learning_rate = 0.0
    before = {name: value.copy() for name, value in params.items()}
    params, state = optimizer.step(params, grads, state)
    for name, value in before.items():
        np.testing.assert_array_equal(params[name], value)
    optimizer.weight_decay = 1.0
    optimizer.learning_rate = 0.5
    params, state = optimizer.step(params, {name: np.zeros_like(value) for name, value in grads.items()}, state)
    for name, value in before.items():  # L2 decay alone: p - 0.5 * (0 + 1.0 * p)
        np.testing.assert_allclose(params[name], 0.5 * value)


def test_bad_input_after_fast_steps_raises_and_changes_nothing() -> None:
    optimizer, params, grads, state = _mlp_setup()
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)
    snapshot = {name: value.copy() for name, value in params.items()}
    with pytest.raises(ValueError, match="grads does not have the structure of params"):
        optimizer.step(params, {"W1": grads["W1"]}, state)
    with pytest.raises(TypeError, match="state must be the OptimizerState"):
        optimizer.step(params, grads, {"count": 1})
    other = anyoptim.SGD(0.1).init(params)
    with pytest.raises(ValueError, match="state was made by SGD, not by Adam"):
        optimizer.step(params, grads, other)
    for name, value in snapshot.items():
        np.testing.assert_array_equal(params[name], value)


def test_nonfinite_gradients_are_seen_on_the_fast_path() -> None:
    optimizer, params, grads, state = _mlp_setup(anyoptim.Adam(0.01, on_nonfinite="skip"))
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)
    snapshot = {name: value.copy() for name, value in params.items()}
    grads["b2"][0] = np.nan
    params, state = optimizer.step(params, grads, state)
    assert (state.count, state.skipped) == (2, 1)
    for name, value in snapshot.items():
        np.testing.assert_array_equal(params[name], value)
    raising = anyoptim.Adam(0.01, on_nonfinite="raise")
    _, p2, g2, s2 = _mlp_setup(raising)
    p2, s2 = raising.step(p2, g2, s2)
    g2["W2"][1, 0] = np.inf
    with pytest.raises(FloatingPointError, match=r"grads\['W2'\] holds NaN or infinity"):
        raising.step(p2, g2, s2)


def test_a_schedule_is_followed_on_the_fast_path() -> None:
    optimizer, params, grads, state = _mlp_setup(anyoptim.SGD(lambda count: 1.0 / (count + 1)))
    rates = []
    for _ in range(4):
        params, state = optimizer.step(params, grads, state)
        rates.append(state.learning_rate)
    assert rates == [1.0, 0.5, 1 / 3, 0.25]
