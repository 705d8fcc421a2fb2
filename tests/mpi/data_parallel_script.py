"""Run under ``mpiexec -n N``: data-parallel results against one-process runs (tests/test_distributed.py launches it).

``python data_parallel_script.py agree OUT.json``: for every optimizer setting of
the tests' table (tests/cases.py CONFIGS), N processes, replicated and sharded,
against a one-process run on the same global batches; the non-finite skip and
global-norm clipping with a NaN in one process's shard; a checkpoint written by
rank 0 from the gathered state, resumed by N processes and by one.  Rank 0
writes the failures (an empty list when all agree) to OUT.json.

``python data_parallel_script.py fail``: rank 1 raises inside fit; every
process must end (fit aborts the job) instead of waiting.  ``fail-early``: rank 1
alone fails fit's checks of its arguments, before any collective.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyoptim
from anyoptim import checkpoint
from anyoptim.distributed import DataParallel, MPICommunicator, ParallelOptimizer, average_gradients
from tests.cases import CONFIGS

TOLERANCE = 1e-12


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


def compare(failures: list, label: str, got, want) -> None:
    """Params (or state slots) keyed by leaf name, and cost histories."""
    if isinstance(want, dict):
        if sorted(got) != sorted(want):
            failures.append(f"{label}: names {sorted(got)} != {sorted(want)}")
            return
        for key in want:
            compare(failures, f"{label}[{key}]", got[key], want[key])
        return
    error = relative_error(got, want)
    if not error <= TOLERANCE:
        failures.append(f"{label}: relative error {error:.3g}")


def compare_results(failures: list, label: str, got, want) -> None:
    compare(failures, f"{label} params", got.params, want.params)
    compare(failures, f"{label} cost", got.history.cost, want.history.cost)
    compare(failures, f"{label} state", dict(got.state.slots), dict(want.state.slots))
    if (got.state.count, got.state.skipped) != (want.state.count, want.state.skipped):
        failures.append(f"{label}: count/skipped {got.state.count, got.state.skipped} != {want.state.count}")


def agree(out: str) -> None:
    comm = MPICommunicator()
    failures: list[str] = []
    X, y = anyoptim.datasets.make_moons(n_samples=50, noise=0.2, seed=1)
    model = anyoptim.MLP([2, 7, 5, 1], hidden_activation="tanh")
    # 50 rows in batches of 16: the last batch (2 rows) leaves a process without rows when N = 3.
    settings = {"epochs": 2, "batch_size": 16, "seed": 3, "progress": False}
    for config in CONFIGS:
        want = anyoptim.fit(model, config.make("auto"), X, y, **settings)
        runs = {}
        for shard in (False, True):
            team = DataParallel(comm, shard_state=shard)
            runs[shard] = anyoptim.fit(model, config.make("auto"), X, y, comm=team, **settings)
            compare_results(failures, f"{config.id} shard={shard}", runs[shard], want)
        compare_results(failures, f"{config.id} sharded vs replicated", runs[True], runs[False])
    # N larger than the batch: batches of 2 rows (a process of three has none).
    want = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=1, batch_size=2, progress=False)
    got = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=1, batch_size=2, progress=False, comm=comm)
    compare_results(failures, "batch 2", got, want)
    nonfinite(comm, failures)
    averaging(comm, failures)
    staged(comm, failures)
    resumed(comm, model, X, y, failures)
    if comm.rank == 0:
        Path(out).write_text(json.dumps({"size": comm.size, "failures": failures}))


def nonfinite(comm, failures: list) -> None:
    """A NaN in the last process's shard only: every process skips (or raises) the same step."""
    rng = np.random.default_rng(0)
    start = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
    grads = [rng.normal(size=17) for _ in range(comm.size)]  # each process's gradient, as one flat buffer
    grads[comm.size - 1][16] = np.nan
    for options in ({"on_nonfinite": "skip"}, {"on_nonfinite": "skip", "clip_global_norm": 0.5}):
        for shard in (False, True):
            opt = ParallelOptimizer(anyoptim.Adam(0.1, **options), comm, shard_state=shard, weight=1.0)
            params = anyoptim.flatten(start)
            state = opt.init(params)
            mine = grads[comm.rank]
            g = anyoptim.flatten({"W": mine[:12].reshape(3, 4).copy(), "b": mine[12:].copy()})
            params, state = opt.step(params, g, state)
            if state.skipped != 1 or state.count != 0:
                failures.append(f"skip {options} shard={shard}: rank {comm.rank} skipped={state.skipped}")
            compare(failures, f"skip {options} shard={shard} params", params, start)
    # Clipping by the global norm of the summed gradient, from shards.
    total = np.sum([np.nan_to_num(g) for g in grads], axis=0)
    one = anyoptim.Adam(0.1, clip_global_norm=0.5, weight_decay=0.01)
    params = anyoptim.flatten(start)
    want, _ = one.step(params, {"W": total[:12].reshape(3, 4), "b": total[12:]}, one.init(params))
    for shard in (False, True):
        opt = ParallelOptimizer(
            anyoptim.Adam(0.1, clip_global_norm=0.5, weight_decay=0.01), comm, shard_state=shard, weight=1.0
        )
        params = anyoptim.flatten(start)
        mine = np.nan_to_num(grads[comm.rank])
        g = anyoptim.flatten({"W": mine[:12].reshape(3, 4).copy(), "b": mine[12:].copy()})
        got, _ = opt.step(params, g, opt.init(params))
        compare(failures, f"clip shard={shard}", got, want)


def averaging(comm, failures: list) -> None:
    """average_gradients: the mean over processes, in place, float32 and float64 buffers together."""
    rank = comm.rank + 1.0
    grads = anyoptim.flatten({"W": np.full((2, 3), rank), "b": np.full(3, rank, dtype=np.float32)})
    average_gradients(comm, grads)
    mean = (comm.size + 1) / 2
    if not (np.all(grads["W"] == mean) and np.all(grads["b"] == np.float32(mean)) and grads["b"].dtype == np.float32):
        failures.append(f"average_gradients on rank {comm.rank}: {grads}")


class DeviceBuffer:
    """A stand-in for a CuPy array MPI cannot read: device memory reached only through get() and set()."""

    def __init__(self, values):
        self._values = np.array(values)
        self.shape, self.itemsize, self.dtype = self._values.shape, self._values.itemsize, self._values.dtype
        self.gets = self.sets = 0

    @property
    def __cuda_array_interface__(self):
        return {**self._values.__array_interface__, "strides": None}

    def get(self):
        self.gets += 1
        return self._values.copy()

    def set(self, host):
        self.sets += 1
        self._values[...] = host


def staged(comm, failures: list) -> None:
    """Without CUDA-aware MPI, GPU buffers go through host copies: every collective of the interface."""
    n, rank = comm.size, comm.rank
    summed = DeviceBuffer(np.full(5, rank + 1.0))
    comm.allreduce(summed)
    gathered = DeviceBuffer(np.zeros(7))
    start, stop = anyoptim.distributed.shard_bounds(7, n)[rank]
    gathered._values[start:stop] = rank
    comm.allgather(gathered)
    out = DeviceBuffer(np.zeros(stop - start))
    comm.reduce_scatter(DeviceBuffer(np.arange(7.0)), out)
    rooted = DeviceBuffer(np.full(2, float(rank)))
    comm.broadcast(rooted, root=n - 1)
    owners = [r for r, (a, b) in enumerate(anyoptim.distributed.shard_bounds(7, n)) for _ in range(a, b)]
    checks = [
        np.all(summed._values == n * (n + 1) / 2),
        np.all(gathered._values == owners),
        np.all(out._values == n * np.arange(start, stop)),
        np.all(rooted._values == n - 1),
        (summed.gets, summed.sets, out.sets) == (1, 1, 1),
    ]
    if not all(checks):
        failures.append(f"staged collectives on rank {rank}: {checks}")


def resumed(comm, model, X, y, failures: list) -> None:
    """Rank 0 saves the gathered state after one epoch; N processes, and one, continue from the file."""
    settings = {"batch_size": 16, "seed": 5, "progress": False}
    want = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=3, **settings)
    first = anyoptim.fit(
        model, anyoptim.Adam(0.01), X, y, epochs=1, comm=DataParallel(comm, shard_state=True), **settings
    )
    path = (
        Path(tempfile.gettempdir())
        / f"anyoptim-dp-{comm.comm.bcast(np.random.default_rng().integers(1 << 30))}.safetensors"
    )
    if comm.rank == 0:
        checkpoint.save(path, first.params, first.state)
    comm.comm.Barrier()
    params, state = checkpoint.load(path, like=first.params)
    again = dict(params=params, state=state, epochs=3, initial_epoch=1, **settings)
    for label, team in (("N", DataParallel(comm, shard_state=True)), ("one", None)):
        got = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, comm=team, **again)
        compare(failures, f"resumed by {label} params", got.params, want.params)
        compare(failures, f"resumed by {label} cost", got.history.cost, want.history.cost[1:])
        compare(failures, f"resumed by {label} state", dict(got.state.slots), dict(want.state.slots))
    comm.comm.Barrier()
    if comm.rank == 0:
        path.unlink()


def fail() -> None:
    comm = MPICommunicator()
    X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")

    def breaks(epoch, cost, params, state):
        if comm.rank == 1 and epoch == 1:
            raise RuntimeError("process 1 breaks on purpose")

    anyoptim.fit(
        model, anyoptim.Adam(0.05), X, y, epochs=50, batch_size=8, progress=False, comm=comm, callbacks=[breaks]
    )
    print("finished without the failure", flush=True)


def fail_early() -> None:
    """Rank 1 alone fails fit's own checks, before any collective: the others must not wait in the first one."""
    comm = MPICommunicator()
    X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
    first_epoch = 7 if comm.rank == 1 else 0  # above epochs on rank 1: refused there alone
    anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=5, batch_size=8, progress=False, comm=comm,
                 initial_epoch=first_epoch)  # fmt: skip
    print("finished without the failure", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "agree":
        agree(sys.argv[2])
    elif sys.argv[1] == "fail-early":
        fail_early()
    else:
        fail()
