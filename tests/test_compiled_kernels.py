"""The NumPy engine's compiled C kernels (``engines._compiled``, ``engines._native``).

* Every built-in optimizer's plan has a C form, and the engine runs it as one.
* The kernel equals the ufunc plan bit for bit: every optimizer on
  Hypothesis-drawn spans holding NaN, infinities, signed zeros and subnormals,
  and the rule contract's corners (maximum, minimum, sign, where, abs, 0-D
  array hyperparameters, a float64 scalar lifting float32 values).
* What has no C form (``**`` on arrays) runs as ufuncs, with the same results.
* Spans sharing scalars share a call; spans with other scalars get theirs.
* A prepared step keeps alive what its kernel's frame points into.
* The compiler, the cache and the fallbacks: kernels are built once per
  source and reused from disk; no compiler means ufuncs (``auto``) or an
  error (``c``); a failing compiler warns once and falls back (``auto``) or
  raises (``c``); ``ANYOPTIM_NUMPY_KERNELS`` is checked.
"""

from __future__ import annotations

import gc
import itertools
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim import rules
from anyoptim.engines import _native
from anyoptim.engines._compiled import CompiledSpans, c_source
from anyoptim.engines.numpy import NumpyEngine
from tests.test_numpy_engine import CONFIG_PARAMS, Config, _program_and_scalars

pytestmark = pytest.mark.skipif(not _native.compiler_found(), reason="no C compiler on this machine")


def _bits(array: np.ndarray) -> np.ndarray:
    """The bit patterns of a float array, so that -0.0 differs from 0.0; every NaN as one pattern.

    IEEE 754 leaves the sign and payload of a NaN made by an invalid operation
    open (x86 makes it negative; NumPy's SIMD code may make it positive), so
    only where NaNs are is compared.
    """
    return np.where(np.isnan(array), np.nan, array).view(np.uint32 if array.dtype == np.float32 else np.uint64)


def _run_engine(kernels: str, program, slot_names, buffers, sizes, hp) -> dict[str, np.ndarray]:
    """Copies of ``buffers`` after one step of ``program`` over spans of ``sizes`` (leaves back to back)."""
    work = {role: value.copy() for role, value in buffers.items()}
    offsets = np.cumsum([0, *sizes])

    def leaves(role: str) -> list[np.ndarray]:
        return [work[role][a:b] for a, b in itertools.pairwise(offsets)]

    hps = [hp] * len(sizes)
    NumpyEngine(kernels=kernels).apply(
        program, np, leaves("p"), leaves("g"), {name: leaves(name) for name in slot_names}, hps
    )
    return work


def _special_floats(dtype: Any) -> st.SearchStrategy:
    width = 32 if dtype == np.float32 else 64
    return st.one_of(
        st.floats(-3, 3, width=width),
        st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan]),
        st.floats(allow_nan=True, allow_infinity=True, width=width),  # subnormals and huge values too
    )


# --------------------------------------------------------------------------- every optimizer, compiled


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_optimizer_runs_as_a_compiled_kernel(config: Config, dtype: Any) -> None:
    program, hp, slot_names, _ = _program_and_scalars(config, 3, dtype)
    engine = NumpyEngine(kernels="c")
    plan = engine.plan(program, np.dtype(dtype), slot_names, hp, ())
    assert c_source(plan, "k") is not None
    p, g = np.ones(7, dtype), np.full(7, 0.5, dtype)
    slots = {name: [np.full(7, 0.25, dtype)] for name in slot_names}
    step = engine.prepare(program, np, [p], [g], slots, [hp])
    assert [type(runner) for runner in step.runners] == [CompiledSpans]


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    dtype=st.sampled_from([np.float32, np.float64]),
    count=st.integers(0, 30),
    data=st.data(),
)
def test_compiled_kernels_equal_the_ufunc_plan_bit_for_bit(config: Config, sizes, dtype, count, data) -> None:
    """Same nodes, same order, same dtypes and casts: the same bits, special values included."""
    program, hp, slot_names, _ = _program_and_scalars(config, count, dtype)
    total = sum(sizes)
    buffers = {
        role: data.draw(hnp.arrays(dtype, (total,), elements=_special_floats(dtype)), label=role)
        for role in ("p", "g", *slot_names)
    }
    with np.errstate(all="ignore"):
        compiled = _run_engine("c", program, slot_names, buffers, sizes, hp)
        ufuncs = _run_engine("ufunc", program, slot_names, buffers, sizes, hp)
    for role in buffers:
        np.testing.assert_array_equal(_bits(compiled[role]), _bits(ufuncs[role]), err_msg=role)


def _contract_rule(xp, p, g, slots, hp):
    """The rule contract's operations other than ``**``, with NumPy's corners (signed zeros, NaN, ties)."""
    scale = hp["scale"] * 2.0  # a 0-D array hyperparameter
    clipped = xp.clip(g * scale, min=-1.0, max=hp["top"])
    bigger = xp.maximum(slots["a"], xp.minimum(-g, hp["beta"]))
    tie = xp.maximum(p, g) - xp.minimum(g, p)  # ties and signed zeros pick the second operand, as NumPy
    kept = xp.where(g > 0, slots["a"], 0.5)
    step = hp["lr"] * (clipped + xp.sign(g) * (1 - hp["beta"])) + xp.abs(p) * 0.0
    return p - step + 0 * tie, {"a": bigger, "b": hp["beta"], "c": kept, "d": -slots["d"] / (xp.sqrt(xp.abs(g)) + 1)}


@pytest.mark.parametrize("lr", [0.1, np.float32(0.1), np.float64(0.1)], ids=["python", "float32", "float64"])
@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), size=st.integers(1, 50), data=st.data())
def test_the_contract_corners_compile_to_numpys_bits(lr: Any, dtype, size, data) -> None:
    program = rules.Program(rule=_contract_rule, slot_names=tuple("abcd"))
    hp = {"lr": lr, "beta": 0.9, "top": 1.5, "scale": np.asarray(0.5, dtype=dtype)}
    slot_names = list(program.slot_names)
    plan = NumpyEngine(kernels="c").plan(program, np.dtype(dtype), slot_names, hp, ())
    assert c_source(plan, "k") is not None
    buffers = {
        role: data.draw(hnp.arrays(dtype, (size,), elements=_special_floats(dtype)), label=role)
        for role in ("p", "g", *slot_names)
    }
    with np.errstate(all="ignore"):
        compiled = _run_engine("c", program, slot_names, buffers, [size], hp)
        ufuncs = _run_engine("ufunc", program, slot_names, buffers, [size], hp)
    for role in buffers:
        np.testing.assert_array_equal(_bits(compiled[role]), _bits(ufuncs[role]), err_msg=role)


def _cube_rule(xp, p, g, slots, hp):
    return p - hp["lr"] * g**3, {}


def test_array_powers_have_no_c_form_and_run_as_ufuncs() -> None:
    """NumPy's power is its own SIMD code; no C library matches its last bit."""
    program = rules.Program(rule=_cube_rule)
    hp = {"lr": 0.1}
    engine = NumpyEngine(kernels="c")
    plan = engine.plan(program, np.dtype(np.float64), [], hp, ())
    assert c_source(plan, "k") is None
    assert engine.kernel(plan) is None
    p, g = np.linspace(-1, 1, 9), np.linspace(2, -2, 9)
    expected = p - 0.1 * np.power(g, np.asarray(3.0))
    (new_p,), _ = engine.apply(program, np, [p], [g], {}, [hp])
    np.testing.assert_array_equal(new_p, expected)


# --------------------------------------------------------------------------- spans, scalars, lifetimes


def test_spans_with_other_scalars_get_their_own() -> None:
    """Leaves with one scalars mapping share a call; a leaf with another mapping is run with its values."""
    program = rules.Program(rule=_scaled_rule)
    leaves = [np.ones(5), np.ones(3), np.ones(4)]
    grads = [np.full(5, 2.0), np.full(3, 2.0), np.full(4, 2.0)]
    shared, other = {"lr": 0.5}, {"lr": 0.25}
    engine = NumpyEngine(kernels="c")
    step = engine.prepare(program, np, leaves, grads, {}, [shared, shared, other])
    step([shared, shared, other])
    for leaf, lr in zip(leaves, [0.5, 0.5, 0.25], strict=True):
        np.testing.assert_array_equal(leaf, 1.0 - lr * 2.0)


def _scaled_rule(xp, p, g, slots, hp):
    return p - hp["lr"] * g, {}


def test_a_prepared_step_keeps_its_arrays_alive() -> None:
    """The kernel's frame holds raw addresses: the step function alone must keep their arrays alive."""
    optimizer = anyoptim.Adam(0.1, engine="fused")
    params = anyoptim.flatten({"W": np.ones((4, 3)), "b": np.zeros(3)})
    state = optimizer.init(params)
    grads = anyoptim.flatten({"W": np.full((4, 3), 0.5), "b": np.full(3, 0.5)})
    params, state = optimizer.step(params, grads, state)
    run, _ = optimizer._prepared.runs[0]
    expected = anyoptim.Adam(0.1, engine="generic")
    reference = {"W": np.ones((4, 3)), "b": np.zeros(3)}
    reference_state = expected.init(reference)
    for _ in range(2):
        reference, reference_state = expected.step(reference, {"W": grads["W"], "b": grads["b"]}, reference_state)
    del optimizer
    gc.collect()
    hps = [{"learning_rate": 0.1, **anyoptim.Adam(0.1)._step_scalars(1)}] * 2
    run(hps)  # the engine's step object, the optimizer and its prepared step are gone: the frame must be valid
    np.testing.assert_allclose(params["W"], reference["W"], rtol=1e-12)
    np.testing.assert_allclose(params["b"], reference["b"], rtol=1e-12)


# --------------------------------------------------------------------------- compiler, cache, fallbacks


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """An empty kernel cache in tmp_path and no kernel loaded in this process."""
    monkeypatch.setenv("ANYOPTIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "_warned", False)
    return tmp_path / "cache" / "kernels"


_SOURCE = (
    "#include <stdint.h>\nvoid anyoptim_probe(const int64_t *frame) { ((double *)(uintptr_t)frame[0])[0] += 1.0; }\n"
)


def _probe(function) -> float:
    value = np.zeros(1)
    frame = np.array([value.ctypes.data], dtype=np.int64)
    function(frame.ctypes.data)
    return float(value[0])


def test_a_kernel_is_built_once_and_then_loaded_from_the_cache(fresh_native, monkeypatch) -> None:
    function = _native.load_kernel(_SOURCE, "anyoptim_probe")
    assert _probe(function) == 1.0
    assert _native.load_kernel(_SOURCE, "anyoptim_probe") is function  # loaded once per process
    built = sorted(path.name for path in fresh_native.iterdir())
    assert len(built) == 1 and built[0].startswith("anyoptim_probe-")  # no sources or partial files left

    def no_compiling(*args: Any) -> None:
        raise AssertionError("the cached library should have been loaded, not rebuilt")

    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "_build", no_compiling)
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0


def test_an_unwritable_cache_directory_falls_back_to_a_private_one(monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ANYOPTIM_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(_native, "_loaded", {})
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0


def test_no_compiler_means_ufuncs_in_auto_and_an_error_in_c(monkeypatch) -> None:
    monkeypatch.setattr(_native, "_compiler", None)
    monkeypatch.setattr(_native, "_compiler_command", lambda: None)
    with pytest.raises(_native.KernelBuildError, match="no C compiler found"):
        NumpyEngine(kernels="c")
    engine = NumpyEngine(kernels="auto")
    assert engine.kernels == "ufunc"
    p = np.ones(4)
    (new_p,), _ = engine.apply(rules.Program(rule=_scaled_rule), np, [p], [np.ones(4)], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(new_p, 0.5)


def test_a_failing_compiler_warns_once_in_auto_and_raises_in_c(fresh_native, monkeypatch) -> None:
    monkeypatch.setattr(_native, "_compiler", (["false"], "a compiler that always fails"))
    program, p, g = rules.Program(rule=_scaled_rule), np.ones(4), np.ones(4)
    with pytest.raises(_native.KernelBuildError, match="failed"):
        NumpyEngine(kernels="c").apply(program, np, [p], [g], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(p, 1.0)  # nothing ran
    engine = NumpyEngine(kernels="auto")
    with pytest.warns(_native.KernelBuildWarning, match="ANYOPTIM_NUMPY_KERNELS=ufunc"):
        (new_p,), _ = engine.apply(program, np, [p], [g], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(new_p, 0.5)
    assert engine.kernels == "ufunc"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NumpyEngine(kernels="auto").apply(program, np, [p], [g], {}, [{"lr": 0.5}])  # said once per process
    np.testing.assert_array_equal(p, 0.0)


def test_the_kernels_setting_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("ANYOPTIM_NUMPY_KERNELS", "fast")
    with pytest.raises(ValueError, match="ANYOPTIM_NUMPY_KERNELS must be one of auto, c, ufunc"):
        NumpyEngine()
    with pytest.raises(ValueError, match="kernels must be one of"):
        NumpyEngine(kernels="gcc")
    monkeypatch.setenv("ANYOPTIM_NUMPY_KERNELS", "ufunc")
    engine = NumpyEngine()
    program, hp = _program_and_scalars(Config("adam", lambda e: anyoptim.Adam(0.01, engine=e)), 1, np.float64)[:2]
    plan = engine.plan(program, np.dtype(np.float64), ["m", "v"], hp, ())
    assert engine.kernels == "ufunc" and engine.kernel(plan) is None


class _SecondPrepareFails(NumpyEngine):
    """An engine whose second ``prepare`` of a step raises (a kernel that fails to build, say)."""

    def __init__(self) -> None:
        super().__init__(kernels="c")
        self.calls = 0

    def prepare(self, *arguments: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            raise _native.KernelBuildError("the second program's kernel did not build")
        return super().prepare(*arguments)


def test_every_program_is_prepared_before_any_runs() -> None:
    """Decayed and undecayed leaves are two programs: a failure preparing the second changes nothing."""
    optimizer = anyoptim.AdamW(0.1, weight_decay=0.1, engine=_SecondPrepareFails())
    params = anyoptim.flatten({"W": np.ones((3, 2)), "b": np.ones(2)})
    state = optimizer.init(params)
    grads = {"W": np.full((3, 2), 0.5), "b": np.full(2, 0.5)}
    with pytest.raises(_native.KernelBuildError, match="second program"):
        optimizer.step(params, grads, state)
    np.testing.assert_array_equal(params["W"], 1.0)
    np.testing.assert_array_equal(params["b"], 1.0)
    for slot in state.slots.values():
        for value in slot.values():
            np.testing.assert_array_equal(value, 0.0)
