"""The lesson's experiments (anyoptim.lesson): backends by name, comparison, trajectories, batch sizes, train."""

from __future__ import annotations

import inspect
import math
import sys
import types

import pytest

from anyoptim.lesson.backends import load_backend, resolve_device
from anyoptim.lesson.batch_sizes import run_batch_sizes, step_noise
from anyoptim.lesson.checks import ExperimentError
from anyoptim.lesson.compare import COMPARISON_RUNS, run_comparison, stepped_decay
from anyoptim.lesson.training import OPTIMIZER_NAMES, run_training
from anyoptim.lesson.trajectories import QUADRATIC, ROSENBROCK, reversals, run_trajectories
from anyoptim.optimizers import REGISTRY, SGD
from tests.helpers import load_namespace

# --------------------------------------------------------------------------- backends by name


def test_load_backend_gives_a_working_namespace():
    xp = load_backend("numpy")
    assert float(xp.sum(xp.asarray([1.0, 2.0]))) == 3.0


@pytest.mark.parametrize(
    ("name", "dtype", "message"),
    [
        ("tensorflow", "float64", "unknown backend 'tensorflow'"),
        ("numpy", "float16", "unknown dtype 'float16'"),
    ],
)
def test_load_backend_rejects_unknown_names(name, dtype, message):
    with pytest.raises(ExperimentError, match=message):
        load_backend(name, dtype)


def test_missing_library_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.setitem(sys.modules, "jax.numpy", None)
    with pytest.raises(ExperimentError, match="backend 'jax' is not installed"):
        load_backend("jax")


def test_cupy_without_a_gpu_is_refused(monkeypatch):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 0)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    with pytest.raises(ExperimentError, match="needs a CUDA GPU"):
        load_backend("cupy")


def test_cupy_whose_runtime_fails_is_refused(monkeypatch):
    def no_driver():
        raise RuntimeError("cudaErrorNoDevice")

    runtime = types.SimpleNamespace(getDeviceCount=no_driver)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    with pytest.raises(ExperimentError, match="needs a CUDA GPU"):
        load_backend("cupy")


def test_resolve_device_by_name(backend):
    xp = load_backend(backend)
    assert resolve_device(xp, None) is None
    if backend != "cupy":
        device = resolve_device(xp, "cpu")
        assert xp.zeros((2,), device=device).shape == (2,)


def test_resolve_device_rejects_a_device_that_is_not_there():
    xp = load_backend("numpy")
    with pytest.raises(ExperimentError, match="device 'cuda:7' is not available here; available: cpu"):
        resolve_device(xp, "cuda:7")


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_counts_must_be_positive_integers(bad):
    with pytest.raises(ExperimentError, match="epochs must be a positive integer"):
        run_comparison(epochs=bad)
    with pytest.raises(ExperimentError, match="steps must be a positive integer"):
        run_batch_sizes(steps=bad)


# --------------------------------------------------------------------------- compare


def test_stepped_decay_halves_after_1000_epochs():
    lr = stepped_decay(0.1, steps_per_epoch=5)
    assert lr(0) == 0.1
    assert lr(1000 * 5 - 1) == 0.1
    assert lr(1000 * 5) == pytest.approx(0.05)
    assert lr(3000 * 5) == pytest.approx(0.025)


def test_comparison_runs_are_the_lessons_seven():
    assert [(r.optimizer, r.learning_rate, r.decay) for r in COMPARISON_RUNS] == [
        ("GD", 0.0007, False),
        ("Momentum", 0.0007, False),
        ("RMSprop", 0.0007, False),
        ("Adam", 0.0007, False),
        ("GD", 0.1, True),
        ("Momentum", 0.1, True),
        ("Adam", 0.01, True),
    ]
    momentum = COMPARISON_RUNS[1].build(steps_per_epoch=5)
    assert (momentum.beta, momentum.form) == (0.9, "ema")
    adam = COMPARISON_RUNS[3].build(steps_per_epoch=5)
    assert (adam.beta1, adam.beta2, adam.epsilon) == (0.9, 0.999, 1e-8)
    decayed = COMPARISON_RUNS[6].build(steps_per_epoch=5)
    assert decayed.learning_rate_at(0) == 0.01
    assert decayed.learning_rate_at(5000) == pytest.approx(0.005)


def test_short_comparison_gives_one_row_per_run():
    rows = run_comparison(epochs=15, progress=False)
    assert [row.label for row in rows] == [spec.label for spec in COMPARISON_RUNS]
    for row in rows:
        assert len(row.history.cost) == 15
        assert row.final_cost == row.history.cost[-1]
        assert math.isfinite(row.final_cost)
        assert 0.0 <= row.train_accuracy <= 1.0
        assert row.wall_time > 0
        assert set(row.params) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    # Every run starts from the same weights and batches, so the first epoch's cost
    # differs only by how far each optimizer moved: the tiny-rate runs agree closely.
    gd, momentum = rows[0], rows[1]
    assert gd.history.cost[0] == pytest.approx(momentum.history.cost[0], rel=1e-3)
    assert rows[4].history.learning_rate[0] == 0.1


def test_comparison_agrees_across_backends(backend):
    """The same seed gives the same numbers on every backend (float64)."""
    if backend == "numpy":
        pytest.skip("the reference itself")
    runs = [COMPARISON_RUNS[3]]
    reference = run_comparison("numpy", epochs=1, runs=runs, progress=False)[0]
    other = run_comparison(backend, epochs=1, runs=runs, progress=False)[0]
    assert other.history.cost == pytest.approx(reference.history.cost, rel=1e-9)
    assert other.train_accuracy == reference.train_accuracy


@pytest.mark.slow
def test_full_comparison_shows_the_lessons_picture():
    """Without decay GD and Momentum stay well below Adam; with decay all three reach about 94 %."""
    rows = {row.label: row for row in run_comparison(progress=False)}
    adam = rows["Adam"].train_accuracy
    for name in ("GD", "Momentum"):
        assert rows[name].train_accuracy <= adam - 0.08, (name, rows[name].train_accuracy, adam)
    assert adam >= 0.9
    for name in ("GD + decay", "Momentum + decay", "Adam + decay"):
        assert rows[name].train_accuracy >= 0.9, (name, rows[name].train_accuracy)


# --------------------------------------------------------------------------- trajectories


@pytest.fixture(scope="module")
def trajectories():
    return {(t.surface, t.optimizer): t for t in run_trajectories()}


def test_trajectories_cover_every_surface_and_optimizer(trajectories):
    for surface in (QUADRATIC, ROSENBROCK):
        for name in ("GD", "Momentum", "RMSprop", "Adam"):
            path = trajectories[surface.name, name]
            assert len(path.points) == len(path.values) == surface.steps + 1
            assert path.points[0] == surface.start
            assert path.values[-1] < path.values[0]


def test_adam_ends_nearer_the_minimum_than_gd(trajectories):
    for surface in ("quadratic", "rosenbrock"):
        assert trajectories[surface, "Adam"].final_distance < trajectories[surface, "GD"].final_distance


def test_momentum_damps_the_zigzag_across_the_valley(trajectories):
    gd, momentum = trajectories["quadratic", "GD"], trajectories["quadratic", "Momentum"]
    assert reversals(gd.points) >= 10
    assert reversals(momentum.points) <= reversals(gd.points) // 5


def test_rmsprop_evens_the_step_sizes(trajectories):
    """The gradient is 12.5 times steeper across the valley at the start; RMSprop's first step is not."""

    def first_step_ratio(path):
        (x0, y0), (x1, y1) = path.points[0], path.points[1]
        return abs(x1 - x0) / abs(y1 - y0)

    assert first_step_ratio(trajectories["quadratic", "GD"]) == pytest.approx(4.0 / 50.0)
    assert first_step_ratio(trajectories["quadratic", "RMSprop"]) == pytest.approx(1.0)
    assert first_step_ratio(trajectories["quadratic", "Adam"]) == pytest.approx(1.0)


def test_trajectories_agree_across_backends(backend):
    xp = load_namespace(backend)
    here = run_trajectories(xp, surfaces=[QUADRATIC])
    reference = run_trajectories(surfaces=[QUADRATIC])
    for mine, theirs in zip(here, reference, strict=True):
        flat_mine = [c for point in mine.points for c in point]
        flat_theirs = [c for point in theirs.points for c in point]
        assert flat_mine == pytest.approx(flat_theirs, rel=1e-12, abs=1e-12)


def test_unknown_trajectory_optimizer():
    with pytest.raises(ExperimentError, match="unknown optimizer 'Lion'"):
        run_trajectories(optimizers=["GD", "Lion"])


def test_reversals_counts_turns_back():
    assert reversals([(0, 0), (1, 0), (2, 0)]) == 0
    assert reversals([(0, 0), (1, 1), (2, 0), (3, 1)]) == 0  # 90° turns are not reversals
    assert reversals([(0, 0), (1, 0), (0, 0), (1, 0)]) == 2


# --------------------------------------------------------------------------- batch sizes


@pytest.fixture(scope="module")
def batch_curves():
    return {curve.batch_size: curve for curve in run_batch_sizes(steps=300)}


def test_batch_sizes_take_the_same_number_of_steps(batch_curves):
    assert [batch_curves[s].label for s in (300, 64, 1)] == ["batch GD", "mini-batch (64)", "stochastic GD"]
    for curve in batch_curves.values():
        assert len(curve.batch_costs) == len(curve.full_costs) == 300
        assert curve.full_costs[-1] < curve.batch_costs[0]  # every method learns something


def test_batch_gd_sees_the_whole_set(batch_curves):
    curve = batch_curves[300]
    # The cost before step k+1 is the whole-set cost after step k.
    assert curve.batch_costs[1:] == pytest.approx(curve.full_costs[:-1], rel=1e-12)


def test_smaller_batches_give_noisier_curves(batch_curves):
    noise = {size: step_noise(curve.batch_costs) for size, curve in batch_curves.items()}
    assert noise[1] > 3 * noise[64] > 0
    assert noise[64] > 3 * noise[300] > 0
    # The parameters themselves jitter too: the whole-set cost is steadier with larger batches.
    assert step_noise(batch_curves[1].full_costs) > step_noise(batch_curves[64].full_costs)


def test_mini_batch_stays_around_the_batch_curve(batch_curves):
    batch, mini = batch_curves[300].full_costs, batch_curves[64].full_costs
    assert max(abs(a - b) for a, b in zip(batch, mini, strict=True)) < 0.05 * batch[0]


def test_batch_sizes_reject_bad_counts():
    with pytest.raises(ExperimentError, match="batch size must be a positive integer, got 0"):
        run_batch_sizes(steps=2, batch_sizes=[0])


def test_step_noise():
    assert step_noise([1.0]) == 0.0
    assert step_noise([1.0, 2.0, 1.0]) == 1.0
    assert step_noise([3.0, 2.0, 1.0]) == 1.0


# --------------------------------------------------------------------------- train


def test_run_training_picks_the_output_layer_from_the_labels():
    binary = run_training(data="moons", epochs=3, progress=False)
    assert binary.model.layer_dims == (2, 5, 2, 1) and binary.model.output == "sigmoid"
    three = run_training(data="blobs", hidden=(4,), epochs=3, optimizer="lion", progress=False)
    assert three.model.layer_dims == (2, 4, 3) and three.model.output == "softmax"
    assert type(three.optimizer).__name__ == "Lion"
    assert len(three.result.history.cost) == 3
    assert 0.0 <= three.train_accuracy <= 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optimizer": "shampoo"}, "unknown optimizer 'shampoo'"),
        ({"output": "tanh"}, "unknown output 'tanh'"),
        ({"batch_size": 0}, "batch size must be a positive integer"),
        ({"hidden": (5, -1)}, "every hidden layer width must be a positive integer"),
        ({"data": "points.txt"}, "neither a data set"),
    ],
)
def test_run_training_rejects_bad_options(options, message):
    with pytest.raises(ExperimentError, match=message):
        run_training(epochs=1, progress=False, **options)


def test_train_offers_every_registered_optimizer_and_the_lessons_gd():
    assert list(OPTIMIZER_NAMES) == ["gd", *REGISTRY]
    assert OPTIMIZER_NAMES["gd"] is SGD
    assert all(OPTIMIZER_NAMES[name] is cls for name, cls in REGISTRY.items())


@pytest.mark.parametrize("name", ["gd", *REGISTRY])
def test_run_training_builds_the_named_optimizer_with_the_learning_rate(name):
    run = run_training(
        data="moons", n_samples=20, epochs=1, optimizer=name.upper(), learning_rate=0.003, progress=False
    )
    assert type(run.optimizer) is OPTIMIZER_NAMES[name]
    assert run.optimizer.learning_rate_at(0) == 0.003


@pytest.mark.parametrize("name", ["gd", *REGISTRY])
def test_run_training_without_a_rate_uses_the_optimizers_own_default(name):
    """Adadelta's natural rate is 1.0, Adam's 0.001: `anyoptim train --optimizer X` must not impose one rate on all."""
    run = run_training(data="moons", n_samples=20, epochs=1, optimizer=name, progress=False)
    default = inspect.signature(OPTIMIZER_NAMES[name]).parameters["learning_rate"].default
    assert run.optimizer.learning_rate_at(0) == default
