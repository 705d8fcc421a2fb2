"""Figures of the lesson's experiments, written as PNG files.

matplotlib is an optional dependency (``pip install "anyoptim[plot]"``): it is
imported only when a figure is drawn, and :func:`require_matplotlib` raises
:class:`MatplotlibMissing` with the install command when it is absent.
Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so drawing
never opens a window nor changes the backend of a user's session.

Every function takes plain numbers or arrays of any Array API library (moved
to NumPy here), writes one file and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np  # figures are drawn from host copies of the arrays

__all__ = [
    "INSTALL_HINT",
    "MatplotlibMissing",
    "plot_batch_sizes",
    "plot_decision_boundary",
    "plot_loss_bands",
    "plot_loss_curves",
    "plot_trajectories",
    "require_matplotlib",
    "to_numpy",
]

INSTALL_HINT = 'matplotlib is not installed; install it with: pip install "anyoptim[plot]"'

# One colour per optimizer, the same in every figure.
_COLOURS = {"GD": "tab:blue", "Momentum": "tab:orange", "RMSprop": "tab:green", "Adam": "tab:red"}


# Class colours of decision-boundary plots: points, and the lighter regions behind them.
_CLASS_DOTS = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]
_CLASS_FILLS = ["#f4c7c3", "#c6dbef", "#c7e9c0", "#dadaeb", "#fdd0a2"]


class MatplotlibMissing(ImportError):
    """matplotlib is needed for figures and is not installed."""


def require_matplotlib() -> Any:
    """Import matplotlib's ``Figure`` class, or raise :class:`MatplotlibMissing` saying how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MatplotlibMissing(INSTALL_HINT) from None
    return Figure


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of an array of any library (CuPy and torch devices included)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("cupy"):
        return x.get()
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(np.from_dlpack(x))


def _new_figure(width: float = 6.4, height: float = 4.8) -> Any:
    figure_class = require_matplotlib()
    return figure_class(figsize=(width, height), layout="constrained")


def _save(figure: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _colour(label: str) -> str | None:
    return _COLOURS.get(label.split(" ")[0])


def plot_loss_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str = "Cost per epoch",
    loss: str = "mean binary cross-entropy",
) -> Path:
    """All loss curves in one figure, cost on a log scale.

    Parameters
    ----------
    curves : mapping
        Label -> cost per epoch.  Labels ending in "+ decay" are drawn dashed.
    path : path-like
        Where to write the PNG.
    """
    figure = _new_figure(8.0, 4.8)
    axes = figure.add_subplot()
    for label, costs in curves.items():
        style = "--" if label.endswith("decay") else "-"
        axes.plot(np.arange(1, len(costs) + 1), costs, style, label=label, color=_colour(label), linewidth=1.2)
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"cost ({loss})")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves fill the whole plot
    return _save(figure, path)


def plot_loss_bands(
    bands: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    title: str = "Cost per epoch over seeds",
    loss: str = "mean binary cross-entropy",
) -> Path:
    """Loss curves over several seeds: the median as a line, the range (min-max) as a shaded band.

    Parameters
    ----------
    bands : mapping
        Label -> (median, minimum, maximum) cost per epoch, as
        :meth:`anyoptim.lesson.seeds.SeedSummary.band` gives them.  Labels ending
        in "+ decay" are drawn dashed.
    path : path-like
        Where to write the PNG.
    """
    figure = _new_figure(8.0, 4.8)
    axes = figure.add_subplot()
    for label, (median, low, high) in bands.items():
        epochs = np.arange(1, len(median) + 1)
        style = "--" if label.endswith("decay") else "-"
        (line,) = axes.plot(epochs, median, style, label=label, color=_colour(label), linewidth=1.2)
        axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"cost ({loss})")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def plot_decision_boundary(
    model: Any,
    params: Mapping[str, Any],
    X: Any,
    y: Any,
    path: str | os.PathLike,
    *,
    title: str = "Decision boundary",
    resolution: int = 300,
) -> Path:
    """The model's predicted class over the plane, with the data points on top (any number of classes).

    The grid is evaluated with ``model`` on NumPy copies of ``params``, so the
    figure looks the same whichever backend trained them.

    Parameters
    ----------
    model
        An :class:`anyoptim.MLP` with two inputs.
    params : dict
        Its parameters (any Array API library).
    X, y
        The data: ``X`` of shape (n, 2), ``y`` class labels (n,) or (n, 1), or one-hot rows (n, K).
    path : path-like
    resolution : int
        Grid points along each axis.
    """
    host_params = {name: to_numpy(value) for name, value in params.items()}
    points = to_numpy(X).astype(np.float64)
    host_y = to_numpy(y)
    one_hot = host_y.ndim == 2 and host_y.shape[1] > 1
    labels = (host_y.argmax(axis=1) if one_hot else host_y.reshape(-1)).astype(np.int64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"a decision boundary needs X of shape (n, 2), got {points.shape}")
    dtype = next(iter(host_params.values())).dtype
    margin = 0.5
    x_min, y_min = points.min(axis=0) - margin
    x_max, y_max = points.max(axis=0) + margin
    xs = np.linspace(x_min, x_max, resolution)
    ys = np.linspace(y_min, y_max, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(dtype)
    classes = to_numpy(model.predict(host_params, grid)).reshape(grid_x.shape)

    figure = _new_figure(5.6, 4.8)
    axes = figure.add_subplot()
    n_classes = int(max(classes.max(), labels.max())) + 1
    dots = _CLASS_DOTS[:n_classes] if n_classes <= len(_CLASS_DOTS) else None
    fills = _CLASS_FILLS[:n_classes] if n_classes <= len(_CLASS_FILLS) else None
    levels = np.arange(n_classes + 1) - 0.5
    axes.contourf(grid_x, grid_y, classes, levels=levels, colors=fills, alpha=0.9)
    for label in range(n_classes):
        chosen = labels == label
        colour = dots[label] if dots else None
        axes.scatter(points[chosen, 0], points[chosen, 1], s=12, color=colour, edgecolors="k", linewidths=0.3)
    axes.set_xlim(x_min, x_max)
    axes.set_ylim(y_min, y_max)
    axes.set_xlabel("x1")
    axes.set_ylabel("x2")
    axes.set_title(title)
    return _save(figure, path)


def plot_trajectories(
    surface: Any, trajectories: Sequence[Any], path: str | os.PathLike, *, resolution: int = 400
) -> Path:
    """Paths of several optimizers drawn on the contour plot of one surface.

    Parameters
    ----------
    surface : anyoptim.lesson.trajectories.Surface
        Its ``value``, ``window``, ``minimum`` and ``title`` are used.
    trajectories : sequence of anyoptim.lesson.trajectories.Trajectory
        Each with ``optimizer``, ``learning_rate`` and ``points``.
    path : path-like
    """
    x_min, x_max, y_min, y_max = surface.window
    grid_x, grid_y = np.meshgrid(np.linspace(x_min, x_max, resolution), np.linspace(y_min, y_max, resolution))
    values = surface.value(grid_x, grid_y)
    # Contour levels spaced evenly in log(value) show both the steep walls and the flat valley floor.
    low = max(float(values.min()), 1e-3)
    levels = np.geomspace(low, float(values.max()), 25)

    figure = _new_figure(7.0, 5.2)
    axes = figure.add_subplot()
    axes.contour(grid_x, grid_y, values, levels=levels, colors="0.6", linewidths=0.6)
    for order, path_ in enumerate(trajectories):
        points = np.asarray(path_.points)
        axes.plot(
            points[:, 0],
            points[:, 1],
            ".-" if len(points) <= 101 else "-",  # markers show single steps; on long paths they only blur
            markersize=2.5,
            zorder=3 + len(trajectories) - order,  # the first optimizer (GD) on top: it has the shortest path
            linewidth=1.0,
            color=_colour(path_.optimizer),
            label=f"{path_.optimizer} (lr {path_.learning_rate:g}, {len(points) - 1} steps)",
        )
        # Where each path ended: on a curved valley the paths overlap, their ends do not.
        axes.plot(*points[-1], "o", color=_colour(path_.optimizer), markeredgecolor="k", markersize=6, zorder=10)
    axes.plot(*surface.start, "ko", markersize=5)
    axes.plot(*surface.minimum, "k*", markersize=11)
    axes.set_xlim(x_min, x_max)
    axes.set_ylim(y_min, y_max)
    axes.set_xlabel("x")
    axes.set_ylabel("y")
    axes.set_title(surface.title)
    axes.legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_batch_sizes(curves: Sequence[Any], path: str | os.PathLike) -> Path:
    """Batch, mini-batch and stochastic gradient descent, step by step, in two panels.

    Left: the cost of each step's batch (the noisy curve a training loop sees);
    right: the cost on the whole training set after each step.

    Parameters
    ----------
    curves : sequence of anyoptim.lesson.batch_sizes.BatchSizeCurve
        Each with ``label``, ``batch_size``, ``batch_costs`` and ``full_costs``;
        drawn noisiest first so that the smoother curves stay visible on top.
    path : path-like
    """
    figure = _new_figure(11.0, 4.4)
    seen, whole = figure.subplots(1, 2, sharex=True)
    colours = {"batch GD": "tab:blue", "stochastic GD": "0.6"}
    ordered = sorted(curves, key=lambda c: c.batch_size)
    for curve in ordered:
        steps = np.arange(1, len(curve.batch_costs) + 1)
        noisy = curve.batch_size == 1
        style = {"color": colours.get(curve.label, "tab:orange"), "linewidth": 0.7 if noisy else 1.3}
        seen.plot(steps, curve.batch_costs, label=curve.label, alpha=0.6 if noisy else 1.0, **style)
        # Dashed: the mini-batch curve runs so close to batch GD's that a solid line would hide it.
        whole.plot(steps, curve.full_costs, "--" if curve.label == "batch GD" else "-", label=curve.label, **style)
    # One example's loss can be far above the average: keep the axis on the averages.
    largest = (
        max(max(c.full_costs[0], *c.batch_costs[:1]) for c in ordered if c.batch_size > 1) if len(ordered) > 1 else None
    )
    if largest is not None:
        seen.set_ylim(0, 1.6 * largest)
    seen.set_title("cost of each step's batch (one-example losses clipped)")
    whole.set_title("cost on the whole training set after each step")
    for axes in (seen, whole):
        axes.set_xlabel("step")
        axes.set_ylabel("cost")
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle("Gradient descent with different batch sizes, same rate and number of steps")
    return _save(figure, path)
