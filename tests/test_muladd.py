"""The rule contract's one fused operation, ``muladd(xp, a, b, c)``: what each engine computes in float32.

* the portable evaluation (the generic engine, the ufunc plan, the C kernels' baseline variant): float32
  widened to float64 (an exact product), the sum rounded to float64, then to float32.  It is the correctly
  rounded :math:`\\mathrm{fma}(a, b, c)` except where the float64 sum lands exactly halfway between two float32
  numbers without being there (a double rounding): checked as a law against exact rational arithmetic;
* the C kernels' variant compiled for AVX2 with FMA (taken per call where the CPU has both): the hardware's
  fused multiply-add, the correctly rounded fma, also where the portable evaluation double rounds;
* the printed sources: which kernels get the two variants, and CUDA's ``fmaf``.

The constructed double-rounding case: :math:`a = 1 + 2^{-18}`, :math:`b = (1 - 2^{-18})\\,2^{-24}`,
:math:`c = 1 + 2^{-23}`, so :math:`ab + c = 1 + 2^{-23} + 2^{-24} - 2^{-60}`, just below the float32 midpoint
:math:`1 + 3 \\cdot 2^{-24}`: the fma is :math:`1 + 2^{-23}`; the float64 sum rounds onto the midpoint, which
then rounds to the even neighbour :math:`1 + 2^{-22}`.
"""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyoptim
from anyoptim.engines import trace as _trace
from anyoptim.engines.cupy.printer import cuda_source
from anyoptim.engines.muladd import muladd
from anyoptim.engines.numpy import NumpyEngine
from anyoptim.engines.numpy import native as _native
from anyoptim.engines.numpy.c_printer import c_source
from anyoptim.engines.program import Program

A, B, C = np.float32(1 + 2.0**-18), np.float32((1 - 2.0**-18) * 2.0**-24), np.float32(1 + 2.0**-23)
FMA = np.float32(1 + 2.0**-23)  # the correctly rounded a*b + c
DOUBLE_ROUNDED = np.float32(1 + 2.0**-22)  # a*b + c in float64, then to float32

_FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)


def _round_to_float32(x: Fraction) -> np.float32:
    """``x`` rounded once to float32 (to nearest, ties to even; beyond the largest float32: infinity)."""
    if x == 0:
        return np.float32(0.0)
    exponent = max(abs(x).numerator.bit_length() - abs(x).denominator.bit_length() - 24, -150)
    while abs(x) >= Fraction(2) ** (exponent + 24):
        exponent += 1
    exponent = max(exponent, -149)  # subnormals: the spacing stays 2^-149
    rounded = round(x / Fraction(2) ** exponent) * Fraction(2) ** exponent  # Fraction's round: half to even
    if abs(rounded) >= 2**128:
        return np.float32(np.inf if rounded > 0 else -np.inf)
    return np.float32(float(rounded))  # exact: at most 24 significant bits


def _fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    """The correctly rounded fused multiply-add, in exact rational arithmetic."""
    return _round_to_float32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _double_rounds(a: np.float32, b: np.float32, c: np.float32) -> bool:
    """Whether the float64 sum is a float32 midpoint that the exact a*b + c is not (a double rounding)."""
    wide = np.float64(a) * np.float64(b) + np.float64(c)
    with np.errstate(over="ignore"):
        near = np.float32(wide)
    if not np.isfinite(near) or np.float64(near) == wide:
        return False
    other = np.nextafter(near, np.float32(np.inf if wide > near else -np.inf))
    midpoint = (np.float64(near) + np.float64(other)) / 2  # exact: two neighbouring float32
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    return wide == midpoint and Fraction(float(wide)) != exact


def test_the_constructed_case_is_a_double_rounding() -> None:
    assert _fma(A, B, C) == FMA
    assert _double_rounds(A, B, C)
    assert np.float32(np.float64(A) * np.float64(B) + np.float64(C)) == DOUBLE_ROUNDED


def test_the_portable_evaluation_gives_the_double_rounded_answer() -> None:
    """The generic engine's (and the ufunc plan's, the C baseline's) documented other answer."""
    result = muladd(np, np.asarray([A]), np.asarray([B]), np.asarray([C]))
    assert result.dtype == np.float32
    assert result[0] == DOUBLE_ROUNDED


@settings(max_examples=300, deadline=None)
@given(a=_FINITE, b=_FINITE, c=_FINITE)
def test_the_portable_evaluation_is_the_fma_but_for_double_roundings(a: float, b: float, c: float) -> None:
    a32, b32, c32 = np.float32(a), np.float32(b), np.float32(c)
    with np.errstate(over="ignore"):
        result = muladd(np, np.asarray([a32]), np.asarray([b32]), np.asarray([c32]))[0]
    if not _double_rounds(a32, b32, c32):
        assert result == _fma(a32, b32, c32)


# --------------------------------------------------------------------------- the C kernels' two variants


def _muladd_rule(xp, p, g, slots, hp):
    return muladd(xp, g, slots["a"], p), {"a": slots["a"]}


_PROGRAM = Program(rule=_muladd_rule, slot_names=("a",))


def _on_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


_CPU_PROBE = (
    "#include <stdint.h>\nvoid anyoptim_fma_probe(const int64_t *frame) { ((double *)(uintptr_t)frame[0])[0] ="
    ' __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }\n'
)


def _cpu_has_fma() -> bool:
    """The kernels' own test (``ANYOPTIM_FMA_FAST_OK``), asked through a compiled probe."""
    value = np.zeros(1)
    frame = np.array([value.ctypes.data], dtype=np.int64)
    _native.load_kernel(_CPU_PROBE, "anyoptim_fma_probe")(frame.ctypes.data)
    return value[0] == 1.0


needs_compiler = pytest.mark.skipif(not _native.compiler_found(), reason="no C compiler on this machine")
needs_fma = pytest.mark.skipif(
    not (_native.compiler_found() and _on_x86_64() and _cpu_has_fma()),
    reason="the FMA variant needs an x86-64 CPU with AVX2 and FMA and a C compiler",
)


def _kernel_step(kernels: str, p: np.ndarray, g: np.ndarray, a: np.ndarray) -> np.ndarray:
    p = p.copy()
    NumpyEngine(kernels=kernels).apply(_PROGRAM, np, [p], [g], {"a": [a.copy()]}, [{}])
    return p


def _plan(dtype: type) -> object:
    return NumpyEngine(kernels="c").plan(_PROGRAM, np.dtype(dtype), ["a"], {}, ())


def _run_variant(always: str, p: np.ndarray, g: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The printed float32 kernel with its choice of variant fixed (``always`` is ``"1"``: the FMA one)."""
    source = c_source(_plan(np.float32), "anyoptim_variant_" + ("fast" if always == "1" else "base"))
    assert source is not None and "if (ANYOPTIM_FMA_FAST_OK)" in source
    source = source.replace("if (ANYOPTIM_FMA_FAST_OK)", f"if ({always})")
    kernel = _native.load_kernel(source, "anyoptim_variant_" + ("fast" if always == "1" else "base"))
    p, a, table = p.copy(), a.copy(), np.zeros(1)
    frame = np.array([1, table.ctypes.data, p.size, p.ctypes.data, g.ctypes.data, a.ctypes.data], dtype=np.int64)
    kernel(frame.ctypes.data)
    return p


@needs_fma
def test_the_fma_variant_rounds_once_where_the_baseline_double_rounds() -> None:
    p, g, a = (np.full(19, value, np.float32) for value in (C, A, B))  # 19: the vector loop and its tail
    assert (_run_variant("1", p, g, a) == FMA).all()
    assert (_run_variant("0", p, g, a) == DOUBLE_ROUNDED).all()
    # the engine picks the FMA variant on this CPU; the ufunc plan is the portable evaluation
    assert (_kernel_step("c", p, g, a) == FMA).all()
    assert (_kernel_step("ufunc", p, g, a) == DOUBLE_ROUNDED).all()


@needs_fma
@settings(max_examples=60, deadline=None)
@given(
    values=hnp.arrays(np.float32, st.tuples(st.just(3), st.integers(1, 40)), elements=_FINITE),
    at=st.integers(0, 39),
)
def test_the_compiled_kernel_is_the_correctly_rounded_fma(values: np.ndarray, at: int) -> None:
    """Every element, the constructed double rounding included, against exact rational arithmetic."""
    p, g, a = (np.ascontiguousarray(row) for row in values)
    at = at % p.size
    p[at], g[at], a[at] = C, A, B
    with np.errstate(over="ignore", invalid="ignore"):
        compiled = _kernel_step("c", p, g, a)
        ufuncs = _kernel_step("ufunc", p, g, a)
    expected = np.array([_fma(*xs) for xs in zip(g, a, p, strict=True)], np.float32)
    np.testing.assert_array_equal(compiled, expected)
    portable = [not _double_rounds(*xs) for xs in zip(g, a, p, strict=True)]
    np.testing.assert_array_equal(compiled[portable], ufuncs[portable])  # the rest: the double roundings
    assert ufuncs[at] == DOUBLE_ROUNDED


@needs_compiler
def test_only_float32_kernels_with_a_muladd_are_printed_twice() -> None:
    source = c_source(_plan(np.float32), "k")
    fast, base = source.split("static void k_base")
    assert "ANYOPTIM_FMA_FAST static void k_fast" in fast and fast.count("__builtin_fmaf(") == 1
    assert "double" not in fast.split("k_fast")[1].replace("const double *table = (const double *)", "")
    assert "(float)((double)" in base and "__builtin_fmaf" not in base
    assert "ANYOPTIM_FMA_FAST_OK" in base  # the per-call choice
    wide = c_source(_plan(np.float64), "k")  # float64: a*b + c, rounded twice, one function with its clones
    assert "fma" not in wide.split("#endif\n\n", 1)[1] and "ANYOPTIM_CLONES void k(" in wide
    sgd = anyoptim.SGD(0.1)  # SGD steps with a muladd; Adam (without L2 decay) has none
    adam = anyoptim.Adam(0.1)
    for optimizer, twice in ((sgd, True), (adam, False)):
        fills = optimizer._slot_fills()
        hp = {"learning_rate": 0.1, **optimizer._step_scalars(1)}
        plan = NumpyEngine(kernels="c").plan(optimizer._program(False), np.dtype(np.float32), list(fills), hp, ())
        assert ("ANYOPTIM_FMA_FAST_OK" in c_source(plan, "k")) is twice
    half = c_source(_plan(np.float32), "k", ("float16", "float16", "float16"))
    assert "ANYOPTIM_HALF_FMA_FAST static void k_fast" in half and "if (ANYOPTIM_HALF_FMA_FAST_OK)" in half


@pytest.mark.parametrize(("dtype", "expected"), [("float32", "fmaf("), ("float64", " * ")])
def test_cuda_computes_muladd_with_fmaf_in_float32(dtype: str, expected: str) -> None:
    """The CuPy engine's kernels: the GPU's fmaf (the correctly rounded fma), a*b + c in float64."""
    trace = _trace.trace_program(_PROGRAM, ("a",), _trace.hp_signature({}))
    code = cuda_source(trace, dtype).body
    assert expected in code
    assert ("fmaf(" in code) is (dtype == "float32") and "fma(" not in code.replace("fmaf(", "")


# --------------------------------------------------------------------------- namespaces and devices


def test_a_device_without_float64_gets_a_times_b_plus_c() -> None:
    """Arrays on a device without float64 (torch's MPS; array-api-strict's ``no_float64``): the float32 muladd
    cannot widen there, so it is ``a * b + c`` (as in JAX without x64), and SGD and momentum still step."""
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("no_float64")
    x = xp.asarray([A], dtype=xp.float32, device=device)
    y, z = xp.asarray([B], dtype=xp.float32, device=device), xp.asarray([C], dtype=xp.float32, device=device)
    result = muladd(xp, x, y, z)
    assert result.dtype == xp.float32 and result.device == device
    assert bool(xp.all(result == x * y + z))
    assert bool(xp.all(muladd(xp, 0.5, y, z) == 0.5 * y + z))
    for optimizer in (anyoptim.SGD(0.1, weight_decay=0.01), anyoptim.Momentum(0.1, nesterov=True)):
        params = {"w": xp.asarray([1.0, -2.0], dtype=xp.float32, device=device)}
        state = optimizer.init(params)
        params, state = optimizer.step(params, {"w": xp.asarray([0.5, 0.25], dtype=xp.float32, device=device)}, state)
        assert params["w"].device == device and params["w"].dtype == xp.float32
    # on the default device the same namespace widens: the one rounding
    on_cpu = muladd(xp, xp.asarray([A]), xp.asarray([B]), xp.asarray([C]))
    assert float(on_cpu[0]) == float(DOUBLE_ROUNDED)


class _ElsewhereArray(np.ndarray):
    """A NumPy array whose ``device`` NumPy's ``__array_namespace_info__`` does not know (it raises ValueError)."""

    device = "elsewhere"


def test_a_device_the_namespace_does_not_know_is_asked_as_its_default_device() -> None:
    x, y, z = (np.asarray([value], np.float32).view(_ElsewhereArray) for value in (A, B, C))
    assert muladd(np, x, y, z)[0] == DOUBLE_ROUNDED


def test_a_python_number_beyond_float32_is_infinite_as_in_a_times_b(monkeypatch: pytest.MonkeyPatch) -> None:
    """``1e39 * x`` on float32 arrays rounds 1e39 to inf first; so does muladd, also on a Python whose ``struct``
    refuses to pack it (``'<f'``'s OverflowError, emulated here) rather than rounding it to inf."""
    import struct

    from anyoptim.engines import muladd as module

    class Refusing:
        @staticmethod
        def pack(fmt: str, value: float) -> bytes:
            if abs(value) > float(np.finfo(np.float32).max) and value not in (np.inf, -np.inf):
                raise OverflowError("float too large to pack with f format")
            return struct.pack(fmt, value)

        unpack = staticmethod(struct.unpack)

    x, zero = np.asarray([1e-10, -1e-10], np.float32), np.zeros(2, np.float32)
    with np.errstate(over="ignore"):
        expected = 1e39 * x + zero
    assert np.isinf(expected).all()
    for packer in (struct, Refusing):
        monkeypatch.setattr(module, "struct", packer)
        np.testing.assert_array_equal(muladd(np, 1e39, x, zero), expected)
        np.testing.assert_array_equal(muladd(np, -1e39, x, zero), -expected)


def test_every_printed_kernel_exports_its_symbol_with_clang(tmp_path: Path) -> None:
    """Clang before 18 names a ``target_clones`` function ``<name>.ifunc`` only (llvm-project #71706): the symbol
    the engine loads was missing, so every kernel with clones (all but the float32 ones with a muladd) failed to
    load.  Such a Clang gets the baseline function alone."""
    clang = shutil.which("clang")
    if clang is None or not _on_x86_64():
        pytest.skip("needs clang on x86-64")
    adam = anyoptim.Adam(0.1)
    hp = {"learning_rate": 0.1, **adam._step_scalars(1)}
    plan = NumpyEngine(kernels="c").plan(adam._program(False), np.dtype(np.float64), list(adam._slot_fills()), hp, ())
    source = c_source(plan, "anyoptim_clang_probe")
    assert "ANYOPTIM_CLONES void anyoptim_clang_probe(" in source
    (tmp_path / "k.c").write_text(source)
    subprocess.run([clang, *_native.FLAGS, str(tmp_path / "k.c"), "-o", str(tmp_path / "k.so"), "-lm"], check=True)
    assert ctypes.CDLL(str(tmp_path / "k.so")).anyoptim_clang_probe is not None
