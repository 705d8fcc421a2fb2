"""Data-parallel training over MPI and NCCL, with optionally sharded optimizer state (ZeRO stage 1).

Every process holds the model, takes its share of each mini-batch, the
gradients are summed across processes (one collective per dtype buffer of the
flat layout, :func:`anyoptim.flatten`) and every process applies the same
update.  Nothing here imports mpi4py or CuPy until a communicator is made.

Examples
--------
Launched as ``mpiexec -n 4 python train.py``:

>>> import anyoptim
>>> from anyoptim.distributed import DataParallel, MPICommunicator
>>> X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
>>> model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
>>> result = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=2, batch_size=20, progress=False,
...                       comm=DataParallel(MPICommunicator(), shard_state=True))
>>> len(result.history)
2
"""

from .average import average_gradients, sum_buffers
from .bounds import shard_bounds
from .comm import OPS, Communicator, MPICommunicator, launched_by_mpi
from .nccl import NCCLCommunicator
from .parallel import DataParallel, FitTeam, ParallelOptimizer
from .sharded import ShardedState, ShardedStep
from .threads import OversubscriptionWarning

__all__ = [
    "OPS",
    "Communicator",
    "DataParallel",
    "FitTeam",
    "MPICommunicator",
    "NCCLCommunicator",
    "OversubscriptionWarning",
    "ParallelOptimizer",
    "ShardedState",
    "ShardedStep",
    "average_gradients",
    "launched_by_mpi",
    "shard_bounds",
    "sum_buffers",
]
