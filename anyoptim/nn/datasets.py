"""Small data sets for the experiments: generated on the host, or loaded from the user's own files (:mod:`.files`).

Every generator draws from ``numpy.random.default_rng(seed)`` on the host and returns ``X`` (float64, shape
(n_samples, n_features)) and integer labels ``y`` (shape (n_samples,)) as NumPy arrays; nothing is downloaded.  The
keyword-only ``xp``, ``dtype`` and ``device`` move both to another namespace (``dtype``, of ``X``, is cast from
float64, which every library rounds alike).  This module may import NumPy: generation and file reading run on the host.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np  # host-side generation and file I/O only

from .data import check_int, host_rng
from .files import DataFileError, MissingDataFileError, deliver, load_csv, load_npz

__all__ = [
    "DataFileError",
    "MissingDataFileError",
    "load_csv",
    "load_npz",
    "make_blobs",
    "make_circles",
    "make_moons",
    "make_spirals",
]


# --------------------------------------------------------------------------- shared helpers


def _check_noise(noise: Any) -> float:
    try:
        value = float(noise)
    except (TypeError, ValueError):
        raise TypeError(f"noise must be a number, got {noise!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    return value


def _shuffle_and_noise(rng: np.random.Generator, X: np.ndarray, y: np.ndarray, noise: float):
    """Shuffle the rows, then add Gaussian noise of standard deviation ``noise`` (scikit-learn's order)."""
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    if noise > 0:
        X = X + rng.normal(scale=noise, size=X.shape)
    return X, y


def _two_classes(
    rng: np.random.Generator,
    outer: tuple[np.ndarray, np.ndarray],
    inner: tuple[np.ndarray, np.ndarray],
    noise: float,
    xp: Any,
    dtype: Any,
    device: Any,
) -> tuple[Any, Any]:
    """Points ``(x, y)`` of class 0 (``outer``) then class 1 (``inner``), shuffled, noised and delivered."""
    X = np.vstack([np.append(outer[0], inner[0]), np.append(outer[1], inner[1])]).T
    y = np.hstack([np.zeros(len(outer[0]), dtype=np.int64), np.ones(len(inner[0]), dtype=np.int64)])
    X, y = _shuffle_and_noise(rng, X, y, noise)
    return deliver(X, y, xp, dtype, device)


def _split_counts(n_samples: int, n_groups: int) -> list[int]:
    """``n_samples`` split into ``n_groups`` near-equal counts, the extra ones to the first groups."""
    return [n_samples // n_groups + (1 if i < n_samples % n_groups else 0) for i in range(n_groups)]


# --------------------------------------------------------------------------- generators


def make_moons(
    n_samples: int = 300, noise: float = 0.2, seed: Any = 0, *, xp: Any = None, dtype: Any = None, device: Any = None
) -> tuple[Any, Any]:
    """Two interleaving half circles, following scikit-learn's ``make_moons``.

    The outer moon is :math:`(\\cos t, \\sin t)` and the inner one :math:`(1 - \\cos t, 1 - \\sin t - 0.5)` for
    ``t = linspace(0, π, ·)``; ``n_samples // 2`` points go to the outer moon (label 0), the rest to the inner one.

    Parameters
    ----------
    n_samples : int, default 300
        Total points, at least 2.
    noise : float, default 0.2
        Standard deviation of the Gaussian noise added to each coordinate once the rows are shuffled, finite, >= 0.
    seed : int or sequence of int, default 0
        Seed of ``numpy.random.default_rng``: the same seed gives the same points on every backend.
    xp, dtype, device : optional
        Namespace, dtype of ``X`` (or its name, ``"float32"``) and device of the result; default NumPy, float64.

    Returns
    -------
    X : array, shape (n_samples, 2)
        The points, of dtype ``dtype``.
    y : array of int, shape (n_samples,)
        The class of each point, 0 (outer moon) or 1 (inner moon), int64.

    Examples
    --------
    >>> from anyoptim import datasets
    >>> X, y = datasets.make_moons(n_samples=300, noise=0.2, seed=0)
    >>> X.shape, int(y.sum())
    ((300, 2), 150)
    """
    n_samples = check_int("n_samples", n_samples, minimum=2)
    noise = _check_noise(noise)
    rng = host_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0, np.pi, n_out)
    t_in = np.linspace(0, np.pi, n_in)
    outer = (np.cos(t_out), np.sin(t_out))
    inner = (1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5)
    return _two_classes(rng, outer, inner, noise, xp, dtype, device)


def make_circles(
    n_samples: int = 300,
    noise: float = 0.1,
    factor: float = 0.5,
    seed: Any = 0,
    *,
    xp: Any = None,
    dtype: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """A circle inside a larger one, following scikit-learn's ``make_circles``.

    ``n_samples // 2`` points on the unit circle (label 0), the rest on a circle of radius ``factor`` (label 1),
    evenly spaced in angle; shuffled, then Gaussian noise of standard deviation ``noise`` is added.

    Parameters
    ----------
    n_samples : int, default 300
        Total points, at least 2.
    noise : float, default 0.1
        Standard deviation of the Gaussian noise added to each coordinate, finite and >= 0.
    factor : float, default 0.5
        Radius of the inner circle, in (0, 1).
    seed, xp, dtype, device : optional
        See :func:`make_moons`.

    Returns
    -------
    X : array, shape (n_samples, 2)
        The points, of dtype ``dtype``.
    y : array of int, shape (n_samples,)
        The class of each point, 0 (outer circle) or 1 (inner circle), int64.

    Examples
    --------
    >>> from anyoptim import datasets
    >>> X, y = datasets.make_circles(n_samples=10, noise=0.0, seed=0)
    >>> X.shape, sorted(set(y.tolist()))
    ((10, 2), [0, 1])
    """
    n_samples = check_int("n_samples", n_samples, minimum=2)
    noise = _check_noise(noise)
    factor = float(factor)
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor!r}")
    rng = host_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    outer = (np.cos(t_out), np.sin(t_out))
    inner = (factor * np.cos(t_in), factor * np.sin(t_in))
    return _two_classes(rng, outer, inner, noise, xp, dtype, device)


def make_spirals(
    n_samples: int = 300,
    n_classes: int = 2,
    noise: float = 0.2,
    turns: float = 1.0,
    seed: Any = 0,
    *,
    xp: Any = None,
    dtype: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Interleaved spiral arms, one per class (the classic CS231n toy problem).

    The points :math:`(r \\sin\\theta, r \\cos\\theta)` of arm ``k`` have radius ``r = linspace(0, 1, ·)`` and angle
    :math:`\\theta = 2\\pi (k / K + \\text{turns} \\cdot r) + \\text{noise} \\cdot N(0, 1)`; rows shuffled.  The
    noise is on the angle, so it blurs the arms without moving points off the unit disc.

    Parameters
    ----------
    n_samples : int, default 300
        Total points, split as evenly as possible between the classes.
    n_classes : int, default 2
        Number of arms (``K`` above), at least 2.
    noise : float, default 0.2
        Standard deviation of the angle noise, in radians.
    turns : float, default 1
        Turns of each arm from the centre to radius 1, finite and > 0.
    seed, xp, dtype, device : optional
        See :func:`make_moons`.

    Returns
    -------
    X : array, shape (n_samples, 2)
        The points, of dtype ``dtype``.
    y : array of int, shape (n_samples,)
        The arm of each point, 0 .. n_classes - 1, int64.

    Examples
    --------
    >>> from anyoptim import datasets
    >>> X, y = datasets.make_spirals(n_samples=90, n_classes=3, seed=1)
    >>> X.shape, sorted(set(y.tolist()))
    ((90, 2), [0, 1, 2])
    """
    n_classes = check_int("n_classes", n_classes, minimum=2)
    n_samples = check_int("n_samples", n_samples, minimum=n_classes)
    noise = _check_noise(noise)
    turns = float(turns)
    if not math.isfinite(turns) or turns <= 0:
        raise ValueError(f"turns must be a finite number > 0, got {turns!r}")
    rng = host_rng(seed)
    points, labels = [], []
    for label, count in enumerate(_split_counts(n_samples, n_classes)):
        radius = np.linspace(0.0, 1.0, count)
        angle = 2 * np.pi * (label / n_classes + turns * radius) + noise * rng.standard_normal(count)
        points.append(np.column_stack([radius * np.sin(angle), radius * np.cos(angle)]))
        labels.append(np.full(count, label, dtype=np.int64))
    X, y = _shuffle_and_noise(rng, np.vstack(points), np.concatenate(labels), 0.0)
    return deliver(X, y, xp, dtype, device)


def make_blobs(
    n_samples: int = 300,
    centers: Any = 3,
    n_features: int = 2,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] = (-10.0, 10.0),
    seed: Any = 0,
    *,
    xp: Any = None,
    dtype: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Isotropic Gaussian clusters, following scikit-learn's ``make_blobs``.

    Parameters
    ----------
    n_samples : int, default 300
        Total points, split as evenly as possible between the clusters.
    centers : int or array-like of shape (n_centers, n_features), default 3
        How many centers to draw uniformly from ``center_box``, or the centers.
    n_features : int, default 2
        Ignored when ``centers`` are given.
    cluster_std : float, default 1.0
        Standard deviation of every coordinate around its cluster's center, >= 0.
    center_box : (float, float), default (-10, 10)
        Bounds ``(low, high)`` of the centers drawn; ignored when ``centers`` are given.
    seed, xp, dtype, device : optional
        See :func:`make_moons`.

    Returns
    -------
    X : array, shape (n_samples, n_features)
        The points, of dtype ``dtype``.
    y : array of int, shape (n_samples,)
        The cluster of each point, 0 .. n_centers - 1, int64.

    Examples
    --------
    >>> from anyoptim import datasets
    >>> X, y = datasets.make_blobs(n_samples=100, centers=4, n_features=3, seed=0)
    >>> X.shape, sorted(set(y.tolist()))
    ((100, 3), [0, 1, 2, 3])
    """
    rng = host_rng(seed)
    std = _check_noise(cluster_std)
    if isinstance(centers, (int, np.integer)) and not isinstance(centers, bool):
        n_centers = check_int("centers", centers)
        n_features = check_int("n_features", n_features)
        low, high = (float(v) for v in center_box)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"center_box must be (low, high) with low < high, got {center_box!r}")
        points = rng.uniform(low, high, size=(n_centers, n_features))
    else:
        try:
            points = np.asarray(centers, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"centers must be an int or an array of center coordinates, got {centers!r}") from None
        if points.ndim != 2 or points.shape[0] == 0 or not np.all(np.isfinite(points)):
            raise ValueError(f"centers must be a finite 2-D array (n_centers, n_features), got shape {points.shape}")
        n_centers = points.shape[0]
    n_samples = check_int("n_samples", n_samples, minimum=n_centers)
    counts = _split_counts(n_samples, n_centers)
    width = points.shape[1]
    X = np.vstack(
        [center + std * rng.standard_normal((count, width)) for center, count in zip(points, counts, strict=True)]
    )
    y = np.repeat(np.arange(n_centers, dtype=np.int64), counts)
    X, y = _shuffle_and_noise(rng, X, y, 0.0)
    return deliver(X, y, xp, dtype, device)


# --------------------------------------------------------------------------- loaders
