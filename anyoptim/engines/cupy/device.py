"""The only code of the CuPy engine that calls CuPy: arrays, addresses, kernels and launches.

Everything else in :mod:`anyoptim.engines.cupy` is backend-neutral, so the run
detection, the binding of kernel arguments and the span kernels' argument
blocks are tested on a CPU with a NumPy stand-in of :class:`CupyDevice` (and
the span kernels themselves compiled by the host C++ compiler).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

try:
    import cupy
except ImportError:  # pragma: no cover - the module stays importable (docs, CPU tests of its logic)
    cupy = None

from ..trace import Trace
from .printer import KernelSource, SpanSource

__all__ = ["ARGUMENT_POINTERS", "COMPILE_OPTIONS", "CupyDevice"]

#: NVRTC options of every kernel: no contraction of a*b + c into one FMA, so
#: the fused kernel rounds each operation as the generic engine does.
COMPILE_OPTIONS = ("--fmad=false",)


def _argument_pointers_work() -> bool:
    """Whether this CuPy passes ``CPointer(address)`` to a kernel as that very address (as CuPy 14 does)."""
    try:
        from cupy.cuda.function import CPointer

        return int(CPointer(4096).ptr) == 4096
    except Exception:  # no CuPy, or one whose CPointer holds the address of a Python object
        return False


#: Whether span kernels can take their argument block from a host address (see :meth:`CupyDevice.span_ready`).
ARGUMENT_POINTERS = cupy is not None and _argument_pointers_work()


class CupyDevice:
    """The CuPy calls of one :class:`~anyoptim.engines.cupy.CupyEngine` (its ``device`` attribute).

    Each method is one small operation on CuPy arrays or kernels; a test
    stand-in overrides them with NumPy ones to run the engine's logic on a
    CPU.  The object keeps the compiled span kernels of its engine
    (:attr:`span_kernels`).
    """

    def __init__(self) -> None:
        #: ``(source code, kernel name, device, block) -> (function, blocks of one full wave)``.
        self.span_kernels: dict[tuple[Any, ...], tuple[Any, int]] = {}

    def launch(self, kernel: Any, args: Sequence[Any]) -> None:
        """Launch one ElementwiseKernel (the one place those launches go through; tests count them here)."""
        kernel(*args)

    def span_launcher(self, function: Any, size: int) -> Callable[[tuple, tuple, tuple], None]:
        """What a span run calls as ``launcher(grid, block, args)``: the kernel function itself (tests wrap it)."""
        return function

    @staticmethod
    def is_array(a: Any) -> bool:
        """Whether ``a`` is a CuPy array."""
        return cupy is not None and isinstance(a, cupy.ndarray)

    @staticmethod
    def from_dlpack(a: Any) -> Any:
        """A CuPy view of another library's CUDA array (a torch tensor): the same memory, no copy."""
        return cupy.from_dlpack(a)

    @staticmethod
    def address(a: Any) -> int:
        """The device address of ``a``'s first element."""
        return a.data.ptr

    @staticmethod
    def owner(a: Any) -> Any:
        """The allocation ``a`` lies in: every view of one buffer shares this object, whatever its ``.base``."""
        return a.data.mem

    @staticmethod
    def span(leaves: Sequence[Any]) -> Any:
        """One 1-D array over leaves that lie back to back in one allocation (checked by contiguous_runs)."""
        first = leaves[0]
        if len(leaves) == 1:
            return first.reshape(-1)
        total = sum(leaf.size for leaf in leaves)
        return cupy.ndarray((total,), dtype=first.dtype, memptr=first.data)

    @staticmethod
    def contiguous(g: Any) -> Any:
        """``g``, or a C-contiguous copy of it."""
        return g if g.flags.c_contiguous else cupy.ascontiguousarray(g)

    @staticmethod
    def hp_array(value: Any, dtype: Any) -> Any:
        """A 0-D hyperparameter as a device array of ``dtype`` (``value`` itself when it already is one)."""
        if isinstance(value, cupy.ndarray):
            return value if value.dtype == dtype else value.astype(dtype)
        return cupy.asarray(value, dtype=dtype)

    @staticmethod
    def scalar(value: Any, dtype: Any) -> Any:
        """A host scalar as a NumPy scalar of ``dtype``, the type an ElementwiseKernel argument ``T`` needs."""
        return np.dtype(dtype).type(value)

    @staticmethod
    def elementwise_kernel(trace: Trace, source: KernelSource) -> Any:
        """The ``cupy.ElementwiseKernel`` of ``source`` (compiled at its first launch)."""
        return cupy.ElementwiseKernel(
            source.in_params,
            source.out_params,
            source.body,
            name=source.name,
            loop_prep=source.loop_prep,
            options=COMPILE_OPTIONS,
            no_return=True,
        )

    @staticmethod
    def span_ready(arrays: Sequence[Any]) -> bool:
        """Whether span kernels can run on these arrays (CuPy arrays, and a CuPy that passes argument blocks)."""
        ndarray = getattr(cupy, "ndarray", None)
        return ARGUMENT_POINTERS and ndarray is not None and all(isinstance(a, ndarray) for a in arrays)

    def span_kernel(self, source: SpanSource, name: str, block: int) -> tuple[Any, int]:
        """The compiled kernel ``name`` of ``source`` on the current device, and the blocks of one full wave there.

        A full wave is every block the device holds at once (multiprocessors
        times resident blocks of this kernel, launched with ``block`` threads
        per block): a grid-stride loop needs no more.
        """
        device = cupy.cuda.runtime.getDevice()
        key = (source.code, name, device, block)
        found = self.span_kernels.get(key)
        if found is None:
            module = cupy.RawModule(code=source.code, options=COMPILE_OPTIONS)
            function = module.get_function(name).kernel  # compiles (or loads from CuPy's cache) for this device
            runtime = cupy.cuda.runtime
            processors = runtime.deviceGetAttribute(runtime.cudaDevAttrMultiProcessorCount, device)
            try:
                from cupy_backends.cuda.api import driver

                resident = driver.occupancyMaxActiveBlocksPerMultiprocessor(function.ptr, block, 0)
            except Exception:  # an older CuPy: assume the 2048 threads per multiprocessor of recent GPUs
                resident = 0
            wave = processors * (resident if resident > 0 else max(1, 2048 // block))
            found = self.span_kernels[key] = (function, max(1, wave))
        return found

    @staticmethod
    def argument_block(words: np.ndarray) -> Any:
        """The kernel argument whose bytes are ``words`` (read by the driver at each launch)."""
        from cupy.cuda.function import CPointer

        return CPointer(words.ctypes.data)
