"""Backends, conversions and tolerances shared by the test modules."""

from __future__ import annotations

import importlib
import os
import signal
import time
from enum import Enum
from typing import Any

import numpy as np
import pytest

# Relative tolerances: one backend against another (or an independent reference),
# and two engines on one backend.
RTOL = {"float64": 1e-12, "float32": 1e-5}
RTOL_SAME_BACKEND = {"float64": 1e-12, "float32": 1e-6}


def _cupy_usable() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


class Backend(str, Enum):
    """The array libraries the tests run on; the ``backend`` and ``xp`` fixtures go over all of them.

    A member is also its name as a string (``Backend.JAX == "jax"``), so it can be
    passed wherever a backend name is expected.
    """

    NUMPY = "numpy"
    ARRAY_API_STRICT = "array_api_strict"
    TORCH = "torch"
    JAX = "jax"
    CUPY = "cupy"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def mutable(self) -> bool:
        """Whether its arrays can be written in place (JAX's cannot)."""
        return self is not Backend.JAX

    def namespace(self) -> Any | None:
        """Its Array API namespace, or None when it is not usable here."""
        return load_namespace(self.value)

    def pytest_param(self) -> Any:
        """``pytest.param(self)`` with its id and marks (CuPy needs a GPU: ``gpu``)."""
        marks = [pytest.mark.gpu] if self is Backend.CUPY else []
        return pytest.param(self, id=self.value, marks=marks)


def load_namespace(name: str) -> Any | None:
    """The Array API namespace of a backend, or None when it is not usable here."""
    try:
        if name == "numpy":
            import array_api_compat.numpy as xp
        elif name == "array_api_strict":
            xp = importlib.import_module("array_api_strict")
        elif name == "torch":
            importlib.import_module("torch")
            import array_api_compat.torch as xp
        elif name == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)
            import jax.numpy as xp
        elif name == "cupy":
            if not _cupy_usable():
                return None
            import array_api_compat.cupy as xp
        else:
            raise ValueError(name)
    except ImportError:
        return None
    return xp


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of any backend's array."""
    if isinstance(x, np.ndarray):
        return x.copy()
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy().copy()
    if type(x).__module__.startswith("jax"):
        # from_dlpack refuses JAX arrays on a GPU ("Unsupported device").
        return np.array(x, copy=True)
    return np.array(np.from_dlpack(x), copy=True)


def from_numpy(xp: Any, array: np.ndarray) -> Any:
    """Move a NumPy array to backend ``xp`` with the same dtype."""
    # A fresh C-ordered copy: keeps 0-D arrays 0-D (ascontiguousarray makes them 1-D), and an
    # in-place engine on a library that shares NumPy memory (torch) cannot write into test data.
    return xp.asarray(np.array(array, copy=True, order="C"))


def tree_to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: tree_to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_to_numpy(v) for v in tree)
    return to_numpy(tree)


def tree_from_numpy(xp: Any, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: tree_from_numpy(xp, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_from_numpy(xp, v) for v in tree)
    return from_numpy(xp, tree)


def assert_close(actual: Any, expected: Any, dtype: str, *, same_backend: bool = False, atol: float = 0.0) -> None:
    rtol = (RTOL_SAME_BACKEND if same_backend else RTOL)[dtype]
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol, atol=atol)


def exit_status_of_child(child: int, *, seconds: float, hung: str) -> int:
    """Wait for a forked child at most ``seconds``; kill it and fail the test with ``hung`` if it does not end."""
    for _ in range(int(seconds / 0.05)):
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    pytest.fail(hung)
