"""Transitional: the optimizer classes now live in their family modules (sgd, adaptive, adam, lion).

Kept only because ``anyoptim/lesson/experiments.py`` (another part of the layout
change) still imports ``from ..optimizers.classes``; delete this module when that
line reads ``from ..optimizers import SGD, Adam, Momentum, Optimizer, RMSprop``.
"""

from . import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, Momentum, NAdam, Optimizer, RAdam, RMSprop

__all__ = [
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
