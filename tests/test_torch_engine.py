"""The torch engine: fused through NumPy views where it can, the rule with torch elsewhere, always in place.

Also the errors a torch user meets first: ``Adam(lr=0.1)`` and friends.
"""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim
from anyoptim.engines import select_engine
from anyoptim.engines.numpy import NumpyEngine
from anyoptim.engines.program import Program
from anyoptim.engines.torch_bridge import TorchEngine, TorchStep
from tests.cases import CONFIG_PARAMS
from tests.helpers import RTOL_SAME_BACKEND

torch = pytest.importorskip("torch")
import array_api_compat.torch as xp  # noqa: E402

DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]


def _tree(dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        "W1": torch.randn(4, 3, generator=generator, dtype=dtype),
        "b1": torch.randn(3, generator=generator, dtype=dtype),
        "s": torch.randn((), generator=generator, dtype=dtype),
    }


def _copy(tree):
    return {name: leaf.clone() for name, leaf in tree.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_fused_through_views_equals_the_rule_with_torch(config, dtype):
    """Every configuration of tests/cases.py: the same steps either way; the caller's tensors are the ones updated."""
    results = {}
    for engine in ("auto", "generic"):
        optimizer = config.make(engine)
        params = _tree(dtype, 0)
        given = dict(params)
        state = optimizer.init(params)
        for step in range(4):
            grads = _tree(dtype, step + 1)
            params, state = optimizer.step(params, grads, state)
            assert all(params[name] is given[name] for name in given)
        results[engine] = (params, state)
    rtol = RTOL_SAME_BACKEND[str(dtype).rpartition(".")[2]]
    (fused, fused_state), (generic, generic_state) = results["auto"], results["generic"]
    for name in fused:
        np.testing.assert_allclose(fused[name].numpy(), generic[name].numpy(), rtol=rtol, atol=1e-300, err_msg=name)
    for slot, tree in fused_state.slots.items():
        for name in tree:
            np.testing.assert_allclose(
                tree[name].numpy(), generic_state.slots[slot][name].numpy(), rtol=rtol, atol=1e-300, err_msg=slot
            )


def _sgd_program():
    def sgd(xp, p, g, slots, hp):
        return p - hp["learning_rate"] * g, {}

    return Program(sgd)


def test_float32_and_float64_cpu_tensors_run_on_the_numpy_engine_as_one_span_when_flat():
    engine = select_engine(xp, "auto")
    assert isinstance(engine, TorchEngine) and engine.name == "torch"
    params = anyoptim.flatten({"a": torch.ones(3), "b": torch.ones(2, 2)})
    grads = anyoptim.flatten({"a": torch.ones(3), "b": torch.ones(2, 2)})
    names = sorted(params)
    step = engine.prepare(
        _sgd_program(), xp, [params[n] for n in names], [grads[n] for n in names], {}, [{"learning_rate": 0.5}] * 2
    )
    assert isinstance(step, TorchStep) and step.in_place
    assert step.parts == {"host": [0, 1], "device": [], "generic": []}
    step.update([{"learning_rate": 0.5}] * 2)
    assert torch.equal(params["a"], torch.full((3,), 0.5)) and torch.equal(params["b"], torch.full((2, 2), 0.5))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: torch.ones(3, dtype=torch.bfloat16), id="bfloat16"),
        pytest.param(lambda: torch.ones(3, dtype=torch.float16), id="float16"),
        pytest.param(lambda: torch.ones(4, 3).t(), id="transposed"),
        pytest.param(lambda: torch.ones(6)[::2], id="strided"),
    ],
)
def test_where_no_view_is_possible_the_rule_runs_with_torch_and_writes_back(make):
    param, grad = make(), make()
    engine = select_engine(xp, "auto")
    step = engine.prepare(_sgd_program(), xp, [param], [grad], {}, [{"learning_rate": 0.25}])
    assert step.parts == {"host": [], "device": [], "generic": [0]} and step.in_place
    base = param._base
    step.update([{"learning_rate": 0.25}])
    assert torch.all(param == 0.75) and param._base is base
    if base is not None:  # a view: its base was written through it, there only
        assert int((base == 0.75).sum()) == param.numel()


def test_a_bfloat16_parameter_trains_in_place_with_adam():
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    optimizer = anyoptim.Adam(0.1)
    state = optimizer.init({"w": w})
    params, state = optimizer.step({"w": w}, {"w": torch.ones(4, dtype=torch.bfloat16)}, state)
    assert params["w"] is w and w.is_leaf and w.dtype == torch.bfloat16
    assert torch.allclose(w.detach().float(), torch.full((4,), 0.9), atol=4e-3)
    assert state.slots["m"]["w"].dtype == torch.bfloat16


def test_a_gradient_scale_tensor_reaches_the_numpy_engine_as_a_view():
    """clip_global_norm gives a 0-D tensor scalar; fused and generic agree and the fast path keeps working."""
    params = {"w": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    optimizer = anyoptim.SGD(1.0, clip_global_norm=1.0)
    state = optimizer.init(params)
    grads = {"w": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)  # the prepared step
    np.testing.assert_allclose(params["w"].numpy(), [3.0 - 1.2, 4.0 - 1.6], rtol=1e-15)


class _CpuAsDevice(TorchEngine):
    """The device part, exercised on a CPU: CPU tensors go to "device()"'s engine, NumPy views standing in for CuPy."""

    device_type = "cpu"
    default_stream = True

    def on_default_stream(self):
        return self.default_stream


def test_device_tensors_go_to_the_device_engine_through_views_and_back_to_torch_off_the_default_stream():
    numpy_engine = NumpyEngine(kernels="ufunc")
    views = []

    def view(tensor):
        views.append(tensor)
        return tensor.numpy()

    engine = _CpuAsDevice(host=None, device=lambda: (numpy_engine, view))
    param, grad = torch.ones(3), torch.ones(3)
    hps = [{"learning_rate": 0.5}]
    step = engine.prepare(_sgd_program(), xp, [param], [grad], {}, hps)
    assert step.parts == {"host": [], "device": [0], "generic": []} and views
    step.update(hps)
    assert torch.all(param == 0.5)
    engine.default_stream = False  # another stream now: the rule runs with torch (on torch's stream)
    version = param._version
    step.update(hps)
    assert torch.all(param == 0.0) and param._version > version
    engine.default_stream = False
    assert engine.prepare(_sgd_program(), xp, [param], [grad], {}, hps).parts["generic"] == [0]
    missing = _CpuAsDevice(host=None, device=lambda: None)  # no CuPy
    assert missing.prepare(_sgd_program(), xp, [param], [grad], {}, hps).parts["generic"] == [0]


def test_the_torch_engines_are_made_once_and_the_generic_one_writes_in_place():
    assert select_engine(xp, "auto") is select_engine(xp, "fused")
    generic = select_engine(xp, "generic")
    assert generic.name == "torch" and not generic.fused and generic is select_engine(xp, "generic")
    w = torch.ones(2, dtype=torch.float64)
    step = generic.prepare(_sgd_program(), xp, [w], [torch.ones(2, dtype=torch.float64)], {}, [{"learning_rate": 1}])
    assert step.parts["generic"] == [0]


# --------------------------------------------------------------------------- the lr= error


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: anyoptim.Adam(lr=0.1),
            r"^Adam\(\) got an unexpected keyword argument 'lr'; did you mean 'learning_rate'\?$",
        ),
        (lambda: anyoptim.AdamW(betas=(0.9, 0.99)), r"^AdamW\(\) .* 'betas'; did you mean 'beta1' and 'beta2'\?"),
        (lambda: anyoptim.RMSprop(alpha=0.99), r"^RMSprop\(\) .* 'alpha'; did you mean 'beta'\?.*0.99"),
        (lambda: anyoptim.Adagrad(eps=1e-10), r"^Adagrad\(\) .* 'eps'; did you mean 'epsilon'\?$"),
        (
            lambda: anyoptim.SGD(0.1, momentum=0.9),
            r"^SGD\(\) .* 'momentum' \(.*Momentum\(lr, beta=m, form='heavy_ball'\)",
        ),
        (lambda: anyoptim.SGD(nesterov=True), r"^SGD\(\) .* 'nesterov' .*nesterov=True"),
        (lambda: anyoptim.Momentum(dampening=0.9), r"^Momentum\(\) .* 'dampening'; did you mean 'beta'\?"),
        (lambda: anyoptim.Adam(weight_decy=0.1), r"^Adam\(\) .* 'weight_decy'; did you mean 'weight_decay'\?$"),
        (lambda: anyoptim.Lion(zzz=1), r"^Lion\(\) .* 'zzz'; Lion takes learning_rate, beta1, beta2, weight_decay"),
    ],
)
def test_unknown_keywords_name_the_class_called_and_the_keyword_meant(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_keyword_checks_leave_valid_calls_subclasses_and_fixed_options_alone():
    assert anyoptim.RMSprop(momentum=0.5).momentum == 0.5  # torch's name, and anyoptim's too here
    with pytest.raises(TypeError, match="NAdam has no 'amsgrad' option"):
        anyoptim.NAdam(amsgrad=True)

    class Logged(anyoptim.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    assert Logged(learning_rate=0.5, amsgrad=True).amsgrad
    with pytest.raises(TypeError, match=r"^Logged\(\) got an unexpected keyword argument 'lr'"):
        Logged(lr=0.5)


# --------------------------------------------------------------------------- new gradient tensors every step


def _steps(optimizer, params, gradient_sequence):
    state = optimizer.init(params)
    for grads in gradient_sequence:
        params, state = optimizer.step(params, grads, state)
    return params, state


def _alternating():
    """Contiguous gradients on even steps, strided ones on odd steps (3 leaves per step)."""
    calls = []

    def make(g):
        calls.append(None)
        return g.clone() if (len(calls) - 1) // 3 % 2 == 0 else torch.stack([g, g], -1)[..., 0]

    return make


def _gradient_sequence(make, count=5):
    return [{name: make(g) for name, g in _tree(torch.float64, 10 + step).items()} for step in range(count)]


@pytest.mark.parametrize(
    ("make", "rebound"),
    [
        pytest.param(lambda g: g.clone(), True, id="contiguous"),  # rebound in the compiled kernels' frames
        pytest.param(lambda g: g.clone().to(torch.bfloat16).to(torch.float64), True, id="rounded"),
        pytest.param(lambda g: torch.stack([g, g], -1)[..., 0], True, id="strided"),  # the rule run with torch
        pytest.param(_alternating(), False, id="contiguous-then-strided"),  # a new layout: the validated path
    ],
)
def test_new_gradient_tensors_every_step_give_the_steps_of_a_fresh_optimizer_each_time(make, rebound):
    """zero_grad() + backward() give new tensors each step: the prepared step reads them (or the validated path)."""
    sequence = _gradient_sequence(make)
    optimizer = anyoptim.Adam(0.1)
    params = _tree(torch.float64, 0)
    given = dict(params)
    state = optimizer.init(params)
    for step, grads in enumerate(sequence):
        params, state = optimizer.step(params, grads, state)
        assert all(params[name] is given[name] for name in given)
        if step == 0:
            first = optimizer._prepared
        assert (optimizer._prepared is first) is rebound or step == 0
        reference = anyoptim.Adam(0.1, engine="generic")
        expected, _ = _steps(reference, _tree(torch.float64, 0), sequence[: step + 1])
        for name in params:
            np.testing.assert_allclose(params[name].numpy(), expected[name].numpy(), rtol=1e-12, err_msg=name)


def test_a_new_gradient_that_shares_memory_with_a_parameter_takes_the_validated_path():
    """grads = {"a": params["b"], "b": params["a"]} (the gradient of a*b): read before either is written."""
    optimizer = anyoptim.SGD(0.5)
    params = {"a": torch.tensor([1.0, 2.0], dtype=torch.float64), "b": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    state = optimizer.init(params)
    ones = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(2, dtype=torch.float64)}
    params, state = optimizer.step(params, ones, state)
    a, b = params["a"].clone(), params["b"].clone()
    params, state = optimizer.step(params, {"a": params["b"], "b": params["a"]}, state)
    np.testing.assert_allclose(params["a"].numpy(), (a - 0.5 * b).numpy(), rtol=1e-15)
    np.testing.assert_allclose(params["b"].numpy(), (b - 0.5 * a).numpy(), rtol=1e-15)


def test_new_gradients_of_another_dtype_or_layout_are_refused_as_on_the_first_step():
    optimizer = anyoptim.SGD(0.5)
    params = {"w": torch.ones(3, dtype=torch.float64)}
    state = optimizer.init(params)
    params, state = optimizer.step(params, {"w": torch.ones(3, dtype=torch.float64)}, state)
    with pytest.raises(TypeError, match="dtype"):
        optimizer.step(params, {"w": torch.ones(3, dtype=torch.float32)}, state)
    with pytest.raises(TypeError, match="sparse"):
        optimizer.step(params, {"w": torch.ones(3, dtype=torch.float64).to_sparse()}, state)
    assert torch.equal(params["w"], torch.full((3,), 0.5, dtype=torch.float64)) and state.count == 1


def test_flat_parameters_with_new_gradients_each_step_are_prepared_again_and_right():
    """One span of several leaves cannot take new gradients leaf by leaf: each step is validated, and right."""
    sequence = _gradient_sequence(lambda g: g.clone())
    params, _ = _steps(anyoptim.Momentum(0.1, form="heavy_ball"), anyoptim.flatten(_tree(torch.float64, 0)), sequence)
    expected, _ = _steps(anyoptim.Momentum(0.1, form="heavy_ball", engine="generic"), _tree(torch.float64, 0), sequence)
    for name in params:
        np.testing.assert_allclose(params[name].numpy(), expected[name].numpy(), rtol=1e-12, err_msg=name)


def test_bfloat16_parameters_read_new_gradients_in_the_rule_run_with_torch():
    sequence = [{"w": torch.full((4,), float(k + 1), dtype=torch.bfloat16)} for k in range(3)]
    params, _ = _steps(anyoptim.SGD(0.125), {"w": torch.ones(4, dtype=torch.bfloat16)}, sequence)
    assert torch.equal(params["w"], torch.full((4,), 1.0 - 0.125 * 6, dtype=torch.bfloat16))


def test_a_gradient_scale_tensor_of_each_step_is_not_kept_alive():
    """clip_global_norm makes a new 0-D tensor every step: the views made of it must not pile up (a leak)."""
    import gc

    def live_tensors():
        gc.collect()
        return sum(1 for found in gc.get_objects() if isinstance(found, torch.Tensor))

    params, grads = {"w": torch.ones(4)}, {"w": torch.tensor([3.0, -4.0, 1.0, 0.5])}
    optimizer = anyoptim.Adam(0.1, clip_global_norm=1.0)
    state = optimizer.init(params)
    for _ in range(3):
        params, state = optimizer.step(params, grads, state)
    before = live_tensors()
    for _ in range(50):
        params, state = optimizer.step(params, grads, state)
    assert live_tensors() <= before + 2


def test_gradients_that_only_some_runs_could_read_are_never_read_by_a_later_step():
    """Two programs (decayed and not): new gradients the first run takes and the second refuses (strided) go the
    validated path, which skips the step (NaN); the earlier gradients passed again must be the ones read."""
    mask = {"a": True, "b": False}
    optimizer = anyoptim.SGD(0.1, weight_decay=0.5, weight_decay_mask=mask, on_nonfinite="skip")
    params = {"a": torch.ones(4, 3, dtype=torch.float64), "b": torch.ones(4, 3, dtype=torch.float64)}
    state = optimizer.init(params)
    first = {"a": torch.ones(4, 3, dtype=torch.float64), "b": torch.ones(4, 3, dtype=torch.float64)}
    params, state = optimizer.step(params, first, state)
    bad = {"a": torch.full((4, 3), float("nan"), dtype=torch.float64), "b": torch.ones(3, 4, dtype=torch.float64).T}
    params, state = optimizer.step(params, bad, state)
    assert state.skipped == 1
    params, state = optimizer.step(params, first, state)
    reference = anyoptim.SGD(0.1, weight_decay=0.5, weight_decay_mask=mask, engine="generic")
    expected, _ = _steps(reference, {name: torch.ones(4, 3, dtype=torch.float64) for name in mask}, [first, first])
    for name in params:
        np.testing.assert_allclose(params[name].numpy(), expected[name].numpy(), rtol=1e-15, err_msg=name)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(lambda: torch.ones(1, dtype=torch.float64).expand(3), "stride of 0", id="expanded"),
        pytest.param(lambda: _inference(torch.ones(3, dtype=torch.float64)), "inference tensor", id="inference"),
    ],
)
def test_a_parameter_that_cannot_be_written_in_place_is_refused_before_anything_changes(make, match):
    """The step writes torch parameters in place: one it cannot write is named before any other moves."""
    first = torch.ones(3, dtype=torch.float64)  # a leaf the fused part would update first
    params = {"a": first, "b": make()}
    optimizer = anyoptim.SGD(0.1)
    with pytest.raises(ValueError, match=rf"params\['b'\] is .*{match}"):
        optimizer.init(params)
    state = anyoptim.SGD(0.1).init({"a": torch.ones(3, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float64)})
    grads = {"a": torch.ones(3, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float64)}
    with pytest.raises(ValueError, match=rf"params\['b'\] is .*{match}"):
        optimizer.step(params, grads, state)
    assert torch.equal(first, torch.ones(3, dtype=torch.float64))


def _inference(tensor):
    with torch.inference_mode():
        return tensor.clone()


def test_a_state_made_under_inference_mode_is_refused_before_anything_changes():
    params = {"a": torch.ones(3, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float64)}
    optimizer = anyoptim.Adam(0.1)
    state = optimizer.init(params)
    with torch.inference_mode():
        made_there = optimizer.init(params)
    slots = {"m": state.slots["m"], "v": {"a": state.slots["v"]["a"], "b": made_there.slots["v"]["b"]}}
    mixed = anyoptim.OptimizerState(0, 0.1, slots, 0, state.structure, state.optimizer)
    grads = {"a": torch.ones(3, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"state slot 'v' leaf 1 is an inference tensor"):
        optimizer.step(params, grads, mixed)
    assert torch.equal(params["a"], torch.ones(3, dtype=torch.float64))
    assert torch.equal(state.slots["m"]["a"], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("again", [False, True], ids=["step", "step_again"])
def test_a_parameter_given_other_memory_between_steps_is_updated_there(again):
    """``p.data = t`` (torch.nn.utils.vector_to_parameters, module.share_memory()) keeps the tensor object and
    gives it other memory: the next step updates that memory, not the old one the prepared views still hold."""
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer = anyoptim.SGD(0.5)
    params, grads = {"w": w}, {"w": torch.ones(3, dtype=torch.float64)}
    state = optimizer.init(params)
    params, state = optimizer.step(params, grads, state)
    params, state = optimizer.step(params, grads, state)  # the prepared step
    w.data = torch.full((3,), 4.0, dtype=torch.float64)
    params, state = (optimizer.step_again if again else optimizer.step)(params, grads, state)
    assert params["w"] is w and w.is_leaf
    assert torch.equal(w.detach(), torch.full((3,), 3.5, dtype=torch.float64))
    torch.nn.utils.vector_to_parameters(torch.zeros(3, dtype=torch.float64), [w])
    params, state = optimizer.step(params, grads, state)
    assert torch.equal(w.detach(), torch.full((3,), -0.5, dtype=torch.float64))


def test_parameters_passed_to_the_constructor_as_in_torch_optim_are_explained():
    """``Adam(model.parameters())``, torch.optim's first line: the message says where parameters go instead."""
    module = torch.nn.Linear(2, 1)
    for given in (module.parameters(), list(module.parameters()), {"w": torch.ones(2)}):
        with pytest.raises(ValueError, match=r"holds no parameters .* step\(params, grads, state\)"):
            anyoptim.Adam(given)
    with pytest.raises(ValueError, match=r"^learning_rate must be a number, got '0.1'$"):
        anyoptim.Adam("0.1")


def test_a_torch_keyword_with_advice_is_not_taken_for_a_near_spelling():
    """Adagrad(lr_decay=...) is advice (a schedule), not a misspelt weight_decay."""
    with pytest.raises(TypeError) as raised:
        anyoptim.Adagrad(0.1, lr_decay=0.01)
    assert "schedule" in str(raised.value) and "weight_decay" not in str(raised.value)


def test_a_parameter_passed_as_its_own_gradient_is_copied_without_a_torch_warning():
    """The aliasing copy reads the values only: no graph, and no torch.asarray requires_grad warning."""
    import warnings

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = anyoptim.SGD(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params, _ = optimizer.step({"w": w}, {"w": w}, optimizer.init({"w": w}))
    assert params["w"] is w and torch.equal(w.detach(), torch.tensor([0.5, -1.0])) and w.grad_fn is None


@pytest.mark.parametrize("slots_as", ["views of one buffer", "tensors of their own"])
def test_every_tensor_a_fused_step_writes_has_its_version_counter_bumped(slots_as):
    """A graph that saved a parameter or a slot before the step refuses to run backward after it.

    The written tensors are bumped one per version counter (views of one buffer share it): none may be missed."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    optimizer = anyoptim.Adam(0.1)
    params = anyoptim.tree.nest(model.named_parameters())
    state = optimizer.init(params)
    if slots_as == "tensors of their own":
        state.slots.update(
            {
                name: {k: {n: t.clone() for n, t in v.items()} for k, v in tree.items()}
                for name, tree in state.slots.items()
            }
        )
    grads = anyoptim.tree.nest((name, torch.ones_like(p)) for name, p in model.named_parameters())
    for _ in range(3):  # the first step validated, the others prepared
        written = [*anyoptim.tree.tree_flatten(params)[1], *anyoptim.tree.tree_flatten(state.slots)[1]]
        versions = [t._version for t in written]
        params, state = optimizer.step(params, grads, state)
        assert all(t._version > v for t, v in zip(written, versions, strict=True)), [
            t._version - v for t, v in zip(written, versions, strict=True)
        ]
    assert optimizer._prepared.check is not None  # the prepared step ran
    slot = state.slots["m"]["1"]["bias"]
    x = torch.ones(1, requires_grad=True)
    saved = (x * slot).sum()  # the graph saved the slot's values
    params, state = optimizer.step(params, grads, state)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.backward()


def test_one_tensor_per_version_counter_bumps_them_all():
    """The slots TorchEngine lays out (one buffer per slot and dtype) hold one counter per buffer; others their own."""
    from anyoptim.engines.torch_tensors import one_per_version_counter

    leaves = [
        torch.zeros(2, 3),
        torch.zeros(4, dtype=torch.float64),
        torch.zeros(5),
        torch.zeros(1, dtype=torch.float64),
    ]
    slots = TorchEngine().init_slots(xp, leaves, {"m": 0.0, "v": 0.0})
    buffer = torch.zeros(6)
    tensors = [*slots["m"], *slots["v"], buffer[:2], buffer[2:], buffer.detach(), *leaves]
    versions = [t._version for t in tensors]
    kept = one_per_version_counter(tensors)
    assert len(kept) == 4 + 3 + len(leaves)  # two buffers per slot (two dtypes); unrecorded views count alone
    torch.autograd.graph.increment_version(kept)
    assert all(t._version > v for t, v in zip(tensors, versions, strict=True))
