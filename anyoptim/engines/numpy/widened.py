"""The NumPy engine's spans of float16 parameters (or of mixed dtypes): float32 plans on widened blocks, in place.

A span whose columns are float16, or whose state is float32 beside a float16
parameter (master weights, :mod:`anyoptim.engines.precision`), runs the plan of
its compute dtype (float32) on cache-sized blocks: each block of a narrower
column is copied, exactly widened, into a block-sized float32 buffer; the
plan's ufunc calls run on those buffers (columns already in the compute dtype
are used in place); each result is then rounded once into its column.  So the
bits are those of the generic engine's :func:`~anyoptim.engines.precision.run_widened`
(the same float32 operations, elementwise), and a step allocates nothing
parameter-sized.  A rule the tracer cannot follow is evaluated as written on
each block, widened the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..precision import compute_dtype, run_widened
from ..program import Program
from .plan import Plan

__all__ = ["WidenedSpans", "span_compute_dtype"]


def span_compute_dtype(dtypes: Sequence[np.dtype]) -> np.dtype:
    """The dtype a span with columns of ``dtypes`` (p, g, slots) computes in (see ``precision.compute_dtype``).

    Parameters
    ----------
    dtypes : sequence of numpy.dtype
        The dtype of each column.

    Returns
    -------
    numpy.dtype
        float32 for float16 columns; the columns' dtype when they share one of 32 bits or more.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.numpy.widened import span_compute_dtype
    >>> span_compute_dtype([np.dtype(np.float16)] * 3), span_compute_dtype([np.dtype(np.float64)] * 2)
    (dtype('float32'), dtype('float64'))
    """
    return np.dtype(compute_dtype(np, list(dtypes)))


class WidenedSpans:
    """A plan of the compute dtype run on widened blocks of spans with narrower columns (a NumPy engine runner).

    Parameters
    ----------
    plan : Plan or None
        The plan of the compute dtype, or None for a rule the tracer cannot
        follow (then ``program`` runs on each block).
    program : Program
        The step.
    slot_names : sequence of str
        The slots, in the order of the span's columns after p and g.
    spans : list of list of numpy.ndarray
        The columns (p, g, slots: 1-D arrays of one length per span) of each span.
    leaves, hps : list
        The first leaf of each span and its scalars mapping.
    block_size : int
        Elements per block.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.engines.numpy import NumpyEngine
    >>> opt = anyoptim.Adam(0.1, engine=NumpyEngine(kernels="ufunc"))
    >>> params = {"w": np.ones(3, np.float16)}
    >>> params, state = opt.step(params, {"w": np.array([0.0, 1e-4, 1.0], np.float16)}, opt.init(params))
    >>> params["w"]  # float16 arithmetic would give NaN for the zero gradient
    array([1. , 0.9, 0.9], dtype=float16)
    """

    def __init__(
        self,
        plan: Plan | None,
        program: Program,
        slot_names: Sequence[str],
        spans: list[list[np.ndarray]],
        leaves: list[int],
        hps: list[Any],
        block_size: int,
    ):
        self.program = program
        self.slot_names = list(slot_names)
        self.spans = spans
        self.leaves = leaves
        self.block_size = block_size
        self.wide = span_compute_dtype([column.dtype for column in spans[0]])
        self.run_blocks = None
        if plan is not None:
            self.run_blocks, _ = plan.compile()
            longest = max(columns[0].shape[0] for columns in spans)
            size = min(block_size, longest)
            self.scratch = [np.empty(size, dtype=dtype) for dtype in plan.scratch_dtypes]
            self.staging = [np.empty(size, dtype=self.wide) for _ in spans[0]]

    def run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run every span with the scalars of its leaves in ``hps`` (one mapping per leaf)."""
        with np.errstate(all="ignore"):  # IEEE arithmetic, as every NumPy engine runner
            for columns, leaf in zip(self.spans, self.leaves, strict=True):
                for start in range(0, columns[0].shape[0], self.block_size):
                    blocks = [column[start : start + self.block_size] for column in columns]
                    if self.run_blocks is None:
                        self._direct(blocks, hps[leaf])
                    else:
                        self._traced(blocks, hps[leaf])

    def _traced(self, blocks: list[np.ndarray], hp: Mapping[str, Any]) -> None:
        length = blocks[0].shape[0]
        registers = []
        for block, staging in zip(blocks, self.staging, strict=True):
            if block.dtype == self.wide:
                registers.append(block)  # computed in place
            else:
                registers.append(staging[:length])
                np.copyto(registers[-1], block)  # exact: float16 -> float32
        self.run_blocks(hp, [(*registers, *(buffer[:length] for buffer in self.scratch))])
        for index, (block, register) in enumerate(zip(blocks, registers, strict=True)):
            if index != 1 and register is not block:  # the gradient is only read
                np.copyto(block, register, casting="same_kind")  # rounded once

    def _direct(self, blocks: list[np.ndarray], hp: Mapping[str, Any]) -> None:
        p, g, *slots = blocks
        new_p, new_slots = run_widened(self.program, np, p, g, dict(zip(self.slot_names, slots, strict=True)), hp)
        p[...] = new_p
        for name, block in zip(self.slot_names, slots, strict=True):
            block[...] = new_slots[name]
