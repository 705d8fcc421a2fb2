"""The CuPy engine: one fused CUDA kernel per contiguous run of parameters, traced from the rule.

The optimizer's :class:`~anyoptim.engines.program.Program` is traced once
(:mod:`anyoptim.engines.trace`) into an expression graph and printed as the
body of a CUDA kernel that reads the parameter, its gradient and the state
slots, and writes the parameter and the slots back in place.  Nothing here
types an update formula: the kernel is the rule.

* **One launch per run.**  Leaves that lie back to back in one allocation in
  every column (parameters, gradients, each slot) and share their scalars are
  joined into one 1-D span (:func:`anyoptim.engines.spans.contiguous_runs`).
  Parameters made by :func:`anyoptim.flatten`, with state from
  :meth:`CupyEngine.init_slots`, are one span: one launch updates the model.
* **Span kernels at the bandwidth limit.**  A span is updated by a kernel
  generated around the traced body (:func:`~.printer.span_source`, compiled as a
  ``cupy.RawModule``): a grid-stride loop with 32-bit indices (64-bit only for
  spans of 2**31 elements or more) that moves 16 bytes per load and store
  (``float4`` / ``double2``) when every array of the span shares its alignment,
  each thread applying the traced body to every lane.  A prepared step builds
  the kernel's argument block once (a small host buffer: the pointers, the
  length, the scalars); a step then only writes its scalars into that block
  and launches.  The ``cupy.ElementwiseKernel`` printed from the same body
  remains for spans whose gradient is strided (copied each step) and, with
  ``ANYOPTIM_CUPY_LAUNCH=elementwise`` in the environment, for everything.
* **Typed scalars.**  Host scalars (the learning rate, ``1 - beta1``, bias
  corrections) are computed in Python as the generic engine computes them and
  rounded to the parameter dtype ``T``, so the kernel computes in ``T``
  throughout (the ``cupy.fuse`` trap, where Python floats become float16
  constants, cannot happen).  ``hp["grad_scale"]`` (global-norm clipping) is a
  0-D device array and stays on the device.
* **Same rounding as the generic path.**  Kernels are compiled with
  ``--fmad=false``: ``a*b + c`` is rounded twice, as when each operator is its
  own kernel, so fused and generic agree to the last bit in practice, and both
  launch paths run the same body, so they agree bit for bit.
* **Fallback.**  Leaves that are not C-contiguous, or whose dtype is not
  float32/float64, take the generic engine (new arrays, correct, slower).

The package's modules: :mod:`~.printer` (the CUDA source), this one (the
engine and its prepared step), :mod:`~.launch` (the launches and their argument
blocks), :mod:`~.device` (every CuPy call), :mod:`~.scalar_table` and
:mod:`~.capture` (:class:`~.capture.GraphedStep`, which captures a whole
training step in a CUDA graph and replays it, with the step's scalars kept in a
small device table that the host refreshes before each replay).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..fused import FusedEngine
from ..generic import GenericEngine
from ..program import Program
from ..spans import contiguous_runs
from ..trace import FUSED_DTYPES, Trace, hp_signature, scalar_folder, trace_program
from .device import CupyDevice
from .launch import ElementwiseRun, SpanRun
from .printer import SPAN_BLOCK, KernelSource, SpanSource, cuda_source, span_source
from .scalar_table import active_scalar_plan

__all__ = ["LAUNCH_CHOICES", "CompiledProgram", "CupyEngine"]

#: How the engine launches its kernels: "span" (the generated span kernels,
#: ElementwiseKernel only where they do not apply) or "elementwise" (always the
#: ElementwiseKernel).  The default comes from ``ANYOPTIM_CUPY_LAUNCH``.
LAUNCH_CHOICES = ("span", "elementwise")


def _default_launch() -> str:
    choice = os.environ.get("ANYOPTIM_CUPY_LAUNCH", "span")
    if choice not in LAUNCH_CHOICES:
        raise ValueError(f"ANYOPTIM_CUPY_LAUNCH must be one of {', '.join(LAUNCH_CHOICES)}, got {choice!r}")
    return choice


@dataclass
class CompiledProgram:
    """A traced program, its host-scalar folder, and its kernels by (dtype name, scalars on device).

    Attributes
    ----------
    trace : Trace
        From :func:`~anyoptim.engines.trace.trace_program`.
    fold : callable
        ``hp -> [c0, c1, ...]``, from :func:`~anyoptim.engines.trace.scalar_folder`.
    kernels : dict
        ``(dtype, scalars on device) -> (KernelSource, ElementwiseKernel)``, filled by :meth:`CupyEngine.kernel`.
    spans : dict
        ``(dtype, scalars on device) -> SpanSource``, filled by :meth:`CupyEngine.span`.
    """

    trace: Trace
    fold: Callable[[Mapping[str, Any]], list[Any]]
    kernels: dict[tuple[str, bool], tuple[KernelSource, Any]] = field(default_factory=dict)
    spans: dict[tuple[str, bool], SpanSource] = field(default_factory=dict)


class CupyEngine(FusedEngine):
    """Run a program as one fused, in-place CUDA kernel per contiguous run of leaves.

    Its :attr:`device` (a :class:`~anyoptim.engines.cupy.device.CupyDevice`)
    is the only code that touches CuPy; the rest is backend-neutral, so the run
    detection, the binding of kernel arguments and the span kernels' argument
    blocks are tested on a CPU with a NumPy stand-in of it (and the span
    kernels themselves compiled by the host C++ compiler).  The engine keeps no
    state of a call: whether kernels read their scalars from a captured step's
    table is the context's (:func:`~anyoptim.engines.cupy.scalar_table.scalars_on_device`).

    Parameters
    ----------
    launch : {"span", "elementwise"}, optional
        How fused runs are launched (see the module notes); default from
        ``ANYOPTIM_CUPY_LAUNCH``, else "span".  Applies to steps prepared after
        it is set (the attribute :attr:`launch` may be changed).

    Attributes
    ----------
    device : CupyDevice
        The CuPy calls of this engine, and its compiled span kernels.
    span_block : int
        Threads per block of a span kernel launch.

    Raises
    ------
    ValueError
        If ``launch`` (or ``ANYOPTIM_CUPY_LAUNCH``) is not one of :data:`LAUNCH_CHOICES`.

    See Also
    --------
    anyoptim.engines.cupy.GraphedStep : Captures a whole training step, this engine's kernels included.
    anyoptim.engines.GenericEngine : The engine that returns new arrays, for any library.

    Notes
    -----
    ``engine="auto"`` (the default) already runs CuPy arrays with this engine,
    one shared instance; make one yourself only to pin ``launch``.

    Examples
    --------
    Needs CuPy and a CUDA GPU, so it is not run here:

    .. code-block:: python

        import cupy, anyoptim
        from anyoptim.engines.cupy import CupyEngine

        params = anyoptim.flatten({"W": cupy.ones((256, 128), "float32"), "b": cupy.zeros(128, "float32")})
        grads = anyoptim.flatten({"W": cupy.full((256, 128), 0.5, "float32"), "b": cupy.full(128, -1.0, "float32")})
        opt = anyoptim.Adam(0.1, engine=CupyEngine(launch="span"))
        state = opt.init(params)            # slots laid out like params: one span
        W = params["W"]
        params, state = opt.step(params, grads, state)  # one kernel launch updates W, b and the slots
        assert params["W"] is W             # in place
        print(params["W"][0, :2], params["b"][:2])  # [0.9 0.9] [0.1 0.1]
    """

    name = "cupy"
    #: Threads per block of a span kernel launch (at most the generated ``__launch_bounds__``).
    span_block = SPAN_BLOCK

    def __init__(self, launch: str | None = None) -> None:
        self.launch = _default_launch() if launch is None else launch
        if self.launch not in LAUNCH_CHOICES:
            raise ValueError(f"launch must be one of {', '.join(LAUNCH_CHOICES)}, got {self.launch!r}")
        self._compiled: dict[tuple[Any, ...], CompiledProgram] = {}
        self._generic = GenericEngine()
        self.device = CupyDevice()

    # -- the interface every engine has

    def prepare(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> _PreparedStep:
        """Bind ``program`` to these very arrays; the result, called with each step's ``hps``, runs a step.

        Finds the runs, builds the spans and their kernel arguments, and
        compiles the kernels once.  The arrays must stay the same objects with
        the same layout between calls, and ``hps`` must keep the grouping it has
        here (leaves sharing one mapping now share one later).

        Parameters
        ----------
        program : Program
            The step to run (:class:`~anyoptim.engines.program.Program`).
        xp : namespace
            The arrays' Array API namespace.
        params, grads : sequence of arrays
            One parameter and its gradient per leaf (gradients are only read).
        slots : mapping of str to sequence of arrays
            Each slot's arrays, one per leaf, of its parameter's shape and dtype.
        hps : sequence of mapping of str to scalar
            Each leaf's scalars, in the grouping every later call keeps.

        Returns
        -------
        PreparedRun
            The prepared step; each call with a step's ``hps`` runs it.

        Examples
        --------
        Needs CuPy and a CUDA GPU, so it is not run here:

        .. code-block:: python

            run = CupyEngine().prepare(program, cupy, params, grads, slots, hps)
            new_params, new_slots = run(hps)  # one launch per run of leaves; fused leaves in place
        """
        return _PreparedStep(self, program, xp, params, grads, slots, hps)

    # -- tracing and kernels

    def compiled(self, program: Program, slot_names: Sequence[str], hp: Mapping[str, Any]) -> CompiledProgram:
        """Trace ``program`` for these slots and kinds of scalars, once (cached on the engine).

        Parameters
        ----------
        program : Program
            The step to trace.
        slot_names : sequence of str
            The state slots, in state order.
        hp : mapping of str to scalar
            One step's scalars: their names and kinds shape the trace, not their values.

        Returns
        -------
        CompiledProgram
            The trace, its host-scalar folder and its (empty until asked for) kernel caches.

        Examples
        --------
        Tracing needs no GPU:

        >>> from anyoptim.engines.cupy import CupyEngine
        >>> from anyoptim.engines.program import Program
        >>> sgd = lambda xp, p, g, slots, hp: (p - hp["learning_rate"] * g, {})
        >>> engine = CupyEngine()
        >>> compiled = engine.compiled(Program(sgd), [], {"learning_rate": 0.1})
        >>> compiled is engine.compiled(Program(sgd), [], {"learning_rate": 0.1})
        True
        """
        key = (program, tuple(slot_names), hp_signature(hp))
        found = self._compiled.get(key)
        if found is None:
            trace = trace_program(program, slot_names, key[2])
            found = self._compiled[key] = CompiledProgram(trace, scalar_folder(trace))
        return found

    def kernel(self, compiled: CompiledProgram, dtype: str, scalars_on_device: bool) -> tuple[KernelSource, Any]:
        """Make the ElementwiseKernel of a trace for one dtype (cached; CuPy compiles it at its first launch).

        Parameters
        ----------
        compiled : CompiledProgram
            From :meth:`compiled`.
        dtype : str
            ``"float32"`` or ``"float64"``.
        scalars_on_device : bool
            Whether the kernel reads its scalars from a captured step's device table.

        Returns
        -------
        source : KernelSource
            The kernel's CUDA source and argument layout.
        kernel : cupy.ElementwiseKernel
            The kernel.

        Examples
        --------
        Needs CuPy and a CUDA GPU, so it is not run here:

        .. code-block:: python

            source, kernel = engine.kernel(engine.compiled(program, [], hp), "float32", False)
        """
        key = (dtype, scalars_on_device)
        found = compiled.kernels.get(key)
        if found is None:
            source = cuda_source(compiled.trace, dtype, scalars_on_device=scalars_on_device)
            found = compiled.kernels[key] = (source, self.device.elementwise_kernel(compiled.trace, source))
        return found

    def span(self, compiled: CompiledProgram, dtype: str, scalars_on_device: bool) -> SpanSource:
        """Write the span kernels' source of a trace for one dtype (cached).

        Parameters
        ----------
        compiled : CompiledProgram
            From :meth:`compiled`.
        dtype : str
            ``"float32"`` or ``"float64"``.
        scalars_on_device : bool
            Whether the kernels read their scalars from a captured step's device table.

        Returns
        -------
        SpanSource
            The CUDA source of the span kernels and their argument layout.

        Examples
        --------
        Writing the source needs no GPU:

        >>> from anyoptim.engines.cupy import CupyEngine
        >>> from anyoptim.engines.program import Program
        >>> sgd = lambda xp, p, g, slots, hp: (p - hp["learning_rate"] * g, {})
        >>> engine = CupyEngine()
        >>> compiled = engine.compiled(Program(sgd), [], {"learning_rate": 0.1})
        >>> engine.span(compiled, "float32", False).dtype
        'float32'
        """
        key = (dtype, scalars_on_device)
        found = compiled.spans.get(key)
        if found is None:
            found = compiled.spans[key] = span_source(compiled.trace, dtype, scalars_on_device=scalars_on_device)
        return found

    def _fusable(self, p: Any, g: Any, slot_leaves: Sequence[Any]) -> bool:
        arrays = [p, g, *slot_leaves]
        return (
            all(self.device.is_array(a) for a in arrays)
            and str(p.dtype) in FUSED_DTYPES
            and all(a.dtype == p.dtype for a in arrays)
            and all(a.flags.c_contiguous for a in (p, *slot_leaves))
        )


class _PreparedStep:
    """A program bound to fixed arrays: kernels for the fused runs, the generic engine for the other leaves."""

    def __init__(
        self,
        engine: CupyEngine,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ):
        self.engine = engine
        self.program = program
        self.xp = xp
        self.params = list(params)
        self.grads = list(grads)
        self.slots = {name: list(values) for name, values in slots.items()}
        slot_names = tuple(slots)
        count = len(self.params)
        fused = [i for i in range(count) if engine._fusable(params[i], grads[i], [slots[s][i] for s in slot_names])]
        chosen = set(fused)
        self.others = [i for i in range(count) if i not in chosen]
        plan = active_scalar_plan()
        if self.others and plan is not None:
            names = ", ".join(str(i) for i in self.others)
            raise ValueError(
                "a captured step needs every parameter, gradient and state slot to be a C-contiguous float32 or "
                f"float64 CuPy array of one dtype (use anyoptim.flatten(params)); leaves {names} are not"
            )
        #: Whether every leaf is updated in place; a step prepared for graph capture is never reused eagerly.
        self.in_place = not self.others and plan is None
        self.runs: list[ElementwiseRun | SpanRun] = []
        # Leaves of one dtype and one scalars mapping may lie back to back in one buffer even when the leaf
        # list interleaves dtypes (anyoptim.flatten keeps one buffer per dtype): look for runs group by group.
        # A gradient that is not C-contiguous is copied at each step, so its leaf is a run of its own.
        groups: dict[tuple[str, int], list[int]] = {}
        for i in fused:
            key = (str(params[i].dtype), id(hps[i])) if grads[i].flags.c_contiguous else ("copy", i)
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            columns = [
                [params[i] for i in indices],
                [grads[i] for i in indices],
                *([slots[name][i] for i in indices] for name in slot_names),
            ]
            for start, stop in contiguous_runs(
                columns, [hps[i] for i in indices], address=engine.device.address, owner=engine.device.owner
            ):
                self.runs.append(self._run(program, indices[start:stop], hps))
        #: What each step calls, in order: each run's launch, taking the step's ``hps``.
        self.launches = [run.launch if isinstance(run, SpanRun) else run for run in self.runs]
        if self.in_place and len(self.launches) == 1:
            self.update = self.launches[0]  # the optimizer's fast path calls it directly

    def _run(self, program: Program, leaves: list[int], hps: Sequence[Mapping[str, Any]]) -> ElementwiseRun | SpanRun:
        """The launch of one run of leaves: a span kernel where it applies, else the ElementwiseKernel."""
        engine, first, slot_names = self.engine, leaves[0], tuple(self.slots)
        compiled = engine.compiled(program, slot_names, hps[first])
        g = self.grads[first]
        if not g.flags.c_contiguous:  # then it is a run of one leaf, its gradient copied at each step
            slots = {name: engine.device.span([self.slots[name][first]]) for name in slot_names}
            p = engine.device.span([self.params[first]])
            return ElementwiseRun(engine, compiled, first, self.params[first], p, g, slots, copy_grad=True)
        p = engine.device.span([self.params[i] for i in leaves])
        g = engine.device.span([self.grads[i] for i in leaves])
        slots = {name: engine.device.span([self.slots[name][i] for i in leaves]) for name in slot_names}
        if engine.launch == "span" and p.size > 0 and engine.device.span_ready([p, g, *slots.values()]):
            return SpanRun(engine, compiled, first, self.params[first], p, g, slots)
        return ElementwiseRun(engine, compiled, first, self.params[first], p, g, slots, copy_grad=False)

    def update(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run the step in place (only when :attr:`in_place`): ``hps`` as for :meth:`__call__`."""
        for launch in self.launches:
            launch(hps)

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run the step with this step's scalars ``hps`` (one mapping per leaf, grouped as when prepared)."""
        new_params = list(self.params)
        new_slots = {name: list(values) for name, values in self.slots.items()}
        if self.others:
            others = self.others
            fallback_p, fallback_slots = self.engine._generic.apply(
                self.program,
                self.xp,
                [self.params[i] for i in others],
                [self.grads[i] for i in others],
                {name: [values[i] for i in others] for name, values in self.slots.items()},
                [hps[i] for i in others],
            )
            for position, i in enumerate(others):
                new_params[i] = fallback_p[position]
                for name in self.slots:
                    new_slots[name][i] = fallback_slots[name][position]
        for launch in self.launches:
            launch(hps)
        return new_params, new_slots
