"""Mini-batches, input checks, and the host-side randomness that makes every backend agree.

Every random number anyoptim draws for training (initial weights, the order of
the examples in each epoch, generated data sets) comes from a seeded
:func:`numpy.random.default_rng` on the host, in float64, and is then moved to
the data's namespace and device.  So one seed gives the same weights and the
same mini-batches on NumPy, CuPy, torch, JAX and array-api-strict, which is what
lets whole training runs be compared backend against backend.

This module may import NumPy: host-side RNG is the exception the house rules allow.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np  # host-side RNG and host arrays only; the math stays in the array's namespace

from .._namespace import array_namespace, device_of, is_array, is_floating

__all__ = ["epoch_seed", "minibatches"]

Seed = int | Sequence[int] | np.random.SeedSequence


# --------------------------------------------------------------------------- host randomness


def host_rng(seed: Seed) -> np.random.Generator:
    """The host generator every anyoptim draw uses: ``numpy.random.default_rng(seed)``.

    ``seed`` may be an int, a sequence of ints or a :class:`numpy.random.SeedSequence`.
    """
    if isinstance(seed, bool):
        raise TypeError(f"seed must be a non-negative int or a sequence of them, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as error:
        raise ValueError(f"seed must be a non-negative int or a sequence of them, got {seed!r} ({error})") from None


def epoch_seed(seed: Seed, epoch: int) -> np.random.SeedSequence:
    """The seed of epoch ``epoch``'s shuffle in :func:`anyoptim.fit`: child ``epoch`` of ``SeedSequence(seed)``.

    Equal to ``numpy.random.SeedSequence(seed).spawn(epoch + 1)[epoch]``: a stream
    independent of the one that draws the initial weights (``default_rng(seed)``)
    and of every other epoch's.  (``default_rng([seed, 0])`` would not do: NumPy
    treats trailing zero words as absent, so it equals ``default_rng(seed)``.)
    """
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, epoch))
    if isinstance(seed, bool):
        raise TypeError(f"seed must be a non-negative int or a sequence of them, got {seed!r}")
    try:
        return np.random.SeedSequence(seed, spawn_key=(epoch,))
    except (TypeError, ValueError) as error:
        raise ValueError(f"seed must be a non-negative int or a sequence of them, got {seed!r} ({error})") from None


def resolve_dtype(xp: Any, dtype: Any) -> Any:
    """A dtype of ``xp`` from a dtype object or its name (``"float32"``); None stays None."""
    if dtype is None or not isinstance(dtype, str):
        return dtype
    found = getattr(xp, dtype, None)
    if found is None:
        raise ValueError(f"unknown dtype {dtype!r} for this array library")
    return found


def to_namespace(array: np.ndarray, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Any:
    """Move a host NumPy array to namespace ``xp`` (NumPy when None), with ``dtype`` and on ``device``.

    The cast happens on the host, in NumPy, when ``dtype`` has a NumPy
    equivalent, so every backend receives exactly the same rounded values.
    """
    if xp is None:
        if device not in (None, "cpu"):
            raise ValueError(f"device={device!r} needs xp= (NumPy arrays live on the CPU)")
        return np.asarray(array, dtype=np.dtype(dtype) if dtype is not None else None)
    dtype = resolve_dtype(xp, dtype)
    if device is None:
        return xp.asarray(array, dtype=dtype)
    return xp.asarray(array, dtype=dtype, device=device)


def host_permutation(n: int, seed: Seed) -> np.ndarray:
    """The order of ``n`` examples for one epoch, drawn on the host."""
    return host_rng(seed).permutation(n)


# --------------------------------------------------------------------------- input checks


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a one-line error naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def check_features(X: Any, *, name: str = "X") -> tuple[Any, Any]:
    """Check that ``X`` is a finite 2-D floating-point array; return its namespace and device."""
    if not is_array(X):
        raise TypeError(f"{name} must be an array of shape (n_samples, n_features), got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    xp = array_namespace(X)
    if not is_floating(xp, X.dtype):
        raise TypeError(f"{name} must have a real floating-point dtype, got {X.dtype}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no samples (shape {tuple(X.shape)})")
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(f"{name} contains NaN or infinity")
    return xp, device_of(X)


def check_labels(y: Any, n_samples: int, xp: Any, device: Any, *, name: str = "y") -> None:
    """Check that ``y`` is a finite 1-D or 2-D array of ``n_samples`` rows from ``xp`` on ``device``."""
    if not is_array(y):
        raise TypeError(f"{name} must be an array, got {type(y).__name__}")
    if array_namespace(y) is not xp:
        raise TypeError(f"{name} comes from another array library than X")
    if device_of(y) != device:
        raise ValueError(f"{name} is on device {device_of(y)} but X is on {device}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got shape {tuple(y.shape)}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} samples but X has {n_samples}")
    if is_floating(xp, y.dtype) and not bool(xp.all(xp.isfinite(y))):
        raise ValueError(f"{name} contains NaN or infinity")


# --------------------------------------------------------------------------- mini-batches


def shuffled(X: Any, y: Any, seed: Seed, xp: Any, device: Any) -> tuple[Any, Any]:
    """``X`` and ``y`` with their rows in the order of :func:`host_permutation` (no checks)."""
    order = xp.asarray(host_permutation(X.shape[0], seed), device=device)
    return xp.take(X, order, axis=0), xp.take(y, order, axis=0)


def batch_slices(n_samples: int, batch_size: int) -> list[slice]:
    """The rows of each mini-batch: consecutive slices of ``batch_size``, the last one holding the remainder."""
    # Stops clipped to n_samples: the Array API specifies no out-of-range slices.
    return [slice(start, min(start + batch_size, n_samples)) for start in range(0, n_samples, batch_size)]


def split(X: Any, y: Any, batch_size: int) -> list[tuple[Any, Any]]:
    """Consecutive slices of ``batch_size`` rows, the last one holding the remainder (no checks)."""
    # A trailing "..." on every index: the Array API specifies no fewer indices than axes.
    return [(X[rows, ...], y[rows, ...]) for rows in batch_slices(X.shape[0], batch_size)]


def minibatches(X: Any, y: Any, batch_size: int = 64, seed: Seed = 0, shuffle: bool = True) -> list[tuple[Any, Any]]:
    """Shuffle the examples, then split them into mini-batches.

    Parameters
    ----------
    X : array, shape (n_samples, n_features)
        The examples, one per row: a finite array of a real floating dtype, of
        any Array API library and device.
    y : array, shape (n_samples,) or (n_samples, n_outputs)
        Labels or targets, from the same namespace and device as ``X``.
    batch_size : int, default 64
        Rows per batch; the last batch holds the remainder.  ``batch_size =
        n_samples`` is batch gradient descent, ``batch_size = 1`` stochastic
        gradient descent.
    seed : int, sequence of int or numpy.random.SeedSequence, default 0
        Seed of the permutation, drawn on the host with
        ``numpy.random.default_rng(seed)`` and moved to ``X``'s device, so every
        backend gets the same batches.  :func:`anyoptim.fit` shuffles epoch ``e``
        with ``seed=anyoptim.nn.data.epoch_seed(seed, e)``.
    shuffle : bool, default True
        False keeps the examples in their order.

    Returns
    -------
    list of (X_batch, y_batch)
        ``ceil(n_samples / batch_size)`` batches that together hold every example
        exactly once; ``X_batch`` has shape (batch, n_features) and ``y_batch``
        the matching rows of ``y``, both of the inputs' namespace, device and dtype.

    Raises
    ------
    TypeError
        If ``X`` or ``y`` is not an array, ``X`` is not floating point, ``y``
        comes from another library, or ``batch_size`` is not an int.
    ValueError
        If the shapes are wrong or disagree, ``X`` (or a floating ``y``) holds
        NaN or infinity, ``y`` is on another device, ``batch_size`` is below 1,
        or ``seed`` is not a valid NumPy seed.

    See Also
    --------
    fit : Trains on these batches, one shuffle per epoch.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> X, y = np.zeros((300, 2)), np.zeros(300)
    >>> [len(xb) for xb, yb in anyoptim.minibatches(X, y, batch_size=64)]
    [64, 64, 64, 64, 44]

    The rows of ``X`` and ``y`` stay paired, and the order depends on ``seed`` alone:

    >>> X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    >>> batches = anyoptim.minibatches(X, y, batch_size=2, seed=0)
    >>> [yb.tolist() for xb, yb in batches]
    [[2, 4], [3, 0], [1]]
    >>> batches[0][0].tolist()
    [[4.0, 5.0], [8.0, 9.0]]
    >>> [yb.tolist() for xb, yb in anyoptim.minibatches(X, y, batch_size=2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """
    xp, device = check_features(X)
    check_labels(y, X.shape[0], xp, device)
    batch_size = check_int("batch_size", batch_size)
    host_rng(seed)  # a bad seed fails even when shuffle is False
    if shuffle:
        X, y = shuffled(X, y, seed, xp, device)
    return split(X, y, batch_size)


def batch_count(n_samples: int, batch_size: int) -> int:
    """How many mini-batches :func:`minibatches` makes: ``ceil(n_samples / batch_size)``."""
    return math.ceil(n_samples / batch_size)


def host_zeros(size: int) -> np.ndarray:
    """A float64 vector of zeros on the host (initial biases)."""
    return np.zeros(size)
