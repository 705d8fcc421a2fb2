"""The NumPy engine: a program's trace run as ufunc calls, in place, on cache-sized blocks of flat spans.

Evaluating an elementwise rule on a whole array makes a full-size temporary for
every operator and streams each one through memory.  This engine instead

1. **traces** the program once per (program, dtype, kinds of scalars) with the
   tracer the CuPy engine prints its kernels from
   (:func:`anyoptim.engines.trace.trace_program`), so the list of NumPy calls
   comes from the one rule through the one expression graph, never written twice;
2. **splits the graph**: its scalar part (``1 - beta1``) runs once per step on
   the host, in plain Python, exactly as the rule computes it
   (:func:`~anyoptim.engines.trace.scalar_statements`); every array operation
   becomes a ufunc call with ``out=``, each node given the dtype NumPy itself
   gives it (found by running the graph once on 1-element samples);
3. **binds** those calls to blocks of a few thousand elements of each flat span
   (leaves that lie back to back in one buffer, see :func:`anyoptim.flatten`,
   are one span), with a handful of block-sized scratch buffers, and writes
   each result straight into the parameter or state buffer when the old value
   is no longer needed.

So a step allocates nothing parameter-sized, its temporaries stay in the CPU
cache, and a small model costs one pass of the rule, not one per leaf.

Where a C compiler is found, the same plan is also printed as one C loop over every span
(:mod:`anyoptim.engines.numpy.c_printer`, built and cached by :mod:`anyoptim.engines.numpy.native`) and that
runs instead: one pass over memory and one call per step, with the same bits.  ``kernels=`` (or
``ANYOPTIM_NUMPY_KERNELS``) chooses; the ufunc calls remain for machines without a compiler, for plans with no
C form and for arrays a kernel must not touch through raw addresses.  Scalars (and 0-D array hyperparameters)
reach the ufuncs as 0-D arrays of the dtype NumPy would have cast them to (NEP 50), refreshed in place each
step, so results are bit-identical to evaluating the rule with ``numpy`` on the same blocks.

Parameters and state are updated in place and returned; leaves that are not
C-contiguous or not writeable get new arrays instead (the rule evaluated on the
whole leaf).  A rule that the tracer cannot follow (data-dependent control
flow, a function outside the rule contract) is evaluated directly on each
block instead.

The pieces: :mod:`~anyoptim.engines.numpy.plan` (the trace split into host
work and ufunc calls), :mod:`~anyoptim.engines.numpy.c_printer` (the plan as C),
:mod:`~anyoptim.engines.numpy.runners` (a plan bound to spans: C call, ufunc
calls, or the rule as written; for float16 spans the float32 plan, as C or on
widened blocks, :mod:`~anyoptim.engines.numpy.widened`), :mod:`~anyoptim.engines.numpy.native`
(compiler and cache); this module finds the spans and owns the caches.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..fused import FusedEngine
from ..precision import run_widened
from ..program import Program
from ..spans import contiguous_runs
from ..trace import hp_signature, kernel_name, trace_program
from . import native
from .c_printer import c_source
from .plan import Plan
from .runners import span_runner

__all__ = ["DEFAULT_BLOCK_BYTES", "NumpyEngine", "NumpyStep"]

#: Bytes of one array per block (32 Ki float32 or 16 Ki float64 elements).  Measured on one
#: core of this project's CPU machines (Xeon, 2 MiB L2), Adam on 2**23 parameters: blocks of
#: 128-256 KiB per array were fastest in both dtypes, a block's p, g, slots and 3 scratch
#: buffers then still fitting L2 (benchmarks/README.md has the table).
DEFAULT_BLOCK_BYTES = 128 * 1024


# --------------------------------------------------------------------------- layout helpers


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _owner(array: np.ndarray) -> np.ndarray | None:
    base = array.base
    # Spans are cut from the owner in the owner's dtype: a float32 view of a float64 (or uint8) arena
    # must not be joined, or offsets would count the wrong elements.
    if isinstance(base, np.ndarray) and base.flags.c_contiguous and base.dtype == array.dtype:
        return base
    return None


def _span(leaves: Sequence[np.ndarray]) -> np.ndarray:
    """One writeable 1-D view over leaves that lie back to back (as checked by contiguous_runs)."""
    first = leaves[0]
    if len(leaves) == 1:
        return first.reshape(-1)
    owner = _owner(first)
    offset = (_address(first) - _address(owner)) // first.itemsize
    total = sum(leaf.size for leaf in leaves)
    return owner.reshape(-1)[offset : offset + total]


def _writable_contiguous(array: Any) -> bool:
    return isinstance(array, np.ndarray) and array.flags.c_contiguous and array.flags.writeable


def _scalar_kind(value: Any) -> Any:
    """What decides how a scalar promotes: its Python type, or its NumPy dtype."""
    dtype = getattr(value, "dtype", None)
    return type(value) if dtype is None else (type(value), dtype)


class NumpyStep:
    """One prepared step over fixed arrays: the in-place spans plus the leaves updated out of place.

    What :meth:`NumpyEngine.prepare` returns (a :class:`~anyoptim.engines.PreparedRun`).
    The arguments after ``engine`` are those of :meth:`anyoptim.engines.PreparingEngine.prepare`.

    Attributes
    ----------
    in_place : bool
        Whether every leaf is updated in place (the returned arrays are the ones given).
    runners : list
        One runner per dtype and kind of scalars (:mod:`anyoptim.engines.numpy.runners`).
    """

    def __init__(
        self,
        engine: NumpyEngine,
        program: Program,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ):
        self.program = program
        self.slot_names = list(slots)
        self.params = list(params)
        self.grads = list(grads)
        self.slots = {name: list(values) for name, values in slots.items()}
        columns = [self.params, self.grads, *self.slots.values()]
        count = len(self.params)
        self.in_place_leaves = [
            i
            for i in range(count)
            if all(_writable_contiguous(column[i]) for column in (self.params, *self.slots.values()))
            and isinstance(self.grads[i], np.ndarray)
            and self.grads[i].flags.c_contiguous
        ]
        chosen = set(self.in_place_leaves)
        #: Whether every leaf is updated in place (the returned arrays are the ones given).
        self.out_of_place = [i for i in range(count) if i not in chosen]
        self.in_place = not self.out_of_place
        runs = contiguous_runs(
            [[column[i] for i in self.in_place_leaves] for column in columns],
            [hps[i] for i in self.in_place_leaves],
            address=_address,
            owner=_owner,
        )
        groups: dict[Any, list[tuple[list[np.ndarray], int]]] = {}
        for start, stop in runs:
            indices = self.in_place_leaves[start:stop]
            span_columns = [_span([column[i] for i in indices]) for column in columns]
            hp = hps[indices[0]]
            dtypes = tuple(column.dtype for column in span_columns)
            groups.setdefault((dtypes, tuple(sorted((k, _scalar_kind(v)) for k, v in hp.items()))), []).append(
                (span_columns, indices[0])
            )
        # One plan and one set of scratch buffers per dtype and kind of scalars.
        self.runners: list[Any] = []
        for (dtypes, kinds), spans in groups.items():
            span_columns, firsts = [columns for columns, _ in spans], [first for _, first in spans]
            self.runners.append(span_runner(engine, program, self.slot_names, dtypes, kinds, span_columns, firsts, hps))

        if len(self.runners) == 1:
            self.update = self.runners[0].run  # one call less per step

    def update(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run the step in place (only when :attr:`in_place`): ``hps`` as for :meth:`__call__`."""
        for runner in self.runners:
            runner.run(hps)

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run the step with this step's scalars ``hps`` (one mapping per leaf, grouped as when prepared).

        Returns the new parameters and slots, leaf by leaf: the very arrays
        given for leaves updated in place, new arrays for the others.
        """
        new_params = list(self.params)
        new_slots = {name: list(values) for name, values in self.slots.items()}
        for i in self.out_of_place:
            leaf_slots = {name: values[i] for name, values in self.slots.items()}
            with np.errstate(all="ignore"):  # IEEE arithmetic, as the in-place runners and the kernels
                new_p, updated = run_widened(  # in float32 for float16 leaves, as the generic engine
                    self.program, np, np.asarray(self.params[i]), np.asarray(self.grads[i]), leaf_slots, hps[i]
                )
            # NumPy arithmetic on 0-D arrays gives scalars: keep every leaf an array.
            new_params[i] = np.asarray(new_p)
            for name in self.slot_names:
                new_slots[name][i] = np.asarray(updated[name])
        self.update(hps)
        return new_params, new_slots


_ENGINES: weakref.WeakSet[NumpyEngine] = weakref.WeakSet()  # to give each a fresh lock in a forked child


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class NumpyEngine(FusedEngine):
    """In-place evaluation of a program on NumPy arrays: one compiled C loop, or ufuncs on blocks.

    An :class:`~anyoptim.engines.Engine`.  Its only state is caches keyed by
    what they cache (plans by program, dtype, slots and kinds of scalars;
    kernels by plan), guarded by a lock: one instance serves every optimizer
    and thread of a process.

    Parameters
    ----------
    block_size : int, optional
        Elements per block of the ufunc plan.  By default
        :data:`DEFAULT_BLOCK_BYTES` worth of the arrays' dtype: small enough that
        a block's operands and scratch stay in the CPU cache, large enough that
        NumPy's per-call cost is small beside the work.
    kernels : {"auto", "c", "ufunc"}, optional
        How a traced plan runs: ``"c"``, the plan printed as one C loop and
        compiled with the system's C compiler (:mod:`anyoptim.engines.numpy.c_printer`),
        cached on disk; ``"ufunc"``, NumPy ufunc calls on blocks; ``"auto"``,
        C when a working compiler is found, else ufuncs, and ufuncs for any one
        kernel that fails to build (:meth:`kernel`).  Default from
        ``ANYOPTIM_NUMPY_KERNELS``, else ``"auto"``.  Both give the same bits.

    Attributes
    ----------
    name : str
        ``"numpy"``: it runs NumPy arrays only.
    kernels : {"c", "ufunc", "auto"}
        The choice, resolved once at construction (``"auto"`` without a compiler is ``"ufunc"``).
    block_size : int or None
        As given.

    Raises
    ------
    ValueError
        If ``block_size`` is not a positive integer, or ``kernels`` not one of the choices.
    KernelBuildError
        If ``kernels="c"`` and no C compiler is found.

    See Also
    --------
    anyoptim.engines.GenericEngine : The engine that returns new arrays, for any library.

    Notes
    -----
    ``engine="auto"`` (the default) already runs NumPy arrays with this
    engine, one shared instance; make one yourself only to pin ``kernels`` or
    ``block_size``, as tests and benchmarks do.  Parameters and gradients laid
    out by :func:`anyoptim.flatten` (with the slots :meth:`init_slots` makes)
    are one span: one pass updates the whole model.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.engines.numpy import NumpyEngine
    >>> opt = anyoptim.Adam(0.1, engine=NumpyEngine(kernels="ufunc"))
    >>> params = anyoptim.flatten({"W": np.ones((2, 2)), "b": np.zeros(2)})
    >>> W = params["W"]
    >>> state = opt.init(params)
    >>> grads = anyoptim.flatten({"W": np.full((2, 2), 0.5), "b": np.array([1.0, -1.0])})
    >>> for _ in range(2):
    ...     params, state = opt.step(params, grads, state)
    >>> np.round(params["b"], 6), params["W"] is W  # updated in place: the same arrays come back
    (array([-0.2,  0.2]), True)
    >>> np.round(W, 6)
    array([[0.8, 0.8],
           [0.8, 0.8]])
    """

    name = "numpy"

    def __init__(self, block_size: int | None = None, kernels: str | None = None):
        if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        kernels = native.kernels_choice() if kernels is None else kernels
        if kernels not in native.KERNEL_CHOICES:
            raise ValueError(f"kernels must be one of {', '.join(native.KERNEL_CHOICES)}, got {kernels!r}")
        if kernels == "c":
            native.compiler()  # raises now, not in the middle of a step
        elif kernels == "auto" and not native.compiler_found():
            kernels = "ufunc"
        #: The choice, resolved once here ("auto" without a compiler is "ufunc") and never changed:
        #: a kernel that fails to build under "auto" runs as ufuncs alone, other kernels still compile.
        self.kernels = kernels
        self.block_size = block_size
        self._lock = threading.Lock()  # around the two caches (never held while tracing or compiling)
        self._plans: dict[tuple, Plan | None] = {}
        self._kernels: dict[tuple, tuple[Plan, Callable[[int], None] | None]] = {}  # (id(plan), columns) -> ...
        _ENGINES.add(self)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its caches and lock (plans and kernels are rebuilt where it is loaded)."""
        return {"kernels": self.kernels, "block_size": self.block_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.kernels = state["kernels"]
        self.block_size = state["block_size"]
        self._lock = threading.Lock()
        self._plans = {}
        self._kernels = {}
        _ENGINES.add(self)

    def elements_per_block(self, dtype: np.dtype) -> int:
        """Count the elements of ``dtype`` that one block of the ufunc plan holds.

        Parameters
        ----------
        dtype : numpy.dtype
            The arrays' dtype.

        Returns
        -------
        int
            ``block_size`` if given, else :data:`DEFAULT_BLOCK_BYTES` worth of ``dtype`` (at least 1).

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.numpy import NumpyEngine
        >>> NumpyEngine().elements_per_block(np.float32), NumpyEngine(block_size=64).elements_per_block(np.float32)
        (32768, 64)
        """
        if self.block_size is not None:
            return self.block_size
        return max(1, DEFAULT_BLOCK_BYTES // np.dtype(dtype).itemsize)

    def plan(
        self, program: Program, dtype: np.dtype, slot_names: Sequence[str], hp: Mapping[str, Any], kinds: tuple
    ) -> Plan | None:
        """Trace ``program`` into a plan for arrays of ``dtype`` and scalars like ``hp``; cached.

        Parameters
        ----------
        program : Program
            The step to trace.
        dtype : numpy.dtype
            The dtype of the arrays it will run on.
        slot_names : sequence of str
            The state slots, in state order.
        hp : mapping of str to scalar
            One step's scalars: their names and kinds shape the trace, not their values.
        kinds : tuple
            ``(name, kind)`` pairs of ``hp``, sorted; a kind is a scalar's Python type or NumPy dtype (how it promotes).

        Returns
        -------
        Plan or None
            The plan (two threads asking at once get the same one); None if the rule cannot be traced (it
            steps outside the rule contract): the engine then evaluates it as written, block by block.

        Raises
        ------
        ArithmeticError
            If the rule's host scalars cannot be computed from ``hp`` (``lr / 0``),
            as the rule itself raises; nothing is cached then.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.numpy import NumpyEngine
        >>> from anyoptim.engines.program import Program
        >>> sgd = lambda xp, p, g, slots, hp: (p - hp["learning_rate"] * g, {})
        >>> engine, hp = NumpyEngine(), {"learning_rate": 0.1}
        >>> plan = engine.plan(Program(sgd), np.float64, [], hp, (("learning_rate", float),))
        >>> plan is engine.plan(Program(sgd), np.float64, [], hp, (("learning_rate", float),))
        True
        """
        key = (program, np.dtype(dtype), tuple(slot_names), kinds)
        with self._lock:
            if key in self._plans:
                return self._plans[key]
        try:
            trace = trace_program(program, slot_names, hp_signature(hp))
        except Exception:  # whatever stops the tracer, the rule run as written raises it again if it is real
            made = None
        else:
            made = Plan(trace, dtype, hp)
        with self._lock:
            return self._plans.setdefault(key, made)

    def kernel(self, plan: Plan, columns: tuple[str, ...] | None = None) -> Callable[[int], None] | None:
        """Build (once) the compiled C function of ``plan``, or None where the plan runs as ufuncs.

        With ``kernels="auto"`` a kernel that fails to build warns once
        (:class:`~anyoptim.engines.numpy.native.KernelBuildWarning`, once per
        kernel and process) and this plan runs as ufuncs; other plans still get
        their kernels, and the failed one is not built again
        (:func:`~anyoptim.engines.numpy.native.load_kernel` remembers it).

        Parameters
        ----------
        plan : Plan
            A plan made by :meth:`plan`.
        columns : tuple of str, optional
            The dtype each column is stored in (float16 columns of a float32 plan), when not the plan's.

        Returns
        -------
        callable or None
            The C function, called with the number of elements; None with ``kernels="ufunc"``, for a
            plan C cannot print, or (under ``"auto"``) for a kernel that failed to build.

        Raises
        ------
        KernelBuildError
            With ``kernels="c"``, if the kernel does not build or load (each time it is asked for).

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.numpy import NumpyEngine
        >>> from anyoptim.engines.program import Program
        >>> sgd = lambda xp, p, g, slots, hp: (p - hp["learning_rate"] * g, {})
        >>> engine, kinds = NumpyEngine(kernels="ufunc"), (("learning_rate", float),)
        >>> print(engine.kernel(engine.plan(Program(sgd), np.float64, [], {"learning_rate": 0.1}, kinds)))
        None
        """
        if self.kernels == "ufunc":
            return None
        with self._lock:
            found = self._kernels.get((id(plan), columns))
        if found is not None and found[0] is plan:
            return found[1]
        symbol = f"{kernel_name(plan.trace)}_{plan.dtype.name}" + "".join(f"_{name}" for name in columns or ())
        source = c_source(plan, symbol, columns)
        function = None
        if source is not None:
            try:
                function = native.load_kernel(source, symbol)
            except native.KernelBuildError as error:
                if self.kernels == "c":
                    raise
                native.warn_fallback(error)
        with self._lock:  # the entry holds the plan: its id is not reused while the entry lives
            self._kernels[(id(plan), columns)] = (plan, function)
        return function

    def prepare(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> NumpyStep:
        """Bind ``program`` to these very arrays: :meth:`anyoptim.engines.PreparingEngine.prepare`.

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
        NumpyStep
            The prepared step (a :class:`~anyoptim.engines.PreparedRun`): each call runs a step.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.numpy import NumpyEngine
        >>> from anyoptim.engines.program import Program
        >>> sgd = lambda xp, p, g, slots, hp: (p - hp["learning_rate"] * g, {})
        >>> params, hps = [np.array([1.0, 2.0])], [{"learning_rate": 0.1}]
        >>> step = NumpyEngine().prepare(Program(sgd), np, params, [np.array([0.5, -1.0])], {}, hps)
        >>> step.update(hps); step.update(hps); params[0]
        array([0.9, 2.2])
        """
        return NumpyStep(self, program, params, grads, slots, hps)
