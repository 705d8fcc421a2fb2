"""``anyoptim.load(..., in_place=True)``: the saved parameters copied into the arrays one trains.

A torch module resumed this way keeps its own parameters (identity, ``is_leaf``, ``requires_grad``) and goes on
exactly as the run that never stopped; every refusal happens before anything is written.
"""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim
from anyoptim.tree import nest

pytest.importorskip("safetensors")


def _numpy_run(tmp_path):
    opt = anyoptim.Adam(0.05)
    params = {"W": np.arange(6.0).reshape(2, 3), "b": np.ones(3)}
    state = opt.init(params)
    for k in range(3):
        params, state = opt.step(params, {"W": params["W"] * 0.1 - k, "b": params["b"] - 0.5}, state)
    path = tmp_path / "run.safetensors"
    anyoptim.save(path, params, state, optimizer=opt)
    return opt, params, state, path


def test_numpy_target_is_written_and_returned(tmp_path):
    opt, params, state, path = _numpy_run(tmp_path)
    target = {"W": np.zeros((2, 3)), "b": np.zeros(3)}
    arrays = dict(target)
    loaded, loaded_state = anyoptim.load(path, like=target, optimizer=opt, in_place=True)
    assert loaded is target and all(target[k] is arrays[k] for k in arrays)
    for name in params:
        np.testing.assert_array_equal(target[name], params[name])
    assert loaded_state.count == state.count == 3
    np.testing.assert_array_equal(loaded_state.slots["v"]["W"], state.slots["v"]["W"])


def test_partial_load_in_place_keeps_the_skipped_leaves(tmp_path):
    opt, params, _, path = _numpy_run(tmp_path)
    target = {"W": np.zeros((2, 3)), "extra": np.full(2, 7.0)}
    with pytest.warns(anyoptim.checkpoint.CheckpointWarning):
        anyoptim.load(path, like=target, optimizer=opt, strict=False, in_place=True)
    np.testing.assert_array_equal(target["W"], params["W"])
    np.testing.assert_array_equal(target["extra"], [7.0, 7.0])


@pytest.mark.parametrize(
    ("make_like", "error", "match"),
    [
        (lambda: None, TypeError, "needs like="),
        (lambda: {"W": np.zeros((2, 3)), "b": np.zeros(4)}, ValueError, "does not match"),  # a shape mismatch
        (lambda: {"W": np.zeros((2, 3)), "c": np.zeros(3)}, ValueError, "does not match"),  # a name mismatch
        (lambda: _read_only(), ValueError, r"like\['b'\] is read-only"),
        (lambda: _tied(), ValueError, r"like\['b'\] is the same array as like\['W'\]"),
    ],
    ids=["no-like", "shape", "name", "read-only", "tied"],
)
def test_a_refused_load_writes_nothing(tmp_path, make_like, error, match):
    opt, _, _, path = _numpy_run(tmp_path)
    like = make_like()
    before = None if like is None else {k: np.array(v, copy=True) for k, v in like.items()}
    with pytest.raises(error, match=match):
        anyoptim.load(path, like=like, optimizer=opt, in_place=True)
    if like is not None:
        for name, value in like.items():
            np.testing.assert_array_equal(value, before[name])


def test_a_damaged_file_writes_nothing(tmp_path):
    opt, _, _, path = _numpy_run(tmp_path)
    path.write_bytes(path.read_bytes()[:-8])  # truncated: the last tensor's bytes are missing
    target = {"W": np.zeros((2, 3)), "b": np.zeros(3)}
    with pytest.raises(ValueError):
        anyoptim.load(path, like=target, optimizer=opt, in_place=True)
    assert not target["W"].any() and not target["b"].any()


def test_in_place_must_be_a_bool(tmp_path):
    opt, params, _, path = _numpy_run(tmp_path)
    with pytest.raises(TypeError, match="in_place must be True or False, got 'yes'"):
        anyoptim.load(path, like=params, optimizer=opt, in_place="yes")


def _read_only():
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    return {"W": np.zeros((2, 3)), "b": frozen}


def _tied():
    W = np.zeros(3)
    return {"W": W, "b": W}


def test_jax_like_is_refused_before_reading(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    opt, _, _, path = _numpy_run(tmp_path)
    with pytest.raises(TypeError, match="JAX arrays are immutable"):
        anyoptim.load(path, like={"W": jnp.zeros((2, 3)), "b": jnp.zeros(3)}, optimizer=opt, in_place=True)


def _module(torch, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _train(torch, module, optimizer, state, steps, start):
    params = nest(module.named_parameters())
    for step in range(start, start + steps):
        generator = torch.Generator().manual_seed(step)
        X, y = torch.randn(16, 3, generator=generator), torch.randn(16, 1, generator=generator)
        module.zero_grad()
        torch.nn.functional.mse_loss(module(X), y).backward()
        params, state = optimizer.step(params, nest((n, p.grad) for n, p in module.named_parameters()), state)
    return state


def test_a_torch_module_resumes_as_if_it_never_stopped(tmp_path):
    torch = pytest.importorskip("torch")
    optimizer = anyoptim.AdamW(0.01, weight_decay=0.1)
    straight = _module(torch, 0)
    _train(torch, straight, optimizer, optimizer.init(nest(straight.named_parameters())), 10, 0)

    first = _module(torch, 0)
    state = _train(torch, first, optimizer, optimizer.init(nest(first.named_parameters())), 4, 0)
    path = tmp_path / "module.safetensors"
    anyoptim.save(path, nest(first.named_parameters()), state, optimizer=optimizer)

    resumed = _module(torch, 1)  # other initial weights: all of them must come from the file
    own = list(resumed.parameters())
    _, state = anyoptim.load(path, like=nest(resumed.named_parameters()), optimizer=optimizer, in_place=True)
    assert all(
        p is q and p.is_leaf and p.requires_grad and p.grad_fn is None
        for p, q in zip(resumed.parameters(), own, strict=True)
    )
    state = _train(torch, resumed, optimizer, state, 6, 4)
    assert state.count == 10
    for p, q in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(p, q)


def test_an_expanded_torch_tensor_is_refused_before_reading(tmp_path):
    torch = pytest.importorskip("torch")
    opt, _, _, path = _numpy_run(tmp_path)
    with pytest.raises(ValueError, match=r"like\['b'\] is a tensor whose elements share memory"):
        anyoptim.load(
            path,
            like={"W": torch.zeros(2, 3, dtype=torch.float64), "b": torch.zeros(1, dtype=torch.float64).expand(3)},
            optimizer=opt,
            in_place=True,
        )


def test_master_weights_resume_in_place_as_the_run_that_never_stopped(tmp_path):
    """float16 params copied into like's own arrays, the float32 masters into the new state: the next step agrees."""
    opt = anyoptim.Adam(0.05, master_weights=True)
    params = {"W": np.arange(6.0, dtype=np.float16).reshape(2, 3), "b": np.ones(3, dtype=np.float16)}
    state = opt.init(params)
    grads = {"W": np.full((2, 3), 0.3, np.float16), "b": np.ones(3, np.float16)}
    for _ in range(3):
        params, state = opt.step(params, grads, state)
    path = tmp_path / "master.safetensors"
    anyoptim.save(path, params, state, optimizer=opt)
    like = {"W": np.zeros((2, 3), np.float16), "b": np.zeros(3, np.float16)}
    own = dict(like)
    _, loaded = anyoptim.load(path, like=like, optimizer=opt, in_place=True)
    assert all(like[k] is own[k] for k in own) and loaded.slots["master"]["W"].dtype == np.float32
    expected, expected_state = opt.step({k: v.copy() for k, v in params.items()}, grads, state)
    resumed, resumed_state = anyoptim.Adam(0.05, master_weights=True).step(like, grads, loaded)
    for name in params:
        np.testing.assert_array_equal(resumed[name], expected[name])
        np.testing.assert_array_equal(resumed_state.slots["master"][name], expected_state.slots["master"][name])


def test_array_api_strict_target_is_written_in_place(tmp_path):
    xps = pytest.importorskip("array_api_strict")
    opt, params, _, path = _numpy_run(tmp_path)
    like = {"W": xps.zeros((2, 3), dtype=xps.float64), "b": xps.zeros(3, dtype=xps.float64)}
    own = dict(like)
    loaded, _ = anyoptim.load(path, like=like, optimizer=opt, in_place=True)
    assert loaded is like and all(like[k] is own[k] for k in own)
    for name in params:
        np.testing.assert_array_equal(np.asarray(like[name]), params[name])


def test_a_torch_module_given_as_like_is_told_to_nest_its_parameters(tmp_path):
    torch = pytest.importorskip("torch")
    opt, _, _, path = _numpy_run(tmp_path)
    with pytest.raises(TypeError, match=r"is a Linear, not an array: .*nest\(model.named_parameters\(\)\)"):
        anyoptim.load(path, like=torch.nn.Linear(3, 2), optimizer=opt, in_place=True)
