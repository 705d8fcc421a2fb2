"""The model layer: a small MLP, its training loop, mini-batches and data sets."""

from . import datasets
from .data import minibatches
from .mlp import ACTIVATIONS, MLP, OUTPUTS
from .train import FitResult, History, accuracy, fit, predict

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "OUTPUTS",
    "FitResult",
    "History",
    "accuracy",
    "datasets",
    "fit",
    "minibatches",
    "predict",
]
