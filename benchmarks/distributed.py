"""Data-parallel training on one machine: samples per second with 1 and 2 processes, one thread each (issue 14).

The workload is the issue's: 50,000 x 100 float32 inputs in 5 classes (scikit-learn's
``make_classification(random_state=0)``; a fixed Gaussian mixture when scikit-learn is missing), the
100-256-256-5 ReLU/softmax MLP, Adam (lr 1e-3), global batch 512.  Each configuration runs under
``mpiexec -n N`` with ``OMP_NUM_THREADS=1`` (and threadpoolctl limiting BLAS to one thread); one untimed
warm-up epoch, then ``--epochs`` timed epochs of :func:`anyoptim.fit`.  Reported per configuration:
samples per second (the best epoch), the scaling against one process, the share of an epoch spent inside
the collectives (all-reduce, or reduce-scatter + all-gather; waiting for the slower process included), and
the optimizer-state bytes each process holds (replicated vs sharded, measured from the state's arrays).

    python benchmarks/distributed.py               # ~1-2 minutes on a quiet 2-core machine
    python benchmarks/distributed.py --epochs 2 --json bench-distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _data(np):
    try:
        from sklearn.datasets import make_classification

        X, y = make_classification(n_samples=50_000, n_features=100, n_informative=50, n_classes=5, random_state=0)
    except ImportError:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 5, size=50_000)
        X = rng.normal(size=(50_000, 100)) + rng.normal(size=(5, 100))[y]
    return X.astype(np.float32), y


def worker(epochs: int, shard: bool, parallel: bool, out: str) -> None:
    """One process of a configuration (run under mpiexec)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    import anyoptim
    from anyoptim.distributed import DataParallel, MPICommunicator

    class TimedComm(MPICommunicator):
        """MPICommunicator that adds up the seconds spent in the collectives of a step."""

        seconds = 0.0

        def _timed(self, method, *args):
            start = time.perf_counter()
            method(*args)
            TimedComm.seconds += time.perf_counter() - start

        def _allreduce(self, *args):
            self._timed(super()._allreduce, *args)

        def _reduce_scatter(self, *args):
            self._timed(super()._reduce_scatter, *args)

        def _allgather(self, *args):
            self._timed(super()._allgather, *args)

    comm = TimedComm()
    X, y = _data(np)
    model = anyoptim.MLP([100, 256, 256, 5], hidden_activation="relu", output="softmax")
    team = DataParallel(comm, shard_state=shard) if parallel else None
    times, shares = [], []

    def timed(epoch, cost, params, state):
        times.append(time.perf_counter())
        shares.append(TimedComm.seconds)

    settings = {"batch_size": 512, "seed": 0, "progress": False}
    anyoptim.fit(model, anyoptim.Adam(1e-3), X, y, epochs=1, comm=team, **settings)  # warm-up: kernels, caches
    TimedComm.seconds = 0.0
    start = time.perf_counter()
    times.append(start)
    shares.append(0.0)
    opt = anyoptim.Adam(1e-3)
    result = anyoptim.fit(model, opt, X, y, epochs=epochs, comm=team, callbacks=[timed], **settings)
    spans = np.diff(times)
    best = int(np.argmin(spans))
    collective = shares[best + 1] - shares[best]
    # The state this process holds while training: its shard (sharded) or the whole state (replicated).
    parallel_opt = team.data_parallel(opt).parallel if team is not None else None
    if parallel_opt is not None and shard:
        params = anyoptim.flatten(result.params)
        local = parallel_opt.init(params).local
        held = 0 if local is None else sum(a.nbytes for slot in local.slots.values() for a in slot)
    else:
        held = sum(a.nbytes for tree in result.state.slots.values() for a in tree.values())
    if comm.rank == 0:
        Path(out).write_text(
            json.dumps(
                {
                    "processes": comm.size,
                    "sharded": shard,
                    "samples_per_s": X.shape[0] / float(spans[best]),
                    "epoch_s": float(spans[best]),
                    "collective_share": collective / float(spans[best]),
                    "state_bytes_per_process": held,
                    "final_cost": result.history.cost[-1],
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration (default 3)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("SHARD", "PARALLEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        shard, parallel, out = args.worker
        worker(args.epochs, shard == "1", parallel == "1", out)
        return
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    mpiexec = shutil.which("mpiexec", path=env["PATH"])
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install anyoptim[distributed]")
    configurations = [(1, False, False, "1 process, no comm"), (2, False, True, "2 processes, replicated"),
                      (2, True, True, "2 processes, sharded (ZeRO-1)")]  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for n, shard, parallel, label in configurations:
            out = str(Path(folder) / f"{n}-{int(shard)}.json")
            command = [mpiexec, "-n", str(n), sys.executable, __file__, "--epochs", str(args.epochs)]
            subprocess.run([*command, "--worker", str(int(shard)), str(int(parallel)), out], env=env, check=True)
            results.append({"label": label, **json.loads(Path(out).read_text())})
    base = results[0]["samples_per_s"]
    print(f"{'configuration':32} {'samples/s':>10} {'scaling':>8} {'collectives':>12} {'state/process':>14}")
    for row in results:
        row["scaling"] = row["samples_per_s"] / base
        print(
            f"{row['label']:32} {row['samples_per_s']:10.0f} {row['scaling']:7.2f}x "
            f"{100 * row['collective_share']:11.1f}% {row['state_bytes_per_process'] / 2**20:10.2f} MiB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
