"""anyoptim.distributed: communicators, flat layouts, replicated and sharded data-parallel training.

The multi-process tests launch ``mpiexec -n 2`` and ``-n 3`` on
tests/mpi/data_parallel_script.py (every optimizer of the table, replicated and
sharded, against one process; non-finite skips and clipping decided together;
checkpoints; a failing process ending the job).  The NCCL path runs here over a
fake ``nccl`` module whose communicators are threads of this process.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyoptim
from anyoptim.distributed import (
    DataParallel,
    MPICommunicator,
    NCCLCommunicator,
    ParallelOptimizer,
    average_gradients,
    launched_by_mpi,
    shard_bounds,
)
from anyoptim.distributed.layout import FlatLayout

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "mpi" / "data_parallel_script.py"
BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _needs_mpi():
    pytest.importorskip("mpi4py")
    if MPIEXEC is None:
        pytest.skip("mpiexec not found (pip install mpich)")


def _world() -> MPICommunicator:
    """MPI.COMM_WORLD of this one process (skips the test without mpi4py)."""
    pytest.importorskip("mpi4py")
    return MPICommunicator()


def _mpiexec(n: int, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [MPIEXEC, "-n", str(n), sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


# --------------------------------------------------------------------------- many processes, under mpiexec


@pytest.mark.parametrize("n", [2, 3])
def test_n_processes_equal_one_for_every_optimizer(n, tmp_path):
    _needs_mpi()
    out = tmp_path / "result.json"
    run = _mpiexec(n, "agree", str(out), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["size"] == n
    assert result["failures"] == []


def test_one_process_raising_ends_every_process():
    _needs_mpi()
    run = _mpiexec(2, "fail", timeout=300)  # a hang fails here with TimeoutExpired
    assert run.returncode != 0
    assert "process 1 breaks on purpose" in run.stderr
    assert "process 1 of 2 failed" in run.stderr
    assert "finished without the failure" not in run.stdout


def test_one_process_failing_a_check_before_training_ends_every_process():
    _needs_mpi()
    run = _mpiexec(2, "fail-early", timeout=300)  # the other process waited in its first collective forever
    assert run.returncode != 0
    assert "initial_epoch must be an int from 0 to epochs (5), got 7" in run.stderr
    assert "process 1 of 2 failed" in run.stderr
    assert "finished without the failure" not in run.stdout


# --------------------------------------------------------------------------- one process


@given(st.integers(0, 1000), st.integers(1, 17))
def test_shard_bounds_tile_the_buffer_evenly(length, size):
    bounds = shard_bounds(length, size)
    assert len(bounds) == size
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1


@given(st.lists(st.tuples(st.integers(0, 9), st.booleans()), min_size=1, max_size=6), st.integers(1, 7))
def test_the_shards_pieces_cover_every_leaf_once(leaves, size):
    """Over all ranks, the pieces of a flat tree tile every leaf of every dtype, each element once."""
    tree = {f"l{i}": np.zeros(n, dtype=np.float32 if single else np.float64) for i, (n, single) in enumerate(leaves)}
    layout = FlatLayout(anyoptim.flatten(tree))
    covered = [np.zeros(buffer.shape[0], dtype=int) for buffer in layout.buffers]
    for rank in range(size):
        low_high = [shards[rank] for shards in layout.shards(size)]
        for index, start, stop, segment in layout.pieces(rank, size):
            assert segment.start <= start < stop <= segment.stop
            assert low_high[index][0] <= start and stop <= low_high[index][1]
            covered[index][start:stop] += 1
    assert all(np.all(c == 1) for c in covered)


def test_launched_by_mpi_reads_the_launchers_variables():
    assert launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "3"})
    assert launched_by_mpi({"PMI_SIZE": "2", "PMI_RANK": "1"})
    assert not launched_by_mpi({"PMI_SIZE": "1"})
    assert not launched_by_mpi({"PMI_SIZE": "x"})
    assert not launched_by_mpi({})


def test_flat_layout_finds_the_buffers_and_refuses_trees_that_are_not_flat():
    params = anyoptim.flatten({"W": np.ones((2, 3)), "b": np.zeros(3, dtype=np.float32), "c": np.ones(2)})
    layout = FlatLayout(params)
    assert [b.dtype for b in layout.buffers] == [np.float64, np.float32]
    assert [(s.leaf, s.start, s.stop) for s in layout.segments[0]] == [(0, 0, 6), (2, 6, 8)]
    with pytest.raises(ValueError, match="not flat"):
        FlatLayout({"W": np.ones((2, 3)), "b": np.zeros(3)})
    with pytest.raises(TypeError):
        FlatLayout({"w": [1.0, 2.0]})
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="NumPy or CuPy"):
        FlatLayout({"w": torch.zeros(2, dtype=torch.float64)})


def test_data_parallel_refuses_trees_that_are_not_flat_before_any_change():
    opt = ParallelOptimizer(anyoptim.SGD(0.1), _world())
    params = {"W": np.ones((2, 2)), "b": np.ones(2)}
    with pytest.raises(ValueError, match=r"anyoptim\.flatten"):
        opt.init(params)
    flat = anyoptim.flatten(params)
    state = opt.init(flat)
    grads = {"W": np.ones((2, 2)), "b": np.ones(2)}
    with pytest.raises(ValueError, match="not flat"):
        opt.step(flat, grads, state)
    with pytest.raises(ValueError, match="not flat"):
        average_gradients(_world(), grads)
    assert np.all(flat["W"] == 1) and np.all(grads["W"] == 1)


def test_sharding_needs_an_anyoptim_optimizer_and_says_so():
    class OwnOptimizer:  # init and step: enough for the replicated sum, not for splitting settings into shards
        def init(self, params):
            return None

        def step(self, params, grads, state):
            return params, state

    assert ParallelOptimizer(OwnOptimizer(), _world()).init(anyoptim.flatten({"w": np.ones(2)})) is None
    with pytest.raises(TypeError, match=r"shard_state=True needs an anyoptim.Optimizer, got OwnOptimizer"):
        ParallelOptimizer(OwnOptimizer(), _world(), shard_state=True)


def test_communicator_checks_its_arguments():
    comm = _world()
    with pytest.raises(ValueError, match="op must be"):
        comm.allreduce(np.zeros(2), op="prod")
    with pytest.raises(ValueError, match="1-D"):
        comm.allreduce(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="contiguous"):
        comm.allreduce(np.zeros(4)[::2])
    with pytest.raises(ValueError, match="root"):
        comm.broadcast(np.zeros(2), root=1)
    with pytest.raises(ValueError, match="shard"):
        comm.reduce_scatter(np.zeros(4), np.zeros(3))
    with pytest.raises(TypeError, match="intracommunicator"):
        MPICommunicator("COMM_WORLD")
    with pytest.raises(TypeError, match="data_parallel"):
        X, y = anyoptim.datasets.make_moons(n_samples=8, seed=0)
        anyoptim.fit(anyoptim.MLP([2, 1]), anyoptim.SGD(0.1), X, y, epochs=1, comm="world", progress=False)


def test_fit_with_one_process_equals_fit_without():
    X, y = anyoptim.datasets.make_moons(n_samples=30, noise=0.1, seed=0)
    model = anyoptim.MLP([2, 6, 1], hidden_activation="tanh")
    want = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=3, batch_size=8, progress=False)
    for comm in (_world(), DataParallel(_world(), shard_state=True)):
        got = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=3, batch_size=8, progress=False, comm=comm)
        assert got.history.cost == want.history.cost
        for key in want.params:
            np.testing.assert_array_equal(got.params[key], want.params[key])
            np.testing.assert_array_equal(got.state.slots["v"][key], want.state.slots["v"][key])


def test_sharded_fit_sees_settings_a_callback_assigns():
    """The shard's copy of the optimizer is made again when a setting changes: the rate it runs is the one recorded."""
    X, y = anyoptim.datasets.make_moons(n_samples=30, noise=0.1, seed=0)
    model = anyoptim.MLP([2, 6, 1], hidden_activation="tanh")

    def run(comm):
        optimizer = anyoptim.AdamW(0.05, weight_decay=0.1)

        def lower(epoch, cost, params, state):
            optimizer.learning_rate = 0.05 if epoch < 1 else 0.0
            optimizer.weight_decay_mask = {"W1": True, "b1": False, "W2": False, "b2": False}

        return anyoptim.fit(
            model, optimizer, X, y, epochs=4, batch_size=8, progress=False, callbacks=[lower], comm=comm
        )

    want = run(None)
    assert want.history.learning_rate == [0.05, 0.05, 0.0, 0.0]
    assert want.history.cost[2] == pytest.approx(want.history.cost[3], rel=1e-12)  # a rate of 0 stops
    for comm in (_world(), DataParallel(_world(), shard_state=True)):
        got = run(comm)
        assert got.history.cost == want.history.cost
        assert got.history.learning_rate == want.history.learning_rate
        for key in want.params:
            np.testing.assert_array_equal(got.params[key], want.params[key])


def test_import_anyoptim_distributed_imports_no_mpi():
    code = "import anyoptim.distributed, sys; print('mpi4py' in sys.modules, 'cupy' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert run.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- NCCL, over a fake nccl module


def _host_array(pointer: int, count: int, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    return np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(pointer), dtype=dtype)


class _FakeWorld:
    """The processes of a fake NCCL communicator: threads that meet at a barrier for every collective."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=30)
        self.posts: list = [None] * size
        self.calls: list = []

    def exchange(self, rank: int, data: np.ndarray) -> list[np.ndarray]:
        self.posts[rank] = data.copy()
        self.barrier.wait()
        posts = list(self.posts)
        self.barrier.wait()
        return posts


_REDUCE = {"sum": lambda a: np.sum(a, axis=0), "max": lambda a: np.max(a, axis=0), "min": lambda a: np.min(a, axis=0)}


class _FakeNcclComm:
    """cupy.cuda.nccl.NcclCommunicator's collectives on host pointers (each rank a thread)."""

    def __init__(self, world: _FakeWorld, rank: int):
        self.world, self.rank = world, rank

    def allReduce(self, send, recv, count, dtype, op, stream):
        self.world.calls.append("allReduce")
        posts = self.world.exchange(self.rank, _host_array(send, count, dtype))
        _host_array(recv, count, dtype)[...] = _REDUCE[op](np.stack(posts))

    def reduceScatter(self, send, recv, count, dtype, op, stream):
        self.world.calls.append("reduceScatter")
        posts = self.world.exchange(self.rank, _host_array(send, count * self.world.size, dtype))
        total = _REDUCE[op](np.stack(posts))
        _host_array(recv, count, dtype)[...] = total[self.rank * count : (self.rank + 1) * count]

    def allGather(self, send, recv, count, dtype, stream):
        self.world.calls.append("allGather")
        posts = self.world.exchange(self.rank, _host_array(send, count, dtype))
        _host_array(recv, count * self.world.size, dtype)[...] = np.concatenate(posts)

    def broadcast(self, send, recv, count, dtype, root, stream):
        posts = self.world.exchange(self.rank, _host_array(send, count, dtype))
        _host_array(recv, count, dtype)[...] = posts[root]

    def abort(self):
        pass


def _fake_nccl(world: _FakeWorld) -> SimpleNamespace:
    return SimpleNamespace(
        NCCL_FLOAT16=np.float16,
        NCCL_FLOAT32=np.float32,
        NCCL_FLOAT64=np.float64,
        NCCL_SUM="sum",
        NCCL_MAX="max",
        NCCL_MIN="min",
        get_unique_id=lambda: tuple(range(-64, 64)),
        NcclCommunicator=lambda size, unique_id, rank: _FakeNcclComm(world, rank),
    )


def _in_threads(size: int, work) -> list:
    """Run ``work(comm)`` on ``size`` fake NCCL communicators, one thread each; their results in rank order."""
    world = _FakeWorld(size)
    nccl = _fake_nccl(world)
    results: list = [None] * size
    errors: list = []

    def run(rank: int) -> None:
        try:
            comm = NCCLCommunicator(nccl.NcclCommunicator(size, None, rank), rank, size, nccl=nccl, stream=lambda: 0)
            results[rank] = work(comm)
        except BaseException as error:
            errors.append(error)
            world.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("length", [1, 6, 7])
def test_nccl_collectives_on_even_and_uneven_shards(size, length):
    def work(comm):
        rank = comm.rank
        summed = np.arange(length, dtype=np.float32) * (rank + 1)
        comm.allreduce(summed)
        largest = np.full(3, float(rank))
        comm.allreduce(largest, op="max")
        start, stop = shard_bounds(length, size)[rank]
        scattered = np.empty(stop - start, dtype=np.float64)
        comm.reduce_scatter(np.arange(length, dtype=np.float64) + rank, scattered)
        gathered = np.zeros(length)
        gathered[start:stop] = 10.0 * rank + np.arange(start, stop)
        comm.allgather(gathered)
        rooted = np.full(2, float(rank))
        comm.broadcast(rooted, root=size - 1)
        return summed, largest, scattered, gathered, rooted, (start, stop)

    ranks_sum = size * (size + 1) / 2
    for summed, largest, scattered, gathered, rooted, (start, stop) in _in_threads(size, work):
        np.testing.assert_array_equal(summed, np.arange(length) * ranks_sum)
        np.testing.assert_array_equal(largest, size - 1)
        np.testing.assert_array_equal(scattered, size * np.arange(start, stop) + size * (size - 1) / 2)
        owners = [r for r, (a, b) in enumerate(shard_bounds(length, size)) for _ in range(a, b)]
        np.testing.assert_array_equal(gathered, 10.0 * np.array(owners) + np.arange(length))
        np.testing.assert_array_equal(rooted, size - 1)


@pytest.mark.parametrize("size", [2, 3])
def test_fit_sharded_over_nccl_equals_one_process(size):
    X, y = anyoptim.datasets.make_moons(n_samples=35, noise=0.2, seed=2)
    model = anyoptim.MLP([2, 5, 1], hidden_activation="tanh")
    settings = {"epochs": 2, "batch_size": 8, "progress": False}
    want = anyoptim.fit(model, anyoptim.Adam(0.05, clip_global_norm=1.0), X, y, **settings)

    def work(comm):
        team = DataParallel(comm, shard_state=True)
        return anyoptim.fit(model, anyoptim.Adam(0.05, clip_global_norm=1.0), X, y, comm=team, **settings)

    for got in _in_threads(size, work):
        np.testing.assert_allclose(got.history.cost, want.history.cost, rtol=1e-12)
        for key in want.params:
            np.testing.assert_allclose(got.params[key], want.params[key], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(got.state.slots["m"][key], want.state.slots["m"][key], rtol=1e-12, atol=1e-15)


def test_sharded_fit_with_callbacks_on_rank_0_only():
    """Gathering the sharded state for callbacks is a collective: a logger on rank 0 alone must not stall the rest."""
    X, y = anyoptim.datasets.make_moons(n_samples=35, noise=0.2, seed=2)
    model = anyoptim.MLP([2, 5, 1], hidden_activation="tanh")
    settings = {"epochs": 3, "batch_size": 8, "progress": False}
    seen_alone = []
    want = anyoptim.fit(
        model, anyoptim.Adam(0.05), X, y, callbacks=[lambda e, c, p, s: seen_alone.append(s.slots["m"]["W1"].copy())],
        **settings,
    )  # fmt: skip
    seen = []

    def work(comm):
        callbacks = [lambda e, c, p, s: seen.append(s.slots["m"]["W1"].copy())] if comm.rank == 0 else []
        return anyoptim.fit(
            model, anyoptim.Adam(0.05), X, y, comm=DataParallel(comm, shard_state=True), callbacks=callbacks, **settings
        )

    for got in _in_threads(2, work):
        np.testing.assert_allclose(got.history.cost, want.history.cost, rtol=1e-12)
    assert len(seen) == 3
    for got, expected in zip(seen, seen_alone, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_processes_given_different_runs_all_refuse_before_training():
    """A process with its own rows (or epochs, batch size, first epoch) would call the collectives a different number
    of times: every process raises the same clear error before the first step, none waits forever."""
    X, y = anyoptim.datasets.make_moons(n_samples=48, noise=0.2, seed=2)
    model = anyoptim.MLP([2, 5, 1], hidden_activation="tanh")
    errors = []

    def work(comm):
        rows = 40 + 8 * comm.rank  # rank 1 has more rows than rank 0
        try:
            anyoptim.fit(model, anyoptim.Adam(0.05), X[:rows], y[:rows], epochs=2, batch_size=8, progress=False,
                         comm=DataParallel(comm, shard_state=True))  # fmt: skip
        except ValueError as error:
            errors.append(str(error))

    _in_threads(2, work)
    assert len(errors) == 2 and errors[0] == errors[1]
    assert "disagree on rows (40 to 48)" in errors[0] and "whole data set" in errors[0]

    first = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=1, batch_size=8, progress=False)
    errors.clear()

    def resume_on_rank_0_only(comm):
        state = first.state if comm.rank == 0 else None  # the others would start a fresh state: another step count
        try:
            anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=2, batch_size=8, progress=False, params=first.params,
                         state=state, comm=comm)  # fmt: skip
        except ValueError as error:
            errors.append(str(error))

    _in_threads(2, resume_on_rank_0_only)
    assert len(errors) == 2 and "disagree on steps taken (0 to 6)" in errors[0]


def test_nccl_from_address_shares_rank_0s_id():
    world = _FakeWorld(2)
    nccl = _fake_nccl(world)
    seen = []
    nccl.NcclCommunicator = lambda size, unique_id, rank: seen.append(unique_id) or _FakeNcclComm(world, rank)
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threads = [
        threading.Thread(
            target=NCCLCommunicator.from_address,
            args=(rank, 2, f"127.0.0.1:{port}"),
            kwargs={"nccl": nccl, "timeout": 20},
        )
        for rank in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == [tuple(range(-64, 64))] * 2
    with pytest.raises(ValueError, match="host:port"):
        NCCLCommunicator.from_address(0, 2, "nowhere", nccl=nccl)


# --------------------------------------------------------------------------- the command line under mpiexec


def _costs(table: str) -> list[str]:
    """The final-cost column of a printed table (the wall times differ from run to run)."""
    rows = [line.split() for line in table.splitlines() if line.rstrip().endswith(" s") and " % " in line]
    return [row[-5] for row in rows]


@pytest.mark.parametrize("command", [["compare", "--epochs", "30"], ["train", "--epochs", "15", "--optimizer", "adam"]])
def test_command_line_under_mpiexec_prints_once_the_one_process_results(command, tmp_path):
    _needs_mpi()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "anyoptim", *command, "--out", str(tmp_path)]
    alone = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=True)
    run = subprocess.run([MPIEXEC, "-n", "2", *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("final cost") == 1
    assert _costs(run.stdout) == _costs(alone.stdout) != []
    assert run.stderr.count("data-parallel over 2 MPI processes") == 1  # the user sees the run was parallel
    assert "data-parallel" not in alone.stderr


def test_train_save_under_mpiexec_writes_the_checkpoint_one_process_resumes(tmp_path):
    _needs_mpi()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    path = str(tmp_path / "run.safetensors")
    train = [sys.executable, "-m", "anyoptim", "train", "--no-plots", "--optimizer", "rmsprop"]

    def run(*args, n=None):
        command = [*train, *args] if n is None else [MPIEXEC, "-n", str(n), *train, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run("--epochs", "6", "--save", path, n=2)
    resumed = run("--epochs", "12", "--save", path, "--resume")  # one process continues the two's file
    assert _costs(resumed) == _costs(run("--epochs", "12")) != []


# --------------------------------------------------------------------------- oversubscription


@pytest.mark.parametrize(
    ("environ", "cores", "warns"),
    [
        ({"MPI_LOCALNRANKS": "2"}, 2, True),  # MPICH, no thread variable: 2 x 2 threads on 2 cores
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4", "OMP_NUM_THREADS": "2"}, 4, True),
        ({"MPI_LOCALNRANKS": "2", "OMP_NUM_THREADS": "1"}, 2, False),
        ({"MPI_LOCALNRANKS": "2", "OPENBLAS_NUM_THREADS": "4"}, 8, False),
        ({"MPI_LOCALNRANKS": "1"}, 2, False),  # one process on this machine
        ({}, 2, False),  # not launched by a launcher that says
    ],
)
def test_oversubscription_is_explained_with_the_fix(environ, cores, warns):
    from anyoptim.distributed.threads import oversubscription

    message = oversubscription(environ, cores)
    assert (message is not None) == warns
    if warns:
        assert "OMP_NUM_THREADS=" in message and f"on {cores} cores" in message


def test_two_processes_without_a_thread_limit_warn_once_each():
    _needs_mpi()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    code = (
        "import os, warnings; warnings.simplefilter('always'); "
        "from anyoptim.distributed import MPICommunicator; MPICommunicator()"
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    run = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("OversubscriptionWarning") == (2 if 2 * cores > cores else 0)
    quiet = subprocess.run(
        [MPIEXEC, "-n", "2", "env", "OMP_NUM_THREADS=1", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert quiet.returncode == 0 and "OversubscriptionWarning" not in quiet.stderr
