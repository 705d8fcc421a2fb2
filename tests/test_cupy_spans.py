"""The CuPy engine's span kernels without a GPU: their source wraps the ElementwiseKernel body, their layout and
launch logic run on NumPy stand-ins, and the generated kernels, compiled by the host C++ compiler and run thread
by thread (every head, vector and tail loop, every alignment), compute the ElementwiseKernel's bits; a captured
step's scalar table replays on them.  When ``ANYOPTIM_CUDA_INCLUDE`` names the CUDA include directory (and NVRTC
is loadable), every span module is compiled with NVRTC for sm_90.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
import anyoptim.engines.cupy.launch as cupy_launch
import anyoptim.engines.cupy.scalar_table as scalar_table
from anyoptim.engines import select_engine
from anyoptim.engines import trace as _trace
from anyoptim.engines.cupy.device import COMPILE_OPTIONS
from anyoptim.engines.cupy.launch import span_grid, span_layout
from anyoptim.engines.cupy.printer import SpanSource, cuda_source, span_source
from anyoptim.engines.cupy.scalar_table import ScalarPlan, scalars_on_device
from tests.graph_simulation import check_replays, warm_up_for_capture
from tests.helpers import RTOL_SAME_BACKEND
from tests.test_cupy_engine import OFFSETS, _placed
from tests.test_trace import (
    ALL_TRACES,
    CONFIG_PARAMS,
    CONFIGS,
    CUSTOM_RULES,
    DTYPES,
    XP,
    Case,
    Config,
    Harness,
    NumpyStandInDevice,
    NumpyStandInEngine,
    _leaf_steps,
    _state_before_last_step,
    _trace_of,
    cases,
)


def _assert_same(actual: Any, expected: Any, dtype: str, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=RTOL_SAME_BACKEND[dtype], atol=0, err_msg=what
    )


def test_every_span_kernel_compiles_with_nvrtc() -> None:
    """Compile every span module with NVRTC for sm_90 as CuPy's RawModule does (no headers; CuPy adds
    ``-ftz=true``), and read the PTX: 16-byte vector stores in the vectorised kernels and none in the others, no
    local memory (the argument block and the lanes stay in registers), no fused multiply-add, no double
    arithmetic in a float32 kernel; a few are carried on to sm_90 machine code."""
    include = os.environ.get("ANYOPTIM_CUDA_INCLUDE")
    if not include:
        pytest.skip("set ANYOPTIM_CUDA_INCLUDE to the CUDA include directory (NVRTC must be loadable) to run")
    pytest.importorskip("cupy")
    import re

    from cupy.cuda import compiler

    options = ("-std=c++14", "-ftz=true", *COMPILE_OPTIONS)
    compiled = 0
    for name, trace in ALL_TRACES:
        for dtype in DTYPES:
            for on_device in (False, True):
                source = span_source(trace, dtype, scalars_on_device=on_device)
                ptx, _ = compiler._NVRTCProgram(source.code, "span.cu", method="ptx").compile(
                    ("-arch=compute_90", *options)
                )
                text = ptx.decode()
                compiled += 1
                vector_store = "st.global.v4.f32" if dtype == "float32" else "st.global.v2.f64"
                for (vectorised, _), kernel in source.kernels.items():
                    start = text.index(f".entry {kernel}(")
                    end = text.find(".entry ", start + 1)
                    lines = [line.strip() for line in text[start : end if end > 0 else None].splitlines()]
                    assert any(line.startswith(vector_store) for line in lines) == vectorised, (name, kernel)
                    assert not any(".local" in line for line in lines), (name, kernel)
                    assert re.search(r"\.param \.align 8 \.b8 \w+_param_0\[(\d+)\]", text[start:]).group(1) == str(
                        source.words * 8
                    ), (name, kernel)  # the struct is exactly the engine's argument block
                    if name != "kitchen-sink":  # pow() brings the math library's own FMAs
                        assert not any(line.startswith("fma.") for line in lines), (name, kernel)
                    if dtype == "float32":
                        doubles = [line for line in lines if ".f64" in line and not line.startswith(".reg")]
                        allowed = ("cvt.rn.ftz.f32.f64", "ld.global.f64", "ld.global.nc.f64")
                        assert all(line.startswith(allowed) for line in doubles), (name, kernel, doubles)
                        assert on_device or not doubles, (name, kernel, doubles)
                if name == "adam" or (name == "rmsprop" and on_device):
                    compiler._NVRTCProgram(source.code, "span.cu", method="cubin").compile(("-arch=sm_90", *options))
    assert compiled == 4 * len(ALL_TRACES)


# --------------------------------------------------------------------------- span kernels on the CPU

_CXX = shutil.which("g++") or shutil.which("c++")

#: What the generated CUDA needs from the CUDA toolkit, for the host compiler: the qualifiers vanish, the
#: thread coordinates are globals that the simulator sets before calling a kernel once per thread.
_CUDA_STAND_INS = """
#include <cmath>
using std::sqrt;
using std::fabs;
using std::pow;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
struct anyoptim_dim3 { unsigned int x; };
static anyoptim_dim3 threadIdx, blockIdx, blockDim, gridDim;
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
"""


def _every_span_source() -> list[SpanSource]:
    """The span modules of every trace, dtype and scalar mode (each code once)."""
    found: dict[str, SpanSource] = {}
    for _, trace in ALL_TRACES:
        for dtype in DTYPES:
            for on_device in (False, True):
                source = span_source(trace, dtype, scalars_on_device=on_device)
                found.setdefault(source.code, source)
    return list(found.values())


#: Runs every thread of a launch of kernel ``kernel`` of module ``m{index}``, one after another.
_SIMULATE = """
extern "C" void simulate{index}(int kernel, unsigned grid, unsigned block, const void* args) {{
    const m{index}::anyoptim_span_args& a = *static_cast<const m{index}::anyoptim_span_args*>(args);
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {{
        for (unsigned t = 0; t < block; ++t) {{
            blockIdx.x = b;
            threadIdx.x = t;
            switch (kernel) {{ {calls} }}
        }}
    }}
}}
"""


class SpanSimulator:
    """Every generated span module compiled by the host C++ compiler into one library; a launch runs every
    thread of the grid in turn.

    Each element is updated by exactly one thread of a real launch, and threads share nothing, so running
    them one after another computes what the GPU computes; an element visited twice (or never) shows in
    the results.  The library is built with ``-fsanitize=alignment`` where the compiler has it, and every
    vectorised launch is checked to read and write 16-byte-aligned vectors only.
    """

    def __init__(self, directory: Any):
        self.directory = directory
        self.modules: dict[str, tuple[Any, int]] = {}  # source code -> (library, index of its module)
        self.sanitized = self._build(_every_span_source(), "spans")

    def _build(self, sources: list[SpanSource], stem: str) -> bool:
        """Compile ``sources`` into one library; whether the alignment sanitizer is in it."""
        chunks = [_CUDA_STAND_INS]
        first = len(self.modules)
        for index, source in enumerate(sources, start=first):
            calls = " ".join(f"case {k}: m{index}::{name}(a); break;" for k, name in enumerate(source.kernels.values()))
            code = source.code.replace('extern "C" ', "")  # C++ names, unique per namespace
            chunks.append(f"namespace m{index} {{\n{code}\n}}\n" + _SIMULATE.format(index=index, calls=calls))
        path = self.directory / f"{stem}.cpp"
        path.write_text("\n".join(chunks))
        library = self.directory / f"{stem}.so"
        # -ffp-contract=off: like --fmad=false on the GPU, no fused multiply-add (the bodies then round as the
        # ElementwiseKernel stand-in of tests/test_trace.py rounds them).
        command = [_CXX, "-O1", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC"]
        built = subprocess.run([*command, "-fsanitize=alignment", str(path), "-o", str(library)], capture_output=True)
        if built.returncode != 0:
            subprocess.run([*command, str(path), "-o", str(library)], check=True, capture_output=True)
        loaded = ctypes.CDLL(str(library))
        for index, source in enumerate(sources, start=first):
            self.modules[source.code] = (loaded, index)
        return built.returncode == 0

    def function(self, source: SpanSource, name: str) -> Callable[[tuple, tuple, tuple], None]:
        """A stand-in of the compiled kernel ``name``: called as CuPy calls a kernel, with the argument block."""
        if source.code not in self.modules:  # a rule setting outside ALL_TRACES: built on demand
            self._build([source], f"spans{len(self.modules)}")
        library, index = self.modules[source.code]
        simulate = getattr(library, f"simulate{index}")
        kernel = list(source.kernels.values()).index(name)
        vectorised = next(key[0] for key, value in source.kernels.items() if value == name)
        itemsize = np.dtype(source.dtype).itemsize
        arrays = [i for i, (role, _) in enumerate(source.pointers) if role in ("grad", "param", "slot")]

        def launch(grid: tuple, block: tuple, args: tuple) -> None:
            (words,) = args
            assert words.dtype == np.uint64 and words.size == source.words
            size, head = (int(value) for value in words[len(source.pointers) : len(source.pointers) + 2])
            if vectorised and size - head >= source.lanes:
                for i in arrays:  # every vector load and store of this launch is aligned
                    assert (int(words[i]) + head * itemsize) % 16 == 0, (name, source.pointers[i], head)
            simulate(
                ctypes.c_int(kernel),
                ctypes.c_uint(grid[0]),
                ctypes.c_uint(block[0]),
                ctypes.c_void_p(words.ctypes.data),
            )

        return launch


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: Any) -> SpanSimulator:
    if _CXX is None:
        pytest.skip("no C++ compiler to build the generated span kernels")
    return SpanSimulator(tmp_path_factory.mktemp("spans"))


@pytest.fixture(scope="module")
def elementwise_harness(tmp_path_factory: Any) -> Harness:
    """The ElementwiseKernel bodies compiled the same way (tests/test_trace.py): the span kernels' reference."""
    if _CXX is None:
        pytest.skip("no C++ compiler to build the generated kernel bodies")
    return Harness(tmp_path_factory.mktemp("elementwise"))


class SpanStandInDevice(NumpyStandInDevice):
    """The NumPy stand-in device with span kernels: the simulator runs them.  Records each span launch."""

    def __init__(self, simulator: SpanSimulator, wave: int):
        super().__init__()
        self.simulator = simulator
        self.wave = wave
        self.span_launches: list[tuple[str, int, int]] = []  # (kernel, size, blocks)

    @staticmethod
    def span_ready(arrays: Any) -> bool:
        return all(isinstance(a, np.ndarray) for a in arrays)

    def span_kernel(self, source: SpanSource, name: str, block: int) -> tuple[Any, int]:
        function = self.simulator.function(source, name)

        def launch(grid: tuple, block: tuple, args: tuple) -> None:
            self.span_launches.append((name, size_of(args), grid[0]))
            function(grid, block, args)

        def size_of(args: tuple) -> int:
            return int(args[0][len(source.pointers)])

        return launch, self.wave

    @staticmethod
    def argument_block(words: np.ndarray) -> Any:
        return words


class SpanStandInEngine(NumpyStandInEngine):
    """The CuPy engine on NumPy arrays with span kernels: the simulator runs them, with small blocks and waves so
    that spans of a few thousand elements loop in every thread.  Records each span launch."""

    span_block = 32

    def __init__(self, simulator: SpanSimulator, wave: int = 3):
        super().__init__(SpanStandInDevice(simulator, wave))
        self.launch = "span"
        self.span_launches = self.device.span_launches


@pytest.fixture
def span_stand_in(monkeypatch: pytest.MonkeyPatch, simulator: SpanSimulator) -> SpanStandInEngine:
    """Make optimizers on NumPy arrays run the CuPy engine's span path (with engine="fused" or "auto")."""
    import anyoptim.optimizers.base

    engine = SpanStandInEngine(simulator)

    def choose(xp: Any, choice: str) -> Any:
        return select_engine(xp, "generic") if choice == "generic" else engine

    monkeypatch.setattr(anyoptim.optimizers.base, "select_engine", choose)
    return engine


def test_span_layout_vectorises_only_what_shares_an_alignment() -> None:
    assert span_layout([0, 256, 4096], 100, 4) == (True, 0)
    assert span_layout([4, 260, 20], 100, 4) == (True, 3)  # every array 4 bytes past a boundary: 3 elements first
    assert span_layout([12, 28], 100, 4) == (True, 1)
    assert span_layout([12, 28], 0, 4) == (True, 0)  # the head never exceeds the span
    assert span_layout([8, 24], 1, 4) == (True, 1)
    assert span_layout([8, 24], 100, 8) == (True, 1)
    assert span_layout([0, 4], 100, 4) == (False, 0)  # different offsets: one element at a time
    assert span_layout([2, 18], 100, 4) == (False, 0)  # not a whole number of elements
    assert span_grid(0, 256, 100) == 1
    assert span_grid(257, 256, 100) == 2
    assert span_grid(10**9, 256, 100) == 100  # at most one wave: the loop covers the rest


@pytest.mark.parametrize(("trace", "dtype", "on_device"), [
    pytest.param(trace, dtype, on_device, id=f"{name}-{dtype}-{'table' if on_device else 'args'}-{i}")
    for i, (name, trace) in enumerate(ALL_TRACES)
    for dtype in DTYPES
    for on_device in (False, True)
])  # fmt: skip
def test_span_source_wraps_the_elementwise_body(trace: _trace.Trace, dtype: str, on_device: bool) -> None:
    """The span kernels run the very body of the ElementwiseKernel (never a second formula), read every scalar
    once per thread, and describe their argument block as the engine fills it."""
    elementwise = cuda_source(trace, dtype, scalars_on_device=on_device)
    source = span_source(trace, dtype, scalars_on_device=on_device)
    lines = source.code.splitlines()
    for line in elementwise.body.splitlines():
        assert "    " + line in lines
    assert source.code.count("anyoptim_update(") == 3 + source.lanes  # defined, then called: head, lanes, tail
    slots = list(trace.slot_names)
    roles = [("grad", None), ("param", None), *(("slot", name) for name in slots)]
    roles += [("hp_array", name) for name in trace.hp_arrays]
    count = len(trace.kernel_scalars)
    roles += [("scalar_table", None)] if on_device and count else []
    assert list(source.pointers) == roles
    assert source.scalar_count == (0 if on_device else count)
    itemsize = np.dtype(dtype).itemsize
    assert source.words == len(roles) + 2 + -(-source.scalar_count * itemsize // 8)
    assert source.lanes == 16 // itemsize
    struct = source.code[source.code.index("struct anyoptim_span_args {") : source.code.index("};")]
    assert struct.count("* p_") == len(roles)
    assert ("T c[" in struct) == bool(source.scalar_count)
    assert sorted(source.kernels) == [(False, False), (False, True), (True, False), (True, True)]
    assert all(f"{name}(const anyoptim_span_args a)" in source.code for name in source.kernels.values())
    if dtype == "float32":  # T throughout; only the scalar table is double
        assert source.code.count("double") == (2 if ("scalar_table", None) in roles else 0)


#: Every optimizer's traces and the custom rules, as (id, make the leaf steps).
SPAN_RULES = [pytest.param(config, id=config.id) for config in CONFIGS] + [
    pytest.param(rule, id=rule.id) for rule in CUSTOM_RULES
]


def _one_leaf_step(subject: Any, dtype: str, size: int, rng: np.random.Generator, as_array: bool) -> Any:
    """One leaf of ``size`` elements as an engine receives it, with state from a few generic steps first."""
    from tests.test_trace import LeafStep

    params = {"w": rng.normal(size=size).astype(dtype)}
    if isinstance(subject, Config):
        grads = [{"w": (rng.normal(size=size) * 2).astype(dtype)} for _ in range(3)]
        case = Case(dtype, params, grads)
        optimizer, current, state = _state_before_last_step(subject, case)
        return _leaf_steps(optimizer, current, grads[-1], state, clip_factor_as_array=as_array)[0]
    slots = {name: rng.normal(size=size).astype(dtype) for name in subject.program.slot_names}
    return LeafStep(subject.program, params["w"], rng.normal(size=size).astype(dtype), slots, subject.hp)


def _run_spans(engine: SpanStandInEngine, step: Any, offsets: tuple[int, int, int], on_device: bool) -> tuple:
    """One engine step on copies of the leaf placed at ``offsets``; with ``on_device`` the scalars come from a
    scalar table as in a captured graph's warm-up."""
    p, g = _placed(np, step.p, offsets[0]), _placed(np, step.g, offsets[1])
    slots = {name: _placed(np, value, offsets[2]) for name, value in step.slots.items()}
    arguments = (step.program, XP, [p], [g], {name: [value] for name, value in slots.items()}, [step.hp])
    if on_device:
        plan = ScalarPlan({id(p): 0})
        with scalars_on_device(plan):
            engine.apply(*arguments)
    else:
        engine.apply(*arguments)
    return p, slots


@pytest.mark.parametrize("subject", SPAN_RULES)
@settings(max_examples=12)
@given(data=st.data())
def test_simulated_span_kernels_equal_the_elementwise_body(
    simulator: SpanSimulator,
    elementwise_harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    subject: Any,
    data: Any,
) -> None:
    """Every rule, drawn sizes and alignments (heads, tails, mixed offsets), 32- and 64-bit indices, scalars by
    value or from the table: the span kernels compute the ElementwiseKernel body's bits (and the optimizers'
    rules' values)."""
    import types

    monkeypatch.setattr(scalar_table, "cupy", types.SimpleNamespace(asarray=np.asarray, zeros=np.zeros))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    size = data.draw(st.one_of(st.integers(1, 40), st.integers(2000, 5000)), label="size")
    pattern = data.draw(st.sampled_from(sorted(OFFSETS)), label="offsets")
    on_device, as_array, wide = (data.draw(st.booleans(), label=label) for label in ("table", "0-D hp", "64-bit"))
    monkeypatch.setattr(cupy_launch, "INDEX32_LIMIT", 0 if wide else 2**31)  # set for each example
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    step = _one_leaf_step(subject, dtype, size, rng, as_array)
    engine = SpanStandInEngine(simulator)
    p, slots = _run_spans(engine, step, OFFSETS[pattern], on_device)
    [(kernel, launched, _)] = engine.span_launches
    assert launched == size and kernel.endswith("64" if wide else "32")
    assert ("vector" in kernel) == (pattern != "mixed")
    trace = _trace_of(step)
    source = cuda_source(trace, dtype, scalars_on_device=on_device)
    expected_p = np.array(step.p, copy=True)
    expected_slots = {name: np.array(value, copy=True) for name, value in step.slots.items()}
    elementwise_harness.run(source, expected_p, step.g, expected_slots, step.hp, _trace.fold_scalars(trace, step.hp))
    np.testing.assert_array_equal(p, expected_p)
    for name in slots:
        np.testing.assert_array_equal(slots[name], expected_slots[name], err_msg=name)
    if isinstance(subject, Config):  # (the custom rules' NumPy forms compute partly in float64)
        rule_p, rule_slots = step.program(XP, step.p, step.g, step.slots, step.hp)
        _assert_same(p, rule_p, dtype, "param")
        for name in slots:
            _assert_same(slots[name], rule_slots[name], dtype, f"slot {name}")
    assert "runtime error" not in capfd.readouterr().err  # the alignment sanitizer saw nothing


@pytest.mark.parametrize("dtype", DTYPES)
def test_simulated_span_kernels_cover_every_head_and_tail(
    simulator: SpanSimulator, elementwise_harness: Harness, dtype: str
) -> None:
    """Adam on 1 to 12 elements at every offset, vectorised or not: every element updated once."""
    config = next(c for c in CONFIGS if c.id == "adam")
    rng = np.random.default_rng(3)
    kernels = set()
    for size in range(1, 13):
        step = _one_leaf_step(config, dtype, size, rng, False)
        trace = _trace_of(step)
        expected_p = np.array(step.p, copy=True)
        expected_slots = {name: np.array(value, copy=True) for name, value in step.slots.items()}
        source = cuda_source(trace, dtype)
        elementwise_harness.run(
            source, expected_p, step.g, expected_slots, step.hp, _trace.fold_scalars(trace, step.hp)
        )
        for pattern, offsets in OFFSETS.items():
            engine = SpanStandInEngine(simulator, wave=1)
            p, slots = _run_spans(engine, step, offsets, False)
            np.testing.assert_array_equal(p, expected_p, err_msg=f"{size} elements, {pattern}")
            for name in slots:
                np.testing.assert_array_equal(slots[name], expected_slots[name], err_msg=f"{size}, {pattern}, {name}")
            kernels.add(engine.span_launches[0][0])
    assert kernels == {"anyoptim_adam_vector32", "anyoptim_adam_scalar32"}


def _flat_case_params(case: Case) -> dict:
    return anyoptim.flatten({name: np.array(value, copy=True) for name, value in case.params.items()})


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@settings(max_examples=8)
@given(case=cases(max_steps=4), flat=st.booleans())
def test_span_path_through_the_optimizer_matches_generic(
    span_stand_in: SpanStandInEngine, config: Config, case: Case, flat: bool
) -> None:
    """Optimizer steps on the span path (the first step validated, the rest on the fast path, a gradient buffer
    refilled each step) equal the generic engine's."""
    span_stand_in.span_launches.clear()
    fused, generic = config.make("fused"), config.make("generic")
    p_fused = _flat_case_params(case) if flat else {name: np.array(v, copy=True) for name, v in case.params.items()}
    p_generic = {name: np.array(value, copy=True) for name, value in case.params.items()}
    s_fused, s_generic = fused.init(p_fused), generic.init(p_generic)
    buffer = {name: np.zeros_like(value) for name, value in case.params.items()}
    for grads in case.grads:
        for name, value in grads.items():
            buffer[name][...] = value
        p_fused, s_fused = fused.step(p_fused, buffer, s_fused)
        p_generic, s_generic = generic.step(p_generic, grads, s_generic)
    for name in p_generic:
        _assert_same(p_fused[name], p_generic[name], case.dtype, f"params[{name}]")
    for slot, tree in s_generic.slots.items():
        for name in tree:
            _assert_same(s_fused.slots[slot][name], tree[name], case.dtype, f"slot {slot}[{name}]")
    assert span_stand_in.span_launches and not span_stand_in.launches  # no ElementwiseKernel launch


def test_steady_state_span_step_writes_only_its_scalars(
    span_stand_in: SpanStandInEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first step the fast path calls the span run's launch directly: the same argument block and grid
    at every step, with only the scalars rewritten (bias corrections and the scheduled learning rate change)."""
    created: list[Any] = []
    original = cupy_launch.SpanRun.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(cupy_launch.SpanRun, "__init__", recording)
    rng = np.random.default_rng(4)
    params = anyoptim.flatten({"W": rng.normal(size=(3, 5)), "b": rng.normal(size=5)})
    grads = anyoptim.flatten({name: rng.normal(size=value.shape) for name, value in params.items()})
    optimizer = anyoptim.Adam(anyoptim.schedules.exponential_decay(0.1, 1, 0.5))
    state = optimizer.init(params)
    params, state = optimizer.step(params, grads, state)
    (run,) = created
    assert optimizer._prepared.runs == [(run.launch, None)]  # the fast path calls the launch itself
    words, args, grid = run.words.copy(), run.args, run.grid
    fixed = len(run.source.pointers) + 2  # pointers, n, head
    seen = [run.scalars.copy()]
    for _ in range(3):
        params, state = optimizer.step(params, grads, state)
        assert run.args is args and run.grid is grid
        np.testing.assert_array_equal(run.words[:fixed], words[:fixed])
        seen.append(run.scalars.copy())
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(seen))
    assert len(created) == 1 and len(span_stand_in.span_launches) == 4


SCALAR_TABLE_CONFIGS = [
    pytest.param(
        lambda e: anyoptim.AdamW(anyoptim.schedules.exponential_decay(0.05, 1, 0.8), weight_decay=0.1, engine=e),
        id="adamw-schedule-masked",
    ),
    pytest.param(lambda e: anyoptim.RAdam(0.02, engine=e), id="radam-both-branches"),
    pytest.param(lambda e: anyoptim.RMSprop(0.01, centered=True, momentum=0.5, engine=e), id="rmsprop"),
]


@pytest.mark.parametrize("make", SCALAR_TABLE_CONFIGS)
def test_span_kernels_replay_a_captured_scalar_table(
    span_stand_in: SpanStandInEngine, monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    """What GraphedStep does, on the CPU with span kernels: a warm-up step in scalar-table mode (undone), a
    capture that keeps each launch's argument block as the driver copies it, then replays of those blocks while
    the host refills the frozen table from the optimizer's own step scalars."""
    capture = warm_up_for_capture(monkeypatch, make, seed=8, extra=5)
    recorded: list[tuple[Any, tuple, tuple, np.ndarray]] = []

    def capturing(function: Any, size: int) -> Callable[..., None]:
        def record(grid: tuple, block: tuple, args: tuple) -> None:
            recorded.append((function, grid, block, args[0].copy()))  # kernel parameters are copied at launch

        return record

    monkeypatch.setattr(span_stand_in.device, "span_launcher", capturing)
    with scalars_on_device(capture.plan):
        capture.optimizer.step(capture.params, capture.grads, capture.state)
    assert len(recorded) == len(capture.plan.entries) == (2 if capture.optimizer.weight_decay else 1)

    def replay() -> None:
        for function, grid, block, words in recorded:
            function(grid, block, (words,))

    check_replays(capture, replay)
