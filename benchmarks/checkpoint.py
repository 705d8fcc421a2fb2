"""Checkpoint speed and memory: anyoptim.save / anyoptim.load of an Adam checkpoint beside a plain copy of its bytes.

The workload is the issue's: one float32 tensor of 2^26 parameters (256 MiB) with Adam's two moments, so
768 MiB of tensors.  In the same run it measures

* ``save``: ``anyoptim.save`` (temporary file, fsync, rename), against writing the same three arrays' bytes to a
  file and fsync-ing it (the disk's own write speed, with no format at all);
* ``load``: ``anyoptim.load(path, like=..., optimizer=...)``, against reading those bytes back into three
  preallocated arrays (``readinto``: the least a reader can do);
* the peak memory ``load`` allocates beyond its result (the parameters and state it returns), by tracemalloc
  (NumPy reports its buffers to it), in a run of its own so that tracing does not touch the timings.

Reads come from the page cache when the file was just written (as they do for the copy it is compared with):
both sides are measured alike.  Each time is the best of ``--repeats`` runs.

    python benchmarks/checkpoint.py              # 2^26 parameters, ~1 minute
    python benchmarks/checkpoint.py --log2 20    # a quick look
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout's anyoptim when none is installed
import anyoptim

MIB = 2**20


def _arrays(n: int) -> tuple[dict, anyoptim.Adam, anyoptim.OptimizerState]:
    rng = np.random.default_rng(0)
    opt = anyoptim.Adam(1e-3)
    params = {"W": rng.standard_normal(n, dtype=np.float32)}
    state = opt.init(params)
    state.slots["m"]["W"][...] = rng.standard_normal(n, dtype=np.float32)
    state.slots["v"]["W"][...] = rng.random(n, dtype=np.float32)
    return params, opt, state


def _best(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def _copy_write(path: Path, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as file:
        for array in arrays:
            file.write(memoryview(array).cast("B"))
        file.flush()
        os.fsync(file.fileno())


def _copy_read(path: Path, targets: list[np.ndarray]) -> None:
    with open(path, "rb", buffering=0) as file:
        for target in targets:
            view = memoryview(target).cast("B")
            while view:
                read = file.readinto(view)
                view = view[read:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2", type=int, default=26, help="log2 of the parameter count (default 26)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temporary folder)")
    args = parser.parse_args()
    n = 2**args.log2
    params, opt, state = _arrays(n)
    arrays = [params["W"], state.slots["m"]["W"], state.slots["v"]["W"]]
    nbytes = sum(a.nbytes for a in arrays)
    like = {"W": np.zeros(n, dtype=np.float32)}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        checkpoint, raw = Path(folder) / "adam.safetensors", Path(folder) / "adam.bin"
        save = _best(lambda: anyoptim.save(checkpoint, params, state, optimizer=opt), args.repeats)
        copy_write = _best(lambda: _copy_write(raw, arrays), args.repeats)
        load = _best(lambda: anyoptim.load(checkpoint, like=like, optimizer=opt), args.repeats)
        targets = [np.empty_like(a) for a in arrays]
        copy_read = _best(lambda: _copy_read(raw, targets), args.repeats)
        targets.clear()
        loaded, loaded_state = anyoptim.load(checkpoint, like=like, optimizer=opt)
        assert np.array_equal(loaded["W"], params["W"]) and np.array_equal(loaded_state.slots["v"]["W"], arrays[2])
        del loaded, loaded_state
        gc.collect()
        tracemalloc.start()
        result = anyoptim.load(checkpoint, like=like, optimizer=opt)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del result
    import safetensors

    system = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs"
    print(f"anyoptim {anyoptim.__version__}, safetensors {safetensors.__version__}, NumPy {np.__version__}, "
          f"Python {platform.python_version()}, {system}")  # fmt: skip
    print(f"Adam checkpoint of 2^{args.log2} float32 parameters: {nbytes / MIB:.0f} MiB of tensors")
    rows = [("save (fsync)", save, copy_write), ("load", load, copy_read)]
    print(f"{'':14}{'anyoptim':>12}{'plain copy':>13}{'speed ratio':>13}")
    for name, ours, copy in rows:
        print(f"{name:14}{nbytes / MIB / ours:>8.0f} MiB/s{nbytes / MIB / copy:>8.0f} MiB/s{copy / ours:>12.0%}")
    extra = peak - nbytes
    print(f"load's peak traced memory {peak / MIB:.0f} MiB: the result ({nbytes / MIB:.0f} MiB) "
          f"+ {extra / MIB:.1f} MiB more ({extra / nbytes:.2f} copies of the data)")  # fmt: skip


if __name__ == "__main__":
    main()
