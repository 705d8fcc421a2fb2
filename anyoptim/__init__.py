"""anyoptim: first-order optimizers written once against the Python Array API standard.

The same code runs on NumPy, CuPy, PyTorch, JAX and any other library that
array-api-compat covers.  This module only re-exports the public names; it
imports neither the lesson app (:mod:`anyoptim.lesson`) nor matplotlib nor any
optional array library.
"""

from . import datasets, schedules, transforms
from .checkpoint import load, save
from .flat import flatten
from .nn import MLP, FitResult, History, accuracy, fit, minibatches, predict
from .optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, Momentum, NAdam, Optimizer, RAdam, RMSprop
from .state import OptimizerState
from .transforms import decay_all, decay_weights_only

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "SGD",
    "Adadelta",
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
    "load",
    "minibatches",
    "predict",
    "save",
    "schedules",
    "transforms",
]
