"""anyoptim: first-order optimizers written once against the Python Array API standard.

The same code runs on NumPy, CuPy, PyTorch, JAX and any other library that
array-api-compat covers.
"""

from . import schedules
from .flat import flatten
from .optimizers import (
    SGD,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    Momentum,
    NAdam,
    Optimizer,
    OptimizerState,
    RAdam,
    RMSprop,
    decay_all,
    decay_weights_only,
)

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Momentum",
    "NAdam",
    "Optimizer",
    "OptimizerState",
    "RAdam",
    "RMSprop",
    "decay_all",
    "decay_weights_only",
    "flatten",
    "schedules",
]
