"""anyoptim: first-order optimizers written once against the Python Array API standard.

The same code runs on NumPy, CuPy, PyTorch, JAX and any other library that
array-api-compat covers.
"""

from . import datasets, schedules, transforms
from .base import Optimizer
from .data import minibatches
from .flat import flatten
from .nn import MLP
from .optimizers import SGD, Adagrad, Adam, Adamax, AdamW, Lion, Momentum, NAdam, RAdam, RMSprop
from .state import OptimizerState
from .train import FitResult, History, accuracy, fit, predict
from .transforms import decay_all, decay_weights_only

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "FitResult",
    "History",
    "Lion",
    "Momentum",
    "NAdam",
    "Optimizer",
    "OptimizerState",
    "RAdam",
    "RMSprop",
    "accuracy",
    "datasets",
    "decay_all",
    "decay_weights_only",
    "fit",
    "flatten",
    "minibatches",
    "predict",
    "schedules",
    "transforms",
]
