"""The ``anyoptim`` command line: compare, trajectories, batch-sizes, bench, and its errors."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import anyoptim
from anyoptim.lesson.cli import main
from anyoptim.optimizers import REGISTRY

pytest.importorskip("matplotlib")

BOUNDARIES = [
    "boundary_gd.png",
    "boundary_momentum.png",
    "boundary_rmsprop.png",
    "boundary_adam.png",
    "boundary_gd_decay.png",
    "boundary_momentum_decay.png",
    "boundary_adam_decay.png",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def test_compare_prints_the_table_and_writes_the_figures(tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["compare", "--epochs", "300", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("optimizer"))
    for column in ("decay", "final cost", "train accuracy", "wall time"):
        assert column in header
    table = printed.split(header, 1)[1].splitlines()[2:9]
    assert [line.split()[0] for line in table] == ["GD", "Momentum", "RMSprop", "Adam", "GD", "Momentum", "Adam"]
    assert all(line.rstrip().endswith(" s") and "%" in line for line in table)
    for name in ["loss_curves.png", *BOUNDARIES]:
        assert _is_png(out / name), name
        assert str(out / name) in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(["loss_curves.png", *BOUNDARIES])


def test_compare_says_when_the_decay_never_steps(capsys):
    """lr0 / (1 + floor(epoch / 1000)) is lr0 for the first 1000 epochs: a short run says so under the table."""
    assert main(["compare", "--epochs", "2", "--no-plots"]) == 0
    assert "the decay steps every 1000 epochs: within 2 epochs it keeps lr0" in capsys.readouterr().out
    assert main(["compare", "--epochs", "1001", "--no-plots", "--backend", "numpy"]) == 0
    assert "the decay steps every" not in capsys.readouterr().out


def test_no_plots_writes_nothing(tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["compare", "--epochs", "2", "--out", str(out), "--no-plots"]) == 0
    assert "train accuracy" in capsys.readouterr().out
    assert not out.exists()


def test_trajectories_writes_its_figures(tmp_path, capsys):
    assert main(["trajectories", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "rosenbrock" in printed and "quadratic" in printed and "distance to minimum" in printed
    for name in ("trajectories_quadratic.png", "trajectories_rosenbrock.png"):
        assert _is_png(tmp_path / name)


def test_batch_sizes_writes_its_figure(tmp_path, capsys):
    assert main(["batch-sizes", "--steps", "20", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for label in ("batch GD", "mini-batch (64)", "stochastic GD"):
        assert label in printed
    assert _is_png(tmp_path / "batch_sizes.png")


def test_without_matplotlib_the_tables_still_print(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["trajectories", "--out", str(tmp_path / "figs")]) == 0
    captured = capsys.readouterr()
    assert 'pip install "anyoptim[plot]"' in captured.err
    assert "distance to minimum" in captured.out
    assert not (tmp_path / "figs").exists()


def test_python_dash_m_anyoptim_runs_compare():
    done = subprocess.run(
        [sys.executable, "-m", "anyoptim", "compare", "--epochs", "3", "--no-plots"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "train accuracy" in done.stdout


def test_help_and_version_exit_zero(capsys):
    assert main(["--help"]) == 0
    assert "compare" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert anyoptim.__version__ in capsys.readouterr().out


def test_bench_is_not_a_command(capsys):
    """The benchmark lives in benchmarks/ (python benchmarks/step.py), outside the installed package."""
    assert main(["bench"]) == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def _fake_cupy_without_gpu(monkeypatch):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 0)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))


def _missing_jax(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.setitem(sys.modules, "jax.numpy", None)


def _no_torch_gpu(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")


@pytest.mark.parametrize(
    ("argv", "message", "prepare"),
    [
        (["compare", "--backend", "tensorflow"], "invalid choice: 'tensorflow'", None),
        (["compare", "--dtype", "float16"], "invalid choice: 'float16'", None),
        (["compare", "--epochs", "0"], "--epochs: must be a positive integer, got '0'", None),
        (["compare", "--epochs", "-3"], "--epochs: must be a positive integer", None),
        (["compare", "--epochs", "many"], "--epochs: must be a positive integer, got 'many'", None),
        (["batch-sizes", "--steps", "0"], "--steps: must be a positive integer", None),
        (["compare", "--seed", "-1"], "--seed: must be an integer >= 0", None),
        (["compare", "--learning-rate", "1"], "unrecognized arguments: --learning-rate 1", None),
        (["fit"], "invalid choice: 'fit'", None),
        ([], "choose a command", None),
        (["compare", "--device", "cuda:0"], "device 'cuda:0' is not available here; available: cpu", None),
        (["compare", "--backend", "cupy"], "backend 'cupy' needs a CUDA GPU", _fake_cupy_without_gpu),
        (["compare", "--backend", "jax"], "backend 'jax' is not installed", _missing_jax),
        (["compare", "--backend", "torch", "--device", "cuda"], "device 'cuda' is not available here", _no_torch_gpu),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, prepare, monkeypatch, capsys):
    if prepare is not None:
        prepare(monkeypatch)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("anyoptim: error: ")
    assert message in lines[0]


def test_out_that_is_a_file_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "figures"
    blocker.write_text("not a folder")
    assert main(["compare", "--out", str(blocker)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"anyoptim: error: --out {str(blocker)!r} is a file, not a folder"


def test_a_refused_run_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["compare", "--device", "tpu", "--out", str(out)]) == 2
    assert "device 'tpu' is not available" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- train: any data, any optimizer


def _write_data_files(folder):
    """Small data files, good and bad, written with NumPy (the test's own host I/O)."""
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] > X[:, 1]).astype(np.int64)
    np.savez(folder / "good.npz", X=X, y=y)
    np.savez(folder / "three.npz", X=X, y=np.arange(40) % 3)
    np.savez(folder / "flat.npz", X=np.arange(5.0), y=np.zeros(5))
    np.savez(folder / "short_y.npz", X=np.zeros((5, 2)), y=np.zeros(4))
    with_nan = X.copy()
    with_nan[3, 1] = np.nan
    np.savez(folder / "nan.npz", X=with_nan, y=y)
    (folder / "words.csv").write_text("1.0,2.0,0\n3.0,abc,1\n")
    (folder / "good.csv").write_text("".join(f"{a:.4f},{b:.4f},{label}\n" for (a, b), label in zip(X, y, strict=True)))
    (folder / "notes.txt").write_text("1 2 3\n")


def test_train_on_a_generated_data_set_writes_its_figures(tmp_path, capsys):
    assert main(["train", "--data", "moons", "--epochs", "30", "--optimizer", "rmsprop", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "RMSprop" in printed and "2,5,2,1 (relu, sigmoid)" in printed
    assert _is_png(tmp_path / "train_loss.png")
    assert _is_png(tmp_path / "train_boundary.png")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_train_offers_every_registered_optimizer(name, capsys):
    """--optimizer reads anyoptim.optimizers.REGISTRY: a newly registered optimizer is a choice with no CLI edit."""
    argv = ["train", "--optimizer", name, "--samples", "20", "--epochs", "1", "--learning-rate", "0.002", "--no-plots"]
    assert main(argv) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert REGISTRY[name].__name__ in row.split() and "0.002" in row.split()


@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("good.npz", "2,5,2,1 (relu, sigmoid)"),
        ("good.csv", "2,5,2,1 (relu, sigmoid)"),
        ("three.npz", "2,5,2,3 (relu, softmax)"),
    ],
)
def test_train_on_a_file(name, layers, tmp_path, capsys):
    _write_data_files(tmp_path)
    assert main(["train", "--data", str(tmp_path / name), "--epochs", "5", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert layers in printed
    assert "40" in printed.splitlines()[2].split()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "{tmp}/flat.npz"], "X must be 2-D"),
        (["--data", "{tmp}/short_y.npz"], "y has shape (4,) but X has 5 samples"),
        (["--data", "{tmp}/nan.npz"], "NaN"),
        (["--data", "{tmp}/words.csv"], "'abc' is not a finite number"),
        (["--data", "{tmp}/missing.npz"], "missing.npz"),
        (
            ["--data", "{tmp}/notes.txt"],
            "is neither a data set (moons, circles, spirals, blobs) nor a .npz or .csv file",
        ),
        (["--data", "{tmp}/three.npz", "--output", "sigmoid"], "sigmoid"),
        (["--activation", "swish"], "argument --activation: invalid choice: 'swish'"),
        (["--optimizer", "adamm"], "argument --optimizer: invalid choice: 'adamm'"),
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got '0'"),
        (["--epochs", "0"], "argument --epochs: must be a positive integer, got '0'"),
        (["--hidden", "5,x"], "argument --hidden: must be positive integers separated by commas"),
        (["--learning-rate", "nan"], "argument --learning-rate: must be a finite number >= 0"),
        (["--samples", "0"], "argument --samples: must be a positive integer"),
    ],
)
def test_train_bad_input_is_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    _write_data_files(tmp_path)
    argv = [part.format(tmp=tmp_path) for part in argv]
    assert main(["train", "--epochs", "2", "--no-plots", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("anyoptim: error: ")
    assert message in lines[0]
