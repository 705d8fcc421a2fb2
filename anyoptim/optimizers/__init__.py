"""The optimizers: each family's update rules beside the classes that use them."""

from .base import Optimizer
from .classes import SGD, Adagrad, Adam, Adamax, AdamW, Lion, Momentum, NAdam, RAdam, RMSprop

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Adamax", "Lion", "Momentum", "NAdam", "Optimizer", "RAdam", "RMSprop"]
