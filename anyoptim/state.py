"""The state an optimizer carries from one step to the next, and its registration as a JAX pytree."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from .tree import TreeDef

__all__ = ["OptimizerState", "register_with_jax"]


@dataclass(frozen=True, init=False)
class OptimizerState:
    """What an optimizer carries from one step to the next.

    Immutable: a step returns a new state (whose slot arrays may be the old
    ones, updated in place on mutable libraries).  Optimizers make it
    (:meth:`Optimizer.init <anyoptim.Optimizer.init>`,
    :meth:`Optimizer.step <anyoptim.Optimizer.step>`); each parameter is kept
    as the attribute of the same name.

    Parameters
    ----------
    count : int
        Optimizer steps taken (skipped steps not included).
    learning_rate : float
        The learning rate the last step used (the first step's rate before any step).
    slots : dict of str to tree of arrays
        One tree per state slot, shaped like the parameters (``slots["m"]["W1"]``),
        each array of its parameter's shape, dtype and device.
    skipped : int, default 0
        Steps skipped by ``on_nonfinite="skip"``.
    structure : TreeDef, optional
        The parameters' tree structure, to check every later call against.
    optimizer : str, optional
        The class name of the optimizer that made the state: another optimizer
        refuses it (Adagrad's running sum is not RMSprop's average).  None (a
        state built by hand) is accepted by any optimizer whose slots it has.
    static : tuple of str, default ()
        Which of ``"learning_rate"`` and ``"skipped"`` JAX holds as static data of the pytree, not as leaves: those
        the maker keeps Python numbers under ``jax.jit``.  A name whose value is not a Python number (a 0-D array,
        a traced value) is dropped, so ``static`` is always what the pytree does.  An optimizer's
        :meth:`~anyoptim.Optimizer.init` sets it from its settings (the rate unless it is a schedule, ``skipped``
        unless ``on_nonfinite="skip"``: :func:`~anyoptim.optimizers.traced.static_of`), and its steps keep a scalar
        a leaf once it is one, so a loop's carry keeps its structure.  The default, nothing, makes both leaves.
        Not compared (``==``), not shown.

    Notes
    -----
    A JAX pytree (registered as soon as JAX is loaded and a state is made; anyoptim never imports JAX itself), so
    ``jax.jit(opt.step)(params, grads, state)`` traces it: ``count``, ``slots``, and ``learning_rate`` and
    ``skipped`` unless ``static`` names them are its leaves (the count and a traced rate become 0-D arrays under
    ``jax.jit``, see :mod:`anyoptim.count_math`); ``structure``, ``optimizer``, ``static``, the static numbers and
    the slots' names are its static data (a static number's child is None, which holds no leaf).  A jitted step
    of an optimizer with a constant rate thus passes in and out only the count and the slots, as optax's Adam
    does, and returns the rate as the Python number it is.  A static number is part of the pytree's structure: a
    state whose rate differs (one made before ``opt.learning_rate`` was assigned) is another structure to
    ``jax.jit`` (one more trace) and cannot enter a ``jax.lax.scan`` whose step uses the new rate (JAX's
    structure error shows the static data, which say so);
    ``dataclasses.replace(state, static=())`` makes both scalars leaves.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Adam()
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> state.count, state.learning_rate, sorted(state.slots), state.slots["m"]["w"]
    (0, 0.001, ['m', 'v'], array([0., 0.]))
    >>> params, state = opt.step(params, {"w": np.array([0.5, 0.5])}, state)
    >>> state.count, state.skipped, state.static
    (1, 0, ('learning_rate', 'skipped'))
    """

    count: int
    learning_rate: float
    slots: dict[str, Any]
    skipped: int = 0
    structure: TreeDef | None = field(default=None, repr=False)
    optimizer: str | None = field(default=None, repr=False)
    static: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __init__(
        self,
        count: int,
        learning_rate: float,
        slots: dict[str, Any],
        skipped: int = 0,
        structure: TreeDef | None = None,
        optimizer: str | None = None,
        static: tuple[str, ...] = (),
    ) -> None:
        # The dataclass's own __init__ of a frozen class sets each field with object.__setattr__;
        # storing them in the instance's dict is the same, at half the cost (every step makes a state).
        fields = self.__dict__
        fields["count"] = count
        fields["learning_rate"] = learning_rate
        fields["slots"] = slots
        fields["skipped"] = skipped
        fields["structure"] = structure
        fields["optimizer"] = optimizer
        # Only Python numbers can be static: a name whose value is not one is dropped (a rate chosen on the device).
        if static or type(static) is not tuple:  # () (the default) stays ()
            try:
                static = _STATIC_NOW[static, type(learning_rate) in _HOST_NUMBERS, type(skipped) in _HOST_NUMBERS]
            except (KeyError, TypeError):  # not one of the well-formed tuples: check and order it
                static = _static_now(static, learning_rate, skipped)
        fields["static"] = static
        if _JAX_PENDING and "jax" in sys.modules:
            register_with_jax()

    def stepped(self, count: int, learning_rate: Any, optimizer: str | None) -> OptimizerState:
        """Make the state after a step that updated this state's slots in place.

        What ``OptimizerState(count, learning_rate, self.slots, self.skipped,
        self.structure, optimizer, self.static)`` gives, at half its cost: a
        prepared step makes one every step.

        Parameters
        ----------
        count : int
            The new state's step count.
        learning_rate : float or 0-D array
            The rate of the step just taken.
        optimizer : str or None
            The class name of the optimizer that took it.

        Returns
        -------
        OptimizerState
            A new state with these three fields and this state's slots (the
            same dict), ``skipped``, ``structure`` and ``static`` (a static
            rate stays static only while the rate is a Python number).

        Examples
        --------
        >>> from anyoptim import OptimizerState
        >>> OptimizerState(1, 0.1, {}).stepped(2, 0.05, "SGD")
        OptimizerState(count=2, learning_rate=0.05, slots={}, skipped=0)
        """
        if self.static and type(learning_rate) not in _HOST_NUMBERS:  # a static rate must be a number: re-derive
            fields = (self.slots, self.skipped, self.structure, optimizer, self.static)
            return OptimizerState(count, learning_rate, *fields)
        new = _new_state(OptimizerState)
        fields = new.__dict__
        fields.update(self.__dict__)
        fields["count"] = count
        fields["learning_rate"] = learning_rate
        fields["optimizer"] = optimizer
        if _JAX_PENDING and "jax" in sys.modules:  # JAX imported since this state was made
            register_with_jax()
        return new

    def __setstate__(self, fields: dict[str, Any]) -> None:
        """Unpickle: a state pickled before ``static`` existed gets ``()``, all leaves (what it was then)."""
        self.__dict__.update(fields)
        self.__dict__.setdefault("static", ())
        if _JAX_PENDING and "jax" in sys.modules:
            register_with_jax()


_new_state = object.__new__
_JAX_PENDING = True
_JAX_LOCK = threading.Lock()
_HOST_NUMBERS = frozenset({int, float})
#: What may be static: the names ``static`` holds, in this order.
_SCALARS = ("learning_rate", "skipped")


def _static_now(static: Any, learning_rate: Any, skipped: Any) -> tuple[str, ...]:
    """``static`` as a state holds it: the names of ``_SCALARS`` it gives, in their order, whose values are numbers.

    Raises
    ------
    ValueError
        If ``static`` is not a tuple or list of those names.
    """
    if not isinstance(static, tuple | list) or not all(isinstance(name, str) and name in _SCALARS for name in static):
        raise ValueError(f"OptimizerState's static must be a tuple of names from {_SCALARS}, got {static!r}")
    numbers = (type(learning_rate) in _HOST_NUMBERS, type(skipped) in _HOST_NUMBERS)
    return tuple(name for name, number in zip(_SCALARS, numbers, strict=True) if number and name in static)


#: _static_now's answers for the well-formed ``static`` (the fast path of every state made).
_STATIC_NOW = {
    (static, rate_number, skipped_number): _static_now(
        static, 0.0 if rate_number else None, 0 if skipped_number else None
    )
    for static in ((), ("learning_rate",), ("skipped",), _SCALARS)
    for rate_number in (True, False)
    for skipped_number in (True, False)
}


class _StaticNames(tuple):
    """``static`` as the pytree's static data holds it: equal to the tuple, and a repr that says the way out.

    JAX shows the static data when two structures differ (a ``jax.lax.scan`` carry whose rate changed), so the
    message names the fix there.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return (
            f"static={tuple.__repr__(self)}: these numbers are part of the pytree's structure, so a state of "
            "another learning rate is another structure; dataclasses.replace(state, static=()) makes them leaves"
        )


#: By the state's ``static`` (a state only ever holds one of four): whether the rate and ``skipped`` are static,
#: and the ``static`` its static data holds (``_StaticNames``, for JAX's messages).
_LAYOUT = {
    names: ("learning_rate" in names, "skipped" in names, _StaticNames(names) if names else names)
    for names in _STATIC_NOW.values()
}
#: The children's names: a static scalar's child is None (no leaf), so every state has four children and a
#: structure that differs only there differs in the static data, which JAX shows (``_StaticNames``).
_CHILDREN = ("count", "learning_rate", "slots", "skipped")


def _flatten(state: OptimizerState) -> tuple[tuple, tuple]:
    """The state's pytree children (``_CHILDREN``, None for a static scalar) and static data.

    The static data holds the rate and ``skipped`` themselves where they are static (None where they are children:
    a static one is a number, never None), then ``static``, the slots' names, ``structure`` and ``optimizer``.
    Written for speed: a jitted step flattens its state on every call.
    """
    fields = state.__dict__
    rate_static, skipped_static, static = _LAYOUT[fields["static"]]
    count, slots, rate, skipped = fields["count"], fields["slots"], fields["learning_rate"], fields["skipped"]
    names, structure, optimizer = tuple(slots), fields["structure"], fields["optimizer"]
    if rate_static:
        if skipped_static:
            return (count, None, slots, None), (rate, skipped, static, names, structure, optimizer)
        return (count, None, slots, skipped), (rate, None, static, names, structure, optimizer)
    if skipped_static:
        return (count, rate, slots, None), (None, skipped, static, names, structure, optimizer)
    return (count, rate, slots, skipped), (None, None, static, names, structure, optimizer)


def _unflatten(aux: tuple, children: Any) -> OptimizerState:
    """The state of ``_flatten``'s static data and children."""
    rate, skipped, static, slot_names, structure, optimizer = aux
    count, rate_child, slots, skipped_child = children
    if isinstance(slots, dict) and tuple(slots) != slot_names:  # JAX rebuilds a dict with sorted keys
        slots = {name: slots[name] for name in slot_names}
    return OptimizerState(
        count,
        rate_child if rate is None else rate,
        slots,
        skipped_child if skipped is None else skipped,
        structure,
        optimizer,
        static,
    )


def register_with_jax() -> None:
    """Register :class:`OptimizerState` as a JAX pytree, once (idempotent, thread-safe; imports JAX).

    Children: ``count``, ``learning_rate``, ``slots`` and ``skipped``, where a static scalar's (named in ``static``
    and a Python number) is None, no leaf; static data: those numbers, ``static``, the slots' names in their order
    (JAX rebuilds a dict with sorted keys), ``structure`` and ``optimizer``.
    """
    global _JAX_PENDING
    with _JAX_LOCK:
        if not _JAX_PENDING:
            return
        from jax import tree_util

        keys = tuple(map(tree_util.GetAttrKey, _CHILDREN))

        def flatten_with_keys(state: OptimizerState) -> tuple[tuple, tuple]:
            children, aux = _flatten(state)
            return tuple(zip(keys, children, strict=True)), aux

        tree_util.register_pytree_with_keys(OptimizerState, flatten_with_keys, _unflatten, _flatten)
        _JAX_PENDING = False


if "jax" in sys.modules:  # JAX came first: register now (without JAX loaded, the first state made after it does)
    register_with_jax()
