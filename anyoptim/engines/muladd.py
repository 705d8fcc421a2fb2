r"""One multiply-add, :math:`a b + c`, rounded once in float32: the one fused operation of the rule contract.

``p - lr * d`` rounds twice in float32 (the product, then the difference);
torch.optim's ``p.add_(d, alpha=-lr)`` is one fused multiply-add on the CPU, which
rounds once.  Over 200 steps of training the two drift apart by a few 1e-6.  A
rule that writes :func:`muladd` gets the single rounding on every engine:

* in **float32** the operands are widened to float64, where the product of two
  float32 numbers is exact, the sum is rounded to float64 and then to float32.
  That is the correctly rounded :math:`\mathrm{fma}(a, b, c)` except when the
  float64 sum lands exactly halfway between two float32 numbers without being
  there (a double rounding: about one result in :math:`2^{29}`, by one unit in
  the last place);
* in **float64** (and where float64 is missing: JAX without ``jax_enable_x64``,
  a device without float64 such as torch's MPS) it is ``a * b + c``, rounded
  twice: no wider type is portable, and the C kernels compile with
  ``-ffp-contract=off``, so no engine of anyoptim's contracts it behind the
  others' backs.  ``jax.jit`` does: XLA fuses ``a * b + c`` into one FMA (in
  float64, and in float32 without x64), as it fuses the rules' other products
  and sums, so a jitted JAX step agrees with the eager one to rounding only.

The generic engine computes exactly these operations with the array's own
namespace (below), and so do the NumPy engine's ufunc plan and the baseline
variant of its C kernels (from the traced node ``"muladd"``): they agree bit for
bit.  Where the hardware has a fused multiply-add the float32 kernels use it
instead, the correctly rounded :math:`\mathrm{fma}(a, b, c)` with no float64
arithmetic (eight floats per instruction): the NumPy engine's C kernels on an
x86-64 CPU with AVX2 and FMA (a variant compiled for both, chosen per call) and
the CuPy engine's ``fmaf``.  Those differ from the portable evaluation in the
double roundings only, by one unit in the last place.  Scalars are first
rounded to the arrays' dtype, as where they meet an array in ``a * b``.

This module imports no array library.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any

__all__ = ["muladd"]


def muladd(xp: Any, a: Any, b: Any, c: Any) -> Any:
    r""":math:`a b + c`, rounded once in float32 (a fused multiply-add); in float64 ``a * b + c``.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of the arrays (the tracer's symbolic namespace records one ``"muladd"`` node).
    a, b, c : array or float
        Operands broadcastable to one shape; at least one is an array.  Python numbers are rounded to the
        arrays' dtype first, as in ``a * b``.

    Returns
    -------
    array
        :math:`a b + c`, of the dtype ``a * b + c`` would have.  For float32 operands: computed in float64
        (the product is exact) and rounded to float32; otherwise ``a * b + c``.

    Examples
    --------
    :math:`(1 + 2^{-12})^2 - 1 = 2^{-11} + 2^{-24}`: rounded once it keeps the :math:`2^{-24}` that rounding the
    product first loses.

    >>> import numpy as np
    >>> from anyoptim.engines.muladd import muladd
    >>> x = np.asarray([1 + 2.0**-12], dtype=np.float32)
    >>> float((muladd(np, x, x, -1.0) - 2.0**-11)[0]) * 2**24, float((x * x - 1.0 - 2.0**-11)[0]) * 2**24
    (1.0, 0.0)
    """
    traced = getattr(xp, "traced_muladd", None)  # the tracer's namespace: one node of the graph
    if traced is not None:
        return traced(a, b, c)
    arrays = [x for x in (a, b, c) if hasattr(x, "dtype")]
    float32 = getattr(xp, "float32", None)
    if not arrays or any(x.dtype != float32 for x in arrays) or not _has_float64(xp, arrays[0]):
        return a * b + c
    return xp.astype(_wide(xp, a) * _wide(xp, b) + _wide(xp, c), float32)


def _wide(xp: Any, x: Any) -> Any:
    """``x`` in float64: an array converted exactly, a Python number first rounded to float32."""
    if hasattr(x, "dtype"):
        return xp.astype(x, xp.float64)
    try:
        return struct.unpack("f", struct.pack("f", float(x)))[0]
    except OverflowError:  # beyond float32's range (a Python that refuses to pack it): float32 rounds it to inf
        return math.copysign(math.inf, float(x))


def _has_float64(xp: Any, x: Any) -> bool:
    """Whether the namespace computes in float64 on ``x``'s device (JAX does not without ``jax_enable_x64``,
    torch's MPS device and array-api-strict's ``"no_float64"`` never do).  Asked once per namespace and device:
    the namespace's inspection builds its table of dtypes each time (torch: about 3 µs, per leaf and step).  So
    JAX's ``jax_enable_x64`` is read at the first multiply-add: set it before, as JAX asks of it anyway."""
    device = getattr(x, "device", None)  # a JAX tracer has none: JAX's dtypes do not depend on the device
    try:
        return _float64_on(xp, device)
    except TypeError:  # a device that cannot be a key (unhashable): asked every time
        return _float64_on.__wrapped__(xp, device)


@functools.lru_cache(maxsize=64)
def _float64_on(xp: Any, device: Any) -> bool:
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return hasattr(xp, "float64")
    try:
        return "float64" in info().dtypes(device=device, kind="real floating")
    except (TypeError, ValueError):  # a namespace that knows no such device: its default device's dtypes
        return "float64" in info().dtypes(kind="real floating")
