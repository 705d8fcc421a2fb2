"""Engines: how a :class:`~anyoptim.engines.program.Program` runs on a given array library.

Every engine runs the same program; they differ only in how:

* :class:`~anyoptim.engines.generic.GenericEngine` applies it leaf by leaf with
  the arrays' own namespace and returns new arrays (any Array API library,
  immutable ones included);
* :class:`~anyoptim.engines.numpy.NumpyEngine` evaluates it on cache-sized
  blocks of flat buffers and writes the results back in place;
* :class:`~anyoptim.engines.cupy.CupyEngine` traces it into one CUDA kernel per
  contiguous run of parameters.

What an engine is, is written once here: the :class:`Engine` protocol (and
:class:`PreparingEngine` with :class:`PreparedRun` for the fused engines that
bind a program to fixed arrays).  :func:`select_engine` chooses one from the
parameters' namespace; it is the only place outside the engines that knows
which libraries have a fused engine.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .._namespace import backend_name
from .execute import run_programs
from .generic import GenericEngine
from .program import Program

__all__ = [
    "ENGINE_CHOICES",
    "Engine",
    "GenericEngine",
    "PreparedRun",
    "PreparingEngine",
    "check_engine",
    "matmul",
    "run_programs",
    "select_engine",
]


class Engine(Protocol):
    """How a program runs on one array library: the one definition of the engine call.

    Every engine has these members; the optimizer calls them positionally, as
    ``engine.apply(program, xp, params, grads, slots, hps)``.  A fused engine
    also has :meth:`PreparingEngine.prepare`.

    Parameters
    ----------
    *args, **kwargs : object
        None: a protocol is a type for annotations and checks, never
        instantiated (``typing.Protocol`` gives every protocol this signature).

    Attributes
    ----------
    name : str
        The library whose arrays the engine runs (``"numpy"``, ``"cupy"``), or
        ``"generic"`` for one that runs any Array API library.

    See Also
    --------
    GenericEngine, anyoptim.engines.numpy.NumpyEngine, anyoptim.engines.cupy.CupyEngine

    Examples
    --------
    One heavy-ball step on each engine of NumPy arrays:

    >>> import numpy as np
    >>> from anyoptim.engines import select_engine
    >>> from anyoptim.engines.program import Program
    >>> def heavy_ball(xp, p, g, slots, hp):
    ...     v = hp["beta"] * slots["v"] + g
    ...     return p - hp["learning_rate"] * v, {"v": v}
    >>> program = Program(heavy_ball, slot_names=("v",))
    >>> hp = {"learning_rate": 0.1, "beta": 0.9}
    >>> for engine in (select_engine(np, "generic"), select_engine(np, "fused")):
    ...     params, grads = [np.array([1.0, 2.0])], [np.array([0.5, -1.0])]
    ...     slots = engine.init_slots(np, params, {"v": 0.0})
    ...     params, slots = engine.apply(program, np, params, grads, slots, [hp])
    ...     print(engine.name, params[0], slots["v"][0])
    generic [0.95 2.1 ] [ 0.5 -1. ]
    numpy [0.95 2.1 ] [ 0.5 -1. ]
    """

    name: str

    def init_slots(self, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
        """New state slots, one array per leaf and slot, shaped and typed like the leaves.

        Parameters
        ----------
        xp : namespace
            The Array API namespace of ``leaves``.
        leaves : sequence of arrays
            The parameters, any shapes, floating dtypes, on one device.
        fills : mapping of str to float
            Slot name -> the value every element of that slot starts at.

        Returns
        -------
        dict of str to list of arrays
            Slot name -> one array per leaf, the shape, dtype and device of
            that leaf, filled with the slot's value.  A fused engine lays each
            slot out as views of one flat buffer per dtype, back to back in
            leaf order, so that a flattened model and its state form one span
            (:func:`~anyoptim.engines.spans.flat_slots`).
        """
        ...

    def apply(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run ``program`` once on every leaf: one optimizer step.

        Parameters
        ----------
        program : Program
            One step for one array (:class:`~anyoptim.engines.program.Program`);
            engines never see the optimizer class.
        xp : namespace
            The Array API namespace of every array below.
        params : sequence of arrays
            The parameters, one array per leaf, any shapes, a floating dtype each.
        grads : sequence of arrays
            Their gradients, leaf by leaf of the same shape as the parameter
            (the fused engines want the same dtype too).  Only read.
        slots : mapping of str to sequence of arrays
            Slot name (in the order of ``program.slot_names``) -> one array per
            leaf, of its parameter's shape and dtype.
        hps : sequence of mapping of str to scalar
            One mapping per leaf: scalar name -> its value this step (a Python
            number, a NumPy scalar, or a 0-D array on the leaves' device, such
            as the global-norm scale): learning rate, betas, bias corrections.
            Leaves with the same scalars share the very same mapping object: the
            fused engines join leaves into runs by identity, never by value.

        Returns
        -------
        new_params : list of arrays
            The updated parameters, in leaf order.
        new_slots : dict of str to list of arrays
            The updated slots, with the keys of ``slots``, in leaf order.

        Notes
        -----
        *In place*: a fused engine writes the results of every leaf it can
        (C-contiguous, writeable arrays of its library) into the very arrays
        given, and returns those objects; other leaves, and every leaf of the
        generic engine, get new arrays.  Callers use the returned arrays and
        treat the given parameters and slots as consumed.  Gradients are never
        written.
        """
        ...


class PreparedRun(Protocol):
    """A program bound to fixed arrays by :meth:`PreparingEngine.prepare`: one step per call.

    Parameters
    ----------
    *args, **kwargs : object
        None: a protocol is a type for annotations and checks, never
        instantiated (``typing.Protocol`` gives every protocol this signature).

    Attributes
    ----------
    in_place : bool
        Whether every leaf is updated in place, so that the returned arrays are
        always the ones given to ``prepare`` (only then may :meth:`update` be used).

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines import select_engine
    >>> from anyoptim.engines.program import Program
    >>> def sgd(xp, p, g, slots, hp):
    ...     return p - hp["learning_rate"] * g, {}
    >>> engine = select_engine(np, "fused")
    >>> params, grads, hps = [np.array([1.0, 2.0])], [np.array([0.5, -1.0])], [{"learning_rate": 0.1}]
    >>> run = engine.prepare(Program(sgd), np, params, grads, {}, hps)
    >>> run.in_place
    True
    >>> for _ in range(2):
    ...     run.update(hps)
    >>> params[0]
    array([0.9, 2.2])
    """

    in_place: bool

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run one step with this step's scalars ``hps``; return as :meth:`Engine.apply` does.

        ``hps`` is one mapping per leaf, grouped as when prepared: leaves that
        shared one mapping object then share one now.
        """
        ...

    def update(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run one step in place, building no results (only when :attr:`in_place`).

        Parameters
        ----------
        hps : sequence of mapping of str to scalar
            This step's scalars, one mapping per leaf, grouped as when prepared.
        """
        ...


class PreparingEngine(Engine, Protocol):
    """A fused engine: :class:`Engine` plus :meth:`prepare`, which binds a program to fixed arrays.

    The optimizer prepares each program once for the arrays of a step and,
    while the next calls pass the very same arrays, runs the prepared step
    without validating again.  :meth:`Engine.apply` is then ``prepare(...)(hps)``.

    Parameters
    ----------
    *args, **kwargs : object
        None: a protocol is a type for annotations and checks, never
        instantiated (``typing.Protocol`` gives every protocol this signature).

    Examples
    --------
    Prepare once, then step twice on the same arrays (updated in place):

    >>> import numpy as np
    >>> from anyoptim.engines import select_engine
    >>> from anyoptim.engines.program import Program
    >>> def heavy_ball(xp, p, g, slots, hp):
    ...     v = hp["beta"] * slots["v"] + g
    ...     return p - hp["learning_rate"] * v, {"v": v}
    >>> engine = select_engine(np, "fused")
    >>> params, grads = [np.array([1.0, 2.0])], [np.array([0.5, -1.0])]
    >>> slots = engine.init_slots(np, params, {"v": 0.0})
    >>> hps = [{"learning_rate": 0.1, "beta": 0.9}]
    >>> run = engine.prepare(Program(heavy_ball, slot_names=("v",)), np, params, grads, slots, hps)
    >>> for _ in range(2):
    ...     new_params, new_slots = run(hps)
    >>> new_params[0] is params[0], params[0], slots["v"][0]
    (True, array([0.855, 2.29 ]), array([ 0.95, -1.9 ]))
    """

    def prepare(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> PreparedRun:
        """Bind ``program`` to these very arrays; the arguments are those of :meth:`Engine.apply`.

        Finds the runs of leaves that lie back to back, makes their plans or
        kernels (and may raise as building them does), and runs nothing.  The
        arrays must stay the same objects with the same layout between calls
        of the result (the optimizer checks this before reusing it), and
        ``hps`` must keep the grouping it has here.

        Parameters
        ----------
        program : Program
            The step to bind.
        xp : namespace
            The arrays' Array API namespace.
        params, grads : sequence of arrays
            One parameter and its gradient per leaf.
        slots : mapping of str to sequence of arrays
            Each slot's arrays, one per leaf.
        hps : sequence of mapping of str to scalar
            Each leaf's scalars, in the grouping every later call keeps.

        Returns
        -------
        PreparedRun
            Called with each step's ``hps``, it runs a step.
        """
        ...


ENGINE_CHOICES = ("auto", "generic", "fused")

_GENERIC = GenericEngine()
_FUSED: dict[str, Any] = {}


def _fused_engine(backend: str) -> Any | None:
    """The one fused engine of ``backend`` in this process (None if it has none), made at first use.

    Two threads asking at once get the same engine (``setdefault`` on a str key is atomic).
    """
    if backend not in _FUSED:
        made: Any = None
        if backend == "numpy":
            from .numpy.engine import NumpyEngine

            made = NumpyEngine()
        elif backend == "cupy":
            from .cupy.engine import CupyEngine

            made = CupyEngine()
        elif backend in ("torch", "torch-generic"):  # torch tensors through views: engines/torch_bridge.py
            from .torch_bridge import TorchEngine

            made = TorchEngine(lambda: _fused_engine("numpy"), _cupy_views, fused=backend == "torch")
        _FUSED.setdefault(backend, made)
    return _FUSED[backend]


def _cupy_views() -> tuple[Any, Any] | None:
    """The CuPy engine and its DLPack view maker, for torch's CUDA tensors (None without CuPy); found once."""
    if "cupy-views" not in _FUSED:
        import importlib.util

        made = None
        if importlib.util.find_spec("cupy") is not None:
            engine = _fused_engine("cupy")
            made = (engine, engine.device.from_dlpack)
        _FUSED.setdefault("cupy-views", made)
    return _FUSED["cupy-views"]


def check_engine(name: str, value: Any) -> Any:
    """Validate an optimizer's ``engine`` setting: one of :data:`ENGINE_CHOICES`, or an engine object.

    An engine object (``NumpyEngine(kernels="ufunc")``, say) is for tests and
    benchmarks that pin how the update runs; it needs ``init_slots`` and ``apply``
    (see :class:`Engine`).

    Parameters
    ----------
    name : str
        The setting's name, for the message (``"engine"``).
    value : {"auto", "generic", "fused"} or engine object
        The setting.

    Returns
    -------
    str or engine object
        ``value`` itself.

    Raises
    ------
    ValueError
        If ``value`` is another string, a class, or an object without callable
        ``init_slots`` and ``apply``.

    See Also
    --------
    select_engine : Turns the setting into an engine at each step.

    Examples
    --------
    >>> from anyoptim.engines import GenericEngine, check_engine
    >>> check_engine("engine", "auto")
    'auto'
    >>> check_engine("engine", GenericEngine()).name
    'generic'
    >>> check_engine("engine", "fast")
    Traceback (most recent call last):
    ...
    ValueError: engine must be one of 'auto', 'generic', 'fused'; got 'fast'
    """
    if isinstance(value, str):
        if value not in ENGINE_CHOICES:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, ENGINE_CHOICES))}; got {value!r}")
        return value
    if isinstance(value, type) or not all(callable(getattr(value, method, None)) for method in ("init_slots", "apply")):
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, ENGINE_CHOICES))} or an engine object "
            f"(with init_slots and apply); got {value!r}"
        )
    return value


def select_engine(xp: Any, choice: Any) -> Any:
    """The engine for namespace ``xp``: ``"auto"`` picks the fused one where it exists.

    ``choice`` may also be an engine object (see :func:`check_engine`); a fused
    engine object must be the one of ``xp``'s library.  The optimizers call
    this at every ``init`` and ``step`` with their ``engine`` setting.

    Parameters
    ----------
    xp : module
        The Array API namespace of the parameters (``numpy``, ``cupy``,
        ``torch``, or their ``array_api_compat`` wrappers, ...).
    choice : {"auto", "generic", "fused"} or engine object
        ``"auto"``: the fused engine of ``xp``'s library (NumPy, CuPy, torch through
        :class:`~anyoptim.engines.torch_bridge.TorchEngine`), else the generic
        one.  ``"generic"``: the :class:`GenericEngine` (for torch, a
        ``TorchEngine`` that runs the rule with torch and writes in place).  ``"fused"``:
        the fused engine, or an error.  An engine object (one with ``name``,
        ``init_slots`` and ``apply``) is returned as it is.

    Returns
    -------
    Engine
        The chosen engine.  The built-in ones are made once per process, at first
        use, and shared by every optimizer and thread.

    Raises
    ------
    ValueError
        If ``choice`` is ``"fused"`` and ``xp`` has no fused engine, or an engine
        object of another library.

    See Also
    --------
    check_engine : Validates the setting when an optimizer is made.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines import GenericEngine, select_engine
    >>> select_engine(np, "auto").name, select_engine(np, "generic").name
    ('numpy', 'generic')
    >>> select_engine(np, "auto") is select_engine(np, "fused")
    True
    >>> engine = GenericEngine()
    >>> select_engine(np, engine) is engine
    True
    """
    backend = backend_name(xp)
    if choice == "generic":  # torch's runs the rule with torch and writes back in place
        return _fused_engine("torch-generic") if backend == "torch" else _GENERIC
    if not isinstance(choice, str):
        runs = getattr(choice, "name", "generic")
        if runs not in ("generic", backend):
            raise ValueError(f"engine {type(choice).__name__} runs {runs} arrays, not {backend} arrays")
        return choice
    fused = _fused_engine(backend)
    if fused is not None:
        return fused
    if choice == "fused":
        raise ValueError(f"engine='fused' is not available for {backend} arrays; use 'auto' or 'generic'")
    return _GENERIC


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` — or, while a CUDA graph is being recorded, the CuPy engine's capturable product.

    CuPy refuses cuBLAS calls during stream capture; model code that calls this
    instead of ``@`` can be captured whole by
    :class:`anyoptim.engines.cupy.GraphedStep`.  Outside a capture it is ``@``.
    :class:`anyoptim.MLP` computes every product with it.

    Parameters
    ----------
    a : array, shape (n,) or (m, n)
        The left operand, of any Array API library (during a capture, a
        float32 or float64 CuPy array).
    b : array, shape (n,) or (n, k)
        The right operand, of ``a``'s library and dtype.

    Returns
    -------
    array
        ``a @ b``, of shape (m, k), (m,), (k,) or () as for ``@``; during a
        capture computed by :func:`anyoptim.engines.cupy.matmul`, without cuBLAS.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines import matmul
    >>> a = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> matmul(a, np.array([1.0, 1.0]))
    array([3., 7.])
    >>> matmul(np.array([1.0, 0.0]), a)
    array([1., 2.])
    """
    cupy_engine = sys.modules.get("anyoptim.engines.cupy")
    if cupy_engine is not None and cupy_engine.capturing():
        if a.ndim == 1:
            return cupy_engine.matmul(a[None, :], b)[0]
        return cupy_engine.matmul(a, b)
    return a @ b
