"""torch CUDA tensors on a real GPU: the CuPy engine's kernels through DLPack views, in place (``pytest -m gpu``).

The CPU suite checks the CUDA routing of :class:`~anyoptim.engines.torch_bridge.TorchEngine` with a NumPy engine
standing in for the device (``tests/test_torch_engine.py``); these tests run the real thing and skip without a
CUDA build of torch, CuPy and a GPU.  ``benchmarks/gpu_check.sh`` runs them.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import anyoptim
from anyoptim.tree import nest
from tests.cases import CASES, CONFIG_PARAMS
from tests.helpers import RTOL_SAME_BACKEND

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here")
    pytest.importorskip("cupy")


DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]


def _tree(dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"W1": (4, 3), "b1": (3,), "s": ()}
    return {name: torch.randn(shape, generator=generator, dtype=dtype).cuda() for name, shape in shapes.items()}


def _run(config, engine, dtype, steps=4):
    optimizer = config.make(engine)
    params = _tree(dtype, 0)
    given = {name: (leaf, leaf.data_ptr()) for name, leaf in params.items()}
    state = optimizer.init(params)
    for step in range(steps):
        params, state = optimizer.step(params, _tree(dtype, step + 1), state)
        assert all(params[name] is leaf and leaf.data_ptr() == ptr for name, (leaf, ptr) in given.items())
    torch.cuda.synchronize()
    return params, state


def _assert_close(a, b, dtype, what):
    rtol = RTOL_SAME_BACKEND[str(dtype).rpartition(".")[2]]
    np.testing.assert_allclose(a.cpu().numpy(), b.cpu().numpy(), rtol=rtol, atol=1e-300, err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_cuda_tensors_through_the_cupy_engine_equal_the_rule_with_torch(config, dtype):
    """Every configuration of tests/cases.py: the fused CUDA kernel on views of the tensors, in place."""
    (fused, fused_state), (generic, generic_state) = _run(config, "auto", dtype), _run(config, "generic", dtype)
    for name in fused:
        _assert_close(fused[name], generic[name], dtype, name)
    for slot, tree in fused_state.slots.items():
        for name in tree:
            _assert_close(tree[name], generic_state.slots[slot][name], dtype, f"{slot}/{name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_off_the_default_stream_the_steps_are_the_same(dtype):
    """On another torch stream the rule runs with torch on that stream: the same values, nothing raced."""
    config = CONFIG_PARAMS[0].values[0]
    expected, _ = _run(config, "auto", dtype)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got, _ = _run(config, "auto", dtype)
    stream.synchronize()
    for name in expected:
        _assert_close(got[name], expected[name], dtype, name)


def _module(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to("cuda", dtype)


@pytest.mark.parametrize(
    ("case", "equivalent"),
    [pytest.param(case, equivalent, id=f"{case.id}-{equivalent.label}") for case in CASES for equivalent in case.torch],
)
def test_a_cuda_module_trains_as_with_torch_optim(case, equivalent):
    """float64 on the GPU: 100 steps of an nn.Module agree with torch.optim to 1e-12; the module's own moved."""
    ours = _module(torch.float64)
    theirs = copy.deepcopy(ours)
    own = list(ours.parameters())
    optimizer = case.make(**equivalent.ours)
    params = nest(ours.named_parameters())
    state = optimizer.init(params)
    reference = equivalent.theirs(list(theirs.parameters()), torch)
    for step in range(100):
        generator = torch.Generator().manual_seed(step)
        X = torch.randn(64, 3, generator=generator, dtype=torch.float64).cuda()
        y = torch.randn(64, 2, generator=generator, dtype=torch.float64).cuda()
        for module in (ours, theirs):
            module.zero_grad()
            torch.nn.functional.mse_loss(module(X), y).backward()
        params, state = optimizer.step(params, nest((n, p.grad) for n, p in ours.named_parameters()), state)
        reference.step()
    for p, q, mine in zip(ours.parameters(), theirs.parameters(), own, strict=True):
        assert p is mine and p.is_leaf and p.grad_fn is None
        scale = float(q.detach().abs().max())
        np.testing.assert_allclose(p.detach().cpu().numpy(), q.detach().cpu().numpy(), rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("master_weights", [False, True], ids=["own", "master"])
def test_low_precision_cuda_parameters_never_turn_nan(dtype, master_weights):
    """Zero, tiny and huge gradients on the GPU: computed in float32, rounded once, never NaN or inf."""
    p = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=dtype, device="cuda")
    grads = torch.tensor([0.0, 1e-7, -6.0e4, 1.0], dtype=dtype, device="cuda")
    optimizer = anyoptim.Adam(1e-2, master_weights=master_weights)
    params, state = {"p": p}, optimizer.init({"p": p})
    for _ in range(3):
        params, state = optimizer.step(params, {"p": grads}, state)
    assert params["p"] is p
    assert bool(torch.isfinite(p).all()), p
    assert float(p[0]) == 1.0  # a zero gradient moves nothing
