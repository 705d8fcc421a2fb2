"""The NumPy engine: the traced program as one compiled C loop, or NumPy ufuncs on blocks, in place."""

from .engine import DEFAULT_BLOCK_BYTES, NumpyEngine, NumpyStep
from .native import KernelBuildError, KernelBuildWarning
from .plan import Plan

__all__ = ["DEFAULT_BLOCK_BYTES", "KernelBuildError", "KernelBuildWarning", "NumpyEngine", "NumpyStep", "Plan"]
