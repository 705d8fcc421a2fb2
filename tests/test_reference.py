"""Every optimizer against an independent float64 NumPy transcription of its published algorithm.

The references (:mod:`tests.references`) are written from the papers (and, where a
paper leaves a choice open, from the convention the optimizer's docstring
promises), one leaf at a time in float64 NumPy; :data:`tests.cases.CASES` pairs
every optimizer configuration with its reference.  Hypothesis
draws hyperparameters, tree shapes, gradient sequences, gradient processing
(global-norm and value clipping, coupled and decoupled weight decay with masks,
learning-rate schedules) and the memory layout (plain arrays or
:func:`anyoptim.flatten`); anyoptim must follow the reference step by step on
every backend present, with ``engine="generic"`` and ``engine="auto"``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim import schedules
from anyoptim.optimizers import REGISTRY
from tests.cases import BETA2S, BETAS, CASE_BY_ID, CASES, EPSILONS, Case, case_params
from tests.helpers import RTOL, Backend, from_numpy, to_numpy
from tests.references import run_reference

# --------------------------------------------------------------------------- drawing trees

# The test tree: course-style names, a nested list, a 2-D bias and a 1-D non-bias.
# Leaf names in tree order: W1, b1, block.0.W, block.0.bias, scale.
LEAF_NAMES = ["W1", "b1", "block.0.W", "block.0.bias", "scale"]
# decay_weights_only's documented rule: at least 2-D and a name that is not bias-like.
WEIGHTS_ONLY = [True, False, True, False, False]


def _shapes(a: int, b: int, c: int) -> list[tuple[int, ...]]:
    return [(a, b), (b,), (b, c), (1, c), (c,)]


def _build(leaves: list[Any]) -> dict[str, Any]:
    w1, b1, w, bias, scale = leaves
    return {"b1": b1, "W1": w1, "scale": scale, "block": [{"W": w, "bias": bias}]}


def _leaves(tree: dict[str, Any]) -> list[Any]:
    return [tree["W1"], tree["b1"], tree["block"][0]["W"], tree["block"][0]["bias"], tree["scale"]]


# Values in [-4, 4]; tiny non-zero magnitudes are snapped to zero (subnormal and tiny
# gradients are the subject of tests/test_properties.py, not of reference agreement).
VALUES = st.floats(-4.0, 4.0, allow_nan=False, allow_subnormal=False).map(lambda x: 0.0 if abs(x) < 1e-3 else x)


def _arrays(shapes: list[tuple[int, ...]]) -> st.SearchStrategy:
    return st.tuples(*(hnp.arrays(np.float64, shape, elements=VALUES) for shape in shapes)).map(list)


def _dtypes(choice: str) -> list[str]:
    if choice == "mixed":
        return ["float32", "float64", "float64", "float32", "float32"]
    return [choice] * 5


def _cast(arrays: list[np.ndarray], dtypes: list[str]) -> list[np.ndarray]:
    return [np.array(a, dtype=dt) for a, dt in zip(arrays, dtypes, strict=True)]


def _to_xp(xp: Any, arrays: list[np.ndarray]) -> dict[str, Any]:
    # Copies: in-place engines must never write into the drawn data.
    return _build([from_numpy(xp, np.array(a, copy=True)) for a in arrays])


def assert_leaves_close(actual: list[Any], expected: list[np.ndarray], dtypes: list[str], where: str) -> None:
    """Relative agreement per leaf, measured against the leaf's largest magnitude (cancellation-safe)."""
    for name, a, e, dtype in zip(LEAF_NAMES, actual, expected, dtypes, strict=True):
        a = to_numpy(a)
        dtype, _, tolerance = dtype.partition("-via-")
        tolerance = tolerance or dtype
        assert a.dtype == np.dtype(dtype), f"{where}: {name} has dtype {a.dtype}, expected {dtype}"
        scale = max(1.0, float(np.max(np.abs(e))) if e.size else 0.0)
        np.testing.assert_allclose(
            a, e, rtol=RTOL[tolerance], atol=RTOL[tolerance] * scale, err_msg=f"{where}: leaf {name}"
        )


# --------------------------------------------------------------------------- drawing a whole problem

SCHEDULES = {
    "constant": lambda lr: lr,
    "exponential": lambda lr: schedules.exponential_decay(lr, decay_steps=2, decay_rate=0.5),
    "inverse_time": lambda lr: schedules.inverse_time_decay(lr, decay_steps=2, decay_rate=1.0, staircase=True),
    "piecewise": lambda lr: schedules.piecewise_constant([1, 3], [lr, lr / 2, lr / 10]),
    "warmup_cosine": lambda lr: schedules.warmup_cosine_decay(lr, warmup_steps=2, decay_steps=6),
}


def _custom_mask(name: str, leaf: Any) -> bool:
    return name.startswith("block")


MASKS = {
    "default": None,
    "all": anyoptim.decay_all,
    "weights_only": anyoptim.decay_weights_only,
    "callable": _custom_mask,
    "tree": _build([True, True, False, True, False]),
}


def _expected_mask(case: Case, mask: str) -> list[bool]:
    if mask == "default":
        return WEIGHTS_ONLY if case.spares_biases else [True] * 5
    if mask == "all":
        return [True] * 5
    if mask == "weights_only":
        return WEIGHTS_ONLY
    if mask == "callable":
        return [name.startswith("block") for name in LEAF_NAMES]
    return [True, True, False, True, False]


@st.composite
def problems(draw, case: Case, *, max_steps: int = 4, processing: bool = True):
    """Hyperparameters, options, initial parameters and a gradient sequence for one case."""
    dims = draw(st.tuples(*(st.integers(1, 3) for _ in range(3))))
    shapes = _shapes(*dims)
    n_steps = draw(st.integers(1, max_steps))
    problem = {
        "hyper": draw(case.hyper),
        "learning_rate": draw(st.sampled_from([1e-3, 0.05, 0.3])),
        "dtype": draw(st.sampled_from(["float64", "float32", "mixed"])),
        "flat": draw(st.booleans()),
        "params": draw(_arrays(shapes)),
        "grads": [draw(_arrays(shapes)) for _ in range(n_steps)],
        "schedule": "constant",
        "clip_global_norm": None,
        "clip_value": None,
        "weight_decay": 0.0,
        "mask": "default",
    }
    if processing:
        problem["schedule"] = draw(st.sampled_from(sorted(SCHEDULES)))
        problem["clip_global_norm"] = draw(st.sampled_from([None, 0.5, 3.0, 100.0]))
        problem["clip_value"] = draw(st.sampled_from([None, 0.1, 1.0]))
        problem["weight_decay"] = draw(st.sampled_from([0.0, 0.1] if not case.decays_by_default else [0.01, 0.1]))
        problem["mask"] = draw(st.sampled_from(sorted(MASKS)))
    return problem


def check_against_reference(
    xp: Any, case: Case, problem: dict[str, Any], engine: str, *, reuse_buffers: bool = False
) -> None:
    """Run anyoptim on the problem and compare every step with the reference.

    With ``reuse_buffers`` the loop is a training loop's: one gradient tree (flattened like the
    params when they are) is allocated once and overwritten in place before every step, and the
    returned params and state are passed back, so steps after the first take the fast path for
    repeated arrays.  A ``None`` in the gradient sequence is a step poisoned with NaN, which
    ``on_nonfinite="skip"`` must skip.
    """
    dtypes = _dtypes(problem["dtype"])
    params0 = _cast(problem["params"], dtypes)
    grad_sequence = [None if grads is None else _cast(grads, dtypes) for grads in problem["grads"]]
    learning_rate = SCHEDULES[problem["schedule"]](problem["learning_rate"])
    options = {
        "clip_global_norm": problem["clip_global_norm"],
        "clip_value": problem["clip_value"],
        "weight_decay": problem["weight_decay"],
        "weight_decay_mask": MASKS[problem["mask"]],
    }
    expected = run_reference(
        case.ref(problem["hyper"]),
        params0,
        grad_sequence,
        learning_rate,
        weight_decay=problem["weight_decay"],
        decayed=_expected_mask(case, problem["mask"]),
        decoupled=case.decoupled,
        clip_global_norm=problem["clip_global_norm"],
        clip_value=problem["clip_value"],
    )
    if reuse_buffers:
        options["on_nonfinite"] = "skip"
    optimizer = case.optimizer(learning_rate, problem["hyper"], engine=engine, **options)
    params = _to_xp(xp, params0)
    if problem["flat"]:
        params = anyoptim.flatten(params)
    state = optimizer.init(params)
    buffers = None
    if reuse_buffers:
        buffers = _to_xp(xp, [np.zeros_like(p) for p in params0])
        if problem["flat"]:
            buffers = anyoptim.flatten(buffers)
    if problem["dtype"] == "mixed" and problem["clip_global_norm"] is not None:
        # The joint norm of a mixed tree carries float32 rounding into the float64 leaves'
        # scale (see test_global_norm_of_a_mixed_tree_keeps_float64_precision).
        dtypes = [dt if dt == "float32" else "float64-via-float32" for dt in dtypes]
    count = 0
    for step, grads in enumerate(grad_sequence):
        where = f"{case.id}, engine={engine}, step {step + 1}"
        if buffers is None:
            params, state = optimizer.step(params, _to_xp(xp, grads), state)
        else:
            values = grads if grads is not None else [np.full_like(p, np.nan) for p in params0]
            for leaf, value in zip(_leaves(buffers), values, strict=True):
                leaf[...] = from_numpy(xp, np.array(value, dtype=value.dtype, copy=True))
            params, state = optimizer.step(params, buffers, state)
            if grads is None:
                assert (state.count, state.skipped) == (count, step + 1 - count), where
                assert_leaves_close(_leaves(params), expected[step], dtypes, where)
                continue
        count += 1
        assert state.count == count, where
        rate = learning_rate(count - 1) if callable(learning_rate) else learning_rate
        assert state.learning_rate == pytest.approx(rate, rel=1e-15), where
        assert_leaves_close(_leaves(params), expected[step], dtypes, where)


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_optimizer_has_a_case(name):
    """A new optimizer in anyoptim.optimizers.REGISTRY fails here until tests/cases.py has a row for it."""
    cls = REGISTRY[name]
    assert any(case.cls is cls for case in CASES), f"{name}: add a row for {cls.__name__} to tests/cases.py CASES"


@pytest.mark.parametrize("case", case_params())
def test_every_case_is_a_registered_optimizer(case):
    assert case.cls in REGISTRY.values(), f"{case.id}: {case.cls.__name__} is not in anyoptim.optimizers.REGISTRY"


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=7)
@given(data=st.data())
def test_matches_reference(xp, case, data):
    """Every optimizer, every backend, both engines: plain hyperparameters over random gradient sequences."""
    problem = data.draw(problems(case, processing=False), label="problem")
    for engine in ("generic", "auto"):
        check_against_reference(xp, case, problem, engine)


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=5)
@given(data=st.data())
def test_matches_reference_with_gradient_processing(xp, case, data):
    """Clipping, coupled/decoupled weight decay with masks, and schedules, drawn together."""
    problem = data.draw(problems(case, max_steps=3), label="problem")
    for engine in ("generic", "auto"):
        check_against_reference(xp, case, problem, engine)


@pytest.mark.parametrize("case", case_params())
@pytest.mark.skip_xp_backend(Backend.JAX, reason="JAX arrays cannot be overwritten in place")
@settings(max_examples=4)
@given(data=st.data())
def test_matches_reference_when_a_loop_reuses_its_buffers(xp, case, data):
    """A training loop's steps: the same params, state and gradient buffers every step (the fast path
    for repeated arrays), gradients written in place, with NaN-poisoned steps skipped in between."""
    problem = data.draw(problems(case, max_steps=4), label="problem")
    poisoned = data.draw(st.lists(st.booleans(), min_size=len(problem["grads"]), max_size=len(problem["grads"])))
    grads = []
    for step_grads, poison in zip(problem["grads"], poisoned, strict=True):
        grads += [None, step_grads] if poison else [step_grads]
    problem = {**problem, "grads": grads}
    for engine in ("generic", "auto"):
        check_against_reference(xp, case, problem, engine, reuse_buffers=True)


def test_global_norm_of_a_mixed_tree_keeps_float64_precision():
    params = {"a": np.zeros(1, dtype=np.float32), "b": np.zeros(1)}
    grads = {"a": np.array([1.0], dtype=np.float32), "b": np.array([3.0])}
    optimizer = anyoptim.SGD(1.0, clip_global_norm=0.5)
    params, _ = optimizer.step(params, grads, optimizer.init(params))
    # Both gradients are exact in float32; the scale is 0.5 / sqrt(10), computable to float64 accuracy.
    np.testing.assert_allclose(params["b"], -3.0 * 0.5 / math.sqrt(10.0), rtol=1e-15)


@pytest.mark.parametrize(
    ("option", "value"),
    [("clip_global_norm", 0.5), ("clip_value", 0.1), ("weight_decay", 0.5), ("schedule", "exponential")],
)
def test_each_processing_option_changes_the_trajectory(option, value):
    """Guards the reference test against vacuous passes: every option it draws has a visible effect."""
    case = CASE_BY_ID["sgd"]
    rng = np.random.default_rng(0)
    shapes = _shapes(2, 3, 2)
    base = {
        "hyper": {},
        "learning_rate": 0.3,
        "dtype": "float64",
        "flat": False,
        "params": [rng.normal(size=s) for s in shapes],
        "grads": [[3 * rng.normal(size=s) for s in shapes] for _ in range(3)],
        "schedule": "constant",
        "clip_global_norm": None,
        "clip_value": None,
        "weight_decay": 0.0,
        "mask": "default",
    }
    changed = {**base, option: value}

    def final(problem):
        optimizer = case.optimizer(
            SCHEDULES[problem["schedule"]](problem["learning_rate"]),
            {},
            clip_global_norm=problem["clip_global_norm"],
            clip_value=problem["clip_value"],
            weight_decay=problem["weight_decay"],
        )
        params = _to_xp(np, problem["params"])
        state = optimizer.init(params)
        for grads in problem["grads"]:
            params, state = optimizer.step(params, _to_xp(np, grads), state)
        return np.concatenate([np.ravel(leaf) for leaf in _leaves(params)])

    assert not np.allclose(final(base), final(changed))
    check_against_reference(np, case, changed, "auto")


@pytest.mark.parametrize("case", case_params())
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_skip_leaves_everything_bit_identical(xp, case, bad):
    """on_nonfinite="skip": params and state untouched bit for bit, skipped counted, count unchanged,
    and the run continues exactly as if the bad step had never been fed."""
    case_id = case.id
    rng = np.random.default_rng(1)
    shapes = _shapes(2, 3, 2)
    hyper = case.example
    params0 = [rng.normal(size=s) for s in shapes]
    good = [[rng.normal(size=s) for s in shapes] for _ in range(4)]
    poisoned = [np.array(g, copy=True) for g in good[0]]
    poisoned[3].flat[-1] = bad  # the last leaf in tree order: every earlier leaf is valid
    sequence = [good[0], good[1], None, good[2], good[3]]
    schedule = schedules.exponential_decay(0.1, decay_steps=1, decay_rate=0.5)
    expected = run_reference(
        case.ref(hyper),
        params0,
        sequence,
        schedule,
        weight_decay=0.01 if case.decays_by_default else 0.0,
        decayed=WEIGHTS_ONLY,
        decoupled=case.decoupled,
    )

    optimizer = case.optimizer(schedule, hyper, on_nonfinite="skip")
    params = _to_xp(xp, params0)
    state = optimizer.init(params)
    for step, grads in enumerate(sequence):
        if grads is None:
            before_params = [to_numpy(leaf) for leaf in _leaves(params)]
            before_slots = {name: [to_numpy(leaf) for leaf in _leaves(tree)] for name, tree in state.slots.items()}
            count, rate, skipped = state.count, state.learning_rate, state.skipped
            params, state = optimizer.step(params, _to_xp(xp, poisoned), state)
            for name, old, new in zip(LEAF_NAMES, before_params, _leaves(params), strict=True):
                assert to_numpy(new).tobytes() == old.tobytes(), f"params[{name!r}] changed on a skipped step"
            for slot, olds in before_slots.items():
                for name, old, new in zip(LEAF_NAMES, olds, _leaves(state.slots[slot]), strict=True):
                    assert to_numpy(new).tobytes() == old.tobytes(), f"slot {slot}[{name!r}] changed on a skip"
            assert (state.count, state.learning_rate, state.skipped) == (count, rate, skipped + 1)
        else:
            params, state = optimizer.step(params, _to_xp(xp, grads), state)
        assert_leaves_close(_leaves(params), expected[step], ["float64"] * 5, f"{case_id}, step {step + 1}")
    assert state.count == 4
    assert state.skipped == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_raise_names_the_leaf_and_changes_nothing(xp, bad):
    optimizer = anyoptim.Adam(0.1, on_nonfinite="raise")
    rng = np.random.default_rng(2)
    shapes = _shapes(2, 2, 2)
    params = _to_xp(xp, [rng.normal(size=s) for s in shapes])
    state = optimizer.init(params)
    params, state = optimizer.step(params, _to_xp(xp, [rng.normal(size=s) for s in shapes]), state)
    grads = [rng.normal(size=s) for s in shapes]
    grads[3][0, -1] = bad
    before = [to_numpy(leaf) for leaf in _leaves(params)]
    before_slots = {name: [to_numpy(leaf) for leaf in _leaves(tree)] for name, tree in state.slots.items()}
    with pytest.raises(FloatingPointError, match=r"grads\['block\.0\.bias'\]"):
        optimizer.step(params, _to_xp(xp, grads), state)
    assert [to_numpy(leaf).tobytes() for leaf in _leaves(params)] == [b.tobytes() for b in before]
    for slot, olds in before_slots.items():
        assert [to_numpy(leaf).tobytes() for leaf in _leaves(state.slots[slot])] == [b.tobytes() for b in olds]
    assert (state.count, state.skipped) == (1, 0)


def test_nonfinite_ignore_lets_nan_through():
    """The default policy costs nothing and checks nothing: NaN flows into the parameters."""
    params = {"w": np.zeros(3)}
    optimizer = anyoptim.SGD(0.1)
    params, state = optimizer.step(params, {"w": np.array([np.nan, 1.0, 0.0])}, optimizer.init(params))
    assert np.isnan(params["w"][0])
    assert state.count == 1


# --------------------------------------------------------------------------- the course's own Adam


def initialize_adam(parameters):
    """The course's initialize_adam: zero first and second moments keyed dW1, db1, ..."""
    n_layers = len(parameters) // 2
    v, s = {}, {}
    for layer in range(1, n_layers + 1):
        for kind in ("W", "b"):
            v[f"d{kind}{layer}"] = np.zeros_like(parameters[f"{kind}{layer}"])
            s[f"d{kind}{layer}"] = np.zeros_like(parameters[f"{kind}{layer}"])
    return v, s


def update_parameters_with_adam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon):
    """The course's update_parameters_with_adam, with bias correction, transcribed loop for loop."""
    n_layers = len(parameters) // 2
    v_corrected, s_corrected = {}, {}
    for layer in range(1, n_layers + 1):
        for kind in ("W", "b"):
            key = f"d{kind}{layer}"
            v[key] = beta1 * v[key] + (1 - beta1) * grads[key]
            v_corrected[key] = v[key] / (1 - beta1**t)
            s[key] = beta2 * s[key] + (1 - beta2) * grads[key] ** 2
            s_corrected[key] = s[key] / (1 - beta2**t)
            parameters[f"{kind}{layer}"] = parameters[f"{kind}{layer}"] - learning_rate * v_corrected[key] / (
                np.sqrt(s_corrected[key]) + epsilon
            )
    return parameters, v, s, v_corrected, s_corrected


@st.composite
def course_problems(draw):
    layer_dims = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    shapes = {}
    for layer in range(1, len(layer_dims)):
        shapes[f"W{layer}"] = (layer_dims[layer], layer_dims[layer - 1])
        shapes[f"b{layer}"] = (layer_dims[layer], 1)
    n_steps = draw(st.integers(1, 6))

    def tree():
        return {k: draw(hnp.arrays(np.float64, shape, elements=VALUES)) for k, shape in shapes.items()}

    return {
        "params": tree(),
        "grads": [tree() for _ in range(n_steps)],
        "learning_rate": draw(st.sampled_from([0.0007, 0.01, 0.1])),
        "beta1": draw(BETAS),
        "beta2": draw(BETA2S),
        "epsilon": draw(EPSILONS),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
    }


@settings(max_examples=10)
@given(problem=course_problems())
def test_matches_the_courses_adam(xp, problem):
    """The lesson's initialize_adam / update_parameters_with_adam on a W1, b1, W2, b2... dict."""
    dtype = problem["dtype"]
    hyper = {k: problem[k] for k in ("learning_rate", "beta1", "beta2", "epsilon")}
    course_params = {k: np.array(v, dtype=dtype).astype(np.float64) for k, v in problem["params"].items()}
    v, s = initialize_adam(course_params)
    optimizer = anyoptim.Adam(**hyper)
    params = {k: from_numpy(xp, np.array(a, dtype=dtype)) for k, a in problem["params"].items()}
    state = optimizer.init(params)
    t = 0
    for grads in problem["grads"]:
        grads = {k: np.array(g, dtype=dtype) for k, g in grads.items()}
        t = t + 1
        course_params, v, s, _, _ = update_parameters_with_adam(
            course_params, {"d" + k: g.astype(np.float64) for k, g in grads.items()}, v, s, t, **hyper
        )
        params, state = optimizer.step(params, {k: from_numpy(xp, g) for k, g in grads.items()}, state)
        assert state.count == t
        for key in params:
            for name, actual, expected in (
                ("params", params[key], course_params[key]),
                ("m", state.slots["m"][key], v["d" + key]),
                ("v", state.slots["v"][key], s["d" + key]),
            ):
                scale = max(1.0, float(np.max(np.abs(expected))))
                np.testing.assert_allclose(
                    to_numpy(actual),
                    expected,
                    rtol=RTOL[dtype],
                    atol=RTOL[dtype] * scale,
                    err_msg=f"{name}[{key!r}] at t={t}",
                )


# --------------------------------------------------------------------------- documented equivalences
#
# The docstrings promise equality with torch.optim and optax under stated settings; check the
# promises on the libraries themselves, where they are installed.

TORCH_EQUIVALENTS = [
    pytest.param(case, equivalent, id=f"{case.id}-{equivalent.label}") for case in CASES for equivalent in case.torch
]
OPTAX_EQUIVALENTS = [
    pytest.param(case, equivalent, id=f"{case.id}-{equivalent.label}") for case in CASES for equivalent in case.optax
]


@pytest.mark.parametrize(("case", "equivalent"), TORCH_EQUIVALENTS)
def test_documented_torch_equivalence(case, equivalent):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    start = {"W1": rng.normal(size=(3, 2)), "b1": rng.normal(size=2)}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    reference = equivalent.theirs([tensors[k] for k in sorted(tensors)], torch)
    optimizer = case.make(**equivalent.ours)
    params = {k: np.array(v, copy=True) for k, v in start.items()}
    state = optimizer.init(params)
    for _ in range(6):
        grads = {k: rng.normal(size=v.shape) for k, v in start.items()}
        for k, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[k])
        reference.step()
        params, state = optimizer.step(params, grads, state)
        for k in params:
            np.testing.assert_allclose(params[k], tensors[k].detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize(("case", "equivalent"), OPTAX_EQUIVALENTS)
def test_documented_optax_equivalence(case, equivalent):
    optax = pytest.importorskip("optax")
    import jax

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rng = np.random.default_rng(4)
    start = {"W1": rng.normal(size=(3, 2)), "b1": rng.normal(size=2)}
    transform = equivalent.theirs(optax)
    theirs = {k: jnp.asarray(v) for k, v in start.items()}
    their_state = transform.init(theirs)
    optimizer = case.make(**equivalent.ours)
    params = {k: np.array(v, copy=True) for k, v in start.items()}
    state = optimizer.init(params)
    for _ in range(8):
        grads = {k: rng.normal(size=v.shape) for k, v in start.items()}
        updates, their_state = transform.update({k: jnp.asarray(g) for k, g in grads.items()}, their_state, theirs)
        theirs = optax.apply_updates(theirs, updates)
        params, state = optimizer.step(params, grads, state)
        for k in params:
            np.testing.assert_allclose(params[k], np.asarray(theirs[k]), rtol=1e-12, atol=1e-14, err_msg=k)
