"""Checkpoints record a schedule of anyoptim.schedules by name and arguments, and read_optimizer rebuilds the
optimizer, schedule included, from the file; a hand-written schedule stays the caller's to give."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anyoptim
from anyoptim import schedules
from anyoptim.checkpoint import CheckpointError, load, read_info, read_optimizer, resumable_fit, save
from tests.cases import CASES

pytest.importorskip("safetensors")  # before the helpers of test_checkpoint, which skips without it too
from safetensors.numpy import load_file, save_file

from tests.test_checkpoint import _assert_same, _assert_same_state, _problem

EVERY_KIND = {
    "constant": schedules.constant(0.05),
    "exponential_decay": schedules.exponential_decay(0.05, 3, 0.7, staircase=True),
    "inverse_time_decay": schedules.inverse_time_decay(0.05, 2.5, 0.5),
    "piecewise_constant": schedules.piecewise_constant([2, 5], [0.05, 0.02, 0.01]),
    "cosine_decay": schedules.cosine_decay(0.05, 7, alpha=0.1),
    "join": schedules.join(
        [
            schedules.join([schedules.constant(0.01), schedules.exponential_decay(0.05, 2, 0.9)], [2]),
            schedules.cosine_decay(0.03, 4),
        ],
        [5],
    ),
    "warmup_cosine_decay": schedules.warmup_cosine_decay(0.05, 3, 12, initial_learning_rate=0.001),
}


def _run(opt, params, state, steps: int, start: int = 0):
    for k in range(start, start + steps):
        grads = {name: np.cos(leaf * (k + 1)) for name, leaf in params.items()}
        params, state = opt.step(params, grads, state)
    return params, state


def _params():
    rng = np.random.default_rng(0)
    return {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
def test_every_schedule_kind_round_trips_and_resumes_bit_for_bit(tmp_path, kind):
    schedule = EVERY_KIND[kind]
    opt = anyoptim.Adam(schedule, beta2=0.99, clip_global_norm=5.0)
    params, state = _run(opt, _params(), opt.init(_params()), 4)
    path = tmp_path / "run.safetensors"
    save(path, params, state, optimizer=opt)
    recorded = read_info(path).optimizer["settings"]["learning_rate"]
    assert recorded == {"schedule": schedules.describe(schedule)}
    assert recorded["schedule"]["name"] == kind
    again = read_optimizer(path)
    assert type(again) is anyoptim.Adam and again is not opt
    assert schedules.describe(again.learning_rate) == schedules.describe(schedule)
    assert (again.beta2, again.clip_global_norm) == (0.99, 5.0)
    assert [again.learning_rate(c) for c in range(30)] == [schedule(c) for c in range(30)]
    loaded, loaded_state = load(path, like=_params(), optimizer=again)
    _assert_same(loaded, params)
    _assert_same_state(loaded_state, state)
    expected = _run(opt, params, state, 8, start=4)
    got = _run(again, loaded, loaded_state, 8, start=4)
    _assert_same(got[0], expected[0])
    _assert_same_state(got[1], expected[1])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_optimizer_of_the_table_is_rebuilt_with_its_settings(tmp_path, case):
    opt = case.make()
    params = _params()
    path = tmp_path / "c.safetensors"
    save(path, params, opt.init(params), optimizer=opt)
    again = read_optimizer(path)
    assert type(again) is type(opt)
    from anyoptim.checkpoint.store import settings_record

    expected = {k: v for k, v in settings_record(opt).items() if k != "engine"}
    assert {k: v for k, v in settings_record(again).items() if k != "engine"} == expected


@settings(max_examples=6, deadline=None)
@given(stop=st.integers(1, 4))
def test_resumable_fit_with_the_rebuilt_optimizer_is_bit_identical(tmp_path_factory, stop):
    model, X, y = _problem()
    path = tmp_path_factory.mktemp("resume") / "run.safetensors"
    kwargs = {"epochs": 5, "batch_size": 16, "seed": 2, "progress": False}

    def make():
        return anyoptim.Adam(schedules.warmup_cosine_decay(0.05, 3, 12), on_nonfinite="skip")

    whole = anyoptim.fit(model, make(), X, y, **kwargs)
    resumable_fit(model, make(), X, y, checkpoint=path, **{**kwargs, "epochs": stop})
    rest = resumable_fit(model, read_optimizer(path), X, y, checkpoint=path, resume=True, **kwargs)
    assert rest.history.cost == whole.history.cost
    assert rest.history.learning_rate == whole.history.learning_rate
    _assert_same(rest.params, whole.params)
    _assert_same_state(rest.state, whole.state)


def test_a_hand_written_schedule_is_custom_and_required_at_load(tmp_path):
    opt = anyoptim.SGD(lambda count: 0.1 / (1 + count))
    params = _params()
    path = tmp_path / "c.safetensors"
    save(path, params, opt.init(params), optimizer=opt)
    assert "custom" in read_info(path).optimizer["settings"]["learning_rate"]
    with pytest.raises(CheckpointError, match=r"'learning_rate' was recorded as custom.*pass it to anyoptim\.load"):
        read_optimizer(path)
    load(path, like=params, optimizer=opt)  # the caller's optimizer is used
    load(path, like=params, optimizer=anyoptim.SGD(schedules.constant(0.1)))  # custom: not comparable


def test_a_different_schedule_is_a_strict_mismatch(tmp_path):
    params = _params()
    opt = anyoptim.SGD(schedules.exponential_decay(0.1, 10, 0.5))
    path = tmp_path / "c.safetensors"
    save(path, params, opt.init(params), optimizer=opt)
    load(path, like=params, optimizer=anyoptim.SGD(schedules.exponential_decay(0.1, 10, 0.5)))
    with pytest.raises(CheckpointError, match="learning_rate: saved"):
        load(path, like=params, optimizer=anyoptim.SGD(schedules.exponential_decay(0.1, 10, 0.9)))
    with pytest.warns(anyoptim.checkpoint.CheckpointWarning, match="learning_rate"):
        load(path, like=params, optimizer=anyoptim.SGD(0.1), strict=False)


def test_custom_masks_and_engines(tmp_path):
    params = _params()
    path = tmp_path / "c.safetensors"
    opt = anyoptim.AdamW(weight_decay_mask=anyoptim.transforms.decay_all, engine="generic")
    save(path, params, opt.init(params), optimizer=opt)
    again = read_optimizer(path)
    assert again.weight_decay_mask is anyoptim.transforms.decay_all and again.engine == "generic"
    opt = anyoptim.AdamW(weight_decay_mask=lambda name, leaf: name == "W")
    save(path, params, opt.init(params), optimizer=opt)
    with pytest.raises(CheckpointError, match="'weight_decay_mask' was recorded as custom"):
        read_optimizer(path)


def _rewrite(path, change) -> None:
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata())
    record = json.loads(metadata["optimizer"])
    change(record)
    metadata["optimizer"] = json.dumps(record)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda r: r.update({"class": "Optimizer"}), "not an anyoptim optimizer"),
        (lambda r: r.update({"class": "REGISTRY"}), "not an anyoptim optimizer"),
        (lambda r: r.update({"class": "os"}), "not an anyoptim optimizer"),
        (lambda r: r["settings"].update({"learning_rate": {"schedule": {"name": "eval", "args": {}}}}), "eval"),
        (lambda r: r["settings"].update({"beta1": 2.0}), "settings are refused"),
        (lambda r: r["settings"].update({"nonsense": 1.0}), "has no settings"),
        (lambda r: r.update({"settings": [1, 2]}), "no settings"),
    ],
)
def test_a_tampered_optimizer_record_is_a_clear_error(tmp_path, change, pattern):
    params = _params()
    opt = anyoptim.Adam(schedules.constant(0.1))
    path = tmp_path / "c.safetensors"
    save(path, params, opt.init(params), optimizer=opt)
    _rewrite(path, change)
    with pytest.raises(CheckpointError, match=pattern):
        read_optimizer(path)


def test_a_checkpoint_without_optimizer_has_none_to_rebuild(tmp_path):
    params = _params()
    path = tmp_path / "c.safetensors"
    save(path, params, anyoptim.SGD(0.1).init(params))
    with pytest.raises(CheckpointError, match="saved without an optimizer"):
        read_optimizer(path)
