"""Time anyoptim's step on torch tensors beside torch.optim's Adam (fused, foreach), one thread.

    python benchmarks/torch_step.py                 # CPU rows (and CUDA rows when a GPU is at hand), ~1 minute
    python benchmarks/torch_step.py --quick         # shorter timings
    python benchmarks/torch_step.py --device cuda   # CUDA rows only

Rows: Adam on one 2**23-element float32 tensor, and on the lesson's 2-5-2-1 MLP as a torch ``nn.Module``
(6 tensors).  anyoptim runs three ways on the MLP: the same trees every step (``params``/``grads`` built
once; ``zero_grad(set_to_none=False)`` keeps the grad tensors), a new grads tree each step (``nest`` of
``p.grad``, same tensors), and new grad tensors each step (what ``zero_grad()`` and ``backward()`` give:
the validated step); on CPU also the same-trees step on NumPy copies of the tensors.  Each time is the best
of ``--repeats`` timings of at least ``--min-time`` seconds, after a warm-up; ratios are to
``torch.optim.Adam(fused=True)``.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout this folder sits in first: its anyoptim is the one timed
import anyoptim  # noqa: E402
from anyoptim.tree import nest  # noqa: E402


def _timer(device: str):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def time_per_call(step, *, min_time: float, repeats: int) -> float:
        for _ in range(20):
            step()
        sync()
        best = float("inf")
        for _ in range(repeats):
            calls, start = 0, time.perf_counter()
            while True:
                for _ in range(10):
                    step()
                calls += 10
                sync()
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            best = min(best, elapsed / calls)
        return best

    return time_per_call


def _lesson_mlp(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(2, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)]
    return torch.nn.Sequential(*layers).to(device)


def _torch_rows(params: list[torch.Tensor]) -> dict[str, object]:
    return {
        "torch.optim.Adam(fused=True)": torch.optim.Adam(params, lr=1e-3, fused=True).step,
        "torch.optim.Adam(foreach=True)": torch.optim.Adam(params, lr=1e-3, foreach=True).step,
    }


def big_tensor_rows(device: str) -> dict[str, object]:
    """Adam on one 2**23-element float32 tensor, its gradient the same tensor every step."""
    generator = torch.Generator().manual_seed(0)
    p = torch.randn(2**23, generator=generator).to(device).requires_grad_()
    p.grad = torch.randn(2**23, generator=generator).to(device) * 1e-3
    optimizer = anyoptim.Adam(1e-3)
    params, grads = {"w": p}, {"w": p.grad}
    state = [optimizer.init(params)]

    def anyoptim_step():
        _, state[0] = optimizer.step(params, grads, state[0])

    return {"anyoptim.Adam": anyoptim_step, **_torch_rows([p])}


def mlp_rows(device: str) -> dict[str, object]:
    """Adam on the lesson's 2-5-2-1 MLP as an nn.Module: the step alone, gradients already there."""
    model = _lesson_mlp(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    optimizer = anyoptim.Adam(1e-3)
    params = nest(model.named_parameters())
    grads = nest((name, p.grad) for name, p in model.named_parameters())
    state = [optimizer.init(params)]

    def same_trees():
        _, state[0] = optimizer.step(params, grads, state[0])

    def new_grads_tree():
        _, state[0] = optimizer.step(params, nest((n, p.grad) for n, p in model.named_parameters()), state[0])

    def new_grad_tensors():
        for p in model.parameters():  # what zero_grad() + backward() leave: new tensors
            p.grad = p.grad.clone()
        _, state[0] = optimizer.step(params, nest((n, p.grad) for n, p in model.named_parameters()), state[0])

    def clone_only():
        for p in model.parameters():
            p.grad = p.grad.clone()

    rows = {
        "anyoptim.Adam, same trees": same_trees,
        "anyoptim.Adam, new grads tree": new_grads_tree,
        "anyoptim.Adam, new grad tensors (minus the clones)": (new_grad_tensors, clone_only),
    }
    if device == "cpu":  # the same step on NumPy copies of the tensors: the prepared step serves both
        numpy_optimizer = anyoptim.Adam(1e-3)
        numpy_params = nest((n, p.detach().numpy().copy()) for n, p in model.named_parameters())
        numpy_grads = nest((n, p.grad.numpy().copy()) for n, p in model.named_parameters())
        numpy_state = [numpy_optimizer.init(numpy_params)]

        def numpy_same_trees():
            _, numpy_state[0] = numpy_optimizer.step(numpy_params, numpy_grads, numpy_state[0])

        rows["anyoptim.Adam on NumPy copies, same trees"] = numpy_same_trees
    return {**rows, **_torch_rows(list(model.parameters()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="0.05 s x 3 timings instead of 0.25 s x 5")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    min_time, repeats = (0.05, 3) if args.quick else (0.25, 5)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, anyoptim {anyoptim.__version__}, {platform.processor() or platform.machine()}")
    for device in devices:
        time_per_call = _timer(device)
        for title, rows in (("Adam, 2**23 float32", big_tensor_rows), ("Adam, lesson MLP (6 tensors)", mlp_rows)):
            print(f"\n{title}, {device}, one thread")
            times = {}
            for name, step in rows(device).items():
                if isinstance(step, tuple):  # (step, part of it that is not the optimizer's)
                    whole, extra = (time_per_call(s, min_time=min_time, repeats=repeats) for s in step)
                    times[name] = whole - extra
                else:
                    times[name] = time_per_call(step, min_time=min_time, repeats=repeats)
            fused = times["torch.optim.Adam(fused=True)"]
            for name, seconds in times.items():
                print(f"  {name:<52} {seconds * 1e6:10.1f} us   {seconds / fused:6.2f}x fused")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
