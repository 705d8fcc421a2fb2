"""The tracer behind the CuPy engine, proved on the CPU.

* The traced graph of every optimizer's program, evaluated with NumPy, equals
  the program run directly (float64 1e-12, float32 1e-6), for every option.
* The generated CUDA body is compiled with the host C++ compiler into a
  stand-in of ``cupy.ElementwiseKernel`` (same argument binding, same in-place
  references) and run: it equals the program run directly.  This checks the
  printed code itself — operators, literals, NaN handling, in-place order.
* The source is well formed: declared arguments, one typed temporary per node,
  outputs last, no double literal in a float kernel.
* The CuPy engine's run detection and argument binding, driven with NumPy
  stand-ins for its few CuPy calls, give the generic engine's results with one
  launch per flat model.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim.engines import trace as _trace
from anyoptim.engines.cupy import CupyEngine
from anyoptim.engines.cupy.device import CupyDevice
from anyoptim.engines.cupy.printer import KernelSource, cuda_source
from anyoptim.engines.cupy.scalar_table import scalars_on_device
from anyoptim.engines.program import Program
from anyoptim.tree import tree_flatten
from tests.cases import CONFIG_PARAMS, CONFIGS, Config
from tests.graph_simulation import check_replays, warm_up_for_capture
from tests.helpers import RTOL_SAME_BACKEND, load_namespace
from tests.trace_evaluator import evaluate

XP = load_namespace("numpy")  # the array-api-compat namespace the generic engine uses for NumPy

# --------------------------------------------------------------------------- the optimizer table


DTYPES = ("float32", "float64")

# --------------------------------------------------------------------------- drawn cases


@dataclass
class Case:
    """A parameter tree and gradient sequence: ``steps`` steps to build up state, then one step under test."""

    dtype: str
    params: dict[str, np.ndarray]
    grads: list[dict[str, np.ndarray]]


def _gradients(rng: np.random.Generator, params: dict[str, np.ndarray], scale: float, zeros: float) -> dict:
    grads = {}
    for name, p in params.items():
        g = rng.normal(0.0, scale, size=p.shape)
        g[rng.random(p.shape) < zeros] = 0.0  # exact zeros: sign(0), sqrt(0), 0/eps
        grads[name] = g.astype(p.dtype)
    return grads


@st.composite
def cases(draw: Any, max_steps: int = 12) -> Case:
    dtype = draw(st.sampled_from(DTYPES))
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    shapes = {"W": (rows, cols), "b": (cols,)}
    extra = draw(st.integers(0, 3))
    if extra:
        shapes["z"] = (extra,)
    width = 32 if dtype == "float32" else 64
    params = {
        name: draw(hnp.arrays(dtype, shape, elements=st.floats(-2, 2, width=width))) for name, shape in shapes.items()
    }
    steps = draw(st.integers(0, max_steps))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    zeros = draw(st.sampled_from([0.0, 0.3]))
    # Host-side RNG, seeded by Hypothesis: long gradient sequences without slow shrinking.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grads = [_gradients(rng, params, scale, zeros) for _ in range(steps + 1)]
    return Case(dtype, params, grads)


def _copy(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.array(value, copy=True) for name, value in tree.items()}


def _state_before_last_step(config: Config, case: Case) -> tuple[anyoptim.Optimizer, dict, anyoptim.OptimizerState]:
    """Run the generic engine through all but the last gradient."""
    optimizer = config.make("generic")
    params = _copy(case.params)
    state = optimizer.init(params)
    for grads in case.grads[:-1]:
        params, state = optimizer.step(params, grads, state)
    return optimizer, params, state


@dataclass
class LeafStep:
    """One leaf of the step under test, exactly as an engine receives it."""

    program: Program
    p: np.ndarray
    g: np.ndarray
    slots: dict[str, np.ndarray]
    hp: dict[str, Any]


def _leaf_steps(
    optimizer: anyoptim.Optimizer, params: dict, grads: dict, state: Any, *, clip_factor_as_array: bool = False
) -> list[LeafStep]:
    """The engine's view of the next step.  On NumPy the global-norm clip factor comes out as a NumPy scalar;
    ``clip_factor_as_array`` makes it the 0-D array it is on CuPy (a kernel array argument)."""
    names, p_leaves, treedef = tree_flatten(params)
    _, g_leaves, _ = tree_flatten(grads)
    slot_leaves = {slot: tree_flatten(tree)[1] for slot, tree in state.slots.items()}
    learning_rate = optimizer.learning_rate_at(state.count)
    keys, key_of_leaf, programs = optimizer._leaf_groups(names, p_leaves, treedef)
    hps = optimizer._step_scalars_of_leaves(XP, keys, key_of_leaf, g_leaves, state.count, learning_rate)
    if clip_factor_as_array:
        hps = [dict(hp, grad_scale=np.asarray(hp["grad_scale"])) if "grad_scale" in hp else hp for hp in hps]
    return [
        LeafStep(program, p_leaves[i], g_leaves[i], {slot: leaves[i] for slot, leaves in slot_leaves.items()}, hps[i])
        for program, indices in programs
        for i in indices
    ]


def _trace_of(step: LeafStep) -> _trace.Trace:
    return _trace.trace_program(step.program, tuple(step.slots), _trace.hp_signature(step.hp))


def _assert_same(actual: Any, expected: Any, dtype: str, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=RTOL_SAME_BACKEND[dtype], atol=0, err_msg=what
    )


# --------------------------------------------------------------------------- traced graph == rule


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@given(case=cases(), as_array=st.booleans())
def test_traced_program_equals_the_rule(config: Config, case: Case, as_array: bool) -> None:
    optimizer, params, state = _state_before_last_step(config, case)
    for step in _leaf_steps(optimizer, params, case.grads[-1], state, clip_factor_as_array=as_array):
        expected_p, expected_slots = step.program(XP, step.p, step.g, step.slots, step.hp)
        actual_p, actual_slots = evaluate(_trace_of(step), XP, step.p, step.g, step.slots, step.hp)
        assert actual_p.dtype == step.p.dtype
        _assert_same(actual_p, expected_p, case.dtype, "param")
        for name in step.slots:
            assert actual_slots[name].dtype == step.p.dtype
            _assert_same(actual_slots[name], expected_slots[name], case.dtype, f"slot {name}")


def test_scalar_subexpressions_are_computed_on_the_host_in_double() -> None:
    """``1 - beta2`` must reach a float32 kernel as float32(1 - 0.999), not 1.0f - 0.999f (1.3e-5 apart)."""
    optimizer = anyoptim.Adam(0.01, beta2=0.999)
    params = {"w": np.ones(3, dtype=np.float32)}
    step = _leaf_steps(optimizer, params, {"w": np.full(3, 0.5, np.float32)}, optimizer.init(params))[0]
    trace = _trace_of(step)
    folded = _trace.fold_scalars(trace, step.hp)
    assert 1 - step.hp["beta2"] in folded
    in_double = np.float32(1 - step.hp["beta2"])
    in_float = np.float32(1) - np.float32(step.hp["beta2"])
    assert abs(in_double - in_float) / in_double > 1e-6  # the trap is real in float32
    source = cuda_source(trace, "float32")
    assert "(1 - beta2)" in source.body  # documented as a host scalar ...
    assert not re.search(r"\d\.\d*f\s*-", _code(source))  # ... and never computed as float literals


# --------------------------------------------------------------------------- custom rules: every operator


def kitchen_sink(xp: Any, p: Any, g: Any, slots: dict, hp: Any) -> tuple[Any, dict]:
    """Every operation of the rule contract, constants meeting arrays included."""
    bounded = xp.clip(g, -hp["c"], hp["c"])
    a = xp.where(g > 0.25, g**2, -g) + 0.5 * xp.abs(p) - xp.sign(g - 0.125) * hp["k"]
    b = xp.minimum(xp.maximum(xp.abs(slots["s"]), g), 2) ** 0.5 + 1 / (1 + xp.abs(g)) + (xp.abs(p) + 1) ** -1
    c = bounded * (xp.abs(p) + 0.5) ** 3 + (2 * hp["k"] - 1) * xp.sqrt(xp.abs(g) + 1e-3)
    d = xp.where(p <= g, +p, 0.5) + xp.where(p >= g, g, -p) * xp.where(p != g, 1, hp["k"])
    new_s = xp.where(g < p, slots["s"], xp.where(p == g, hp["k"], g))
    return p - hp["lr"] * (a + b + c) / (1 + hp["k"] ** 2) + 0.25 * d, {"s": new_s}


def swap(xp: Any, p: Any, g: Any, slots: dict, hp: Any) -> tuple[Any, dict]:
    """Slots that trade places: the kernel must read every input before writing any output."""
    return p - hp["lr"] * g, {"a": slots["b"], "b": slots["a"]}


def constant_slot(xp: Any, p: Any, g: Any, slots: dict, hp: Any) -> tuple[Any, dict]:
    """A slot set to a host scalar, and a parameter left as it is."""
    return p, {"s": hp["k"] * 2}


@dataclass(frozen=True)
class CustomRule:
    id: str
    program: Program
    hp: dict[str, float]


CUSTOM_RULES = [
    CustomRule("kitchen-sink", Program(rule=kitchen_sink, slot_names=("s",)), {"lr": 0.1, "k": 0.75, "c": 0.5}),
    CustomRule("swap", Program(rule=swap, slot_names=("a", "b")), {"lr": 0.1}),
    CustomRule("constant-slot", Program(rule=constant_slot, slot_names=("s",)), {"k": 0.3}),
]
CUSTOM_PARAMS = [pytest.param(rule, id=rule.id) for rule in CUSTOM_RULES]


@st.composite
def custom_arrays(draw: Any, rule: CustomRule) -> tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(1, 40))
    width = 32 if dtype == "float32" else 64
    values = st.one_of(st.sampled_from([0.0, 0.25, -0.125, 1.0, -2.0]), st.floats(-3, 3, width=width))

    def array() -> np.ndarray:
        return draw(hnp.arrays(dtype, (n,), elements=values))

    return dtype, array(), array(), {name: array() for name in rule.program.slot_names}


@pytest.mark.parametrize("rule", CUSTOM_PARAMS)
@given(data=st.data())
def test_traced_custom_rule_equals_the_rule(rule: CustomRule, data: Any) -> None:
    dtype, p, g, slots = data.draw(custom_arrays(rule))
    expected_p, expected_slots = rule.program(XP, p, g, slots, rule.hp)
    trace = _trace.trace_program(rule.program, rule.program.slot_names, _trace.hp_signature(rule.hp))
    actual_p, actual_slots = evaluate(trace, XP, p, g, slots, rule.hp)
    _assert_same(actual_p, expected_p, dtype, "param")
    for name in slots:
        _assert_same(actual_slots[name], np.broadcast_to(expected_slots[name], p.shape), dtype, name)


def test_constants_meeting_arrays_become_literals_of_the_parameter_dtype() -> None:
    rule = CUSTOM_RULES[0]
    trace = _trace.trace_program(rule.program, ("s",), _trace.hp_signature(rule.hp))
    float_code = _code(cuda_source(trace, "float32"))
    double_code = _code(cuda_source(trace, "float64"))
    assert "0.5f" in float_code and "0.125f" in float_code
    assert "0.5f" not in double_code and "0.5" in double_code
    assert _trace.c_literal(0.1, "float32") == f"{float(np.float32(0.1))!r}f"
    assert _trace.c_literal(-2, "float64") == "(-2.0)"


# --------------------------------------------------------------------------- contract errors


def _trace_rule(rule: Callable[..., Any], slots: tuple[str, ...] = (), hp: dict | None = None) -> _trace.Trace:
    hp = {"lr": 0.1} if hp is None else hp
    return _trace.trace_program(Program(rule=rule, slot_names=slots), slots, _trace.hp_signature(hp))


def test_functions_outside_the_contract_are_named() -> None:
    with pytest.raises(AttributeError, match=r"xp\.exp"):
        _trace_rule(lambda xp, p, g, slots, hp: (p - hp["lr"] * xp.exp(g), {}))


def test_branching_on_values_is_refused() -> None:
    def branching(xp: Any, p: Any, g: Any, slots: dict, hp: Any) -> tuple[Any, dict]:
        if g > 0:
            return p, {}
        return p - g, {}

    with pytest.raises(TypeError, match="cannot branch"):
        _trace_rule(branching)


def test_scalar_comparisons_and_scalar_functions_are_refused() -> None:
    with pytest.raises(TypeError, match="compare arrays only"):
        _trace_rule(lambda xp, p, g, slots, hp: (xp.where(hp["lr"] > 0, p, g), {}))
    with pytest.raises(TypeError, match="scalars only"):
        _trace_rule(lambda xp, p, g, slots, hp: (p - xp.sqrt(hp["lr"]) * g, {}))
    with pytest.raises(TypeError, match="exponent must be a scalar"):
        _trace_rule(lambda xp, p, g, slots, hp: (p**g, {}))
    with pytest.raises(TypeError, match="Python numbers only"):
        _trace_rule(lambda xp, p, g, slots, hp: (p - "1", {}))


def test_rules_must_return_exactly_their_slots() -> None:
    with pytest.raises(ValueError, match=r"given slots \['m'\] but returned \['v'\]"):
        _trace_rule(lambda xp, p, g, slots, hp: (p, {"v": g}), slots=("m",))


def test_hyperparameters_must_be_numbers_or_0d_arrays() -> None:
    with pytest.raises(TypeError, match=r"hp\['lr'\]"):
        _trace.hp_signature({"lr": [0.1]})
    with pytest.raises(TypeError, match=r"hp\['lr'\]"):
        _trace.hp_signature({"lr": np.ones(2)})
    assert _trace.hp_signature({"b": 1, "a": np.float32(2), "s": np.ones(())}) == (
        ("a", False),
        ("b", False),
        ("s", True),
    )


def test_unsupported_dtypes_and_constants_are_refused() -> None:
    trace = _trace_rule(lambda xp, p, g, slots, hp: (p - hp["lr"] * g, {}))
    with pytest.raises(ValueError, match="float16"):
        cuda_source(trace, "float16")
    with pytest.raises(ValueError, match="finite"):
        _trace.c_literal(float("inf"), "float32")


# --------------------------------------------------------------------------- source properties


def _code(source: KernelSource) -> str:
    """The source without comments."""
    text = source.loop_prep + "\n" + source.body
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def _declared(params: str) -> list[str]:
    return [decl.split()[-1] for decl in params.split(",") if decl.strip()]


def _all_traces() -> list[tuple[str, _trace.Trace]]:
    """Every trace the optimizer table produces (each program and hyperparameter kind), plus the custom rules."""
    found: dict[tuple[Any, ...], tuple[str, _trace.Trace]] = {}
    for config in CONFIGS:
        for dtype in DTYPES:
            optimizer = config.make("generic")
            params = {
                "W": np.full((2, 3), 0.5, dtype),
                "b": np.full(3, -0.5, dtype),
                "z": np.full(2, 0.25, dtype),
            }
            grads = {name: np.full_like(value, 0.1) for name, value in params.items()}
            for as_array in (False, True):
                for step in _leaf_steps(
                    optimizer, params, grads, optimizer.init(params), clip_factor_as_array=as_array
                ):
                    key = (step.program, tuple(step.slots), _trace.hp_signature(step.hp))
                    found.setdefault(key, (config.id, _trace_of(step)))
    for rule in CUSTOM_RULES:
        trace = _trace.trace_program(rule.program, rule.program.slot_names, _trace.hp_signature(rule.hp))
        found[(rule.id,)] = (rule.id, trace)
    return list(found.values())


ALL_TRACES = _all_traces()
SOURCE_PARAMS = [
    pytest.param(trace, dtype, on_device, id=f"{name}-{dtype}-{'table' if on_device else 'args'}-{i}")
    for i, (name, trace) in enumerate(ALL_TRACES)
    for dtype in DTYPES
    for on_device in (False, True)
]

_FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d*(?:e[+-]?\d+)?|\d+e[+-]?\d+)(f?)(?![\w.])")
_KNOWN_WORDS = {"const", "T", "bool", "sqrt", "fabs", "pow", "fmaf", "scalars", "param", "grad"}


@pytest.mark.parametrize(("trace", "dtype", "on_device"), SOURCE_PARAMS)
def test_generated_source_is_well_formed(trace: _trace.Trace, dtype: str, on_device: bool) -> None:
    source = cuda_source(trace, dtype, scalars_on_device=on_device)
    code = _code(source)
    in_names, out_names = _declared(source.in_params), _declared(source.out_params)
    assert len(in_names) == len(source.inputs) and len(out_names) == len(source.outputs)
    assert out_names == ["param", *(f"slot_{name}" for name in trace.slot_names)]
    assert len(set(in_names + out_names)) == len(in_names) + len(out_names)
    # Scalars: passed by value as T, or loaded once from the float64 table before the loop.
    scalar_names = [f"c{k}" for k in range(len(trace.kernel_scalars))]
    if on_device:
        assert all(f"T {name}" not in source.in_params for name in scalar_names)
        assert ("raw float64 scalars" in source.in_params) == bool(scalar_names)
        assert source.loop_prep.count("= (T)scalars[") == len(scalar_names)
    else:
        assert all(f"T {name}" in source.in_params for name in scalar_names)
        assert "double" not in source.in_params and "float64" not in source.in_params
    # One typed temporary per live array or boolean node, each defined once, all before the outputs.
    live = [i for i in trace.live_nodes() if trace.nodes[i].kind != _trace.SCALAR]
    body_lines = [line for line in code.splitlines() if line.strip()]
    definitions = [line for line in body_lines if re.match(r"const (T|bool) t\d+ = ", line)]
    assert sorted(int(re.match(r"const \w+ t(\d+)", line).group(1)) for line in definitions) == live
    assignments = [line for line in body_lines if re.match(r"(param|slot_\w+) = ", line)]
    assert [line.split(" = ")[0] for line in assignments] == out_names
    assert body_lines[-len(assignments) :] == assignments
    # Every identifier is declared: arguments, temporaries, scalars, and the math functions.
    words = set(re.findall(r"[A-Za-z_]\w*", re.sub(_FLOAT_LITERAL, " ", code)))
    allowed = _KNOWN_WORDS | set(in_names) | set(out_names) | set(scalar_names) | {f"t{i}" for i in live}
    assert words <= allowed, words - allowed
    for line in body_lines:
        assert line.count("(") == line.count(")"), line
        assert line.endswith(";"), line
    # Literals are of T: float suffix in a float kernel, never a double by accident.
    for literal, suffix in _FLOAT_LITERAL.findall(code):
        assert suffix == ("f" if dtype == "float32" else ""), literal
    if dtype == "float32":
        assert "double" not in code
    assert source.dtype == dtype
    assert re.fullmatch(r"anyoptim_\w+", source.name)


def test_adam_source_key_properties() -> None:
    optimizer = anyoptim.Adam(0.01)
    params = {"w": np.ones(4, dtype=np.float32)}
    step = _leaf_steps(optimizer, params, {"w": np.ones(4, np.float32)}, optimizer.init(params))[0]
    trace = _trace_of(step)
    source = cuda_source(trace, "float32")
    code = _code(source)
    assert source.name == "anyoptim_adam"
    assert source.out_params == "T param, T slot_m, T slot_v"
    assert code.count("sqrt(") == 1
    assert "hp_" not in source.in_params  # no 0-D array inputs without global-norm clipping
    # learning_rate, beta1, beta2, 1 - beta1, 1 - beta2, two bias corrections, epsilon (eps_root = 0 is left out)
    assert len(trace.kernel_scalars) == 8
    assert not _FLOAT_LITERAL.findall(code)  # every constant of the rule was folded on the host

    with_root = anyoptim.Adam(0.01, eps_root=1e-8)
    step = _leaf_steps(with_root, params, {"w": np.ones(4, np.float32)}, with_root.init(params))[0]
    assert len(_trace_of(step).kernel_scalars) == 9  # eps_root > 0 is compiled in

    clipped = anyoptim.Adam(0.01, clip_global_norm=1.0)
    grads = {"w": np.ones(4, np.float32)}
    step = _leaf_steps(clipped, params, grads, clipped.init(params), clip_factor_as_array=True)[0]
    assert "T hp_grad_scale" in cuda_source(_trace_of(step), "float32").in_params  # stays on the device


# --------------------------------------------------------------------------- the C++ stand-in of ElementwiseKernel

_CXX = shutil.which("g++") or shutil.which("c++")


def _harness_function(function: str, source: KernelSource) -> str:
    """Wrap a kernel body as ElementwiseKernel does: const references to inputs, references to outputs."""
    params = ["long long n"]
    binds = []
    for (role, _), decl in zip(source.inputs, source.in_params.split(", "), strict=True):
        name = decl.split()[-1]
        if role in ("grad", "hp_array"):
            params.append(f"const T* _raw_{name}")
            binds.append(f"const T &{name} = _raw_{name}[{'_i' if role == 'grad' else '0'}];")
        elif role == "scalar":
            params.append(f"T {name}")
        else:
            params.append("const double* scalars")
    for decl in source.out_params.split(", "):
        name = decl.split()[-1]
        params.append(f"T* _raw_{name}")
        binds.append(f"T &{name} = _raw_{name}[_i];")
    ctype = _trace.FUSED_DTYPES[source.dtype]
    return (
        f"namespace ns_{function} {{\ntypedef {ctype} T;\n"
        f'extern "C" void {function}({", ".join(params)}) {{\n{source.loop_prep}\n'
        f"for (long long _i = 0; _i < n; ++_i) {{\n" + "\n".join(binds) + f"\n{source.body}\n}}\n}}\n}}\n"
    )


class Harness:
    """Every generated kernel compiled into one shared library, callable like a CuPy kernel."""

    def __init__(self, directory: Any):
        self.functions: dict[tuple[str, str, str, str], str] = {}
        chunks = ["#include <cmath>\nusing std::sqrt;\nusing std::fabs;\nusing std::pow;\n"]
        for _, trace in ALL_TRACES:
            for dtype in DTYPES:
                for on_device in (False, True):
                    source = cuda_source(trace, dtype, scalars_on_device=on_device)
                    key = self._key(source)
                    if key not in self.functions:
                        self.functions[key] = f"k{len(self.functions)}"
                        chunks.append(_harness_function(self.functions[key], source))
        path = directory / "kernels.cpp"
        path.write_text("\n".join(chunks))
        library = directory / "kernels.so"
        # -ffp-contract=off: like --fmad=false on the GPU, no fused multiply-add.
        subprocess.run(
            [
                _CXX,
                "-O1",
                "-std=c++17",
                "-ffp-contract=off",
                "-fno-fast-math",
                "-shared",
                "-fPIC",
                str(path),
                "-o",
                str(library),
            ],
            check=True,
            capture_output=True,
        )
        self.library = ctypes.CDLL(str(library))

    @staticmethod
    def _key(source: KernelSource) -> tuple[str, str, str, str]:
        return (source.in_params, source.out_params, source.loop_prep, source.body)

    def run(self, source: KernelSource, p: np.ndarray, g: np.ndarray, slots: dict, hp: dict, scalars: list) -> None:
        """Update ``p`` and ``slots`` in place, as the CUDA kernel would."""
        function = getattr(self.library, self.functions[self._key(source)])
        scalar_type = ctypes.c_float if source.dtype == "float32" else ctypes.c_double
        keep = []  # arrays whose memory the call reads

        def pointer(array: Any, dtype: Any) -> ctypes.c_void_p:
            array = np.ascontiguousarray(array, dtype=dtype)
            keep.append(array)
            return ctypes.c_void_p(array.ctypes.data)

        args: list[Any] = [ctypes.c_longlong(p.size)]
        for role, name in source.inputs:
            if role == "grad":
                args.append(pointer(g, p.dtype))
            elif role == "hp_array":
                args.append(pointer(hp[name], p.dtype))
            elif role == "scalar":
                args.append(scalar_type(scalars[name]))
            else:
                args.append(pointer(np.asarray(scalars, dtype=np.float64), np.float64))
        for role, name in source.outputs:
            target = p if role == "param" else slots[name]
            assert target.flags.c_contiguous and target.dtype == p.dtype
            args.append(ctypes.c_void_p(target.ctypes.data))
        function.restype = None
        function(*args)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: Any) -> Harness:
    if _CXX is None:
        pytest.skip("no C++ compiler to build the generated kernel bodies")
    return Harness(tmp_path_factory.mktemp("kernels"))


def _run_harness(harness: Harness, trace: _trace.Trace, step: LeafStep, on_device: bool) -> tuple[np.ndarray, dict]:
    source = cuda_source(trace, str(step.p.dtype), scalars_on_device=on_device)
    p = np.array(step.p, copy=True)
    slots = {name: np.array(value, copy=True) for name, value in step.slots.items()}
    harness.run(source, p, step.g, slots, step.hp, _trace.fold_scalars(trace, step.hp))
    return p, slots


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=15)
@given(case=cases(), on_device=st.booleans(), as_array=st.booleans())
def test_compiled_kernel_body_equals_the_rule(
    harness: Harness, config: Config, case: Case, on_device: bool, as_array: bool
) -> None:
    optimizer, params, state = _state_before_last_step(config, case)
    for step in _leaf_steps(optimizer, params, case.grads[-1], state, clip_factor_as_array=as_array):
        expected_p, expected_slots = step.program(XP, step.p, step.g, step.slots, step.hp)
        actual_p, actual_slots = _run_harness(harness, _trace_of(step), step, on_device)
        _assert_same(actual_p, expected_p, case.dtype, "param")
        for name in step.slots:
            _assert_same(actual_slots[name], expected_slots[name], case.dtype, f"slot {name}")


@pytest.mark.parametrize("rule", CUSTOM_PARAMS)
@settings(max_examples=25)
@given(data=st.data(), on_device=st.booleans())
def test_compiled_custom_rule_equals_the_rule(harness: Harness, rule: CustomRule, data: Any, on_device: bool) -> None:
    dtype, p, g, slots = data.draw(custom_arrays(rule))
    expected_p, expected_slots = rule.program(XP, p, g, slots, rule.hp)
    trace = _trace.trace_program(rule.program, rule.program.slot_names, _trace.hp_signature(rule.hp))
    step = LeafStep(rule.program, p, g, slots, rule.hp)
    actual_p, actual_slots = _run_harness(harness, trace, step, on_device)
    _assert_same(actual_p, expected_p, dtype, "param")
    for name in slots:
        _assert_same(actual_slots[name], np.broadcast_to(expected_slots[name], p.shape), dtype, name)


# --------------------------------------------------------------------------- the CuPy engine's logic, on NumPy


class _StandInKernel:
    """Takes exactly a CuPy kernel's arguments and computes with the trace interpreter."""

    def __init__(self, trace: _trace.Trace, source: KernelSource):
        self.trace, self.source = trace, source

    def __call__(self, *args: Any) -> None:
        inputs, outputs = args[: len(self.source.inputs)], args[len(self.source.inputs) :]
        bound = dict(zip(self.source.inputs, inputs, strict=True))
        targets = dict(zip(self.source.outputs, outputs, strict=True))
        p = targets[("param", None)]
        assert all(t.shape == p.shape and t.dtype == p.dtype for t in targets.values())
        table = bound.get(("scalar_table", None))
        if table is not None:
            assert table.dtype == np.float64
            scalars = [p.dtype.type(value) for value in table]
        else:
            scalars = [bound[("scalar", k)] for k in range(len(self.trace.kernel_scalars))]
            assert all(type(value) is p.dtype.type for value in scalars)  # typed like the parameter
        hp = {name: bound[("hp_array", name)] for name in self.trace.hp_arrays}
        slots = {name: targets[("slot", name)] for name in self.trace.slot_names}
        new_p, new_slots = evaluate(self.trace, XP, p, bound[("grad", None)], slots, hp, scalars=scalars)
        p[...] = new_p
        for name, value in new_slots.items():
            slots[name][...] = value


class NumpyStandInDevice(CupyDevice):
    """The CuPy engine's few CuPy calls replaced by NumPy ones; counts ElementwiseKernel launches."""

    def __init__(self) -> None:
        super().__init__()
        self.launches: list[int] = []

    def launch(self, kernel: Any, args: Any) -> None:
        self.launches.append(args[-1].size)
        kernel(*args)

    @staticmethod
    def is_array(a: Any) -> bool:
        return isinstance(a, np.ndarray)

    @staticmethod
    def address(a: Any) -> int:
        return a.__array_interface__["data"][0]

    @staticmethod
    def owner(a: Any) -> Any:
        return a if a.base is None else a.base

    @staticmethod
    def span(leaves: Any) -> Any:
        first = leaves[0]
        owner = first if first.base is None else first.base
        offset = (first.__array_interface__["data"][0] - owner.__array_interface__["data"][0]) // first.itemsize
        return owner.reshape(-1)[offset : offset + sum(leaf.size for leaf in leaves)]

    @staticmethod
    def contiguous(g: Any) -> Any:
        return np.ascontiguousarray(g)

    @staticmethod
    def hp_array(value: Any, dtype: Any) -> Any:
        return np.asarray(value, dtype=dtype)

    @staticmethod
    def elementwise_kernel(trace: _trace.Trace, source: KernelSource) -> Any:
        return _StandInKernel(trace, source)


class NumpyStandInEngine(CupyEngine):
    """The CuPy engine with a NumPy stand-in of its device; ``launches`` holds the size of each kernel launch."""

    def __init__(self, device: NumpyStandInDevice | None = None) -> None:
        super().__init__()
        self.device = NumpyStandInDevice() if device is None else device
        self.launches = self.device.launches


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> NumpyStandInEngine:
    """Make optimizers on NumPy arrays run the CuPy engine's logic (with engine="fused" or "auto")."""
    import anyoptim.optimizers.base
    from anyoptim.engines import select_engine

    engine = NumpyStandInEngine()

    def choose(xp: Any, choice: str) -> Any:
        return select_engine(xp, "generic") if choice == "generic" else engine

    monkeypatch.setattr(anyoptim.optimizers.base, "select_engine", choose)
    return engine


def _run_both(config: Config, case: Case, params: dict, *, flat_grads: bool) -> tuple[dict, Any, dict, Any]:
    """Run the fused and generic engines side by side; the fused one gets one gradient buffer, refilled each
    step as a training loop does (flat when ``flat_grads``), which also exercises the optimizer's prepared path."""
    fused, generic = config.make("fused"), config.make("generic")
    p_fused, p_generic = params, _copy(case.params)
    s_fused, s_generic = fused.init(p_fused), generic.init(p_generic)
    buffer = anyoptim.flatten(_copy(case.grads[0])) if flat_grads else _copy(case.grads[0])
    for grads in case.grads:
        for name, value in grads.items():
            buffer[name][...] = value
        p_fused, s_fused = fused.step(p_fused, buffer, s_fused)
        p_generic, s_generic = generic.step(p_generic, grads, s_generic)
    return p_fused, s_fused, p_generic, s_generic


def _assert_trees_same(actual: dict, expected: dict, dtype: str) -> None:
    for name in expected:
        _assert_same(actual[name], expected[name], dtype, name)


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=10)
@given(case=cases(max_steps=4))
def test_engine_logic_on_flat_params_matches_generic(stand_in: NumpyStandInEngine, config: Config, case: Case) -> None:
    stand_in.launches.clear()
    flat = anyoptim.flatten(_copy(case.params))
    p_fused, s_fused, p_generic, s_generic = _run_both(config, case, flat, flat_grads=True)
    _assert_trees_same(p_fused, p_generic, case.dtype)
    for slot in s_generic.slots:
        _assert_trees_same(s_fused.slots[slot], s_generic.slots[slot], case.dtype)
    assert s_fused.count == s_generic.count == len(case.grads)
    for name, leaf in p_fused.items():
        assert leaf is flat[name]  # updated in place
    # One launch per step for a flat model, or one per weight-decay group (W decayed; b and z, adjacent, not).
    optimizer = config.make("fused")
    groups = 2 if optimizer.weight_decay and optimizer.weight_decay_mask is anyoptim.decay_weights_only else 1
    assert len(stand_in.launches) == groups * len(case.grads)


@settings(max_examples=10)
@given(case=cases(max_steps=3))
def test_engine_logic_launches_once_per_leaf_when_not_flat(stand_in: NumpyStandInEngine, case: Case) -> None:
    stand_in.launches.clear()
    config = next(c for c in CONFIGS if c.id == "adam")
    p_fused, _, p_generic, _ = _run_both(config, case, _copy(case.params), flat_grads=False)
    _assert_trees_same(p_fused, p_generic, case.dtype)
    assert len(stand_in.launches) == len(case.params) * len(case.grads)


def test_engine_logic_falls_back_for_strided_and_half_leaves(stand_in: NumpyStandInEngine) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 3))
    params = {"T": base.T, "h": rng.normal(size=5).astype(np.float16), "w": rng.normal(size=6)}
    reference = {name: np.array(value, copy=True) for name, value in params.items()}
    fused, generic = anyoptim.Adam(0.1, engine="fused"), anyoptim.Adam(0.1, engine="generic")
    s_fused, s_generic = fused.init(params), generic.init(reference)
    grads = {name: np.ones_like(value) for name, value in params.items()}
    for _ in range(3):
        params, s_fused = fused.step(params, grads, s_fused)
        reference, s_generic = generic.step(reference, grads, s_generic)
    for name in params:
        _assert_same(params[name], reference[name], "float64", name)
    # The strided and float16 leaves took the generic path at the first step; "T" came back as new contiguous
    # arrays (state too), which the kernel takes from then on, in a run of its own.
    assert stand_in.launches == [6, 12, 6, 12, 6]


def test_engine_logic_splits_runs_by_dtype(stand_in: NumpyStandInEngine) -> None:
    params = anyoptim.flatten(
        {"a": np.ones(3, np.float32), "b": np.ones(2, np.float64), "c": np.ones(4, np.float32), "d": np.ones(1)}
    )
    optimizer = anyoptim.Momentum(0.1, engine="fused")
    state = optimizer.init(params)
    optimizer.step(params, anyoptim.flatten({name: np.ones_like(value) for name, value in params.items()}), state)
    # a and c lie back to back in the float32 buffer, b and d in the float64 one.
    assert sorted(stand_in.launches) == [3, 7]


GRAPH_CONFIGS = [
    pytest.param(
        lambda e: anyoptim.AdamW(anyoptim.schedules.exponential_decay(0.05, 1, 0.8), weight_decay=0.1, engine=e),
        id="adamw-schedule-masked",
    ),
    pytest.param(lambda e: anyoptim.RAdam(0.02, engine=e), id="radam-both-branches"),
    pytest.param(lambda e: anyoptim.Lion(1e-3, clip_value=0.5, engine=e), id="lion-clip-value"),
    pytest.param(lambda e: anyoptim.RMSprop(0.01, centered=True, momentum=0.5, engine=e), id="rmsprop"),
]


@pytest.mark.parametrize("make", GRAPH_CONFIGS)
def test_scalar_table_replays_equal_generic_steps(
    stand_in: NumpyStandInEngine, monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    """What GraphedStep does on the host, simulated on NumPy: a warm-up step in scalar-table mode (undone),
    a recording of the launches, then replays that refill the table from the optimizer's own step scalars."""
    capture = warm_up_for_capture(monkeypatch, make, seed=7, extra=4)
    recorded: list[tuple[Any, list[Any]]] = []
    stand_in.device.launch = lambda kernel, args: recorded.append((kernel, list(args)))  # capture: record, do not run
    with scalars_on_device(capture.plan):
        capture.optimizer.step(capture.params, capture.grads, capture.state)
    del stand_in.device.launch
    assert len(recorded) == len(capture.plan.entries) == (2 if capture.optimizer.weight_decay else 1)

    def replay() -> None:
        for kernel, args in recorded:
            kernel(*args)

    check_replays(capture, replay)
