"""The engines from several threads and across forks (hardening issue, section 2).

Eight threads taking the first steps of their own trees at once, with the
interpreter switching threads as often as it can, give the bits of a sequential
run (the kernels were once looked up by ``id(plan)``, and a freed duplicate
plan's id was reused: wrong kernels, double frees); a process forked while
another thread holds the compile lock can still compile and step.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import warnings
from typing import Any

import numpy as np
import pytest

import anyoptim
from anyoptim.engines.numpy import NumpyEngine
from anyoptim.engines.numpy import native as _native
from tests.helpers import exit_status_of_child

pytestmark = pytest.mark.skipif(not _native.compiler_found(), reason="needs a C compiler")

_OPTIMIZERS = [anyoptim.Adam, anyoptim.AdamW, anyoptim.Lion, anyoptim.RMSprop]


def _run(index: int, engine: Any) -> list[bytes]:
    """Three steps of one thread's own optimizer and tree (sizes, dtypes, rules differ between threads)."""
    dtype = (np.float32, np.float64)[index % 2]
    rng = np.random.default_rng(index)
    params = {"w": rng.normal(size=(17 + index, 3)).astype(dtype), "b": rng.normal(size=5 + index).astype(dtype)}
    optimizer = _OPTIMIZERS[index % len(_OPTIMIZERS)](0.01, engine=engine)
    state = optimizer.init(params)
    for _ in range(3):
        grads = {name: rng.normal(size=value.shape).astype(dtype) for name, value in params.items()}
        params, state = optimizer.step(params, grads, state)
    return [value.tobytes() for value in params.values()]


@pytest.mark.parametrize("kernels", ["c", "ufunc"])
def test_eight_threads_first_steps_equal_a_sequential_run(kernels: str, monkeypatch) -> None:
    expected = [_run(index, NumpyEngine(kernels=kernels)) for index in range(8)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            monkeypatch.setattr(_native, "_loaded", {})  # the kernels are looked up (from the disk cache) at once too
            engine = NumpyEngine(kernels=kernels)  # one engine, its plans made concurrently
            barrier = threading.Barrier(8)

            def first_steps(index: int, engine: Any = engine, barrier: threading.Barrier = barrier) -> list[bytes]:
                barrier.wait()
                return _run(index, engine)

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                found = list(pool.map(first_steps, range(8)))
            assert found == expected
    finally:
        sys.setswitchinterval(switch)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_while_another_thread_compiles_does_not_deadlock(monkeypatch, tmp_path) -> None:
    """A child forked while another thread held the compile lock used to stay blocked on it."""
    monkeypatch.setenv("ANYOPTIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "_failed", {})
    compiling, release = threading.Event(), threading.Event()
    build = _native._build

    def slow_build(*args: Any) -> None:
        compiling.set()
        release.wait(30)
        build(*args)

    monkeypatch.setattr(_native, "_build", slow_build)
    program_engine = NumpyEngine(kernels="c")
    other = threading.Thread(target=_run, args=(0, program_engine))
    other.start()
    assert compiling.wait(30)  # the other thread is inside load_kernel, holding its lock
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\)", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                _native._build = build  # the child compiles at full speed
                ok = _run(1, program_engine) == _run(1, NumpyEngine(kernels="ufunc"))
                os._exit(0 if ok else 1)
            finally:
                os._exit(2)
    release.set()
    other.join(60)
    assert exit_status_of_child(child, seconds=60, hung="the child hung on a lock another thread held at the fork") == 0
