"""The optimizers: each family's update rules beside the classes that use them, and the registry.

:data:`REGISTRY` is the one table of optimizers by name: the command line, the
tests and the docs read it, so adding an optimizer means its family module, one
row here, one row of the tests' optimizer table and its docs entry.
"""

from .base import Optimizer
from .classes import SGD, Adagrad, Adam, Adamax, AdamW, Lion, Momentum, NAdam, RAdam, RMSprop

__all__ = [
    "REGISTRY",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Momentum",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
]

#: Every optimizer by its lower-case name, in order of increasing complexity.
REGISTRY: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
    "adam": Adam,
    "adamw": AdamW,
    "adamax": Adamax,
    "nadam": NAdam,
    "radam": RAdam,
    "lion": Lion,
}
