"""
Data-parallel training with MPI, sharded optimizer state
========================================================

The same script trains alone or on N processes: started with
``mpiexec -n 4 env OMP_NUM_THREADS=1 python plot_data_parallel.py`` (one BLAS
thread per process, or they fight over the cores), each process takes a quarter of
every mini-batch, the gradients are summed with one all-reduce per dtype buffer,
and with ``shard_state=True`` each process keeps a quarter of Adam's moments
(ZeRO stage 1).  The docs build runs it with one process, where
``MPICommunicator()`` is a world of one: the run equals the run without
``comm``, which the first figure shows (with N processes the costs agree to
about 1e-15: only the order of summation differs).  The second shows, from the flat
layout's shards, the optimizer-state bytes each process would hold for 1 to 8
processes.
"""

import matplotlib.pyplot as plt
import numpy as np

import anyoptim
from anyoptim.distributed import DataParallel, MPICommunicator, shard_bounds

comm = MPICommunicator()  # MPI.COMM_WORLD: under mpiexec, every process of the launch
X, y = anyoptim.datasets.make_moons(n_samples=2000, noise=0.2, seed=0)
model = anyoptim.MLP([2, 32, 32, 1], hidden_activation="tanh")
settings = {"epochs": 30, "batch_size": 128, "seed": 0, "progress": False}

alone = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, **settings)
team = DataParallel(comm, shard_state=True)
parallel = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, comm=team, **settings)
if comm.rank == 0:
    gap = max(abs(a - b) / b for a, b in zip(parallel.history.cost, alone.history.cost, strict=True))
    print(f"{comm.size} process(es); largest relative difference from one process's costs: {gap:.1e}")

# %%
# Only rank 0 draws (every process would otherwise write the same figure).
parameters = sum(int(np.prod(value.shape)) for value in parallel.params.values())
processes = np.arange(1, 9)
state_bytes = 2 * 8 * parameters  # Adam's two moments, float64
sharded = [max(stop - start for start, stop in shard_bounds(parameters, n)) * 2 * 8 for n in processes]
if comm.rank == 0:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(alone.history.cost, lw=4, alpha=0.4, label="one process, no comm")
    left.plot(parallel.history.cost, "k--", label=f"DataParallel, {comm.size} process(es), sharded")
    left.set(xlabel="epoch", ylabel="mean cross-entropy", title="Same global batches, same run")
    left.legend()
    right.bar(processes - 0.2, [state_bytes / 1024] * len(processes), width=0.4, label="replicated")
    right.bar(processes + 0.2, np.array(sharded) / 1024, width=0.4, label="sharded (ZeRO-1)")
    right.set(xlabel="processes N", ylabel="Adam state per process (KiB)", title=f"{parameters:,} parameters")
    right.legend()
    fig.tight_layout()
    plt.show()
