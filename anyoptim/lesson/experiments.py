"""The lesson's experiments as pure functions: no printing, no plotting.

Three experiments reproduce the classic optimization lesson:

* :func:`run_comparison` trains the lesson's 2-5-2-1 network on the two-moons
  data with gradient descent, Momentum, RMSprop and Adam, then with the stepped
  learning-rate decay (:data:`COMPARISON_RUNS`);
* :func:`run_trajectories` follows GD, Momentum, RMSprop and Adam on an
  ill-conditioned quadratic and on the Rosenbrock function (:data:`SURFACES`);
* :func:`run_batch_sizes` trains the same network with batch, mini-batch and
  stochastic gradient descent and records the cost of every step.

Each returns plain dataclasses that :mod:`anyoptim.cli` prints and
:mod:`anyoptim.plots` draws.  Backends are chosen by name with
:func:`load_backend`, which turns every way a name can fail (unknown, not
installed, no GPU) into one :class:`ExperimentError` line.
"""

from __future__ import annotations

import importlib
import itertools
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import schedules
from ..optimizers.classes import SGD, Adam, Momentum, Optimizer, RMSprop

__all__ = [
    "BACKENDS",
    "COMPARISON_RUNS",
    "DATASETS",
    "DEFAULT_SEED",
    "DTYPES",
    "LESSON",
    "SURFACES",
    "BatchSizeCurve",
    "ComparisonRow",
    "ExperimentError",
    "Problem",
    "RunSpec",
    "Surface",
    "TrainingRun",
    "Trajectory",
    "lesson_problem",
    "load_backend",
    "load_data",
    "resolve_device",
    "reversals",
    "run_batch_sizes",
    "run_comparison",
    "run_training",
    "run_trajectories",
    "step_noise",
]

BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")
DTYPES = ("float32", "float64")

# The seed of the data, the initial weights and the shuffling in every
# experiment.  With seed 2 the full 5000-epoch comparison on NumPy float64 gives
# train accuracies GD 79.7 %, Momentum 79.7 %, RMSprop 95.3 %, Adam 95.7 %; with
# the decay GD 95.7 %, Momentum 95.7 %, Adam 96.0 %: the lesson's picture
# (seeds 0-11 scanned: GD without decay reaches 80-90 %, seeds 5 and 10 leave it stuck at 50 %).
DEFAULT_SEED = 2


class ExperimentError(ValueError):
    """Bad input to an experiment (backend, device, dtype, counts): a one-line message for the user."""


# --------------------------------------------------------------------------- backends


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


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ExperimentError(f"{name} must be a positive integer, got {value!r}")
    return value


# --------------------------------------------------------------------------- the lesson's network and data


@dataclass(frozen=True)
class LessonSetup:
    """The lesson's fixed choices: data, network, batch, schedule."""

    n_samples: int = 300
    noise: float = 0.2
    layer_dims: tuple[int, ...] = (2, 5, 2, 1)
    hidden_activation: str = "relu"
    output: str = "sigmoid"
    batch_size: int = 64
    epochs: int = 5000
    decay_interval: int = 1000  # epochs between the steps of lr0 / (1 + floor(epoch / interval))


LESSON = LessonSetup()


@dataclass(frozen=True)
class Problem:
    """The moons data on one backend, and the lesson's network for it."""

    xp: Any
    X: Any
    y: Any
    model: Any


def lesson_problem(
    backend: str = "numpy", *, device: str | None = None, dtype: str = "float64", seed: int = DEFAULT_SEED
) -> Problem:
    """The lesson's data (moons, 300 samples, noise 0.2) and network (2-5-2-1, ReLU, sigmoid).

    The data are drawn on the host from ``seed`` and moved to ``backend``'s
    ``device``, so every backend sees the same numbers.
    """
    from ..nn import datasets
    from ..nn.mlp import MLP

    xp = load_backend(backend, dtype)
    where = resolve_device(xp, device)
    X, y = datasets.make_moons(
        n_samples=LESSON.n_samples, noise=LESSON.noise, seed=seed, xp=xp, dtype=getattr(xp, dtype), device=where
    )
    model = MLP(list(LESSON.layer_dims), hidden_activation=LESSON.hidden_activation, output=LESSON.output, init="he")
    return Problem(xp=xp, X=X, y=y, model=model)


def stepped_decay(lr0: float, steps_per_epoch: int, interval: int = LESSON.decay_interval) -> schedules.Schedule:
    """The lesson's ``lr0 / (1 + floor(epoch / interval))`` as a schedule of optimizer steps."""
    return schedules.inverse_time_decay(lr0, decay_steps=interval * steps_per_epoch, decay_rate=1.0, staircase=True)


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class RunSpec:
    """One row of the comparison: an optimizer, its (initial) rate, with or without the stepped decay."""

    optimizer: str
    learning_rate: float
    decay: bool

    @property
    def label(self) -> str:
        return f"{self.optimizer} + decay" if self.decay else self.optimizer

    def build(self, steps_per_epoch: int) -> Optimizer:
        """The optimizer, with the lesson's β 0.9, β1 0.9, β2 0.999, ε 1e-8."""
        rate: Any = stepped_decay(self.learning_rate, steps_per_epoch) if self.decay else self.learning_rate
        makers: dict[str, Callable[[], Optimizer]] = {
            "GD": lambda: SGD(rate),
            "Momentum": lambda: Momentum(rate, beta=0.9, form="ema"),
            "RMSprop": lambda: RMSprop(rate, beta=0.9, epsilon=1e-8),
            "Adam": lambda: Adam(rate, beta1=0.9, beta2=0.999, epsilon=1e-8),
        }
        return makers[self.optimizer]()


# The lesson's seven runs: all four at 0.0007, then the decay from 0.1 (GD, Momentum) and 0.01 (Adam).
COMPARISON_RUNS: tuple[RunSpec, ...] = (
    RunSpec("GD", 0.0007, decay=False),
    RunSpec("Momentum", 0.0007, decay=False),
    RunSpec("RMSprop", 0.0007, decay=False),
    RunSpec("Adam", 0.0007, decay=False),
    RunSpec("GD", 0.1, decay=True),
    RunSpec("Momentum", 0.1, decay=True),
    RunSpec("Adam", 0.01, decay=True),
)


@dataclass(frozen=True)
class ComparisonRow:
    """The outcome of one run of :func:`run_comparison`.

    Attributes
    ----------
    optimizer : str
        "GD", "Momentum", "RMSprop" or "Adam".
    decay : bool
        Whether the stepped decay was on.
    learning_rate : float
        The (initial) learning rate.
    final_cost : float
        The last epoch's mean cost.
    train_accuracy : float
        Accuracy on the training data after the last epoch, in [0, 1].
    wall_time : float
        Seconds the training took.
    history : anyoptim.train.History
        Cost, learning rate and time per epoch.
    params : dict
        The trained parameters, on the backend that trained them.
    """

    optimizer: str
    decay: bool
    learning_rate: float
    final_cost: float
    train_accuracy: float
    wall_time: float
    history: Any
    params: Any

    @property
    def label(self) -> str:
        return f"{self.optimizer} + decay" if self.decay else self.optimizer


def run_comparison(
    backend: str = "numpy",
    device: str | None = None,
    dtype: str = "float64",
    epochs: int = LESSON.epochs,
    seed: int = DEFAULT_SEED,
    progress: bool | None = None,
    *,
    runs: Sequence[RunSpec] = COMPARISON_RUNS,
    problem: Problem | None = None,
) -> list[ComparisonRow]:
    """Train the lesson's network with each optimizer of ``runs`` and collect the results.

    Every run starts from the same initial weights and sees the same
    mini-batches (both fixed by ``seed``), so the rows differ only in the optimizer.

    Parameters
    ----------
    backend, device, dtype
        Where to train (see :func:`load_backend`, :func:`resolve_device`).
    epochs : int, default 5000
        Passes over the 300 examples, in mini-batches of 64.
    seed : int
        Seed of the data, the initialization and the shuffling.
    progress : bool, optional
        Passed to :func:`anyoptim.fit` (None: a bar only on a terminal).
    runs : sequence of RunSpec
        Which optimizers to train; the lesson's seven by default.
    problem : Problem, optional
        Data and model made by :func:`lesson_problem` (made here when absent).

    Returns
    -------
    list of ComparisonRow
        One per run, in order.
    """
    from ..nn.train import accuracy, fit

    epochs = _check_positive_int("epochs", epochs)
    if problem is None:
        problem = lesson_problem(backend, device=device, dtype=dtype, seed=seed)
    steps_per_epoch = math.ceil(LESSON.n_samples / LESSON.batch_size)
    rows = []
    for spec in runs:
        optimizer = spec.build(steps_per_epoch)
        start = time.perf_counter()
        result = fit(
            problem.model,
            optimizer,
            problem.X,
            problem.y,
            epochs=epochs,
            batch_size=LESSON.batch_size,
            seed=seed,
            progress=progress,
        )
        wall_time = time.perf_counter() - start
        rows.append(
            ComparisonRow(
                optimizer=spec.optimizer,
                decay=spec.decay,
                learning_rate=spec.learning_rate,
                final_cost=float(result.history.cost[-1]),
                train_accuracy=float(accuracy(problem.model, result.params, problem.X, problem.y)),
                wall_time=wall_time,
                history=result.history,
                params=result.params,
            )
        )
    return rows


# --------------------------------------------------------------------------- train (any data, any optimizer)

DATASETS = ("moons", "circles", "spirals", "blobs")
OUTPUT_CHOICES = ("auto", "sigmoid", "softmax", "identity")

# Each optimizer by its command-line name, with only the learning rate set (everything else at its default).
OPTIMIZER_NAMES: dict[str, str] = {
    "gd": "SGD",
    "sgd": "SGD",
    "momentum": "Momentum",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
    "lion": "Lion",
}


@dataclass(frozen=True)
class TrainingRun:
    """The outcome of :func:`run_training`: the data, the network, and what :func:`anyoptim.fit` returned."""

    X: Any
    y: Any
    model: Any
    optimizer: Optimizer
    result: Any
    train_accuracy: float | None  # None for a regression (identity output)
    wall_time: float


def load_data(
    source: str, xp: Any, *, dtype: str, device: Any = None, n_samples: int = 300, noise: float = 0.2, seed: int = 0
) -> tuple[Any, Any]:
    """A generated data set by name (:data:`DATASETS`), or a user's ``.npz`` / ``.csv`` file by path.

    Files follow :func:`anyoptim.datasets.load_npz` (arrays ``X`` and ``y``) and
    :func:`anyoptim.datasets.load_csv` (labels in the last column).
    """
    from ..nn import datasets

    where = {"xp": xp, "dtype": getattr(xp, dtype), "device": device}
    if source in DATASETS:
        n_samples = _check_positive_int("n_samples", n_samples)
        if source == "blobs":
            return datasets.make_blobs(n_samples=n_samples, seed=seed, **where)
        make = getattr(datasets, f"make_{source}")
        return make(n_samples=n_samples, noise=noise, seed=seed, **where)
    suffix = source.rsplit(".", 1)[-1].lower() if "." in source else ""
    if suffix == "npz":
        return datasets.load_npz(source, **where)
    if suffix == "csv":
        return datasets.load_csv(source, **where)
    raise ExperimentError(f"data {source!r} is neither a data set ({', '.join(DATASETS)}) nor a .npz or .csv file")


def _output_size(xp: Any, y: Any, output: str) -> tuple[str, int]:
    """The output layer (resolving "auto") and its width for labels ``y``."""
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot rows or several regression targets
        return ("softmax" if output == "auto" else output), int(y.shape[1])
    if output == "identity":
        return output, 1
    n_classes = int(xp.max(y)) + 1
    if output == "auto":
        output = "sigmoid" if n_classes <= 2 else "softmax"
    return output, 1 if output == "sigmoid" else n_classes


def run_training(
    backend: str = "numpy",
    device: str | None = None,
    dtype: str = "float64",
    *,
    data: str = "moons",
    n_samples: int = LESSON.n_samples,
    noise: float = LESSON.noise,
    hidden: Sequence[int] = LESSON.layer_dims[1:-1],
    activation: str = LESSON.hidden_activation,
    output: str = "auto",
    optimizer: str = "adam",
    learning_rate: float = 0.001,
    batch_size: int = LESSON.batch_size,
    epochs: int = 1000,
    seed: int = DEFAULT_SEED,
    progress: bool | None = None,
) -> TrainingRun:
    """Train an MLP on a generated data set or a user's file with any optimizer of the library.

    The input width comes from the data, the output layer from the labels
    (``output="auto"``: sigmoid for two classes, softmax for more).  Every check
    (names, counts, the data themselves) runs before training starts.

    Returns
    -------
    TrainingRun
    """
    from ..nn.mlp import MLP
    from ..nn.train import accuracy, fit
    from ..optimizers import classes as optimizers

    if optimizer.lower() not in OPTIMIZER_NAMES:
        raise ExperimentError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")
    if output not in OUTPUT_CHOICES:
        raise ExperimentError(f"unknown output {output!r}; choose one of {', '.join(OUTPUT_CHOICES)}")
    epochs = _check_positive_int("epochs", epochs)
    batch_size = _check_positive_int("batch size", batch_size)
    for width in hidden:
        _check_positive_int("every hidden layer width", width)
    xp = load_backend(backend, dtype)
    where = resolve_device(xp, device)
    X, y = load_data(data, xp, dtype=dtype, device=where, n_samples=n_samples, noise=noise, seed=seed)
    if X.ndim != 2:
        raise ExperimentError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    output, width = _output_size(xp, y, output)
    model = MLP([int(X.shape[1]), *hidden, width], hidden_activation=activation, output=output, init="he")
    chosen = getattr(optimizers, OPTIMIZER_NAMES[optimizer.lower()])(learning_rate)
    start = time.perf_counter()
    result = fit(model, chosen, X, y, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress)
    wall_time = time.perf_counter() - start
    train_accuracy = None if output == "identity" else float(accuracy(model, result.params, X, y))
    return TrainingRun(
        X=X, y=y, model=model, optimizer=chosen, result=result, train_accuracy=train_accuracy, wall_time=wall_time
    )


# --------------------------------------------------------------------------- trajectories


@dataclass(frozen=True)
class Surface:
    """A 2-D test function with its analytic gradient and the rates that suit each optimizer.

    ``value`` and ``gradient`` use only arithmetic operators, so they work
    elementwise on arrays of any library (and on a grid for contour plots).
    """

    name: str
    title: str
    value: Callable[[Any, Any], Any]
    gradient: Callable[[Any, Any], tuple[Any, Any]]
    start: tuple[float, float]
    minimum: tuple[float, float]
    window: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max of the contour plot
    steps: int
    learning_rates: dict[str, float]


# f = (x² + 50 y²) / 2: curvature 50 times larger across the valley (y) than along it (x).
_VALLEY = 50.0

# Rates: GD just below its stability limit 2/50 across the valley, where it zig-zags;
# Momentum at the same rate, to show the damping alone; RMSprop and Adam take
# steps of about their rate in every direction, so theirs are larger.
QUADRATIC = Surface(
    name="quadratic",
    title="ill-conditioned quadratic  f = (x² + 50 y²) / 2",
    value=lambda x, y: 0.5 * (x**2 + _VALLEY * y**2),
    gradient=lambda x, y: (x * 1.0, y * _VALLEY),
    start=(-4.0, 1.0),
    minimum=(0.0, 0.0),
    window=(-4.5, 1.0, -1.5, 1.5),
    steps=50,
    learning_rates={"GD": 0.036, "Momentum": 0.036, "RMSprop": 0.1, "Adam": 0.1},
)

# Rosenbrock (1960): a curved, flat-bottomed valley with its minimum at (1, 1).
ROSENBROCK = Surface(
    name="rosenbrock",
    title="Rosenbrock  f = (1 - x)² + 100 (y - x²)²",
    value=lambda x, y: (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2,
    gradient=lambda x, y: (-2.0 * (1.0 - x) - 400.0 * x * (y - x**2), 200.0 * (y - x**2)),
    start=(-1.5, 2.0),
    minimum=(1.0, 1.0),
    window=(-2.0, 2.0, -1.0, 3.0),
    steps=1000,
    learning_rates={"GD": 0.001, "Momentum": 0.005, "RMSprop": 0.01, "Adam": 0.05},
)

SURFACES: tuple[Surface, ...] = (QUADRATIC, ROSENBROCK)

_TRAJECTORY_OPTIMIZERS: dict[str, Callable[[float], Optimizer]] = {
    "GD": lambda rate: SGD(rate),
    "Momentum": lambda rate: Momentum(rate, beta=0.9, form="ema"),
    "RMSprop": lambda rate: RMSprop(rate, beta=0.9, epsilon=1e-8),
    "Adam": lambda rate: Adam(rate, beta1=0.9, beta2=0.999, epsilon=1e-8),
}


@dataclass(frozen=True)
class Trajectory:
    """The path one optimizer took on one surface.

    ``points[k]`` is the position after ``k`` steps (``points[0]`` the start),
    ``values[k]`` the function there.
    """

    surface: str
    optimizer: str
    learning_rate: float
    points: list[tuple[float, float]]
    values: list[float]

    @property
    def final_distance(self) -> float:
        """Euclidean distance from the last point to the surface's minimum."""
        surface = next(s for s in SURFACES if s.name == self.surface)
        (x, y), (x_min, y_min) = self.points[-1], surface.minimum
        return math.hypot(x - x_min, y - y_min)


def reversals(points: Sequence[tuple[float, float]]) -> int:
    """How often the path turns back: consecutive steps whose dot product is negative.

    Gradient descent zig-zagging across a valley reverses at almost every
    step; momentum damps that.
    """
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(points)]
    return sum(1 for s, t in itertools.pairwise(steps) if s[0] * t[0] + s[1] * t[1] < 0)


def run_trajectories(
    xp: Any = None, *, surfaces: Sequence[Surface] = SURFACES, optimizers: Sequence[str] = tuple(_TRAJECTORY_OPTIMIZERS)
) -> list[Trajectory]:
    """Follow each optimizer from each surface's start for its number of steps.

    The position is one float64 2-vector ``{"w": [x, y]}`` stepped by the
    library's optimizers, with the surface's analytic gradient.

    Parameters
    ----------
    xp : namespace, optional
        Array API namespace to compute in (NumPy by default).
    surfaces, optimizers
        Which surfaces and which of "GD", "Momentum", "RMSprop", "Adam".

    Returns
    -------
    list of Trajectory
        Surfaces in order, optimizers in order within each.
    """
    if xp is None:
        xp = load_backend("numpy")
    unknown = [name for name in optimizers if name not in _TRAJECTORY_OPTIMIZERS]
    if unknown:
        raise ExperimentError(f"unknown optimizer {unknown[0]!r}; choose from {', '.join(_TRAJECTORY_OPTIMIZERS)}")
    paths = []
    for surface in surfaces:
        for name in optimizers:
            rate = surface.learning_rates[name]
            paths.append(_follow(xp, surface, name, rate))
    return paths


def _follow(xp: Any, surface: Surface, name: str, rate: float) -> Trajectory:
    optimizer = _TRAJECTORY_OPTIMIZERS[name](rate)
    params = {"w": xp.asarray(list(surface.start), dtype=xp.float64)}
    state = optimizer.init(params)
    points = [surface.start]
    values = [float(surface.value(*surface.start))]
    for _ in range(surface.steps):
        w = params["w"]
        grad_x, grad_y = surface.gradient(w[0], w[1])
        params, state = optimizer.step(params, {"w": xp.stack([grad_x, grad_y])}, state)
        x, y = float(params["w"][0]), float(params["w"][1])
        points.append((x, y))
        values.append(float(surface.value(x, y)))
    return Trajectory(surface=surface.name, optimizer=name, learning_rate=rate, points=points, values=values)


# --------------------------------------------------------------------------- batch sizes


@dataclass(frozen=True)
class BatchSizeCurve:
    """Gradient descent with one batch size: the cost at every step.

    Attributes
    ----------
    label : str
        "batch GD", "mini-batch (64)" or "stochastic GD".
    batch_size : int
    batch_costs : list of float
        The mean loss of each step's batch, before the step: the curve a
        training loop sees (the lesson's "cost per iteration").
    full_costs : list of float
        The mean loss on the whole training set after each step.
    wall_time : float
        Seconds the training took (the whole-set costs included).
    """

    label: str
    batch_size: int
    batch_costs: list[float]
    full_costs: list[float]
    wall_time: float


def step_noise(costs: Sequence[float]) -> float:
    """Mean absolute change between consecutive costs: how much a loss curve jitters."""
    if len(costs) < 2:
        return 0.0
    return sum(abs(b - a) for a, b in itertools.pairwise(costs)) / (len(costs) - 1)


BATCH_SIZE_LEARNING_RATE = 0.1
BATCH_SIZE_STEPS = 500


def run_batch_sizes(
    backend: str = "numpy",
    device: str | None = None,
    dtype: str = "float64",
    steps: int = BATCH_SIZE_STEPS,
    seed: int = DEFAULT_SEED,
    *,
    learning_rate: float = BATCH_SIZE_LEARNING_RATE,
    batch_sizes: Sequence[int] | None = None,
    problem: Problem | None = None,
) -> list[BatchSizeCurve]:
    """Gradient descent on the lesson's problem with the whole set, mini-batches of 64, and one example per step.

    All runs take the same number of steps of plain gradient descent
    (:class:`anyoptim.SGD`) at one rate, from the same initial weights; only the
    batch each gradient is computed on differs.  Per step, the mini-batch cost
    wanders around the batch curve and the one-example cost jumps the most.

    Parameters
    ----------
    backend, device, dtype, seed
        As :func:`run_comparison`.
    steps : int, default 500
        Optimizer steps of each run (batch GD: one per epoch; stochastic GD: 300 per epoch).
    learning_rate : float, default 0.1
    batch_sizes : sequence of int, optional
        Default: (number of samples, 64, 1).
    problem : Problem, optional
        Data and model (made by :func:`lesson_problem` when absent).

    Returns
    -------
    list of BatchSizeCurve
    """
    from ..nn.data import minibatches

    steps = _check_positive_int("steps", steps)
    if problem is None:
        problem = lesson_problem(backend, device=device, dtype=dtype, seed=seed)
    n_samples = int(problem.X.shape[0])
    sizes = [n_samples, LESSON.batch_size, 1] if batch_sizes is None else list(batch_sizes)
    for size in sizes:
        _check_positive_int("batch size", size)
    curves = []
    for size in sizes:
        model, optimizer = problem.model, SGD(learning_rate)
        params = model.init(seed=seed, like=problem.X)
        state = optimizer.init(params)
        batch_costs: list[float] = []
        full_costs: list[float] = []
        start = time.perf_counter()
        epoch = 0
        while len(batch_costs) < steps:
            for X_batch, y_batch in minibatches(problem.X, problem.y, batch_size=size, seed=seed * 100_003 + epoch):
                loss, grads = model.loss_and_grad(params, X_batch, y_batch)
                params, state = optimizer.step(params, grads, state)
                batch_costs.append(float(loss))
                full_costs.append(float(model.loss(params, problem.X, problem.y)))
                if len(batch_costs) == steps:
                    break
            epoch += 1
        curves.append(
            BatchSizeCurve(
                label=_batch_label(size, n_samples),
                batch_size=size,
                batch_costs=batch_costs,
                full_costs=full_costs,
                wall_time=time.perf_counter() - start,
            )
        )
    return curves


def _batch_label(size: int, n_samples: int) -> str:
    if size >= n_samples:
        return "batch GD"
    if size == 1:
        return "stochastic GD"
    return f"mini-batch ({size})"
