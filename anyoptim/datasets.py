"""Data sets: the lesson's moons and its relatives, and loaders for ``.npz`` and ``.csv`` files.

The implementation lives in :mod:`anyoptim.nn.datasets`; this module is its
public name, ``anyoptim.datasets`` (``from anyoptim.datasets import make_moons``).
"""

from .nn.datasets import *  # noqa: F403
from .nn.datasets import __all__  # noqa: F401
