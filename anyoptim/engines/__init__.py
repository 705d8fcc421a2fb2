"""Engines: how a :class:`~anyoptim.engines.program.Program` runs on a given array library.

Every engine runs the same program; they differ only in how:

* :class:`~anyoptim.engines.generic.GenericEngine` applies it leaf by leaf with
  the arrays' own namespace and returns new arrays (any Array API library,
  immutable ones included);
* :class:`~anyoptim.engines.numpy.NumpyEngine` evaluates it on cache-sized
  blocks of flat buffers and writes the results back in place;
* :class:`~anyoptim.engines.cupy.CupyEngine` traces it into one CUDA kernel per
  contiguous run of parameters.

:func:`select_engine` chooses one from the parameters' namespace; it is the
only place outside the engines that knows which libraries have a fused engine.
"""

from __future__ import annotations

import sys
from typing import Any

from .._namespace import backend_name
from .generic import GenericEngine

__all__ = ["ENGINE_CHOICES", "GenericEngine", "check_engine", "matmul", "select_engine"]

ENGINE_CHOICES = ("auto", "generic", "fused")

_GENERIC = GenericEngine()
_FUSED: dict[str, Any] = {}


def _fused_engine(backend: str) -> Any | None:
    if backend not in _FUSED:
        if backend == "numpy":
            from .numpy.engine import NumpyEngine

            _FUSED[backend] = NumpyEngine()
        elif backend == "cupy":
            from .cupy.engine import CupyEngine

            _FUSED[backend] = CupyEngine()
        else:
            _FUSED[backend] = None
    return _FUSED[backend]


def check_engine(name: str, value: Any) -> Any:
    """An optimizer's ``engine`` setting: one of :data:`ENGINE_CHOICES`, or an engine object.

    An engine object (``NumpyEngine(kernels="ufunc")``, say) is for tests and
    benchmarks that pin how the update runs; it needs ``init_slots`` and ``apply``.
    """
    if isinstance(value, str):
        if value not in ENGINE_CHOICES:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, ENGINE_CHOICES))}; got {value!r}")
        return value
    if isinstance(value, type) or not all(callable(getattr(value, method, None)) for method in ("init_slots", "apply")):
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, ENGINE_CHOICES))} or an engine object "
            f"(with init_slots and apply); got {value!r}"
        )
    return value


def select_engine(xp: Any, choice: Any) -> Any:
    """The engine for namespace ``xp``: ``"auto"`` picks the fused one where it exists.

    ``choice`` may also be an engine object (see :func:`check_engine`); a fused
    engine object must be the one of ``xp``'s library.

    Raises
    ------
    ValueError
        If ``choice`` is ``"fused"`` and ``xp`` has no fused engine, or an engine
        object of another library.
    """
    if choice == "generic":
        return _GENERIC
    backend = backend_name(xp)
    if not isinstance(choice, str):
        runs = getattr(choice, "name", "generic")
        if runs not in ("generic", backend):
            raise ValueError(f"engine {type(choice).__name__} runs {runs} arrays, not {backend} arrays")
        return choice
    fused = _fused_engine(backend)
    if fused is not None:
        return fused
    if choice == "fused":
        raise ValueError(f"engine='fused' is not available for {backend} arrays; use 'auto' or 'generic'")
    return _GENERIC


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` — or, while a CUDA graph is being recorded, the CuPy engine's capturable product.

    CuPy refuses cuBLAS calls during stream capture; model code that calls this
    instead of ``@`` can be captured whole by
    :class:`anyoptim.engines.cupy.GraphedStep`.  Outside a capture it is ``@``.
    """
    cupy_engine = sys.modules.get("anyoptim.engines.cupy")
    if cupy_engine is not None and cupy_engine.capturing():
        if a.ndim == 1:
            return cupy_engine.matmul(a[None, :], b)[0]
        return cupy_engine.matmul(a, b)
    return a @ b
