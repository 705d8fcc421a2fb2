"""The optimizers: each family's update rules beside the classes that use them, and the registry.

=====================  ===================================================
module                 holds
=====================  ===================================================
:mod:`.base`           :class:`Optimizer`: settings, init, step, the prepared step
:mod:`.contract`       the rule contract and :func:`~.contract.declare`
:mod:`.sgd`            SGD, Momentum
:mod:`.adaptive`       RMSprop, Adagrad, Adadelta
:mod:`.adam`           the Adam family (Adam, AdamW, NAdam, RAdam)
:mod:`.adamax`         Adamax
:mod:`.lion`           Lion
:mod:`.precision`      master weights: the state of ``master_weights=True``
:mod:`.settings`       a snapshot of the settings, for what reads them once
=====================  ===================================================

:data:`REGISTRY` is the one table of optimizers by name: the command line, the
tests and the docs read it, so adding an optimizer means its family module (the
rule, declared, and the class), one row here, one row of the tests' optimizer
table and its docs entry.  It is also the index of the rules:
``REGISTRY["adam"].rule``.
"""

from .adam import Adam, AdamW, NAdam, RAdam
from .adamax import Adamax
from .adaptive import Adadelta, Adagrad, RMSprop
from .base import Optimizer
from .lion import Lion
from .sgd import SGD, Momentum

__all__ = [
    "REGISTRY",
    "SGD",
    "Adadelta",
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
    "adadelta": Adadelta,
    "adam": Adam,
    "adamw": AdamW,
    "adamax": Adamax,
    "nadam": NAdam,
    "radam": RAdam,
    "lion": Lion,
}
