"""The checkpoint fixes of review 12: a state's maker kept through save and load, resumable_fit's seed, the
``os.preadv`` fallback, bfloat16 refused by save, and a load that never mixes two checkpoints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import anyoptim
from anyoptim import datasets
from anyoptim.checkpoint import CheckpointError, files, load, read_info, resumable_fit, save

pytest.importorskip("safetensors")

MISMATCH = "state was made by Adagrad, not by RMSprop: its slots mean something else there"


def _adagrad_run() -> tuple[dict, anyoptim.OptimizerState]:
    optimizer = anyoptim.Adagrad(0.1)
    params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    state = optimizer.init(params)
    grads = {"W": np.full((2, 3), 0.5), "b": np.ones(3)}
    params, state = optimizer.step(params, grads, state)
    return params, state


# --------------------------------------------------------------------------- 1. the state's maker


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_a_loaded_state_knows_its_maker_and_another_optimizer_refuses_it(tmp_path, with_optimizer) -> None:
    params, state = _adagrad_run()
    path = tmp_path / "a.safetensors"
    save(path, params, state, optimizer=anyoptim.Adagrad(0.1) if with_optimizer else None)
    loaded_params, loaded = load(path, like=params)
    assert loaded.optimizer == "Adagrad"
    assert load(path, like=params, optimizer=anyoptim.Adagrad(0.1))[1].optimizer == "Adagrad"
    before = {k: v.copy() for k, v in loaded_params.items()}
    with pytest.raises(ValueError, match=MISMATCH):
        anyoptim.RMSprop(0.1).step(loaded_params, {k: np.ones_like(v) for k, v in loaded_params.items()}, loaded)
    for key, value in before.items():
        np.testing.assert_array_equal(loaded_params[key], value)


def test_load_into_another_optimizer_of_a_state_saved_without_one_is_refused(tmp_path) -> None:
    params, state = _adagrad_run()
    path = tmp_path / "a.safetensors"
    save(path, params, state)  # no optimizer= : the class is not recorded, the maker is
    with pytest.raises(CheckpointError, match=MISMATCH):
        load(path, like=params, optimizer=anyoptim.RMSprop(0.1))


def test_save_refuses_a_state_made_by_another_optimizer(tmp_path) -> None:
    params, state = _adagrad_run()
    path = tmp_path / "a.safetensors"
    with pytest.raises(ValueError, match=MISMATCH):
        save(path, params, state, optimizer=anyoptim.RMSprop(0.1))
    assert not path.exists()


def test_a_file_without_the_maker_entry_takes_it_from_the_recorded_class(tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    params, state = _adagrad_run()
    path = tmp_path / "old.safetensors"
    save(path, params, state, optimizer=anyoptim.Adagrad(0.1))
    with safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    assert json.loads(metadata.pop("state_optimizer")) == "Adagrad"
    save_file(tensors, str(path), metadata=metadata)
    assert load(path, like=params)[1].optimizer == "Adagrad"


def test_a_hand_made_state_saved_with_an_optimizer_is_recorded_as_its(tmp_path) -> None:
    params, state = _adagrad_run()
    hand_made = anyoptim.OptimizerState(state.count, state.learning_rate, state.slots, state.skipped)
    path = tmp_path / "a.safetensors"
    save(path, params, hand_made, optimizer=anyoptim.RMSprop(0.1))
    assert load(path, like=params)[1].optimizer == "RMSprop"


# --------------------------------------------------------------------------- 2. resumable_fit's seed


def _moons():
    X, y = datasets.make_moons(n_samples=30, noise=0.1, seed=0)
    return anyoptim.MLP([2, 4, 1], hidden_activation="tanh"), X, y


@pytest.mark.parametrize(("seed", "recorded"), [(np.int64(1), 1), ((1, 2), [1, 2]), (np.array([3, 4]), [3, 4])])
def test_resumable_fit_records_numpy_and_tuple_seeds_and_resumes_them(tmp_path, seed, recorded) -> None:
    model, X, y = _moons()
    path = tmp_path / "run.safetensors"
    kwargs = {"batch_size": 10, "progress": False, "checkpoint": path}
    whole = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=4, batch_size=10, seed=seed, progress=False)
    resumable_fit(model, anyoptim.Adam(0.05), X, y, epochs=2, seed=seed, **kwargs)
    assert read_info(path).extra["fit"]["seed"] == recorded
    rest = resumable_fit(model, anyoptim.Adam(0.05), X, y, epochs=4, seed=seed, resume=True, **kwargs)
    assert rest.history.cost == whole.history.cost


@pytest.mark.parametrize("seed", [np.random.SeedSequence(1), "12", 1.5, True, [1, 2.5], {"a": 1}])
def test_resumable_fit_refuses_a_seed_it_cannot_record_before_training(tmp_path, seed) -> None:
    model, X, y = _moons()
    path = tmp_path / "run.safetensors"
    calls = []
    with pytest.raises(TypeError, match="seed"):
        resumable_fit(
            model, anyoptim.Adam(0.05), X, y, epochs=2, seed=seed, progress=False, checkpoint=path,
            callbacks=[lambda *args: calls.append(args)],
        )  # fmt: skip
    assert calls == [] and not path.exists()


# --------------------------------------------------------------------------- 3. no os.preadv


def test_tensors_are_read_into_targets_without_preadv(tmp_path, monkeypatch) -> None:
    params, state = _adagrad_run()
    path = tmp_path / "a.safetensors"
    save(path, params, state)
    monkeypatch.delattr(os, "preadv", raising=False)
    file = files.read(path)
    try:
        target = np.empty((2, 3))
        assert file.read_into("params/W", target)
        np.testing.assert_array_equal(target, params["W"])
        target = np.empty(3)
        assert file.read_into("state/s/b", target)
        np.testing.assert_array_equal(target, state.slots["s"]["b"])
    finally:
        file.close()
    loaded, loaded_state = load(path, like=params)
    np.testing.assert_array_equal(loaded["b"], params["b"])
    np.testing.assert_array_equal(loaded_state.slots["s"]["W"], state.slots["s"]["W"])


# --------------------------------------------------------------------------- 5. dtypes a file cannot hold


def test_save_refuses_bfloat16_naming_the_supported_dtypes(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.Momentum(0.1)
    params = {"w": torch.ones(3, dtype=torch.bfloat16)}
    path = tmp_path / "b.safetensors"
    with pytest.raises(CheckpointError, match=r"params\['w'\] is torch.bfloat16.*float16, float32 and float64"):
        save(path, params, optimizer.init(params), optimizer=optimizer)
    assert not path.exists() and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 6. a save during a load


def test_a_load_overlapping_a_save_reads_one_checkpoint(tmp_path, monkeypatch) -> None:
    optimizer = anyoptim.Adagrad(0.1)
    params, state = _adagrad_run()
    path, newer = tmp_path / "run.safetensors", tmp_path / "newer.safetensors"
    save(path, params, state, optimizer=optimizer)
    later = {k: v + 1.0 for k, v in params.items()}
    later, later_state = optimizer.step(later, {k: np.ones_like(v) for k, v in later.items()}, state)
    save(newer, later, later_state, optimizer=optimizer)
    real = files._safetensors()
    replaced = []

    def safe_open_then_replaced(name, framework):  # a concurrent save renames its file over the path just now
        handle = real(name, framework=framework)
        if not replaced:
            os.replace(newer, path)
            replaced.append(True)
        return handle

    monkeypatch.setattr(files, "_safetensors", lambda: safe_open_then_replaced)
    loaded, loaded_state = load(path, like=params, optimizer=optimizer)
    assert replaced
    assert loaded_state.count == later_state.count
    for key in params:
        np.testing.assert_array_equal(loaded[key], later[key])
        np.testing.assert_array_equal(loaded_state.slots["s"][key], later_state.slots["s"][key])


def test_a_load_refuses_a_file_that_keeps_being_replaced(tmp_path, monkeypatch) -> None:
    params, state = _adagrad_run()
    path, spare = tmp_path / "run.safetensors", tmp_path / "spare.safetensors"
    save(path, params, state)
    real = files._safetensors()

    def always_replaced(name, framework):
        handle = real(name, framework=framework)
        save(spare, params, state)
        os.replace(spare, path)
        return handle

    monkeypatch.setattr(files, "_safetensors", lambda: always_replaced)
    with pytest.raises(CheckpointError, match="kept being replaced"):
        load(path, like=params)
