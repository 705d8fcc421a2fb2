"""One epoch of :func:`anyoptim.fit` on JAX as one compiled function: forward, backward and update, every mini-batch.

JAX dispatches each operation from Python, so an eager epoch of the lesson's
small network costs far more than its arithmetic.  :func:`jitted_epoch` traces
the training step once (the MLP's own ``value_and_grad``, then the optimizer's
``step``, whose state is a pytree) and runs it over the epoch's full batches
with ``jax.lax.scan``, after the shuffle (the host draws the order, as for the
eager loop, and the device gathers the rows); the smaller last batch, if any, is the same step traced
at its own shape inside the same compiled function.  The batches, their order,
each batch's loss and the running sum of the losses are those of the eager
loop, so the cost history equals the eager one.  The trace holds the
optimizer's settings: those assigned between epochs (a callback lowering the
rate) are traced anew, as the eager loop reads them every step.  Inside the
compiled epoch the state's count, rate and skipped steps are all leaves (its
``static`` emptied), so the scan's carry keeps one structure whatever the
rate; between epochs they come back to the host as Python numbers (with
the epoch's cost, in one transfer), so callbacks and the result see the state
the eager loop gives.
"""

from __future__ import annotations

import importlib
import warnings
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .._namespace import array_namespace, backend_name
from ..engines.precision import compute_dtype
from ..optimizers.base import Optimizer
from ..optimizers.settings import same_settings, settings_of
from ..optimizers.traced import static_of
from ..state import OptimizerState
from .data import Seed, epoch_seed, host_permutation
from .mlp import MLP

__all__ = ["jitted_epoch", "wants_jit"]


def wants_jit(jit: Any, xp: Any, optimizer: Any) -> bool:
    """Decide whether :func:`anyoptim.fit` compiles its epochs, from its ``jit`` argument.

    Parameters
    ----------
    jit : bool or None
        ``fit``'s argument: None chooses (JAX arrays, an anyoptim optimizer whose
        ``step`` is :meth:`Optimizer.step <anyoptim.Optimizer.step>`, and an
        ``on_nonfinite`` other than ``"raise"``, which cannot run under
        ``jax.jit``); True insists; False trains eagerly.
    xp : namespace
        The training data's namespace.
    optimizer : object
        ``fit``'s optimizer.

    Returns
    -------
    bool
        True to compile the epochs.

    Raises
    ------
    ValueError
        If ``jit`` is True but the arrays are not JAX's, or ``jit`` is not True, False or None.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> from anyoptim.nn.jitted import wants_jit
    >>> wants_jit(None, np, anyoptim.Adam())
    False
    """
    if jit not in (None, True, False):
        raise ValueError(f"jit must be True, False or None, got {jit!r}")
    on_jax = backend_name(xp) == "jax"
    if jit is True and not on_jax:
        raise ValueError(f"jit=True compiles the training step with JAX, but the data are {backend_name(xp)} arrays")
    if jit is None:
        own_step = getattr(optimizer.step, "__func__", None) is Optimizer.step
        return on_jax and own_step and getattr(optimizer, "on_nonfinite", None) != "raise"
    return jit


def jitted_epoch(
    model: MLP, optimizer: Any, X: Any, targets: Any, seed: Seed, batch_size: int, insist: bool = True
) -> Callable[[Any, Any, int], tuple[Any, Any, float] | None]:
    """Compile one epoch of mini-batch training: ``epoch(params, state, epoch) -> (params, state, total)``.

    Parameters
    ----------
    model : MLP
        The network (its ``value_and_grad`` gives each batch's loss and gradients).
    optimizer : object
        The optimizer: its ``step`` must be traceable by ``jax.jit`` (every anyoptim optimizer's is).
    X : array, shape (n_samples, n_features)
        The training inputs, a JAX array.
    targets : array
        The targets :meth:`MLP.targets <anyoptim.MLP.targets>` made of the labels, one row per sample.
    seed : int or sequence of int
        The shuffling seed: epoch ``e`` takes its rows in the order of
        :func:`~anyoptim.nn.data.host_permutation` for :func:`~anyoptim.nn.data.epoch_seed`, as :func:`anyoptim.fit`.
    batch_size : int
        Rows per batch: ``n_samples // batch_size`` full batches, then the remainder.
    insist : bool, default True
        What a step that cannot be traced (a schedule that reads the traced count
        on the host, with :mod:`math`) does: raise (``fit(jit=True)``), or warn and
        return None from then on, leaving the params and state as they were, for
        :func:`anyoptim.fit` to train eagerly (``jit=None``, which the scikit-learn
        estimators cannot change).

    Returns
    -------
    callable
        ``epoch(params, state, e)``: the new params, the new state (count, rate
        and skipped steps as Python numbers) and the sum of the batches' losses,
        each times its rows (a float: the epoch's cost times ``n_samples``); None
        when the step cannot be traced and ``insist`` is False.

    Raises
    ------
    TypeError
        When called, if the step cannot be traced and ``insist`` is True:
        ``fit(..., jit=False)`` trains eagerly.

    Warns
    -----
    UserWarning
        When called, if the step cannot be traced and ``insist`` is False.

    Examples
    --------
    >>> import jax.numpy as jnp, anyoptim
    >>> from anyoptim.nn.jitted import jitted_epoch
    >>> X, y = anyoptim.datasets.make_moons(n_samples=10, seed=0, xp=jnp, dtype=jnp.float32)
    >>> model, optimizer = anyoptim.MLP([2, 3, 1]), anyoptim.Adam(0.01)
    >>> params = model.init(seed=0, like=X)
    >>> epoch = jitted_epoch(model, optimizer, X, model.targets(y, jnp, X.dtype), seed=0, batch_size=4)
    >>> params, state, total = epoch(params, optimizer.init(params), 0)
    >>> state.count, total > 0  # three steps: two batches of 4, one of 2
    (3, True)
    """
    jax = importlib.import_module("jax")
    xp = array_namespace(X)
    n_samples = X.shape[0]
    full, rest = divmod(n_samples, batch_size)
    # Weakly held, so that the compiled epochs kept for the optimizer do not keep it alive.
    model_of, optimizer_of = _referent(model), _referent(optimizer)

    def batch_step(carry: tuple, batch: tuple) -> tuple[tuple, None]:
        params, state, total = carry
        X_batch, t_batch = batch
        loss, grads = model_of().value_and_grad(xp, params, X_batch, t_batch)
        params, state = optimizer_of().step(params, grads, state)
        return (params, state, total + loss * X_batch.shape[0]), None

    def epoch(params: Any, state: Any, X: Any, t: Any, order: Any) -> tuple[Any, Any, Any]:
        X, t = xp.take(X, order, axis=0), xp.take(t, order, axis=0)
        carry = (params, state, xp.zeros((), dtype=compute_dtype(xp, [X.dtype])))  # float16 losses: float32 sum
        if full:
            rows = full * batch_size
            batches = (
                xp.reshape(X[:rows, ...], (full, batch_size, *X.shape[1:])),
                xp.reshape(t[:rows, ...], (full, batch_size, *t.shape[1:])),
            )
            # A new function each trace: scan caches its trace by the function, and settings may have changed.
            carry, _ = jax.lax.scan(lambda carry, batch: batch_step(carry, batch), carry, batches)
        if rest:
            carry, _ = batch_step(carry, (X[n_samples - rest :, ...], t[n_samples - rest :, ...]))
        return carry

    tracing_errors = tuple(
        getattr(jax.errors, name)
        for name in ("ConcretizationTypeError", "TracerBoolConversionError", "TracerIntegerConversionError")
    )
    # The trace holds the settings of the optimizer and the model as constants: one a callback assigns (a lower
    # rate) traces anew.  Kept per optimizer between calls of fit (partial_fit runs one epoch per call).
    kept = _kept_epochs(optimizer)
    key = (id(model), n_samples, batch_size)
    failed = False

    def run(params: Any, state: Any, epoch_index: int) -> tuple[Any, Any, float] | None:
        nonlocal failed
        if failed:
            return None
        settings = (settings_of(optimizer), settings_of(model))
        found = kept.get(key)
        if found is None or found[0]() is not model or not all(map(same_settings, found[1], settings)):
            while len(kept) >= _KEPT_PER_OPTIMIZER:  # the oldest goes (partial_fit on chunks of changing sizes)
                kept.pop(next(iter(kept)))
            found = kept[key] = (model_of, settings, jax.jit(lambda *args: epoch(*args)))  # new: not the cached trace
        # A host array as it is: jit moves it with the call (xp.asarray(..., device=) costs more than the epoch).
        order = host_permutation(n_samples, epoch_seed(seed, epoch_index)).astype("int32")
        before = state
        try:  # every scalar a leaf, and so kept by the steps: the scan's carry keeps one structure whatever the rate
            params, state, total = found[2](params, _every_scalar_a_leaf(state), X, targets, order)
        except tracing_errors as error:
            kept.pop(key, None)
            if not insist:  # nothing has changed: JAX's arrays are immutable, and the error came while tracing
                failed = True
                warnings.warn(
                    f"fit could not compile this optimizer's step with jax.jit ({type(error).__name__}: a schedule "
                    "that computes with math on the count?) and trains eagerly, many times slower; write the schedule "
                    "with anyoptim.count_math to compile it, or pass jit=False to fit",
                    UserWarning,
                    stacklevel=3,
                )
                return None
            raise TypeError(
                f"fit compiles the training step with jax.jit on JAX arrays, and this optimizer's step could not be "
                f"traced ({type(error).__name__}); pass jit=False to fit to train eagerly"
            ) from error
        if not isinstance(state, OptimizerState):
            return params, state, float(total)
        # The numbers the eager loop keeps as Python numbers, brought back with the cost in one transfer.
        total, count, rate, skipped = jax.device_get((total, state.count, state.learning_rate, state.skipped))
        state = OptimizerState(
            int(count),
            float(rate),
            state.slots,
            int(skipped),
            state.structure,
            state.optimizer,
            static_of(optimizer, before),
        )
        return params, state, float(total)

    return run


#: Compiled epochs by optimizer (weakly: an entry goes with its optimizer), then by model, rows and batch size.
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KEPT_PER_OPTIMIZER = 4


def _kept_epochs(optimizer: Any) -> dict:
    """The compiled epochs kept for ``optimizer``: a new dict for one that cannot be weakly referred to."""
    try:
        return _KEPT.setdefault(optimizer, {})
    except TypeError:
        return {}


def _every_scalar_a_leaf(state: Any) -> Any:
    """The state with ``static`` emptied, so that a new rate (a callback's) is not a new structure of the carry."""
    return replace(state, static=()) if isinstance(state, OptimizerState) and state.static else state


def _referent(thing: Any) -> Callable[[], Any]:
    """``f() -> thing``: a weak reference where ``thing`` allows one."""
    try:
        return weakref.ref(thing)
    except TypeError:
        return lambda: thing
