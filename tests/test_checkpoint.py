"""Checkpoints (anyoptim.checkpoint): round trips on every backend and optimizer, partial and strict loads,
bad files, atomic writes, and resumed training bit for bit."""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
from anyoptim.checkpoint import CheckpointWarning, load, read_info, resumable_fit, save
from anyoptim.tree import map_leaves, tree_flatten
from tests.cases import CASES, case_params
from tests.helpers import Backend, to_numpy, tree_from_numpy

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


def _tree(dtype: str, nested: bool) -> dict:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    if not nested:
        return {"W": W, "b": b}
    return {"encoder": [{"W": W, "b": b}, (rng.standard_normal(2).astype(dtype),)], "scale": np.ones((), dtype)}


def _trained(case, xp, tree, flat: bool, steps: int = 3):
    opt = case.make()
    params = tree_from_numpy(xp, tree)
    if flat:
        params = anyoptim.flatten(params)
    state = opt.init(params)
    for k in range(steps):
        grads = _grads(xp, params, 0.5, -(k + 1) * 0.1)
        params, state = opt.step(params, grads, state)
    return opt, params, state


def _grads(xp, params, scale: float, shift: float):
    return map_leaves(lambda leaf: xp.asarray(leaf * scale + shift), params)


def _leaves(tree) -> list[np.ndarray]:
    return [to_numpy(leaf) for leaf in tree_flatten(tree)[1]]


def _assert_same(a, b) -> None:
    for left, right in zip(_leaves(a), _leaves(b), strict=True):
        assert left.dtype == right.dtype and left.shape == right.shape
        np.testing.assert_array_equal(left, right)


def _assert_same_state(a, b) -> None:
    assert (a.count, a.skipped, float(a.learning_rate)) == (b.count, b.skipped, float(b.learning_rate))
    assert sorted(a.slots) == sorted(b.slots)
    for slot in a.slots:
        _assert_same(a.slots[slot], b.slots[slot])


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("case", case_params())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("flat", [False, True], ids=["tree", "flat"])
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
def test_round_trip_every_optimizer(case, dtype, flat, nested, xp, backend, tmp_path):
    opt, params, state = _trained(case, xp, _tree(dtype, nested), flat)
    path = tmp_path / "run.safetensors"
    save(path, params, state, optimizer=opt)
    loaded, loaded_state = load(path, like=params, optimizer=opt)
    _assert_same(loaded, params)
    _assert_same_state(loaded_state, state)
    assert tree_flatten(loaded)[2] == tree_flatten(params)[2]
    # The loaded state continues exactly as the original.
    expected = opt.step(params, _grads(xp, params, 0.25, 0.1), state)
    got = opt.step(loaded, _grads(xp, loaded, 0.25, 0.1), loaded_state)
    _assert_same(got[0], expected[0])
    _assert_same_state(got[1], expected[1])


def test_file_is_plain_safetensors_keyed_by_name(tmp_path):
    opt, params, state = _trained(anyoptim_case("adam"), np, _tree("float32", True), True)
    save(tmp_path / "c.safetensors", params, state, optimizer=opt, extra={"epoch": 3})
    tensors = load_file(tmp_path / "c.safetensors")
    names = tree_flatten(params)[0]
    assert set(tensors) == {f"params/{n}" for n in names} | {f"state/{s}/{n}" for s in ("m", "v") for n in names}
    np.testing.assert_array_equal(tensors["state/m/encoder.0.W"], state.slots["m"]["encoder"][0]["W"])
    info = read_info(tmp_path / "c.safetensors")
    assert info.count == 3 and info.extra == {"epoch": 3} and info.optimizer["class"] == "Adam"
    assert info.names == names and info.dtypes["scale"] == "float32"


def anyoptim_case(case_id: str):
    return next(case for case in CASES if case.id == case_id)


def test_loaded_flat_params_and_state_share_buffers(tmp_path):
    opt, params, state = _trained(anyoptim_case("adam"), np, _tree("float64", False), True)
    save(tmp_path / "c.safetensors", params, state, optimizer=opt)
    loaded, loaded_state = load(tmp_path / "c.safetensors", like=params, optimizer=opt)
    assert loaded["W"].base is loaded["b"].base
    assert loaded_state.slots["m"]["W"].base is loaded_state.slots["m"]["b"].base


@pytest.mark.parametrize("target", [b for b in Backend if b is not Backend.NUMPY and b is not Backend.CUPY])
def test_cross_backend_numpy_to_other_and_back(target, tmp_path):
    xp = target.namespace()
    if xp is None:
        pytest.skip(f"{target} is not available")
    opt, params, state = _trained(anyoptim_case("adam-amsgrad"), np, _tree("float32", True), True)
    save(tmp_path / "np.safetensors", params, state, optimizer=opt)
    like = tree_from_numpy(xp, _tree("float32", True))
    moved, moved_state = load(tmp_path / "np.safetensors", like=like, optimizer=opt)
    assert type(tree_flatten(moved)[1][0]) is type(tree_flatten(like)[1][0])
    _assert_same(moved, params)
    _assert_same_state(moved_state, state)
    save(tmp_path / "back.safetensors", moved, moved_state, optimizer=opt)
    back, back_state = load(tmp_path / "back.safetensors", like=_tree("float32", True), optimizer=opt)
    _assert_same(back, params)
    _assert_same_state(back_state, state)


def test_load_without_like_or_optimizer_gives_numpy_as_saved(tmp_path):
    _, params, state = _trained(anyoptim_case("rmsprop"), np, _tree("float64", True), False)
    save(tmp_path / "c.safetensors", params, state)
    loaded, loaded_state = load(tmp_path / "c.safetensors")
    _assert_same(loaded, params)
    _assert_same_state(loaded_state, state)


# --------------------------------------------------------------------------- strict and partial


@pytest.fixture
def saved(tmp_path):
    opt, params, state = _trained(anyoptim_case("adam"), np, _tree("float64", False), False)
    path = tmp_path / "c.safetensors"
    save(path, params, state, optimizer=opt)
    return path, opt, params, state


@pytest.mark.parametrize(
    ("like", "message"),
    [
        ({"W": np.zeros((3, 4)), "c": np.zeros(4)}, "missing from the file: c; in the file but not in like: b"),
        ({"W": np.zeros((4, 3)), "b": np.zeros(4)}, "W: shape (3, 4) in the file, (4, 3) in like"),
        ({"W": np.zeros((3, 4), np.float32), "b": np.zeros(4)}, "W: dtype float64 in the file, float32 in like"),
    ],
)
def test_strict_mismatches_are_listed(saved, like, message):
    path, opt, _, _ = saved
    with pytest.raises(ValueError, match="does not match") as error:
        load(path, like=like, optimizer=opt)
    assert message in str(error.value)


def test_partial_load_reports_and_keeps_like(saved):
    path, opt, params, state = saved
    like = {"W": np.zeros((3, 4)), "c": np.full(4, 7.0)}
    with pytest.warns(CheckpointWarning, match="missing from the file: c"):
        loaded, loaded_state = load(path, like=like, optimizer=opt, strict=False)
    np.testing.assert_array_equal(loaded["W"], params["W"])
    np.testing.assert_array_equal(loaded["c"], like["c"])
    np.testing.assert_array_equal(loaded_state.slots["m"]["c"], np.zeros(4))
    np.testing.assert_array_equal(loaded_state.slots["m"]["W"], state.slots["m"]["W"])
    assert loaded_state.count == state.count


def test_another_optimizer_class_is_named(saved):
    path, _, params, _ = saved
    with pytest.raises(ValueError, match="optimizer class Adam; it cannot be loaded into Lion"):
        load(path, like=params, optimizer=anyoptim.Lion(0.01))


def test_other_settings_are_listed_or_warned(saved):
    path, _, params, _ = saved
    with pytest.raises(ValueError, match=r"beta1: saved 0.9, given 0.8"):
        load(path, like=params, optimizer=anyoptim.Adam(0.01, beta1=0.8))
    with pytest.warns(CheckpointWarning, match="beta1"):
        load(path, like=params, optimizer=anyoptim.Adam(0.01, beta1=0.8), strict=False)


def test_like_is_never_changed(saved):
    path, opt, _, _ = saved
    like = anyoptim.flatten({"W": np.zeros((3, 4)), "b": np.zeros(4)})
    loaded, _ = load(path, like=like, optimizer=opt)
    assert not np.shares_memory(loaded["W"], like["W"])
    np.testing.assert_array_equal(like["W"], 0.0)


def test_save_refuses_bad_input_before_writing(tmp_path):
    opt = anyoptim.Adam()
    params = {"W": np.ones(3)}
    path = tmp_path / "c.safetensors"
    with pytest.raises(TypeError, match="OptimizerState"):
        save(path, params, {"m": params})
    with pytest.raises(ValueError, match="another tree structure"):
        save(path, {"V": np.ones(3)}, opt.init(params))
    with pytest.raises(TypeError, match="JSON"):
        save(path, params, opt.init(params), extra={"f": object()})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- bad files


def _small(tmp_path) -> Path:
    opt = anyoptim.Momentum(0.1)
    params = {"w": np.arange(3, dtype=np.float32)}
    path = tmp_path / "small.safetensors"
    save(path, params, opt.init(params), optimizer=opt)
    return path


def test_every_truncation_is_a_clear_error(tmp_path):
    path = _small(tmp_path)
    data = path.read_bytes()
    like = {"w": np.zeros(3, np.float32)}
    cut = tmp_path / "cut.safetensors"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError) as error:
            load(cut, like=like, optimizer=anyoptim.Momentum(0.1))
        assert "\n" not in str(error.value)


def _rewrite_header(path: Path, change) -> None:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    change(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h["params/w"].update(shape=[2**40, 2**20]), "not a readable safetensors"),
        (lambda h: h["params/w"].update(dtype="I32"), "dtypes"),
        (lambda h: h["__metadata__"].update(format_version="2"), "format version 2.*newer anyoptim"),
        (lambda h: h["__metadata__"].update(format="other"), "not an anyoptim checkpoint"),
        (lambda h: h["__metadata__"].update(count="[1"), "not valid JSON"),
        (lambda h: h["__metadata__"].update(leaves='["w", "x"]'), "damaged"),
    ],
)
def test_hostile_headers(tmp_path, change, message):
    path = _small(tmp_path)
    _rewrite_header(path, change)
    with pytest.raises(ValueError, match=message):
        load(path, like={"w": np.zeros(3, np.float32)}, optimizer=anyoptim.Momentum(0.1))


def test_a_pickle_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.safetensors"
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load(path)
    assert not marker.exists()


def test_other_safetensors_files_and_missing_files(tmp_path):
    save_file({"w": np.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not an anyoptim checkpoint"):
        load(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nothing.safetensors")


# --------------------------------------------------------------------------- atomic writes

_WRITER = textwrap.dedent(
    """
    import sys, numpy as np, anyoptim
    path, value = sys.argv[1], float(sys.argv[2])
    opt = anyoptim.Adam()
    params = {"w": np.full(2**22, value, dtype=np.float32)}
    state = opt.init(params)
    print("ready", flush=True)
    while True:
        anyoptim.save(path, params, state, optimizer=opt)
    """
)


@pytest.mark.slow
def test_kill_during_save_leaves_old_or_new(tmp_path):
    path = tmp_path / "big.safetensors"
    opt = anyoptim.Adam()
    old = {"w": np.full(2**22, 1.0, dtype=np.float32)}
    save(path, old, opt.init(old), optimizer=opt)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(0)
    for attempt in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(2.0 + attempt)], stdout=subprocess.PIPE, env=env
        )
        assert process.stdout.readline().strip() == b"ready"
        try:
            process.wait(timeout=float(rng.uniform(0.05, 0.4)))
        except subprocess.TimeoutExpired:
            pass
        process.send_signal(signal.SIGKILL)
        process.wait()
        loaded, _ = load(path, like=old, optimizer=opt)
        values = np.unique(loaded["w"])
        assert len(values) == 1 and values[0] in {1.0, *(2.0 + k for k in range(attempt + 1))}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert all(name.startswith(".") for name in leftovers), leftovers  # hidden temporary files only


# --------------------------------------------------------------------------- resumed training


class _PoisonedMLP(anyoptim.MLP):
    """An MLP whose gradient is NaN for every batch holding the marked example (deterministic in the data)."""

    def value_and_grad(self, xp, params, X, t, out=None):
        loss, grads = super().value_and_grad(xp, params, X, t, out=out)
        if bool(np.any(X[:, 0] == MARK)):
            grads["W1"][...] = np.nan
        return loss, grads


MARK = 123.0


def _problem(poisoned: bool = False):
    X, y = anyoptim.datasets.make_moons(n_samples=48, noise=0.2, seed=1)
    if poisoned:
        X = np.array(X)
        X[5, 0] = MARK
        return _PoisonedMLP([2, 6, 1], hidden_activation="tanh"), X, y
    return anyoptim.MLP([2, 6, 1], hidden_activation="tanh"), X, y


def _optimizer():
    return anyoptim.Adam(anyoptim.schedules.exponential_decay(0.05, 4, 0.7), on_nonfinite="skip")


@settings(max_examples=8, deadline=None)
@given(stop=st.integers(1, 5))
def test_resume_is_bit_identical(tmp_path_factory, stop):
    model, X, y = _problem(poisoned=True)  # the batch holding row 5 has a NaN gradient: its step is skipped
    path = tmp_path_factory.mktemp("resume") / "run.safetensors"
    kwargs = {"epochs": 6, "batch_size": 16, "seed": 3, "progress": False}
    whole = anyoptim.fit(model, _optimizer(), X, y, **kwargs)
    assert whole.state.skipped > 0
    resumable_fit(model, _optimizer(), X, y, checkpoint=path, **{**kwargs, "epochs": stop})
    rest = resumable_fit(model, _optimizer(), X, y, checkpoint=path, resume=True, **kwargs)
    assert rest.history.cost == whole.history.cost
    assert rest.history.learning_rate == whole.history.learning_rate
    _assert_same(rest.params, whole.params)
    _assert_same_state(rest.state, whole.state)


def test_fit_state_and_initial_epoch_continue_a_run():
    model, X, y = _problem()
    opt = anyoptim.Momentum(0.1)
    whole = anyoptim.fit(model, opt, X, y, epochs=4, batch_size=16, progress=False)
    first = anyoptim.fit(model, opt, X, y, epochs=2, batch_size=16, progress=False)
    rest = anyoptim.fit(
        model, opt, X, y, epochs=4, batch_size=16, progress=False, params=first.params, state=first.state,
        initial_epoch=2,
    )  # fmt: skip
    assert first.history.cost + rest.history.cost == whole.history.cost
    _assert_same(rest.params, whole.params)
    with pytest.raises(ValueError, match="initial_epoch"):
        anyoptim.fit(model, opt, X, y, epochs=2, initial_epoch=3, progress=False)
    with pytest.raises(ValueError, match="needs the params"):
        anyoptim.fit(model, opt, X, y, epochs=2, state=first.state, progress=False)


def test_resume_refuses_another_run(tmp_path):
    model, X, y = _problem()
    path = tmp_path / "run.safetensors"
    resumable_fit(model, anyoptim.Adam(0.01), X, y, epochs=2, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="seed=0, not 1"):
        resumable_fit(model, anyoptim.Adam(0.01), X, y, epochs=3, seed=1, progress=False, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="cannot be loaded into SGD"):
        resumable_fit(model, anyoptim.SGD(0.01), X, y, epochs=3, progress=False, checkpoint=path, resume=True)


def test_checkpoint_every(tmp_path):
    model, X, y = _problem()
    path = tmp_path / "run.safetensors"
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumable_fit(
            model, anyoptim.Adam(0.01), X, y, epochs=5, progress=False, checkpoint=path, checkpoint_every=2,
            callbacks=[lambda e, c, p, s: seen.append(read_info(path).extra["fit"]["epoch"] if path.exists() else 0)],
        )  # fmt: skip
    assert seen == [0, 0, 2, 2, 4]
    assert read_info(path).extra["fit"]["epoch"] == 5


# --------------------------------------------------------------------------- command line


def test_cli_train_save_resume_predict(tmp_path, capsys):
    from anyoptim.lesson.cli import main

    model = str(tmp_path / "m.safetensors")
    common = ["train", "--samples", "60", "--no-plots", "--save", model]
    assert main([*common, "--epochs", "4"]) == 0
    assert main([*common, "--epochs", "8", "--resume"]) == 0
    resumed = capsys.readouterr().out.splitlines()[-1].split()
    assert main(["train", "--samples", "60", "--no-plots", "--epochs", "8"]) == 0
    whole = capsys.readouterr().out.splitlines()[-1].split()
    assert resumed[:-2] == whole[:-2]  # the same epochs, final cost and accuracy; only the wall time differs
    X, y = anyoptim.datasets.make_moons(n_samples=7, noise=0.1, seed=3)
    np.savetxt(tmp_path / "new.csv", np.c_[X, y], delimiter=",", header="x1,x2,label", comments="")
    assert main(["predict", "--model", model, "--data", str(tmp_path / "new.csv")]) == 0
    assert set(capsys.readouterr().out.split()) <= {"0", "1"}
    assert (
        main(["predict", "--model", model, "--data", str(tmp_path / "new.csv"), "--output", str(tmp_path / "p")]) == 0
    )
    assert len((tmp_path / "p").read_text().split()) == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "2", "--no-plots", "--resume"], "resume needs the checkpoint file"),
        (["predict", "--model", "nothing.safetensors", "--data", "x.csv"], "does not exist"),
        (["predict", "--data", "x.csv"], "--model"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(argv, message, capsys):
    from anyoptim.lesson.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
