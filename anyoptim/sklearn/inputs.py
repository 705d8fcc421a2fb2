"""The estimators' input: scikit-learn's validation for host data, the Array API for every other library.

NumPy arrays, lists and data frames go through scikit-learn's
:func:`~sklearn.utils.validation.validate_data` (float64 or float32 kept,
anything else cast to float64).  Arrays of another Array-API library (torch,
JAX, CuPy, array-api-strict) stay in their library and on their device, as
they do under scikit-learn's ``array_api_dispatch``: the network trains there.
Class labels are few, so they are encoded on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import validate_data

from .._namespace import array_namespace, device_of, is_array, is_floating

__all__ = ["as_host", "check_X", "check_X_y", "is_device_array", "take_rows"]


def is_device_array(x: Any) -> bool:
    """Whether ``x`` is an array of an Array-API library other than NumPy (it keeps its library)."""
    return is_array(x) and not isinstance(x, np.ndarray | np.generic)


def as_host(x: Any) -> np.ndarray:
    """A NumPy copy of an array of any library (CuPy and torch on a GPU included)."""
    if isinstance(x, np.ndarray):
        return x
    getter = getattr(x, "get", None)
    if callable(getter) and type(x).__module__.startswith("cupy"):
        return getter()
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError):
        xp = array_namespace(x)
        return np.from_dlpack(xp.asarray(x, device=_cpu_device(xp, x), copy=True))


def _cpu_device(xp: Any, x: Any) -> Any:
    name = type(x).__module__
    if name.startswith("torch"):
        return "cpu"
    return device_of(x)


def _check_device_X(X: Any) -> Any:
    xp = array_namespace(X)
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead: reshape your data")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with shape {tuple(X.shape)}: at least one sample and one feature are required")
    if not is_floating(xp, X.dtype):
        X = xp.astype(X, xp.float64)
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError("Input X contains NaN or infinity")
    return X


def check_X(estimator: Any, X: Any, *, reset: bool) -> Any:
    """``X`` validated: a float64/float32 NumPy array, or the same library's floating array."""
    if not is_device_array(X):
        return validate_data(estimator, X, reset=reset, dtype=(np.float64, np.float32))
    X = _check_device_X(X)
    if reset:
        estimator.n_features_in_ = X.shape[1]
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif X.shape[1] != estimator.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input"
        )
    return X


def check_X_y(estimator: Any, X: Any, y: Any, *, reset: bool, regression: bool) -> tuple[Any, Any]:
    """``X`` as :func:`check_X` and ``y`` with as many rows; ``y`` is numeric for regression."""
    if not is_device_array(X):
        return validate_data(
            estimator,
            X,
            y,
            reset=reset,
            dtype=(np.float64, np.float32),
            multi_output=regression,
            y_numeric=regression,
        )
    X = check_X(estimator, X, reset=reset)
    if is_device_array(y):
        if array_namespace(y) is not array_namespace(X):
            raise TypeError("X and y come from different array libraries")
    elif regression:
        y = np.asarray(y, dtype=np.float64)
    else:
        y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"y has shape {tuple(y.shape)}: expected ({X.shape[0]},) or ({X.shape[0]}, n_outputs)")
    return X, y


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` (host integer indices) of ``X``, in ``X``'s library and on its device."""
    if isinstance(X, np.ndarray):
        return X[rows]
    xp = array_namespace(X)
    return xp.take(X, xp.asarray(rows, device=device_of(X)), axis=0)
