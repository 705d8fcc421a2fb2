"""Time an Adam step on float16 and bfloat16 parameters beside float32 (``anyoptim.engines.precision``).

    python benchmarks/low_precision.py [--size 20] [--repeats 30] [--torch]

Every row is one optimizer step on ``2**size`` parameters in one flat buffer (``anyoptim.flatten``), the
median of ``--repeats`` steps after three warm-up steps, on one thread.  NumPy rows: the C kernel
(``kernels="c"``) and the ufunc blocks (``kernels="ufunc"``), float32, float16 and float16 with
``master_weights=True``.  ``--torch`` adds torch CPU rows (the generic engine), float32 and bfloat16, and
torch.optim's own Adam (``foreach``) beside them.  anyoptim is imported from the checkout this folder sits
in.  Results are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's anyoptim, installed or not

import numpy as np

import anyoptim
from anyoptim.engines.numpy import NumpyEngine


def _median_seconds(step, repeats: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def numpy_rows(size: int, repeats: int) -> list[tuple[str, float]]:
    rows = []
    for kernels in ("c", "ufunc"):
        for dtype, master in ((np.float32, False), (np.float16, False), (np.float16, True)):
            params = anyoptim.flatten({"w": np.ones(size, dtype)})
            grads = anyoptim.flatten({"w": np.full(size, 0.5, dtype)})
            opt = anyoptim.Adam(1e-3, master_weights=master, engine=NumpyEngine(kernels=kernels))
            box = [params, opt.init(params)]

            def step(opt=opt, grads=grads, box=box):
                box[0], box[1] = opt.step_again(box[0], grads, box[1])

            label = f"numpy {kernels:5s} {np.dtype(dtype).name}{', master weights' if master else ''}"
            rows.append((label, _median_seconds(step, repeats)))
    return rows


def torch_rows(size: int, repeats: int) -> list[tuple[str, float]]:
    import torch

    torch.set_num_threads(1)
    rows = []
    for dtype, master in ((torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)):
        params = {"w": torch.ones(size, dtype=dtype)}
        grads = {"w": torch.full((size,), 0.5, dtype=dtype)}
        opt = anyoptim.Adam(1e-3, master_weights=master)
        box = [params, opt.init(params)]

        def step(opt=opt, grads=grads, box=box):
            box[0], box[1] = opt.step(box[0], grads, box[1])

        label = f"torch generic {str(dtype).removeprefix('torch.')}{', master weights' if master else ''}"
        rows.append((label, _median_seconds(step, repeats)))
    for dtype in (torch.float32, torch.bfloat16):
        weight = torch.nn.Parameter(torch.ones(size, dtype=dtype))
        weight.grad = torch.full((size,), 0.5, dtype=dtype)
        reference = torch.optim.Adam([weight], lr=1e-3, foreach=True)
        rows.append(
            (f"torch.optim.Adam foreach {str(dtype).removeprefix('torch.')}", _median_seconds(reference.step, repeats))
        )
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20, help="log2 of the number of parameters (default 20)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--torch", action="store_true", help="add the torch CPU rows")
    args = parser.parse_args(argv)
    size = 2**args.size
    rows = numpy_rows(size, args.repeats) + (torch_rows(size, args.repeats) if args.torch else [])
    print(f"Adam, 2**{args.size} parameters, median of {args.repeats} steps, one thread")
    for label, seconds in rows:
        print(f"  {label:45s} {seconds * 1e3:8.2f} ms  {seconds * 1e9 / size:6.2f} ns/parameter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
