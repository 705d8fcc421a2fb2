"""What the two printers of a trace share: C's binary operators, and literals of a kernel's float type.

The C printer of the NumPy engine (:mod:`anyoptim.engines.numpy.c_printer`) and
the CUDA printer of the CuPy engine (:mod:`anyoptim.engines.cupy.printer`) both
import from here, so neither imports the other.

This module is pure Python: it imports neither NumPy nor CuPy.
"""

from __future__ import annotations

import math
import struct

__all__ = ["C_OPERATORS", "FUSED_DTYPES", "c_literal"]

#: The dtypes the CUDA printer supports, with the C type of ``T``.
FUSED_DTYPES = {"float32": "float", "float64": "double"}

#: The C operator of each binary operation of a trace (the same in CUDA and in C).
C_OPERATORS = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "eq": "==",
    "ne": "!=",
}


def c_literal(value: float, dtype: str) -> str:
    """A C literal of ``T`` for a Python number: ``0.5f`` in float32, ``0.5`` in float64.

    The value is first rounded to ``T`` (as NumPy rounds a Python number that
    meets a float32 array), so the literal is exact and the compiler never sees
    a double constant in a float kernel.
    """
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a rule constant must be finite to become a kernel literal, got {value!r}")
    if dtype == "float32":
        rounded = struct.unpack("f", struct.pack("f", number))[0]
        text = repr(rounded)
        return f"({text}f)" if text.startswith("-") else f"{text}f"
    if dtype == "float64":
        text = repr(number)
        return f"({text})" if text.startswith("-") else text
    raise ValueError(f"no CUDA kernel for dtype {dtype}; supported: {', '.join(FUSED_DTYPES)}")
