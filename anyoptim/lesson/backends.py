"""Backends and devices by name: which array library an experiment runs on, and where.

:func:`load_backend` imports only the chosen library and turns every way a name
can fail (unknown, not installed, no GPU) into one :class:`ExperimentError`
line; :func:`resolve_device` finds a device of that library by a loose name.
"""

from __future__ import annotations

import importlib
import re
import warnings
from typing import Any

from .checks import ExperimentError

__all__ = ["BACKENDS", "DTYPES", "load_backend", "resolve_device"]

BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")
DTYPES = ("float32", "float64")


def load_backend(name: str, dtype: str = "float64") -> Any:
    """The Array API namespace of backend ``name``.

    Parameters
    ----------
    name : {"numpy", "cupy", "torch", "jax", "array_api_strict"}
    dtype : {"float32", "float64"}
        JAX needs 64-bit mode switched on before float64 arrays can exist.

    Raises
    ------
    ExperimentError
        If the name is unknown, its library is not installed, or ``cupy`` is
        asked for on a machine without a CUDA GPU.
    """
    if name not in BACKENDS:
        raise ExperimentError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _check_dtype_name(dtype)
    # The namespaces are imported by name so that only the chosen library is loaded.
    module = {
        "numpy": "array_api_compat.numpy",
        "cupy": "array_api_compat.cupy",
        "torch": "array_api_compat.torch",
        "jax": "jax.numpy",
        "array_api_strict": "array_api_strict",
    }[name]
    try:
        if name == "cupy":
            _check_gpu()
        if name == "jax" and dtype == "float64":
            importlib.import_module("jax").config.update("jax_enable_x64", True)
        return importlib.import_module(module)
    except ImportError as error:
        hint = ' (pip install "anyoptim[cuda12]" or "anyoptim[cuda13]")' if name == "cupy" else ""
        raise ExperimentError(f"backend {name!r} is not installed: {error}{hint}") from None


def _check_gpu() -> None:
    # cupy imports fine on machines without a GPU; asking the runtime is the only reliable test.
    cupy = importlib.import_module("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # the CUDA runtime raises its own error types when no driver is present
        count = 0
    if count <= 0:
        raise ExperimentError("backend 'cupy' needs a CUDA GPU, and this machine has none")


def _check_dtype_name(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ExperimentError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return dtype


def resolve_device(xp: Any, device: str | None) -> Any:
    """The device object of ``xp`` named ``device`` (``None``: the library's default).

    Names are matched loosely: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"gpu:0"``,
    a bare index, or the device's own string form.

    Raises
    ------
    ExperimentError
        If no device of ``xp`` has that name, or arrays cannot be created on it.
    """
    if device is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about deprecated device types while listing them
        candidates = [d for d in xp.__array_namespace_info__().devices() if d is not None]
    wanted = device.strip().lower()
    for candidate in candidates:
        if wanted in _device_names(candidate)[1]:
            try:
                xp.zeros((1,), device=candidate)
            except Exception as error:
                raise ExperimentError(f"device {device!r} cannot hold arrays: {error}") from None
            return candidate
    available = ", ".join(dict.fromkeys(_device_names(d)[0] for d in candidates))
    raise ExperimentError(f"device {device!r} is not available here; available: {available}")


def _device_names(device: Any) -> tuple[str, set[str]]:
    """How to show a device, and the names (lower case) it answers to."""
    if isinstance(device, str):  # NumPy's only device is the string "cpu"
        return device, {device.lower()}
    text = str(device)
    quoted = re.search(r"Device\('(.+)'\)", text)  # array_api_strict.Device('CPU_DEVICE')
    if quoted:
        name = quoted.group(1)
        return name, {text.lower(), name.lower(), *(("cpu",) if name == "CPU_DEVICE" else ())}
    kind = _attribute(device, "type") or _attribute(device, "platform")
    index = _attribute(device, "index")
    if index is None:
        index = _attribute(device, "id")
    if kind is None and index is not None:
        kind = "cuda"  # cupy.cuda.Device has an id and no type
    if kind is None:
        return text, {text.lower()}
    kind = str(kind).lower()
    gpu = kind in ("cuda", "gpu")
    kinds = {"cuda", "gpu"} if gpu else {kind}
    names = {text.lower(), *kinds}
    if index is not None:
        names.update({str(index), *(f"{k}:{index}" for k in kinds)})
    return (f"{kind}:{index}" if index is not None and (gpu or text.lower() != kind) else text), names


def _attribute(device: Any, name: str) -> Any:
    """A plain (non-callable) attribute of a device object, or None."""
    value = getattr(device, name, None)
    return None if callable(value) else value
