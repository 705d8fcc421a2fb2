"""fit's per-step shortcuts: the step within an epoch, the batch slices, the MLP's ones vector.

``Optimizer.step_again`` is the step fit takes after the first of each epoch: it
skips re-confirming that the arrays are those of the last step, which fit
guarantees.  These tests pin down that it changes nothing observable: the same
results as :meth:`Optimizer.step`, a full (validated) step for anything else, and
every step through ``step`` when a subclass or an instance replaces it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyoptim
from anyoptim import datasets
from anyoptim.nn.data import batch_slices


def _problem():
    model = anyoptim.MLP([2, 5, 2, 1])
    X, y = datasets.make_moons(n_samples=90, noise=0.2, seed=1)
    xp = anyoptim._namespace.array_namespace(X)
    params = anyoptim.flatten(model.init(seed=2, like=X))
    grads = anyoptim.flatten({key: np.zeros_like(value) for key, value in params.items()})
    return model, xp, X, model.targets(y, xp, X.dtype), params, grads


def _run(optimizer, method_name: str, steps: int = 12):
    """A training loop on fixed buffers; every step after the first through ``method_name``."""
    model, xp, X, t, params, grads = _problem()
    state = optimizer.init(params)
    losses = []
    for index in range(steps):
        rows = slice(16 * (index % 5), 16 * (index % 5) + 16)
        loss, grads = model.value_and_grad(xp, params, X[rows, ...], t[rows, ...], out=grads)
        if index == 3:
            grads["W2"][0, 0] = np.nan  # a step that on_nonfinite="skip" skips
        method = optimizer.step if index == 0 else getattr(optimizer, method_name)
        params, state = method(params, grads, state)
        losses.append(float(loss))
    return params, state, losses


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: anyoptim.Adam(0.01, on_nonfinite="skip"),
        lambda: anyoptim.AdamW(0.01, weight_decay=0.1, clip_global_norm=1.0, on_nonfinite="skip"),
        lambda: anyoptim.Momentum(anyoptim.schedules.cosine_decay(0.1, 10), on_nonfinite="skip"),
    ],
    ids=["adam", "adamw-clipped", "momentum-schedule"],
)
def test_step_again_equals_step(make_optimizer, monkeypatch):
    by_step = _run(make_optimizer(), "step")
    full_steps = []
    step = anyoptim.optimizers.base.Optimizer.step

    def counted(self, params, grads, state):
        full_steps.append(state.count)
        return step(self, params, grads, state)

    monkeypatch.setattr(anyoptim.optimizers.base.Optimizer, "step", counted)
    by_step_again = _run(make_optimizer(), "step_again")
    assert full_steps == [0]  # every later step took the prepared step
    assert by_step_again[2] == by_step[2]
    for key, value in by_step[0].items():
        np.testing.assert_array_equal(by_step_again[0][key], value, err_msg=key)
    state, expected = by_step_again[1], by_step[1]
    summary = ("count", "skipped", "learning_rate")
    assert [getattr(state, name) for name in summary] == [getattr(expected, name) for name in summary]
    assert state.skipped == 1
    for slot, tree in expected.slots.items():
        for key, value in tree.items():
            np.testing.assert_array_equal(state.slots[slot][key], value, err_msg=f"{slot}/{key}")


def test_step_again_validates_anything_but_the_last_returned_arrays():
    optimizer = anyoptim.Adam(0.1)
    params = {"w": np.ones(4)}
    grads = {"w": np.full(4, 0.5)}
    params, state = optimizer.step(params, grads, optimizer.init(params))
    fresh = {"w": params["w"].copy()}  # not the tree the last step returned: a full step
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3,\)"):
        optimizer.step_again(fresh, {"w": np.ones(3)}, state)
    np.testing.assert_array_equal(fresh["w"], params["w"])
    # A changed setting drops the prepared step: the next call is validated again.
    optimizer.learning_rate = 0.2
    assert optimizer._prepared is None
    params, state = optimizer.step_again(params, grads, state)
    assert state.learning_rate == 0.2 and optimizer._prepared is not None


class _CountingAdam(anyoptim.Adam):
    calls = 0

    def step(self, params, grads, state):
        type(self).calls += 1
        return super().step(params, grads, state)


def test_fit_steps_through_a_replaced_step():
    X, y = datasets.make_moons(n_samples=100, noise=0.2, seed=0)
    model = anyoptim.MLP([2, 4, 1])
    _CountingAdam.calls = 0
    anyoptim.fit(model, _CountingAdam(0.01), X, y, epochs=3, batch_size=32, progress=False)
    assert _CountingAdam.calls == 3 * 4

    optimizer = anyoptim.Adam(0.01)
    original, calls = optimizer.step, []

    def counted(params, grads, state):
        calls.append(state.count)
        return original(params, grads, state)

    optimizer.step = counted
    result = anyoptim.fit(model, optimizer, X, y, epochs=3, batch_size=32, progress=False)
    assert calls == list(range(12)) and result.state.count == 12


def test_fit_with_a_replaced_step_is_the_same_run():
    X, y = datasets.make_moons(n_samples=100, noise=0.2, seed=0)
    model = anyoptim.MLP([2, 4, 1])
    plain = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=4, batch_size=32, progress=False)
    _CountingAdam.calls = 0
    counted = anyoptim.fit(model, _CountingAdam(0.01), X, y, epochs=4, batch_size=32, progress=False)
    assert counted.history.cost == plain.history.cost
    for key, value in plain.params.items():
        np.testing.assert_array_equal(counted.params[key], value, err_msg=key)


@given(st.integers(1, 500), st.integers(1, 600))
def test_batch_slices_cover_every_row_once(n_samples, batch_size):
    slices = batch_slices(n_samples, batch_size)
    rows = [row for rows in slices for row in range(n_samples)[rows]]
    assert rows == list(range(n_samples))
    assert all(rows.stop - rows.start == batch_size for rows in slices[:-1])
    assert 0 < slices[-1].stop - slices[-1].start <= batch_size
    assert len(slices) == anyoptim.nn.data.batch_count(n_samples, batch_size)


def test_row_ones_is_ones_for_every_value():
    from anyoptim.nn.layers import row_ones

    X = np.array([[np.nan, 1.0], [np.inf, 2.0], [-np.inf, 3.0], [0.0, 4.0], [-2.5, 5.0]], dtype=np.float32)
    ones = row_ones(X)
    assert ones.dtype == X.dtype and ones.shape == (5,)
    np.testing.assert_array_equal(ones, np.ones(5, dtype=np.float32))


def test_step_again_with_another_grads_tree_takes_the_full_step(monkeypatch):
    """The promise is checked by identity for grads too: a new grads tree is read, not the last step's buffer."""
    optimizer = anyoptim.SGD(0.1)
    params = anyoptim.flatten({"w": np.ones(2)})
    grads = anyoptim.flatten({"w": np.ones(2)})
    params, state = optimizer.step(params, grads, optimizer.init(params))
    other = {"w": np.full(2, 10.0)}
    params, state = optimizer.step_again(params, other, state)
    np.testing.assert_array_equal(params["w"], [1.0 - 0.1 - 1.0, 1.0 - 0.1 - 1.0])
