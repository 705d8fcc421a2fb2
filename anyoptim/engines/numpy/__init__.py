"""The NumPy engine: the traced program as one compiled C loop, or NumPy ufuncs on blocks, in place."""

from .engine import DEFAULT_BLOCK_BYTES, NumpyEngine

__all__ = ["DEFAULT_BLOCK_BYTES", "NumpyEngine"]
