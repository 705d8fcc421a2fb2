"""Running a NumPy engine plan on spans: as one C call, as ufunc calls on blocks, or as written.

Each runner binds a :class:`~anyoptim.engines.numpy.plan.Plan` (or, for a rule
the tracer cannot follow, the program itself) to the spans of one prepared
step, and has ``run(hps)``: run every span with the scalars of its leaves.

* :class:`CompiledSpans`: the plan's C kernel (:mod:`anyoptim.engines.numpy.c_printer`),
  one call per run of spans sharing scalars;
* :class:`TracedSpans`: the plan's ufunc calls on cache-sized blocks;
* :class:`DirectSpans`: the program evaluated as written on each block;
* :class:`~anyoptim.engines.numpy.widened.WidenedSpans`: spans with float16
  columns (or float32 state beside them), the float32 plan on widened blocks.

:func:`span_runner` chooses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..program import Program
from .plan import Plan
from .widened import WidenedSpans, span_compute_dtype

__all__ = ["CompiledSpans", "DirectSpans", "TracedSpans", "gradient_leaves", "span_runner", "spans_fit_a_kernel"]


def span_runner(
    engine: Any,
    program: Program,
    slot_names: Sequence[str],
    dtypes: Sequence[np.dtype],
    kinds: tuple,
    spans: list[list[np.ndarray]],
    leaves: list[int],
    hps: Sequence[Mapping[str, Any]],
) -> Any:
    """The runner of spans whose columns have ``dtypes`` and whose scalars have ``kinds``.

    The plan is made for the spans' compute dtype
    (:func:`~anyoptim.engines.numpy.widened.span_compute_dtype`): columns not
    all of it (float16) take :class:`~anyoptim.engines.numpy.widened.WidenedSpans`;
    otherwise the C kernel where one is built and the spans fit it, the ufunc
    calls where not, the program as written for a rule the tracer cannot follow.

    Parameters
    ----------
    engine : NumpyEngine
        Whose plans, kernels and block size to use.
    program : Program
        The step.
    slot_names : sequence of str
        The slots, in the order of the spans' columns after p and g.
    dtypes : sequence of numpy.dtype
        The dtype of each column (p, g, slots), the same in every span.
    kinds : tuple
        The kinds of the scalars (:meth:`~anyoptim.engines.numpy.NumpyEngine.plan`).
    spans : list of list of numpy.ndarray
        The columns of each span.
    leaves : list of int
        The first leaf of each span.
    hps : sequence of mapping
        The scalars of every leaf (those of ``leaves`` are read).

    Returns
    -------
    CompiledSpans, TracedSpans, DirectSpans or WidenedSpans
        An object with ``run(hps)``.
    """
    dtype = span_compute_dtype(dtypes)
    plan = engine.plan(program, dtype, slot_names, hps[leaves[0]], kinds)
    block, first_hps = engine.elements_per_block(dtype), [hps[i] for i in leaves]
    if any(column != dtype for column in dtypes):
        fits = plan is not None and spans_fit_a_kernel(spans, tuple(dtypes))
        kernel = engine.kernel(plan, tuple(np.dtype(column).name for column in dtypes)) if fits else None
        if kernel is not None:  # float16 columns read and written by the float32 kernel
            return CompiledSpans(plan, kernel, spans, leaves, first_hps)
        return WidenedSpans(plan, program, slot_names, spans, leaves, first_hps, block)
    if plan is None:
        return DirectSpans(program, slot_names, spans, leaves, block)
    kernel = engine.kernel(plan) if spans_fit_a_kernel(spans, dtype) else None
    if kernel is not None:
        return CompiledSpans(plan, kernel, spans, leaves, first_hps)
    return TracedSpans(plan, spans, leaves, first_hps, block)


def spans_fit_a_kernel(spans: Sequence[Sequence[Any]], dtype: Any) -> bool:
    """Whether a kernel may read and write these spans' memory through raw addresses.

    The kernel trusts its frame: every column (p, g, slots) of a span must be a
    1-D, C-contiguous, aligned NumPy array of ``dtype`` (or of ``dtype[i]`` for
    column ``i``, when a sequence of dtypes is given) in native byte order,
    as long as the span's parameter column, and writeable except the gradient
    (column 1).  The optimizer's checks guarantee this; a direct
    ``NumpyEngine.apply`` with other arrays runs as ufuncs instead, which cast
    or raise as NumPy does.
    """
    dtypes = [np.dtype(d) for d in dtype] if isinstance(dtype, (list, tuple)) else [np.dtype(dtype)] * len(spans[0])
    if not all(d.isnative for d in dtypes):
        return False
    for columns in spans:
        length = columns[0].shape
        for index, column in enumerate(columns):
            if not (
                isinstance(column, np.ndarray)
                and index < len(dtypes)
                and column.dtype == dtypes[index]
                and column.shape == length
                and len(length) == 1
                and column.flags.c_contiguous
                and column.flags.aligned
                and (index == 1 or column.flags.writeable)
            ):
                return False
    return True


class CompiledSpans:
    """A compiled plan bound to some spans: ``run(hps)`` is one C call per run of spans sharing scalars.

    Parameters
    ----------
    plan
        The NumPy engine's plan; its host statements compute each step's scalars.
    kernel
        The loaded C function of :func:`c_source` for this plan.
    spans
        The columns (p, g, slots: 1-D C-contiguous arrays of the plan's dtype,
        all but the gradient writeable) of each span.
    leaves, hps
        The first leaf of each span and its scalars mapping (consecutive spans
        with the same mapping object share one call).
    """

    def __init__(
        self,
        plan: Plan,
        kernel: Callable[[int], None],
        spans: list[list[np.ndarray]],
        leaves: list[int],
        hps: list[Any],
    ):
        groups: list[list[int]] = []
        for index in range(len(spans)):
            if index == 0 or hps[index] is not hps[index - 1]:
                groups.append([])
            groups[-1].append(index)
        segments = [
            _segment_call(plan, kernel, [spans[index] for index in group], leaves[group[0]]) for group in groups
        ]
        self.calls = [call for call, _ in segments]
        #: Where each span's gradient address lies: (frame, index in it, the span's columns), in span order.
        self.gradient_slots = [
            (frame, 2 + position * (1 + len(spans[index])) + 2, spans[index])
            for (_, frame), group in zip(segments, groups, strict=True)
            for position, index in enumerate(group)
        ]
        if len(self.calls) == 1:  # the usual case, a flat model: one call less per step
            self.run = self.calls[0]

    def set_gradient_addresses(self, addresses: Sequence[int], owners: Sequence[Any]) -> None:
        """Point each span's gradient (in span order) at a new address, kept alive by ``owners``.

        For a loop that gets new gradient arrays every step (torch's ``zero_grad()`` and ``backward()``): the
        frame's addresses change, nothing is traced or compiled again.  The kernel trusts its frame: the caller
        guarantees what :func:`spans_fit_a_kernel` checks (C-contiguous, aligned memory of the plan's dtype,
        native byte order, the span's length) for every address (see :func:`gradient_leaves`).
        """
        for address, owner, (frame, index, columns) in zip(addresses, owners, self.gradient_slots, strict=True):
            columns[1] = owner  # the frame's keep-alive holds this list: the owner lives as long as the frame
            frame[index] = address

    def run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run every span with the scalars of its leaves in ``hps`` (one mapping per leaf)."""
        for call in self.calls:
            call(hps)


def gradient_leaves(runners: Sequence[Any], params: Sequence[np.ndarray]) -> list[list[int]] | None:
    """Which parameter each span of a prepared step's runners is, for :meth:`CompiledSpans.set_gradient_addresses`.

    Parameters
    ----------
    runners : sequence
        A prepared step's runners (``NumpyStep.runners``).
    params : sequence of numpy.ndarray
        The parameters it was prepared with, in leaf order.

    Returns
    -------
    list of list of int, or None
        Per runner, the index in ``params`` of each span's parameter; None unless every runner is compiled
        (:class:`CompiledSpans`) and every span is one whole parameter.
    """
    leaf_at = {p.ctypes.data: i for i, p in enumerate(params)}
    found = []
    for runner in runners:
        if not isinstance(runner, CompiledSpans):
            return None
        leaves = []
        for _, _, columns in runner.gradient_slots:
            i = leaf_at.get(columns[0].ctypes.data)
            if i is None or columns[0].shape[0] != params[i].size:
                return None
            leaves.append(i)
        found.append(leaves)
    return found


def _segment_call(
    plan: Plan, kernel: Callable[[int], None], spans: list[list[np.ndarray]], leaf: int
) -> tuple[Callable[[Sequence[Mapping[str, Any]]], None], np.ndarray]:
    """``run(hps)`` for spans sharing the scalars of ``hps[leaf]``: this step's scalars into a table, then the kernel.

    The function (:meth:`~anyoptim.engines.numpy.plan.Plan.kernel_step_code`)
    computes the scalars with the plan's own host lines, as the ufunc plan's
    step does.  Its globals hold the table, the frame and the spans, so the
    addresses in the frame stay valid as long as the function lives.  Returns the function and its frame.
    """
    trace = plan.trace
    table = np.zeros(max(1, len(plan.broadcast_uses)), dtype=np.float64)
    for position, (node, _) in enumerate(plan.broadcast_uses):
        if trace.nodes[node].op == "const":  # constants are stored once, here
            table[position] = trace.nodes[node].value
    frame = [len(spans), table.ctypes.data]
    for columns in spans:
        frame += [columns[0].shape[0], *(column.ctypes.data for column in columns)]
    frame_array = np.array(frame, dtype=np.int64)
    code, names = plan.kernel_step_code()
    namespace: dict[str, Any] = {
        **names,
        "LEAF": leaf,
        "kernel": kernel,
        "table": table,
        "FRAME": frame_array.ctypes.data,
        "_alive": (frame_array, spans),  # what the frame's addresses point into
    }
    exec(code, namespace)
    return namespace["run"], frame_array


def _ieee_arithmetic() -> Any:
    """IEEE arithmetic whatever the caller's ``np.errstate``: a step that raised halfway would be torn (some
    blocks written, others not), and the compiled kernels never raise.  Overflow gives inf, as they do."""
    return np.errstate(all="ignore")


class TracedSpans:
    """A plan's ufunc calls over the blocks of some spans.

    Consecutive spans that share one scalars mapping form one segment: its
    scalars are computed once and its blocks run in one call.

    Parameters
    ----------
    plan
        The plan of the spans' dtype and kinds of scalars.
    spans
        The columns (p, g, slots: 1-D arrays of the plan's dtype, of one length per span) of each span.
    leaves, hps
        The first leaf of each span and its scalars mapping.
    block_size
        Elements per block; the scratch buffers are this long (or as long as the longest span).
    """

    def __init__(self, plan: Plan, spans: list[list[np.ndarray]], leaves: list[int], hps: list[Any], block_size: int):
        self.run_blocks, _ = plan.compile()
        longest = max(columns[0].shape[0] for columns in spans)
        scratch = [np.empty(min(block_size, longest), dtype=dtype) for dtype in plan.scratch_dtypes]
        self.segments: list[tuple[int, list[tuple]]] = []
        for index, columns in enumerate(spans):
            if index == 0 or hps[index] is not hps[index - 1]:
                self.segments.append((leaves[index], []))
            self.segments[-1][1].extend(plan.blocks(columns, scratch, block_size))
        if len(self.segments) == 1:  # the usual case, a flat model: one call less per step
            run_blocks, (leaf, blocks) = self.run_blocks, self.segments[0]

            def run_one(hps: Sequence[Mapping[str, Any]]) -> None:
                with _ieee_arithmetic():
                    run_blocks(hps[leaf], blocks)

            self.run = run_one

    def run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run every span with the scalars of its leaves in ``hps`` (one mapping per leaf)."""
        with _ieee_arithmetic():
            for leaf, blocks in self.segments:
                self.run_blocks(hps[leaf], blocks)


class DirectSpans:
    """The program evaluated as written on each block, results copied back (for rules the tracer cannot follow).

    Parameters
    ----------
    program
        The program the tracer could not follow.
    slot_names
        The slots, in the order of the span's columns after p and g.
    spans, leaves, block_size
        As for :class:`TracedSpans`.
    """

    def __init__(
        self,
        program: Program,
        slot_names: Sequence[str],
        spans: list[list[np.ndarray]],
        leaves: list[int],
        block_size: int,
    ):
        self.program = program
        self.slot_names = slot_names
        self.spans = spans
        self.leaves = leaves
        self.block_size = block_size

    def run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run every span with the scalars of its leaves in ``hps`` (one mapping per leaf)."""
        with _ieee_arithmetic():
            self._run(hps)

    def _run(self, hps: Sequence[Mapping[str, Any]]) -> None:
        for columns, leaf in zip(self.spans, self.leaves, strict=True):
            hp = hps[leaf]
            p, g, *slots = columns
            for start in range(0, p.shape[0], self.block_size):
                block = slice(start, start + self.block_size)
                new_p, new_slots = self.program(
                    np, p[block], g[block], {name: s[block] for name, s in zip(self.slot_names, slots, strict=True)}, hp
                )
                p[block] = new_p
                for name, s in zip(self.slot_names, slots, strict=True):
                    s[block] = new_slots[name]
