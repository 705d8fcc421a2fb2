"""The launches of a prepared CuPy step: one per run of leaves, its arguments bound once.

:class:`SpanRun` launches a generated span kernel with an argument block built
when the step is prepared (:func:`span_layout` decides whether it moves 16 bytes
per load, :func:`span_grid` how many blocks it takes); :class:`ElementwiseRun`
launches the ``cupy.ElementwiseKernel`` of the same body, for strided gradients
and ``ANYOPTIM_CUPY_LAUNCH=elementwise``.  Both reach CuPy only through their
engine's :class:`~anyoptim.engines.cupy.device.CupyDevice`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .scalar_table import active_scalar_plan

if TYPE_CHECKING:
    from .engine import CompiledProgram, CupyEngine

__all__ = ["INDEX32_LIMIT", "ElementwiseRun", "SpanRun", "span_grid", "span_layout"]

#: Spans shorter than this use 32-bit indices: ``i + stride`` then stays below 2**32.
INDEX32_LIMIT = 2**31

_VECTOR_BYTES = 16


def span_layout(addresses: Sequence[int], size: int, itemsize: int) -> tuple[bool, int]:
    """Whether a span can move 16 bytes per load, and how many elements come before its first 16-byte boundary.

    Vectorised loads need every array of the span (gradient, parameter,
    slots) at the same offset from a 16-byte boundary, a whole number of
    elements: then the first ``head`` elements are updated one by one and
    every later vector is aligned in every array.

    Parameters
    ----------
    addresses
        The device address of the span's first element in each array.
    size
        Elements in the span.
    itemsize
        Bytes per element (4 or 8).

    Returns
    -------
    (vectorised, head)
        ``head`` is 0 when not vectorised, and never more than ``size``.
    """
    offsets = {int(address) % _VECTOR_BYTES for address in addresses}
    if len(offsets) != 1:
        return False, 0
    (offset,) = offsets
    if offset % itemsize:
        return False, 0
    return True, min(size, (_VECTOR_BYTES - offset) % _VECTOR_BYTES // itemsize)


def span_grid(items: int, block: int, wave: int) -> int:
    """Blocks of a grid-stride launch over ``items`` work items: enough to cover them, at most one full wave."""
    return max(1, min(-(-items // block), wave))


class ElementwiseRun:
    """One ElementwiseKernel launch of a prepared step: a span of leaves, its kernel, where its scalars come from."""

    __slots__ = (
        "copy_grad",
        "engine",
        "first",
        "first_param",
        "fold",
        "grad",
        "kernel",
        "outputs",
        "plan",
        "source",
        "trace",
    )

    def __init__(
        self,
        engine: CupyEngine,
        compiled: CompiledProgram,
        first: int,
        first_param: Any,
        p: Any,
        g: Any,
        slots: Mapping[str, Any],
        *,
        copy_grad: bool,
    ):
        self.engine = engine
        self.plan = active_scalar_plan()
        self.trace = compiled.trace
        self.fold = compiled.fold
        self.source, self.kernel = engine.kernel(compiled, str(p.dtype), self.plan is not None)
        self.first = first  # index of the run's first leaf in the step's lists
        self.first_param = first_param  # that leaf (a captured step's scalar plan knows leaves by identity)
        self.grad = g
        self.copy_grad = copy_grad  # a strided gradient, copied to a contiguous one at each step
        self.outputs = [p if role == "param" else slots[name] for role, name in self.source.outputs]

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> None:
        hp = hps[self.first]
        dtype = self.outputs[0].dtype
        scalars = self.fold(hp)
        engine = self.engine
        args: list[Any] = []
        for role, name in self.source.inputs:
            if role == "grad":
                args.append(engine.device.contiguous(self.grad).reshape(-1) if self.copy_grad else self.grad)
            elif role == "hp_array":
                args.append(engine.device.hp_array(hp[name], dtype))
            elif role == "scalar":
                args.append(engine.device.scalar(scalars[name], dtype))
            else:  # "scalar_table": a captured step reads its scalars from the device
                args.append(self.plan.table_for(self.trace, self.fold, self.first_param, scalars))
        args.extend(self.outputs)
        engine.device.launch(self.kernel, args)


class SpanRun:
    """One span-kernel launch of a prepared step, its argument block built once.

    The block (:class:`~anyoptim.engines.cupy.printer.SpanSource`) holds the span's pointers, length and head
    from the start; a step writes its scalars into it (or, for 0-D
    hyperparameter arrays and a captured step's scalar table, their current
    pointers) and launches.  The driver copies the block at each launch, so it
    can be rewritten for the next step at once.
    """

    __slots__ = (
        "args",
        "block",
        "engine",
        "first",
        "first_param",
        "fold",
        "grid",
        "hp_words",
        "keep",
        "launch",
        "launcher",
        "plan",
        "scalars",
        "source",
        "table_word",
        "trace",
        "words",
    )

    def __init__(
        self,
        engine: CupyEngine,
        compiled: CompiledProgram,
        first: int,
        first_param: Any,
        p: Any,
        g: Any,
        slots: Mapping[str, Any],
    ):
        self.engine = engine
        self.plan = active_scalar_plan()
        self.trace = compiled.trace
        self.fold = compiled.fold
        dtype = str(p.dtype)
        self.source = source = engine.span(compiled, dtype, self.plan is not None)
        self.first = first
        self.first_param = first_param
        arrays = {("grad", None): g, ("param", None): p, **{("slot", name): slots[name] for name in slots}}
        size = int(p.size)
        vectorised, head = span_layout([engine.device.address(a) for a in arrays.values()], size, p.itemsize)
        name = source.kernels[(vectorised, size >= INDEX32_LIMIT)]
        block = engine.span_block
        function, wave = engine.device.span_kernel(source, name, block)
        self.grid = (span_grid((size - head) // source.lanes if vectorised else size, block, wave),)
        self.block = (block,)
        self.words = words = np.zeros(source.words, dtype=np.uint64)
        self.hp_words: list[tuple[int, str]] = []
        self.table_word: int | None = None
        for index, key in enumerate(source.pointers):
            if key in arrays:
                words[index] = engine.device.address(arrays[key])
            elif key[0] == "hp_array":
                self.hp_words.append((index, key[1]))
            else:  # the scalar table, set at each launch (its slice is fixed only once the plan is frozen)
                self.table_word = index
        count = len(source.pointers)
        words[count] = size
        words[count + 1] = head
        # The scalars, rounded to T as they are written (NumPy rounds a Python float as np.float32() does).
        self.scalars = words[count + 2 :].view(np.dtype(dtype))[: source.scalar_count]
        self.args = (engine.device.argument_block(words),)
        self.launcher = engine.device.span_launcher(function, size)
        self.keep: list[Any] = []  # device arrays the last launch read, kept until the next
        if self.hp_words or self.table_word is not None:
            self.launch = self._launch_with_device_values
        else:
            self.launch = _scalar_launch(
                self.launcher, self.grid, self.block, self.args, self.fold, self.scalars, first
            )

    def _launch_with_device_values(self, hps: Sequence[Mapping[str, Any]]) -> None:
        hp = hps[self.first]
        device, words = self.engine.device, self.words
        values = self.fold(hp)
        keep = []
        for index, name in self.hp_words:
            array = device.hp_array(hp[name], self.scalars.dtype)
            keep.append(array)
            words[index] = device.address(array)
        if self.table_word is not None:
            table = self.plan.table_for(self.trace, self.fold, self.first_param, values)
            keep.append(table)
            words[self.table_word] = device.address(table)
        else:
            self.scalars[:] = values
        self.keep = keep
        self.launcher(self.grid, self.block, self.args)


def _scalar_launch(
    launcher: Callable[[tuple, tuple, tuple], None],
    grid: tuple[int],
    block: tuple[int],
    args: tuple[Any],
    fold: Callable[[Mapping[str, Any]], list[Any]],
    scalars: np.ndarray,
    first: int,
) -> Callable[[Sequence[Mapping[str, Any]]], None]:
    """The steady-state launch of a span run: fold the scalars into the argument block, launch."""
    if not len(scalars):

        def launch_without_scalars(hps: Sequence[Mapping[str, Any]]) -> None:
            launcher(grid, block, args)

        return launch_without_scalars

    def launch(hps: Sequence[Mapping[str, Any]]) -> None:
        scalars[:] = fold(hps[first])
        launcher(grid, block, args)

    return launch
