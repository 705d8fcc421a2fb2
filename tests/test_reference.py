"""Every optimizer against an independent float64 NumPy transcription of its published algorithm.

The references below are written from the papers (and, where a paper leaves a
choice open, from the convention the optimizer's docstring promises), one leaf
at a time in float64 NumPy.  They never call :mod:`anyoptim.rules`.  Hypothesis
draws hyperparameters, tree shapes, gradient sequences, gradient processing
(global-norm and value clipping, coupled and decoupled weight decay with masks,
learning-rate schedules) and the memory layout (plain arrays or
:func:`anyoptim.flatten`); anyoptim must follow the reference step by step on
every backend present, with ``engine="generic"`` and ``engine="auto"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim import schedules
from tests.helpers import RTOL, from_numpy, to_numpy

# --------------------------------------------------------------------------- the references
#
# A reference is (init, update): init(theta) -> state dict, update(theta, g, state, t, lr)
# -> (theta, state), with t the 1-based step number.  All arithmetic in float64.


@dataclass(frozen=True)
class Reference:
    init: Callable[[np.ndarray], dict[str, np.ndarray]]
    update: Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]]


def _zeros(*names: str) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    return lambda theta: {name: np.zeros_like(theta) for name in names}


def ref_sgd() -> Reference:
    """Robbins & Monro (1951): theta <- theta - lr g."""
    return Reference(_zeros(), lambda theta, g, s, t, lr: (theta - lr * g, s))


def ref_momentum(beta: float, form: str, nesterov: bool) -> Reference:
    """Polyak's heavy ball as torch.optim.SGD writes it (buf = beta buf + g, zero dampening),
    Nesterov's variant as Sutskever et al. (2013) reformulated it (step g + beta buf).
    The course's EMA form weights the fresh gradient by (1 - beta) in both places."""
    weight = 1.0 - beta if form == "ema" else 1.0

    def update(theta, g, s, t, lr):
        buf = beta * s["v"] + weight * g
        direction = weight * g + beta * buf if nesterov else buf
        return theta - lr * direction, {"v": buf}

    return Reference(_zeros("v"), update)


def ref_rmsprop(beta: float, epsilon: float, eps_in_sqrt: bool, centered: bool, momentum: float) -> Reference:
    """Tieleman & Hinton (2012, lecture 6.5); centered as Graves (2013, eq. 38-40); momentum as torch.optim."""

    def update(theta, g, s, t, lr):
        mean_square = beta * s["ms"] + (1 - beta) * g**2
        mean_grad = beta * s["mg"] + (1 - beta) * g
        variance = mean_square - mean_grad**2 if centered else mean_square
        denominator = np.sqrt(variance + epsilon) if eps_in_sqrt else np.sqrt(variance) + epsilon
        scaled = g / denominator
        buf = momentum * s["buf"] + scaled
        step = buf if momentum else scaled
        return theta - lr * step, {"ms": mean_square, "mg": mean_grad, "buf": buf}

    return Reference(_zeros("ms", "mg", "buf"), update)


def ref_adam(beta1: float, beta2: float, epsilon: float, eps_root: float = 0.0, amsgrad: bool = False) -> Reference:
    """Kingma & Ba (2015), Algorithm 1; AMSGrad (Reddi et al., 2018) as torch.optim: the running
    maximum of the uncorrected second moment, then corrected; eps_root inside the root as optax."""

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        v = beta2 * s["v"] + (1 - beta2) * g * g
        v_max = np.maximum(s["v_max"], v)
        m_hat = m / (1 - beta1**t)
        v_hat = (v_max if amsgrad else v) / (1 - beta2**t)
        return theta - lr * m_hat / (np.sqrt(v_hat + eps_root) + epsilon), {"m": m, "v": v, "v_max": v_max}

    return Reference(_zeros("m", "v", "v_max"), update)


def ref_adagrad(epsilon: float, initial_accumulator_value: float) -> Reference:
    """Duchi, Hazan & Singer (2011), diagonal version, epsilon outside the root (torch.optim)."""

    def update(theta, g, s, t, lr):
        total = s["G"] + g * g
        return theta - lr * g / (np.sqrt(total) + epsilon), {"G": total}

    return Reference(lambda theta: {"G": np.full_like(theta, initial_accumulator_value)}, update)


def ref_adamax(beta1: float, beta2: float, epsilon: float) -> Reference:
    """Kingma & Ba (2015), Algorithm 2, with epsilon added to u (optax, Keras)."""

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        u = np.maximum(beta2 * s["u"], np.abs(g))
        return theta - (lr / (1 - beta1**t)) * m / (u + epsilon), {"m": m, "u": u}

    return Reference(_zeros("m", "u"), update)


def ref_nadam(beta1: float, beta2: float, epsilon: float, eps_root: float) -> Reference:
    """Dozat (2016), with a constant momentum, as optax.nadam."""

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        v = beta2 * s["v"] + (1 - beta2) * g * g
        m_bar = beta1 * m / (1 - beta1 ** (t + 1)) + (1 - beta1) * g / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return theta - lr * m_bar / (np.sqrt(v_hat + eps_root) + epsilon), {"m": m, "v": v}

    return Reference(_zeros("m", "v"), update)


def ref_radam(beta1: float, beta2: float, epsilon: float, threshold: float) -> Reference:
    """Liu et al. (2020), Algorithm 2, with optax's epsilon on sqrt(v_hat) and its threshold."""
    rho_inf = 2 / (1 - beta2) - 1

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        v = beta2 * s["v"] + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho > threshold:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            step = r * m_hat / (np.sqrt(v / (1 - beta2**t)) + epsilon)
        else:
            step = m_hat
        return theta - lr * step, {"m": m, "v": v}

    return Reference(_zeros("m", "v"), update)


def ref_lion(beta1: float, beta2: float) -> Reference:
    """Chen et al. (2023), Algorithm 2 (decoupled decay is added by the runner)."""

    def update(theta, g, s, t, lr):
        c = beta1 * s["m"] + (1 - beta1) * g
        return theta - lr * np.sign(c), {"m": beta2 * s["m"] + (1 - beta2) * g}

    return Reference(_zeros("m"), update)


def run_reference(
    reference: Reference,
    params: list[np.ndarray],
    grad_sequence: list[list[np.ndarray] | None],
    learning_rate: float | Callable[[int], float],
    *,
    weight_decay: float = 0.0,
    decayed: list[bool] | None = None,
    decoupled: bool = False,
    clip_global_norm: float | None = None,
    clip_value: float | None = None,
) -> list[list[np.ndarray]]:
    """The parameters after every step; a ``None`` step is one the optimizer must skip."""
    params = [np.asarray(p, dtype=np.float64) for p in params]
    states = [reference.init(p) for p in params]
    decayed = decayed or [False] * len(params)
    trajectory = []
    t = 0
    for grads in grad_sequence:
        if grads is None:
            trajectory.append(params)
            continue
        t += 1
        rate = learning_rate(t - 1) if callable(learning_rate) else learning_rate
        grads = [np.asarray(g, dtype=np.float64) for g in grads]
        if clip_global_norm is not None:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
            if norm > clip_global_norm:
                grads = [g * (clip_global_norm / norm) for g in grads]
        if clip_value is not None:
            grads = [np.clip(g, -clip_value, clip_value) for g in grads]
        new_params = []
        for i, (theta, g) in enumerate(zip(params, grads, strict=True)):
            if weight_decay and decayed[i] and not decoupled:
                g = g + weight_decay * theta
            new_theta, states[i] = reference.update(theta, g, states[i], t, rate)
            if weight_decay and decayed[i] and decoupled:
                new_theta = new_theta - rate * weight_decay * theta
            new_params.append(new_theta)
        params = new_params
        trajectory.append(params)
    return trajectory


# --------------------------------------------------------------------------- the table

BETAS = st.sampled_from([0.0, 0.5, 0.9, 0.99])
BETA2S = st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999])
EPSILONS = st.sampled_from([1e-8, 1e-4, 0.1])


@dataclass(frozen=True)
class Case:
    """One optimizer configuration: its class, a strategy for its hyperparameters, its reference."""

    id: str
    cls: type
    hyper: st.SearchStrategy
    reference: Callable[..., Reference]
    fixed: dict[str, Any] = field(default_factory=dict)
    decoupled: bool = False
    spares_biases: bool = False
    decays_by_default: bool = False

    def optimizer(self, learning_rate, hyper, **options):
        return self.cls(learning_rate, **self.fixed, **hyper, **options)

    def ref(self, hyper):
        return self.reference(**self.fixed, **hyper)


def _rms(**fixed):
    return Case(
        "rmsprop-" + "-".join(k for k, v in fixed.items() if v) if any(fixed.values()) else "rmsprop",
        anyoptim.RMSprop,
        st.fixed_dictionaries({"beta": BETAS, "epsilon": EPSILONS}),
        lambda beta, epsilon, eps_in_sqrt, centered, momentum: ref_rmsprop(
            beta, epsilon, eps_in_sqrt, centered, momentum
        ),
        fixed={"eps_in_sqrt": False, "centered": False, "momentum": 0.0, **fixed},
    )


ADAM_HYPER = st.fixed_dictionaries({"beta1": BETAS, "beta2": BETA2S, "epsilon": EPSILONS})

CASES = [
    Case("sgd", anyoptim.SGD, st.just({}), ref_sgd),
    *(
        Case(
            f"momentum-{form}{'-nesterov' if nesterov else ''}",
            anyoptim.Momentum,
            st.fixed_dictionaries({"beta": BETAS}),
            ref_momentum,
            fixed={"form": form, "nesterov": nesterov},
        )
        for form in ("ema", "heavy_ball")
        for nesterov in (False, True)
    ),
    _rms(),
    _rms(eps_in_sqrt=True),
    _rms(centered=True),
    _rms(momentum=0.9),
    _rms(eps_in_sqrt=True, centered=True, momentum=0.5),
    Case("adam", anyoptim.Adam, ADAM_HYPER, ref_adam),
    Case("adam-amsgrad", anyoptim.Adam, ADAM_HYPER, ref_adam, fixed={"amsgrad": True}),
    Case(
        "adam-eps_root",
        anyoptim.Adam,
        st.fixed_dictionaries({"beta1": BETAS, "beta2": BETA2S, "epsilon": EPSILONS, "eps_root": EPSILONS}),
        ref_adam,
    ),
    Case("adamw", anyoptim.AdamW, ADAM_HYPER, ref_adam, decoupled=True, spares_biases=True, decays_by_default=True),
    Case(
        "adagrad",
        anyoptim.Adagrad,
        st.fixed_dictionaries({"epsilon": EPSILONS, "initial_accumulator_value": st.sampled_from([0.0, 0.1])}),
        ref_adagrad,
    ),
    Case("adamax", anyoptim.Adamax, ADAM_HYPER, ref_adamax),
    Case(
        "nadam",
        anyoptim.NAdam,
        st.fixed_dictionaries({"beta1": BETAS, "beta2": BETA2S, "epsilon": EPSILONS, "eps_root": st.just(0.0)}),
        ref_nadam,
    ),
    Case(
        "radam",
        anyoptim.RAdam,
        st.fixed_dictionaries(
            {
                "beta1": BETAS,
                # beta2 = 0.8 and 0.9 leave the warm-up (rho_t > threshold) within a few steps.
                "beta2": st.sampled_from([0.5, 0.8, 0.9, 0.999]),
                "epsilon": EPSILONS,
                "threshold": st.sampled_from([4.0, 5.0]),
            }
        ),
        ref_radam,
    ),
    Case(
        "lion",
        anyoptim.Lion,
        st.fixed_dictionaries({"beta1": BETAS, "beta2": BETAS}),
        ref_lion,
        decoupled=True,
        spares_biases=True,
    ),
]
CASE_IDS = [case.id for case in CASES]
CASE_BY_ID = {case.id: case for case in CASES}

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


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@settings(max_examples=7)
@given(data=st.data())
def test_matches_reference(xp, case, data):
    """Every optimizer, every backend, both engines: plain hyperparameters over random gradient sequences."""
    problem = data.draw(problems(case, processing=False), label="problem")
    for engine in ("generic", "auto"):
        check_against_reference(xp, case, problem, engine)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@settings(max_examples=5)
@given(data=st.data())
def test_matches_reference_with_gradient_processing(xp, case, data):
    """Clipping, coupled/decoupled weight decay with masks, and schedules, drawn together."""
    problem = data.draw(problems(case, max_steps=3), label="problem")
    for engine in ("generic", "auto"):
        check_against_reference(xp, case, problem, engine)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@settings(max_examples=4)
@given(data=st.data())
def test_matches_reference_when_a_loop_reuses_its_buffers(xp, backend, case, data):
    """A training loop's steps: the same params, state and gradient buffers every step (the fast path
    for repeated arrays), gradients written in place, with NaN-poisoned steps skipped in between."""
    if backend == "jax":
        pytest.skip("JAX arrays cannot be overwritten in place")
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


SKIP_HYPER = {
    "momentum-ema": {"beta": 0.9},
    "rmsprop-centered": {"beta": 0.9, "epsilon": 1e-8},
    "adam": {"beta1": 0.9, "beta2": 0.8, "epsilon": 1e-8},
    "adamw": {"beta1": 0.9, "beta2": 0.8, "epsilon": 1e-8},
    "radam": {"beta1": 0.9, "beta2": 0.8, "epsilon": 1e-8, "threshold": 5.0},
    "lion": {"beta1": 0.9, "beta2": 0.99},
}


@pytest.mark.parametrize("case_id", ["sgd", *SKIP_HYPER])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_skip_leaves_everything_bit_identical(xp, case_id, bad):
    """on_nonfinite="skip": params and state untouched bit for bit, skipped counted, count unchanged,
    and the run continues exactly as if the bad step had never been fed."""
    case = CASE_BY_ID[case_id]
    rng = np.random.default_rng(1)
    shapes = _shapes(2, 3, 2)
    hyper = SKIP_HYPER.get(case_id, {})
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
    ("SGD", lambda: anyoptim.SGD(0.1), lambda p, torch: torch.optim.SGD(p, lr=0.1)),
    (
        "Momentum heavy_ball",
        lambda: anyoptim.Momentum(0.1, 0.8, form="heavy_ball"),
        lambda p, torch: torch.optim.SGD(p, lr=0.1, momentum=0.8),
    ),
    (
        "Momentum heavy_ball nesterov",
        lambda: anyoptim.Momentum(0.1, 0.8, form="heavy_ball", nesterov=True),
        lambda p, torch: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True),
    ),
    (
        "RMSprop centered momentum",
        lambda: anyoptim.RMSprop(0.01, 0.95, 1e-6, centered=True, momentum=0.5),
        lambda p, torch: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-6, centered=True, momentum=0.5),
    ),
    (
        "Adam amsgrad",
        lambda: anyoptim.Adam(0.01, 0.8, 0.9, 1e-6, amsgrad=True),
        lambda p, torch: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.9), eps=1e-6, amsgrad=True),
    ),
    (
        "Adam weight_decay",
        lambda: anyoptim.Adam(0.01, weight_decay=0.1),
        lambda p, torch: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
    ),
    (
        "AdamW decay_all",
        lambda: anyoptim.AdamW(0.01, weight_decay=0.1, weight_decay_mask=anyoptim.decay_all),
        lambda p, torch: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    ),
    (
        "Adagrad",
        lambda: anyoptim.Adagrad(0.1, 1e-10, initial_accumulator_value=0.1),
        lambda p, torch: torch.optim.Adagrad(p, lr=0.1, eps=1e-10, initial_accumulator_value=0.1),
    ),
]


@pytest.mark.parametrize(("label", "ours", "theirs"), TORCH_EQUIVALENTS, ids=[e[0] for e in TORCH_EQUIVALENTS])
def test_documented_torch_equivalence(label, ours, theirs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    start = {"W1": rng.normal(size=(3, 2)), "b1": rng.normal(size=2)}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    reference = theirs([tensors[k] for k in sorted(tensors)], torch)
    optimizer = ours()
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


OPTAX_EQUIVALENTS = [
    (
        "adam eps_root",
        lambda: anyoptim.Adam(0.01, 0.8, 0.9, 1e-6, eps_root=1e-4),
        "adam",
        {"learning_rate": 0.01, "b1": 0.8, "b2": 0.9, "eps": 1e-6, "eps_root": 1e-4},
    ),
    (
        "nadam",
        lambda: anyoptim.NAdam(0.01, 0.8, 0.9, 1e-6),
        "nadam",
        {"learning_rate": 0.01, "b1": 0.8, "b2": 0.9, "eps": 1e-6},
    ),
    (
        "radam",
        lambda: anyoptim.RAdam(0.01, 0.8, 0.9, 1e-6),
        "radam",
        {"learning_rate": 0.01, "b1": 0.8, "b2": 0.9, "eps": 1e-6},
    ),
    # optax (like torch) puts Adamax's epsilon inside the max, anyoptim (like Keras) adds it to u:
    # the two agree when epsilon is 0.
    (
        "adamax",
        lambda: anyoptim.Adamax(0.01, 0.8, 0.9, 0.0),
        "adamax",
        {"learning_rate": 0.01, "b1": 0.8, "b2": 0.9, "eps": 0.0},
    ),
    (
        "lion decay_all",
        lambda: anyoptim.Lion(0.01, 0.8, 0.9, weight_decay=0.1, weight_decay_mask=anyoptim.decay_all),
        "lion",
        {"learning_rate": 0.01, "b1": 0.8, "b2": 0.9, "weight_decay": 0.1},
    ),
    (
        "rmsprop eps_in_sqrt",
        lambda: anyoptim.RMSprop(0.01, 0.9, 1e-6, eps_in_sqrt=True),
        "rmsprop",
        {"learning_rate": 0.01, "decay": 0.9, "eps": 1e-6},
    ),
]


@pytest.mark.parametrize(("label", "ours", "name", "kwargs"), OPTAX_EQUIVALENTS, ids=[e[0] for e in OPTAX_EQUIVALENTS])
def test_documented_optax_equivalence(label, ours, name, kwargs):
    optax = pytest.importorskip("optax")
    import jax

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rng = np.random.default_rng(4)
    start = {"W1": rng.normal(size=(3, 2)), "b1": rng.normal(size=2)}
    transform = getattr(optax, name)(**kwargs)
    theirs = {k: jnp.asarray(v) for k, v in start.items()}
    their_state = transform.init(theirs)
    optimizer = ours()
    params = {k: np.array(v, copy=True) for k, v in start.items()}
    state = optimizer.init(params)
    for _ in range(8):
        grads = {k: rng.normal(size=v.shape) for k, v in start.items()}
        updates, their_state = transform.update({k: jnp.asarray(g) for k, g in grads.items()}, their_state, theirs)
        theirs = optax.apply_updates(theirs, updates)
        params, state = optimizer.step(params, grads, state)
        for k in params:
            np.testing.assert_allclose(params[k], np.asarray(theirs[k]), rtol=1e-12, atol=1e-14, err_msg=k)
