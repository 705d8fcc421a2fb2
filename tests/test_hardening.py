"""Settings and state that used to be silently wrong, and steps that used to write where they must not.

Each test is an item of the hardening issue (settings, state, a failed call
changes nothing, a call writes only where it may) with the variants of its kind:
on/off options take booleans only; numbers too large for a float are a
ValueError naming the setting; a schedule that overflows is the schedule
contract's ValueError, naming the count, with nothing changed; the count is
checked and never wraps; a state belongs to the optimizer that made it; slots of
another library are refused naming it; an infinite global norm clips to 0 on
every engine; a ``$CC`` that does not parse is no compiler; the ufunc plan does
not depend on ``np.errstate``; a read-only parameter is never written; views of
one memory under two names are refused; gradients that alias parameters give the
mathematical answer on every engine.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import anyoptim
from anyoptim import schedules
from anyoptim.engines.numpy import NumpyEngine
from anyoptim.engines.numpy import native as _native
from tests.cases import CASES
from tests.helpers import Backend, from_numpy, to_numpy

ENGINES = ["auto", "generic", NumpyEngine(kernels="ufunc")]
ENGINE_IDS = ["auto", "generic", "ufunc"]


def _snapshot(params, state) -> list[bytes]:
    leaves = [*params.values(), *(leaf for tree in state.slots.values() for leaf in tree.values())]
    return [to_numpy(leaf).tobytes() for leaf in leaves] + [repr((state.count, state.skipped)).encode()]


# --------------------------------------------------------------------------- settings


FLAGS = [
    (anyoptim.Adam, "amsgrad"),
    (anyoptim.RMSprop, "centered"),
    (anyoptim.RMSprop, "eps_in_sqrt"),
    (anyoptim.Momentum, "nesterov"),
]


@pytest.mark.parametrize(("cls", "flag"), FLAGS, ids=[f"{c.__name__}-{f}" for c, f in FLAGS])
@pytest.mark.parametrize("value", ["False", "True", 0, 1, None, 0.0, [], np.array([True])])
def test_on_off_options_take_booleans_only(cls, flag: str, value) -> None:
    """``Adam(amsgrad="False").amsgrad`` was True: any truthy value switched an option on."""
    with pytest.raises(ValueError, match=f"{flag} must be True or False"):
        cls(0.1, **{flag: value})
    optimizer = cls(0.1)
    with pytest.raises(ValueError, match=f"{flag} must be True or False"):
        setattr(optimizer, flag, value)
    assert getattr(optimizer, flag) is False


@pytest.mark.parametrize(("cls", "flag"), FLAGS, ids=[f"{c.__name__}-{f}" for c, f in FLAGS])
def test_numpy_booleans_are_booleans(cls, flag: str) -> None:
    assert getattr(cls(0.1, **{flag: np.True_}), flag) is True


@pytest.mark.parametrize(
    "setting", ["learning_rate", "weight_decay", "clip_global_norm", "clip_value", "beta1", "beta2", "epsilon"]
)
@pytest.mark.parametrize("huge", [10**400, -(10**400)])
def test_numbers_past_floats_range_name_the_setting(setting: str, huge: int) -> None:
    """``Adam(learning_rate=10**400)`` raised OverflowError from float()."""
    with pytest.raises(ValueError, match=f"{setting} must be finite"):
        anyoptim.Adam(**{"learning_rate": 0.1, setting: huge})


def _growing(count: int) -> float:
    return 0.1 * 2.0**count


@pytest.mark.parametrize(
    "schedule",
    [schedules.exponential_decay(0.1, decay_steps=1, decay_rate=2.0), _growing, lambda count: 1 / abs(count - 1024)],
    ids=["exponential-decay", "power", "division"],
)
def test_a_schedule_that_overflows_is_a_value_error_naming_the_count(schedule) -> None:
    """A bare OverflowError came from inside ``step`` at step 1024; now the contract's error, nothing changed."""
    optimizer = anyoptim.SGD(schedule)
    params = {"w": np.ones(2)}
    state = dataclasses.replace(optimizer.init(params), count=1024)
    before = _snapshot(params, state)
    with pytest.raises(ValueError, match=r"schedule .* at step count 1024"):
        optimizer.step(params, {"w": np.ones(2)}, state)
    assert _snapshot(params, state) == before


# --------------------------------------------------------------------------- the count


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("count", [np.int32(2**31 - 1), np.int64(2**63 - 1), np.uint8(255), 2**70])
def test_the_count_never_wraps(engine, count) -> None:
    """``count = np.int32(2**31 - 1)`` wrapped negative: every later step did nothing."""
    optimizer = anyoptim.Adam(0.1, engine=engine)
    params = {"w": np.ones(2)}
    state = dataclasses.replace(optimizer.init(params), count=count)
    params, state = optimizer.step(params, {"w": np.ones(2)}, state)
    assert state.count == int(count) + 1 and type(state.count) is int
    assert np.all(params["w"] < 1)
    params, state = optimizer.step(params, {"w": np.ones(2)}, state)
    assert state.count == int(count) + 2


@pytest.mark.parametrize(
    "case", [case for case in CASES if case.id in {"adam", "radam", "sgd", "adagrad"}], ids=lambda c: c.id
)
@pytest.mark.parametrize("count", [-1, np.int64(-5), 1.0, np.float64(2.0), True, "3", None])
def test_a_bad_count_is_refused_before_anything_changes(case, count) -> None:
    """``count = -1`` gave NaN params (RAdam: ZeroDivisionError)."""
    optimizer = case.make()
    params = {"w": np.ones(2)}
    good = optimizer.init(params)
    params, good = optimizer.step(params, {"w": np.ones(2)}, good)  # the fast path is ready: it must check too
    state = dataclasses.replace(good, count=count)
    before = _snapshot(params, state)
    with pytest.raises(ValueError, match=r"state\.count must be a non-negative integer"):
        optimizer.step(params, {"w": np.ones(2)}, state)
    assert _snapshot(params, state) == before


# --------------------------------------------------------------------------- a state belongs to its optimizer


@pytest.mark.parametrize(
    ("made_by", "used_by"),
    [(anyoptim.Adagrad, anyoptim.RMSprop), (anyoptim.Adam, anyoptim.AdamW), (anyoptim.SGD, anyoptim.Momentum)],
)
def test_a_state_made_by_another_optimizer_is_refused_naming_both(made_by, used_by) -> None:
    """Adagrad's state was accepted by RMSprop (both have a slot ``s``): a running sum became an average."""
    params = {"w": np.ones(2)}
    state = made_by(0.1).init(params)
    before = _snapshot(params, state)
    with pytest.raises(ValueError, match=f"state was made by {made_by.__name__}, not by {used_by.__name__}"):
        used_by(0.1).step(params, {"w": np.ones(2)}, state)
    assert _snapshot(params, state) == before


def test_a_state_remembers_its_optimizer_through_steps_and_skips() -> None:
    optimizer = anyoptim.Adam(0.1, on_nonfinite="skip")
    params = {"w": np.ones(2)}
    state = optimizer.init(params)
    for grads in ({"w": np.ones(2)}, {"w": np.ones(2)}, {"w": np.array([np.nan, 1.0])}):
        params, state = optimizer.step(params, grads, state)
        assert state.optimizer == "Adam"
    assert anyoptim.OptimizerState(0, 0.1, {}).optimizer is None  # built by hand: backward compatible


def test_slots_of_another_library_are_refused_naming_it() -> None:
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.Adam(0.1)
    params = {"w": np.ones(2)}
    state = optimizer.init({"w": torch.ones(2, dtype=torch.float64)})
    with pytest.raises(TypeError, match="state slot 'm' of 'w' is a torch array on cpu, but the parameter is a numpy"):
        optimizer.step(params, {"w": np.ones(2)}, state)
    np.testing.assert_array_equal(params["w"], 1.0)


# --------------------------------------------------------------------------- clipping an infinite norm


def _clip_engines(backend: Backend) -> list:
    if backend == Backend.NUMPY:
        return ["generic", NumpyEngine(kernels="ufunc"), NumpyEngine(kernels="auto")]
    return ["auto"]


def test_an_infinite_global_norm_clips_to_zero_on_every_engine(xp, backend) -> None:
    """The factor min(1, c/||g||) is 0 for ||g|| = inf (as torch.optim and optax); it was 1: an unclipped step."""
    for engine in _clip_engines(backend):
        optimizer = anyoptim.SGD(1.0, clip_global_norm=1.0, engine=engine)
        params = {"a": from_numpy(xp, np.zeros(2)), "b": from_numpy(xp, np.zeros(2))}
        grads = {"a": from_numpy(xp, np.array([3.0, 4.0])), "b": from_numpy(xp, np.array([np.inf, 0.0]))}
        with np.errstate(invalid="ignore"):
            params, _ = optimizer.step(params, grads, optimizer.init(params))
        np.testing.assert_array_equal(to_numpy(params["a"]), [0.0, 0.0])  # no step where the gradient is finite
        b = to_numpy(params["b"])
        assert np.isnan(b[0]) and b[1] == 0.0  # inf * 0: as torch.optim and optax


# --------------------------------------------------------------------------- the compiler


@pytest.mark.parametrize("cc", ['gcc "', "cc 'unbalanced", "\\"])
def test_a_cc_that_does_not_parse_is_no_compiler(monkeypatch, cc: str) -> None:
    """``CC='gcc "'`` made every NumPy ``init`` raise "No closing quotation", even with kernels="auto"."""
    monkeypatch.setenv("CC", cc)
    monkeypatch.setattr(_native, "_compiler", None)
    assert not _native.compiler_found()
    assert NumpyEngine(kernels="auto").kernels == "ufunc"
    with pytest.raises(_native.KernelBuildError, match="no C compiler"):
        NumpyEngine(kernels="c")
    optimizer = anyoptim.SGD(0.5, engine=NumpyEngine(kernels="auto"))
    params = {"w": np.ones(2)}
    params, _ = optimizer.step(params, {"w": np.ones(2)}, optimizer.init(params))
    np.testing.assert_array_equal(params["w"], 0.5)


# --------------------------------------------------------------------------- a failed call changes nothing


@pytest.mark.parametrize("kernels", ["ufunc", "auto"])
@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.id in {"adam", "sgd", "rmsprop-centered-momentum", "lion", "adadelta"}],
    ids=lambda c: c.id,
)
def test_the_step_does_not_depend_on_the_callers_errstate(case, kernels: str) -> None:
    """Under ``np.errstate(all="raise")`` the ufunc plan raised after writing 32,768 params: a torn step."""
    results = []
    for errors in ("raise", "ignore"):
        optimizer = case.make(engine=NumpyEngine(kernels=kernels))
        params = {"w": np.ones(70_000, np.float32)}
        state = optimizer.init(params)
        params, state = optimizer.step(params, {"w": np.ones(70_000, np.float32)}, state)
        with np.errstate(all=errors):
            params, state = optimizer.step(params, {"w": np.full(70_000, 1e30, np.float32)}, state)
        results.append(_snapshot(params, state))
    assert results[0] == results[1]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("where", ["params", "slot"])
def test_an_array_made_read_only_after_the_first_step_is_not_written(engine, where: str) -> None:
    """The fast path wrote through ``flags.writeable = False``; the first step gives new arrays instead."""
    optimizer = anyoptim.Adam(0.1, engine=engine)
    params = {"w": np.ones(3), "b": np.ones(2)}
    grads = {"w": np.ones(3), "b": np.ones(2)}
    state = optimizer.init(params)
    for _ in range(2):
        params, state = optimizer.step(params, grads, state)
    frozen = params["w"] if where == "params" else state.slots["m"]["w"]
    kept = frozen.copy()
    twin = anyoptim.Adam(0.1, engine="generic")
    twin_state = dataclasses.replace(
        state, slots={slot: {k: v.copy() for k, v in tree.items()} for slot, tree in state.slots.items()}
    )
    expected, _ = twin.step({k: v.copy() for k, v in params.items()}, grads, twin_state)
    frozen.flags.writeable = False
    new_params, _ = optimizer.step(params, grads, state)
    np.testing.assert_array_equal(frozen, kept)
    for name in params:
        np.testing.assert_array_equal(new_params[name], expected[name])


def _views(x: np.ndarray) -> list:
    return [
        (x, x[:]),
        (x, x.reshape(2, 2)),
        (x[:3], x[2:]),
        (x[::-1], x[1:3]),
        (x.reshape(2, 2).T, x[2:]),
    ]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("which", range(5))
def test_views_of_one_memory_under_two_names_are_refused(engine, which: int) -> None:
    """``{"a": x, "b": x[:]}`` was updated twice by the default engine ([0.8, 1.8], not [0.9, 1.9])."""
    x = np.arange(4.0)
    a, b = _views(x)[which]
    optimizer = anyoptim.SGD(0.1, engine=engine)
    with pytest.raises(ValueError, match=r"params\['b'\] and params\['a'\] are views of one memory"):
        optimizer.init({"a": a, "b": b})
    state = anyoptim.SGD(0.1).init({"a": a.copy(), "b": b.copy()})
    with pytest.raises(ValueError, match="views of one memory"):
        optimizer.step({"a": a, "b": b}, {"a": np.ones(a.shape), "b": np.ones(b.shape)}, state)
    np.testing.assert_array_equal(x, np.arange(4.0))


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_views_that_share_no_element_are_distinct_parameters(engine) -> None:
    x = np.arange(4.0)
    params = {"a": x[::2], "b": x[1::2]}
    optimizer = anyoptim.SGD(0.5, engine=engine)
    params, _ = optimizer.step(params, {"a": np.ones(2), "b": np.ones(2)}, optimizer.init(params))
    np.testing.assert_array_equal(np.concatenate([params["a"], params["b"]]), [-0.5, 1.5, 0.5, 2.5])


@pytest.mark.parametrize(
    "case", [case for case in CASES if case.id in {"sgd", "adam", "momentum-ema-nesterov", "lion"}], ids=lambda c: c.id
)
def test_gradients_that_are_parameters_give_the_mathematical_answer_on_every_engine(xp, backend, case) -> None:
    """``grads = {"a": params["b"], "b": params["a"]}`` read ``a`` after updating it on the default engine."""
    engines = ["auto", "generic", NumpyEngine(kernels="ufunc")] if backend == Backend.NUMPY else ["auto", "generic"]
    results = []
    for engine in engines:
        optimizer = case.make(engine=engine)
        params = {"a": from_numpy(xp, np.array([1.0, 2.0])), "b": from_numpy(xp, np.array([3.0, 4.0]))}
        state = optimizer.init(params)
        for _ in range(3):
            params, state = optimizer.step(params, {"a": params["b"], "b": params["a"]}, state)
        results.append({name: to_numpy(value) for name, value in params.items()})
    # The reference: the same steps with copied gradients.
    optimizer = case.make(engine="generic")
    reference = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, 4.0])}
    state = optimizer.init(reference)
    for _ in range(3):
        reference, state = optimizer.step(reference, {"a": reference["b"].copy(), "b": reference["a"].copy()}, state)
    for result in results:
        for name in reference:
            np.testing.assert_allclose(result[name], reference[name], rtol=1e-12)


def test_sgd_on_a_dot_b_takes_the_gradient_at_the_old_point() -> None:
    params = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, 4.0])}
    optimizer = anyoptim.SGD(0.1)
    params, _ = optimizer.step(params, {"a": params["b"], "b": params["a"]}, optimizer.init(params))
    np.testing.assert_allclose(params["a"], [0.7, 1.6])
    np.testing.assert_allclose(params["b"], [2.9, 3.8])


def test_a_gradient_that_is_a_state_slot_is_read_before_the_step() -> None:
    optimizer = anyoptim.Momentum(0.1)
    params = {"w": np.ones(2)}
    state = optimizer.init(params)
    params, state = optimizer.step(params, {"w": np.ones(2)}, state)
    grads = {"w": state.slots["v"]["w"]}  # odd, but it must read the old value
    copied = dataclasses.replace(state, slots={"v": {"w": state.slots["v"]["w"].copy()}})
    expected, _ = anyoptim.Momentum(0.1).step({"w": params["w"].copy()}, {"w": grads["w"].copy()}, copied)
    result, _ = optimizer.step(params, grads, state)
    np.testing.assert_allclose(result["w"], expected["w"], rtol=1e-15)


def test_a_subclass_written_outside_anyoptim_shares_its_parents_states() -> None:
    class LoggingAdam(anyoptim.Adam):
        pass

    params = {"w": np.ones(2)}
    state = anyoptim.Adam(0.1).init(params)
    params, state = LoggingAdam(0.1).step(params, {"w": np.ones(2)}, state)
    assert state.optimizer == "Adam"
    params, state = anyoptim.Adam(0.1).step(params, {"w": np.ones(2)}, state)
    with pytest.raises(ValueError, match="state was made by Adam, not by AdamW"):
        anyoptim.AdamW(0.1).step(params, {"w": np.ones(2)}, state)


def test_views_of_one_memory_are_refused_on_every_mutable_library(xp, backend) -> None:
    if backend not in (Backend.NUMPY, Backend.TORCH, Backend.CUPY):
        pytest.skip("immutable arrays: a view cannot be written twice")
    x = from_numpy(xp, np.arange(4.0))
    optimizer = anyoptim.SGD(0.1)
    with pytest.raises(ValueError, match="views of one memory"):
        optimizer.init({"a": x, "b": x[1:3]})
    state = optimizer.init({"a": from_numpy(xp, np.arange(2.0)), "b": from_numpy(xp, np.arange(2.0))})
    grads = {"a": from_numpy(xp, np.ones(2)), "b": from_numpy(xp, np.ones(2))}
    with pytest.raises(ValueError, match="views of one memory"):
        optimizer.step({"a": x[:2], "b": x[:2]}, grads, state)
    np.testing.assert_array_equal(to_numpy(x), np.arange(4.0))
    if backend != Backend.TORCH:  # torch's check is by byte range: interleaved views count as shared
        params, _ = optimizer.step({"a": x[0:4:2], "b": x[1:4:2]}, grads, state)  # distinct: no element shared
        np.testing.assert_allclose(to_numpy(params["a"]), [-0.1, 1.9])
        np.testing.assert_allclose(to_numpy(params["b"]), [0.9, 2.9])
