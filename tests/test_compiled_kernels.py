"""The NumPy engine's compiled C kernels (``engines.numpy.c_printer``, ``runners``, ``native``).

* Every built-in optimizer's plan has a C form, and the engine runs it as one.
* The kernel equals the ufunc plan bit for bit: every optimizer on
  Hypothesis-drawn spans holding NaN, infinities, signed zeros and subnormals,
  and the rule contract's corners (maximum, minimum, sign, where, abs, 0-D
  array hyperparameters, a float64 scalar lifting float32 values).
* What has no C form (``**`` on arrays) runs as ufuncs, with the same results;
  so do arrays a kernel must not touch through raw addresses (byte-swapped,
  misaligned, of another dtype or length, read-only slots).
* Spans sharing scalars share a call; spans with other scalars get theirs.
* A prepared step keeps alive what its kernel's frame points into.
* The compiler, the cache and the fallbacks: kernels are built once per
  source and reused from disk, a damaged cached library is rebuilt, a cache
  directory others can write to is not used, no home directory means no
  cache directory; no compiler (or one whose ``--version`` fails) means
  ufuncs (``auto``) or an error (``c``); a failing compiler or file system
  warns once and falls back (``auto``) or raises (``c``);
  ``ANYOPTIM_NUMPY_KERNELS`` is checked.
* A failed build is remembered for that kernel only: it is not built again
  (not per step, not per engine), it warns once, other kernels still compile,
  ``kernels="c"`` still raises for it, and the engine's ``kernels`` stays the
  configured choice.  The engine's caches are safe across threads and forks.
"""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import os
import threading
import warnings
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim.engines.numpy import NumpyEngine
from anyoptim.engines.numpy import native as _native
from anyoptim.engines.numpy.c_printer import c_source
from anyoptim.engines.numpy.runners import CompiledSpans, spans_fit_a_kernel
from anyoptim.engines.program import Program
from tests.helpers import exit_status_of_child
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
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    size=st.integers(1, 50),
    beta=st.sampled_from([0.9, 0.0, -0.0, 1.0, np.inf]),
    top=st.sampled_from([1.5, 0.0, -0.0, -1.0, np.inf]),
    scale_dtype=st.sampled_from([None, np.float32, np.float64, np.int64]),
    data=st.data(),
)
def test_the_contract_corners_compile_to_numpys_bits(lr: Any, dtype, size, beta, top, scale_dtype, data) -> None:
    """Scalars meeting arrays at ties and signed zeros, and 0-D hyperparameters of other dtypes, included."""
    program = Program(rule=_contract_rule, slot_names=tuple("abcd"))
    scale = np.asarray(0.5 if scale_dtype is not np.int64 else 2, dtype=scale_dtype or dtype)
    hp = {"lr": lr, "beta": beta, "top": top, "scale": scale}
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
    program = Program(rule=_cube_rule)
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


def _scaled_rule(xp, p, g, slots, hp):
    return p - hp["lr"] * g, {}


def test_spans_with_other_scalars_get_their_own() -> None:
    """Leaves with one scalars mapping share a call; a leaf with another mapping is run with its values."""
    program = Program(rule=_scaled_rule)
    leaves = [np.ones(5), np.ones(3), np.ones(4)]
    grads = [np.full(5, 2.0), np.full(3, 2.0), np.full(4, 2.0)]
    shared, other = {"lr": 0.5}, {"lr": 0.25}
    engine = NumpyEngine(kernels="c")
    step = engine.prepare(program, np, leaves, grads, {}, [shared, shared, other])
    step([shared, shared, other])
    for leaf, lr in zip(leaves, [0.5, 0.5, 0.25], strict=True):
        np.testing.assert_array_equal(leaf, 1.0 - lr * 2.0)


def test_a_prepared_step_keeps_its_arrays_alive() -> None:
    """The kernel's frame holds raw addresses: the step function alone must keep what they point into alive."""
    optimizer = anyoptim.Adam(0.1, engine=NumpyEngine(kernels="c"))
    params = anyoptim.flatten({"W": np.ones((4, 3)), "b": np.zeros(3)})
    state = optimizer.init(params)
    grads = anyoptim.flatten({"W": np.full((4, 3), 0.5), "b": np.full(3, 0.5)})
    params, state = optimizer.step(params, grads, state)
    run, _ = optimizer._prepared.runs[0]
    reference_optimizer = anyoptim.Adam(0.1, engine="generic")
    reference = {"W": np.ones((4, 3)), "b": np.zeros(3)}
    reference_state = reference_optimizer.init(reference)
    for _ in range(2):
        reference, reference_state = reference_optimizer.step(reference, dict(grads), reference_state)
    buffer = weakref.ref(params["W"].base)  # the flat parameter buffer: only the step may keep it now
    hps = [{"learning_rate": 0.1, **optimizer._step_scalars(1)}] * 2
    del optimizer, params, state, grads
    gc.collect()
    litter = [np.full(n, -1, dtype=np.int64) for n in range(1, 64) for _ in range(4)]  # reuse freed memory
    run(hps)
    assert buffer() is not None, "the step let go of the parameters its frame points into"
    np.testing.assert_allclose(buffer()[:12], reference["W"].reshape(-1), rtol=1e-12)
    np.testing.assert_allclose(buffer()[12:], reference["b"], rtol=1e-12)
    del litter


def test_only_arrays_a_kernel_can_take_get_one() -> None:
    """Byte-swapped, misaligned, mismatched or read-only columns run as ufuncs, which cast or raise as NumPy does."""
    good = [np.ones(4), np.ones(4), np.ones(4)]
    assert spans_fit_a_kernel([good], np.float64)
    misaligned = np.frombuffer(bytearray(4 * 8 + 1), dtype=np.float64, offset=1, count=4).copy()
    raw = np.zeros(4 * 8 + 1, dtype=np.uint8)[1:].view(np.float64)  # C-contiguous, writeable, not aligned
    assert misaligned.flags.aligned and not raw.flags.aligned
    read_only = np.ones(4)
    read_only.setflags(write=False)
    for bad in (
        [good[0].astype(">f8"), good[1], good[2]],  # byte-swapped
        [raw, good[1], good[2]],  # misaligned
        [good[0], good[1].astype(np.float32), good[2]],  # another dtype
        [good[0], np.ones(3), good[2]],  # shorter
        [good[0], good[1], read_only],  # a read-only slot
        [good[0], good[1], np.ones((2, 2))],  # not 1-D
    ):
        assert not spans_fit_a_kernel([bad], np.float64)
    assert spans_fit_a_kernel([[good[0], read_only, good[2]]], np.float64)  # a read-only gradient is only read
    assert not spans_fit_a_kernel([[good[0].astype(">f8")] * 3], np.dtype(">f8"))


@pytest.mark.parametrize("layout", ["byte-swapped", "misaligned"])
def test_unusual_memory_gives_the_generic_results(layout: str) -> None:
    def lay_out(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if layout == "byte-swapped":
            return value.astype(dtype)
        raw = np.zeros(value.nbytes + 1, dtype=np.uint8)[1:].view(value.dtype)
        raw[...] = value
        return raw

    results = {}
    for engine in (NumpyEngine(kernels="c"), "generic"):
        optimizer = anyoptim.Adam(0.1, engine=engine)
        params = {"w": lay_out(np.linspace(-1, 1, 7), np.dtype(">f8"))}
        state = optimizer.init(params)
        for _ in range(3):  # the generic engine's results are native-endian: the gradients follow the params
            grads = {"w": lay_out(np.linspace(2, -2, 7), params["w"].dtype)}
            params, state = optimizer.step(params, grads, state)
        results[str(engine)] = np.asarray(params["w"], dtype=np.float64)
    fused, generic = results.values()
    np.testing.assert_array_equal(fused, generic)


# --------------------------------------------------------------------------- compiler, cache, fallbacks


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """An empty kernel cache in tmp_path and no kernel loaded in this process."""
    monkeypatch.setenv("ANYOPTIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "_failed", {})
    monkeypatch.setattr(_native, "_warned", set())
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
    assert len(built) == 2 and built[0].startswith("anyoptim_probe-")  # the library and its record, nothing else
    assert built[1] == built[0] + ".sha256"

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
    monkeypatch.setattr(_native, "_fallback_dir", None)
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    private = _native._fallback_dir
    assert private is not None and any(path.name.startswith("anyoptim_probe-") for path in private.iterdir())


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_cache_directory_others_can_write_to_is_not_used(fresh_native, monkeypatch) -> None:
    """A library loaded from a directory others can write runs their code in this process."""
    fresh_native.mkdir(parents=True)
    fresh_native.chmod(0o777)
    monkeypatch.setattr(_native, "_fallback_dir", None)
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    assert list(fresh_native.iterdir()) == []
    assert any(path.name.startswith("anyoptim_probe-") for path in _native._fallback_dir.iterdir())


def test_no_home_directory_means_no_cache_directory(monkeypatch) -> None:
    monkeypatch.delenv("ANYOPTIM_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)  # no HOME and no passwd entry: "~" stays
    assert _native.cache_dir() is None


def test_a_damaged_cached_library_is_built_again(fresh_native, monkeypatch) -> None:
    with monkeypatch.context() as patch:  # an earlier process built it (this one must not map the file)
        patch.setattr(_native, "_load", lambda path, symbol: None)
        _native.load_kernel(_SOURCE, "anyoptim_probe")
    (library,) = (path for path in fresh_native.iterdir() if path.suffix == ".so")
    library.write_bytes(b"")  # what an unflushed rename can leave after a crash
    monkeypatch.setattr(_native, "_loaded", {})
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    assert library.stat().st_size > 0


def test_a_file_system_error_while_building_is_a_build_error(fresh_native, monkeypatch) -> None:
    """A full disk while compiling is a failed build: auto falls back to ufuncs, and nothing is left in the cache."""
    run = _native.subprocess.run

    def full_disk(command: Any, *args: Any, **kwargs: Any) -> Any:
        if "-o" in command:
            raise OSError(28, "No space left on device")
        return run(command, *args, **kwargs)

    monkeypatch.setattr(_native.subprocess, "run", full_disk)
    with pytest.raises(_native.KernelBuildError, match="No space left"):
        _native.load_kernel(_SOURCE, "anyoptim_probe")
    assert not fresh_native.exists() or list(fresh_native.iterdir()) == []
    engine = NumpyEngine(kernels="auto")
    with pytest.warns(_native.KernelBuildWarning):
        (new_p,), _ = engine.apply(Program(rule=_scaled_rule), np, [np.ones(3)], [np.ones(3)], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(new_p, 0.5)


def test_a_full_disk_while_caching_leaves_the_kernel_working_and_the_cache_clean(fresh_native, monkeypatch) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_native.kernel_cache.os, "fsync", full_disk)
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    assert list(fresh_native.iterdir()) == []


@pytest.mark.parametrize("cc", ["sh -c 'exit 1'", "no-such-compiler-anywhere"])
def test_a_compiler_that_does_not_run_is_no_compiler(monkeypatch, cc: str) -> None:
    """$CC is the only candidate when set; one that is missing or fails --version means no compiler."""
    monkeypatch.setenv("CC", cc)
    monkeypatch.setattr(_native, "_compiler", None)
    assert not _native.compiler_found()
    with pytest.raises(_native.KernelBuildError):
        NumpyEngine(kernels="c")
    assert NumpyEngine(kernels="auto").kernels == "ufunc"


def test_no_compiler_means_ufuncs_in_auto_and_an_error_in_c(monkeypatch) -> None:
    monkeypatch.setattr(_native, "_compiler", None)
    monkeypatch.setattr(_native, "_compiler_command", lambda: None)
    with pytest.raises(_native.KernelBuildError, match="no C compiler found"):
        NumpyEngine(kernels="c")
    engine = NumpyEngine(kernels="auto")
    assert engine.kernels == "ufunc"
    p = np.ones(4)
    (new_p,), _ = engine.apply(Program(rule=_scaled_rule), np, [p], [np.ones(4)], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(new_p, 0.5)


def test_a_failing_compiler_warns_once_in_auto_and_raises_in_c(fresh_native, monkeypatch) -> None:
    monkeypatch.setattr(_native, "_compiler", (["false"], "a compiler that always fails"))
    program, p, g = Program(rule=_scaled_rule), np.ones(4), np.ones(4)
    with pytest.raises(_native.KernelBuildError, match="failed"):
        NumpyEngine(kernels="c").apply(program, np, [p], [g], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(p, 1.0)  # nothing ran
    engine = NumpyEngine(kernels="auto")
    with pytest.warns(_native.KernelBuildWarning, match="ANYOPTIM_NUMPY_KERNELS=ufunc"):
        (new_p,), _ = engine.apply(program, np, [p], [g], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(new_p, 0.5)
    assert engine.kernels == "auto"  # the configured choice: only this kernel runs as ufuncs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NumpyEngine(kernels="auto").apply(program, np, [p], [g], {}, [{"lr": 0.5}])  # said once per kernel
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


# --------------------------------------------------------------------------- a failed kernel is that kernel's alone


def _halved_rule(xp, p, g, slots, hp):
    return p - hp["lr"] * g * 0.5, {}


@pytest.fixture
def scaled_rule_fails(fresh_native, monkeypatch) -> list[str]:
    """The compiler fails on the kernels of ``_scaled_rule`` only; returns the names of every library built."""
    built: list[str] = []
    build = _native._build

    def failing_for_one_rule(source: str, command: list[str], target: Any) -> None:
        built.append(target.name)
        if target.name.startswith("anyoptim__scaled_rule_"):
            raise _native.KernelBuildError("the compiler rejects this one kernel")
        build(source, command, target)

    monkeypatch.setattr(_native, "_build", failing_for_one_rule)
    return built


def _runner_types(engine: NumpyEngine, rule: Any) -> list[type]:
    step = engine.prepare(Program(rule=rule), np, [np.ones(4)], [np.ones(4)], {}, [{"lr": 0.5}])
    return [type(runner) for runner in step.runners]


def test_one_kernel_failing_does_not_stop_another_from_compiling(scaled_rule_fails) -> None:
    engine = NumpyEngine(kernels="auto")
    with pytest.warns(_native.KernelBuildWarning, match="anyoptim__scaled_rule_float64"):
        assert _runner_types(engine, _scaled_rule) != [CompiledSpans]
    assert engine.kernels == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _runner_types(engine, _halved_rule) == [CompiledSpans]  # built after the failure, no warning
        p = np.ones(4)
        (new_p,), _ = engine.apply(Program(rule=_scaled_rule), np, [p], [np.ones(4)], {}, [{"lr": 0.5}])
    np.testing.assert_array_equal(new_p, 0.5)  # the failed kernel's plan runs as ufuncs, with the same results
    assert [name.split("-")[0] for name in scaled_rule_fails] == [
        "anyoptim__scaled_rule_float64",
        "anyoptim__halved_rule_float64",
    ]


def test_a_failed_kernel_is_not_built_again(scaled_rule_fails) -> None:
    """Not at the next step, not for a new step or a new engine, not for ``kernels="c"``, which still raises."""
    optimizer = anyoptim.SGD(0.5, engine=NumpyEngine(kernels="auto"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            params = {"w": np.ones(4)}
            for _ in range(3):
                params, _ = optimizer.step(params, {"w": np.ones(4)}, optimizer.init(params))
            NumpyEngine(kernels="auto").apply(
                Program(rule=_scaled_rule), np, [np.ones(4)], [np.ones(4)], {}, [{"lr": 0.5}]
            )
    assert sum(issubclass(warning.category, _native.KernelBuildWarning) for warning in caught) == 1
    assert [name.split("-")[0] for name in scaled_rule_fails].count("anyoptim__scaled_rule_float64") == 1
    for _ in range(2):
        with pytest.raises(_native.KernelBuildError, match="rejects this one kernel"):
            NumpyEngine(kernels="c").apply(
                Program(rule=_scaled_rule), np, [np.ones(4)], [np.ones(4)], {}, [{"lr": 0.5}]
            )
    assert [name.split("-")[0] for name in scaled_rule_fails].count("anyoptim__scaled_rule_float64") == 1
    assert _runner_types(NumpyEngine(kernels="c"), _halved_rule) == [CompiledSpans]


def test_threads_share_one_plan_and_one_kernel() -> None:
    engine = NumpyEngine(kernels="c")
    program, hp = Program(rule=_halved_rule), {"lr": 0.5}
    barrier = threading.Barrier(8)

    def plan_and_kernel(_: int) -> tuple[Any, Any]:
        barrier.wait()
        plan = engine.plan(program, np.dtype(np.float32), [], hp, ())
        return plan, engine.kernel(plan)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        found = list(pool.map(plan_and_kernel, range(8)))
    assert len({id(plan) for plan, _ in found}) == 1
    assert len({id(kernel) for _, kernel in found}) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_inherit_held_locks() -> None:
    """A lock another thread holds at the fork would stay held in the child: the child gets new ones."""
    engine = NumpyEngine(kernels="c")
    program, hp = Program(rule=_halved_rule), {"lr": 0.5}
    engine.kernel(engine.plan(program, np.dtype(np.float64), [], hp, ()))  # the child compiles nothing
    with engine._lock, _native._loaded_lock, _native._warned_lock, warnings.catch_warnings():
        # fork() in a process with threads (pytest-xdist, JAX once imported): the child only runs NumPy and anyoptim
        warnings.filterwarnings("ignore", message=r".*fork\(\)", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                p = np.ones(4)
                engine.apply(program, np, [p], [np.ones(4)], {}, [hp])
                NumpyEngine(kernels="c").apply(program, np, [p], [np.ones(4)], {}, [hp])
                os._exit(0 if np.all(p == 0.5) else 1)
            finally:
                os._exit(2)
    assert exit_status_of_child(child, seconds=30, hung="the child hung on a lock held at the fork") == 0
