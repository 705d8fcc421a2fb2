"""What a step does differently while JAX traces it (``jax.jit(opt.step)``): its checks and ``on_nonfinite``.

Under a trace the arrays have shapes and dtypes but no values, so every check of
a value must either wait for the device or become part of the computation:

* ``on_nonfinite="skip"`` becomes a selection: the step is computed, and every
  parameter and slot keeps its old value where any gradient is not finite; the
  count, the rate and ``skipped`` advance accordingly (:class:`SkipByWhere`);
* what the optimizer keeps a Python number under a trace (a constant rate;
  ``skipped`` unless ``on_nonfinite="skip"``) the new state marks static
  (:func:`static_of`), so that JAX holds it as static data of the state, not as a
  leaf: a jitted step then passes no more device arrays in and out than it must;
* ``on_nonfinite="raise"`` cannot raise from the device, so it is refused at
  trace time with a message that says what to use instead;
* a state whose slots are constants of a ``jax.jit`` trace while the parameters
  are traced was closed over (not passed as an argument): the compiled function
  takes the same step from it on every call, which is rarely meant, so it warns
  (:class:`ClosedOverStateWarning`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from ..count_math import is_traced
from ..state import OptimizerState

__all__ = ["ClosedOverStateWarning", "SkipByWhere", "advance", "static_of", "under_trace"]

RAISE_UNDER_TRACE = (
    "on_nonfinite='raise' cannot run under jax.jit: whether a gradient is finite is not known while the step is "
    "traced, and the compiled step cannot raise. Use on_nonfinite='skip' (which keeps the old parameters and state "
    "where a gradient is not finite, by selection on the device), or run the step without jax.jit"
)
_NUMBERS = frozenset({int, float})
CLOSED_OVER_STATE = (
    "the optimizer state is a constant of this jax.jit trace while the params are traced: it was closed over, not "
    "passed as an argument, so the compiled function takes the same step from this very state on every call. Pass "
    "the state in and take the new one out: params, state = jax.jit(opt.step)(params, grads, state)"
)


class ClosedOverStateWarning(UserWarning):
    """A jitted step reads a state that the trace closed over: every call of the compiled step starts from it.

    Examples
    --------
    For code that means it, the warning can be silenced:

    >>> import warnings
    >>> from anyoptim.optimizers.traced import ClosedOverStateWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", ClosedOverStateWarning)
    """


@dataclass(frozen=True)
class SkipByWhere:
    """``on_nonfinite="skip"`` under a trace: keep the old values wherever ``flag`` (a 0-D bool array) holds.

    Parameters
    ----------
    xp : namespace
        The arrays' namespace.
    flag : 0-D bool array
        True when some gradient holds NaN or infinity.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, anyoptim
    >>> opt = anyoptim.SGD(0.1, on_nonfinite="skip")
    >>> params = {"w": jnp.array([1.0, 2.0])}
    >>> params, state = jax.jit(opt.step)(params, {"w": jnp.array([jnp.nan, 1.0])}, opt.init(params))
    >>> params["w"].tolist(), int(state.count), int(state.skipped)
    ([1.0, 2.0], 0, 1)
    """

    xp: Any
    flag: Any

    def select(
        self,
        old: tuple[list[Any], dict[str, list[Any]]],
        new: tuple[list[Any], dict[str, list[Any]]],
        state: OptimizerState,
        count: Any,
        learning_rate: Any,
    ) -> tuple[list[Any], dict[str, list[Any]], Any, Any, Any]:
        """Keep the old parameters, slots, count and rate where the step is skipped.

        Parameters
        ----------
        old, new : (list of arrays, dict of str to list of arrays)
            The parameters' and the slots' leaves before and after the step.
        state : OptimizerState
            The state the step started from.
        count, learning_rate : 0-D array or number
            The step's count (steps taken before it) and rate.

        Returns
        -------
        params, slots : list and dict of lists of arrays
            The leaves to return.
        count, learning_rate, skipped : 0-D array
            The new state's count, rate and skipped steps (the rate a Python number
            when the old and the new one are the same number).

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> from anyoptim.state import OptimizerState
        >>> from anyoptim.optimizers.traced import SkipByWhere
        >>> skip, state = SkipByWhere(jnp, jnp.asarray(True)), OptimizerState(3, 0.5, {}, 0)
        >>> params, _, count, rate, skipped = skip.select(([jnp.zeros(2)], {}), ([jnp.ones(2)], {}), state, 3, 0.25)
        >>> params[0].tolist(), int(count), float(rate), int(skipped)  # the old params and rate, one more skipped
        ([0.0, 0.0], 3, 0.5, 1)
        """
        xp, flag = self.xp, self.flag
        (old_params, old_slots), (new_params, new_slots) = old, new
        params = [xp.where(flag, before, after) for before, after in zip(old_params, new_params, strict=True)]
        slots = {
            name: [xp.where(flag, before, after) for before, after in zip(old_slots[name], values, strict=True)]
            for name, values in new_slots.items()
        }
        taken = xp.where(flag, 0, 1)
        rate = state.learning_rate
        if not (type(rate) in _NUMBERS and type(learning_rate) in _NUMBERS and rate == learning_rate):
            rate = xp.where(flag, rate, learning_rate)  # else the same number either way: it stays a number
        return params, slots, count + taken, rate, state.skipped + (1 - taken)


def static_of(optimizer: Any, state: OptimizerState | None = None) -> tuple[str, ...]:
    """Which of a new state's scalars stay Python numbers under ``jax.jit``: its ``static``.

    Those ``optimizer`` keeps numbers: the learning rate unless it is a schedule
    (a function of the traced count), the skipped steps unless
    ``on_nonfinite="skip"`` (which counts them on the device); and of those, the
    ones ``state`` (the state a step started from) holds static.  A scalar that
    was a leaf stays one, so a ``jax.lax.scan`` carry keeps its structure.

    Parameters
    ----------
    optimizer : object
        An optimizer: its ``learning_rate`` and ``on_nonfinite`` are read (a missing one keeps its scalar a leaf).
    state : OptimizerState, optional
        The state a step started from; None for :meth:`~anyoptim.Optimizer.init`.

    Returns
    -------
    tuple of str
        ``"learning_rate"`` and ``"skipped"``, or those of them that stay numbers.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.optimizers.traced import static_of
    >>> static_of(anyoptim.Adam(0.1)), static_of(anyoptim.Adam(lambda count: 0.1 / (1 + count), on_nonfinite="skip"))
    (('learning_rate', 'skipped'), ())
    >>> static_of(anyoptim.Adam(0.1), anyoptim.OptimizerState(0, 0.1, {}, 0, static=("skipped",)))
    ('skipped',)
    """
    rate = not callable(getattr(optimizer, "learning_rate", callable))
    skipped = getattr(optimizer, "on_nonfinite", "skip") != "skip"
    if state is not None:
        rate, skipped = rate and "learning_rate" in state.static, skipped and "skipped" in state.static
    return _STATIC[rate, skipped]


#: static_of's answers, by (the rate stays a number, ``skipped`` does).
_STATIC = {
    (True, True): ("learning_rate", "skipped"),
    (True, False): ("learning_rate",),
    (False, True): ("skipped",),
    (False, False): (),
}


def advance(
    skip: SkipByWhere | None,
    old: tuple[list[Any], dict[str, list[Any]]],
    new: tuple[list[Any], dict[str, list[Any]]],
    state: OptimizerState,
    count: Any,
    learning_rate: Any,
    optimizer: Any = None,
) -> tuple[list[Any], dict[str, list[Any]], Any, Any, Any, tuple[str, ...]]:
    """The leaves and the new state's count, rate, skipped steps and ``static`` of a step that was computed.

    Parameters
    ----------
    skip : SkipByWhere or None
        What :func:`under_trace` returned: None when the step is taken as computed.
    old, new, state, count, learning_rate
        As :meth:`SkipByWhere.select`'s.
    optimizer : object, optional
        The optimizer taking the step: its settings and ``state`` give the new state's ``static``
        (:func:`static_of`); None gives ``()``.

    Returns
    -------
    params, slots, count, learning_rate, skipped
        As :meth:`SkipByWhere.select`'s; without ``skip``, ``new`` and ``count + 1``.
    static : tuple of str
        The new state's ``static``.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.state import OptimizerState
    >>> from anyoptim.optimizers.traced import advance
    >>> state = OptimizerState(3, 0.1, {}, 2, static=("learning_rate", "skipped"))
    >>> advance(None, ([0.0], {}), ([1.0], {}), state, 3, 0.2, anyoptim.SGD(0.2))
    ([1.0], {}, 4, 0.2, 2, ('learning_rate', 'skipped'))
    """
    static = () if optimizer is None else static_of(optimizer, state)
    if skip is None:
        return *new, count + 1, learning_rate, state.skipped, static
    return *skip.select(old, new, state, count, learning_rate), static


def under_trace(
    policy: str, xp: Any, p_leaves: list[Any], g_leaves: list[Any], slots: dict[str, list[Any]]
) -> SkipByWhere | None:
    """Check a step that JAX may be tracing; return how ``on_nonfinite="skip"`` runs there.

    Parameters
    ----------
    policy : {"ignore", "raise", "skip"}
        The optimizer's ``on_nonfinite``.
    xp : namespace
        The arrays' namespace.
    p_leaves, g_leaves : list of arrays
        The parameters and gradients.
    slots : dict of str to list of arrays
        The state's slot leaves.

    Returns
    -------
    SkipByWhere or None
        The selection, for ``"skip"`` with traced gradients; None otherwise (the
        eager policy applies: nothing is traced, or there is nothing to check).

    Raises
    ------
    TypeError
        For ``"raise"`` with traced gradients.

    Warns
    -----
    ClosedOverStateWarning
        When ``jax.jit`` traces the parameters but the state's slots are constants of the trace.
    """
    # jax.jit stages its trace into a jaxpr; jax.grad or jax.vmap of a step from a fixed state is meant and not warned.
    if type(p_leaves[0]).__name__ == "DynamicJaxprTracer" and any(
        not is_traced(leaf) for leaves in slots.values() for leaf in leaves
    ):
        warnings.warn(CLOSED_OVER_STATE, ClosedOverStateWarning, stacklevel=3)
    if policy == "ignore" or not any(is_traced(g) for g in g_leaves):
        return None
    if policy == "raise":
        raise TypeError(RAISE_UNDER_TRACE)
    flag = None
    for g in g_leaves:
        bad = xp.logical_not(xp.all(xp.isfinite(g)))
        flag = bad if flag is None else xp.logical_or(flag, bad)
    return SkipByWhere(xp, flag)
