"""Training an :class:`~anyoptim.nn.MLP` with any optimizer: :func:`fit`, :func:`predict`, :func:`accuracy`.

:func:`fit` checks its input once, lays the parameters out in one flat buffer (:func:`anyoptim.flatten`) and
allocates one flat gradient buffer that every backward pass writes into, so a fused engine updates the whole
model in one pass.  On libraries with immutable arrays (JAX) it works functionally instead.  The cost of an
epoch (summed in float32 at least) stays on the device until the epoch ends: one transfer per epoch, not per step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._namespace import array_namespace, device_of, is_mutable
from ..engines.precision import compute_dtype
from ..flat import flatten
from ..optimizers.base import Optimizer
from ..optimizers.validation import check_state, state_owner
from ..state import OptimizerState
from ..tree import tree_flatten, tree_unflatten
from .data import Seed, batch_slices, check_features, check_int, check_labels, epoch_seed, host_rng, shuffled
from .jitted import jitted_epoch, wants_jit
from .mlp import MLP
from .parallel import ending_every_process_on_failure, team_of

__all__ = ["FitResult", "History", "accuracy", "fit", "predict"]

Callback = Callable[[int, float, Any, Any], Any]


@dataclass
class History:
    """What :func:`fit` records, one entry per epoch.

    The three lists grow together; ``len(history)`` is the number of epochs run
    (fewer than ``epochs`` when a callback stopped training).  Each parameter
    is an attribute of the same name.

    Parameters
    ----------
    cost : list of float, default []
        Mean loss over the epoch's examples (each batch's loss is taken before
        its step, weighted by the batch's size).
    learning_rate : list of float, default []
        The rate of the epoch's last step (``state.learning_rate``), which a
        schedule changes from epoch to epoch.
    time : list of float, default []
        Seconds since training started (:func:`time.perf_counter`), at the end
        of each epoch.

    See Also
    --------
    FitResult : Holds the history of a run.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    >>> model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
    >>> history = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=3, batch_size=20, progress=False).history
    >>> len(history), np.round(history.cost, 3).tolist(), history.learning_rate
    (3, [0.646, 0.508, 0.422], [0.05, 0.05, 0.05])
    """

    cost: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cost)


@dataclass
class FitResult:
    """The outcome of :func:`fit`: trained parameters, the optimizer's state and the history.

    Each parameter is an attribute of the same name.

    Parameters
    ----------
    params : dict of str to array
        The trained parameters ``{"W1": ..., "b1": ..., "WL": ..., "bL": ...}``
        (see :meth:`MLP.init <anyoptim.MLP.init>`), of ``X``'s namespace, device
        and dtype.
    state : OptimizerState
        The optimizer's state after the last step (``state.count`` steps taken),
        to resume training with ``optimizer.step`` or to inspect.
    history : History
        Cost, learning rate and time of every epoch.

    Examples
    --------
    >>> import anyoptim
    >>> X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    >>> model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
    >>> result = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=3, batch_size=20, progress=False)
    >>> sorted(result.params), result.params["W1"].shape
    (['W1', 'W2', 'b1', 'b2'], (2, 8))
    >>> result.state.count, len(result.history)
    (6, 3)
    """

    params: dict
    state: Any
    history: History


def _check_model(model: Any) -> MLP:
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an anyoptim.MLP, got {type(model).__name__}")
    return model


def _check_optimizer(optimizer: Any) -> None:
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "step", None))):
        kind = type(optimizer).__name__
        raise TypeError(f"optimizer must have init(params) and step(params, grads, state), got {kind}")


def _check_callbacks(callbacks: Any) -> tuple[Callback, ...]:
    if callable(callbacks):
        return (callbacks,)
    try:
        chosen = tuple(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a sequence of callables, got {type(callbacks).__name__}") from None
    for index, callback in enumerate(chosen):
        if not callable(callback):
            raise TypeError(f"callbacks[{index}] is a {type(callback).__name__}, not a callable")
    return chosen


def _progress_bar(progress: Any, epochs: int) -> Any:
    """A tqdm bar, or None: by default only when stderr is a terminal and tqdm is installed."""
    if progress not in (None, True, False):
        raise TypeError(f"progress must be None, True or False, got {progress!r}")
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress:
            raise ImportError("progress=True needs tqdm: pip install tqdm (or anyoptim[progress])") from None
        return None
    if progress is None and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    return tqdm(total=epochs, unit="epoch", desc="training", file=sys.stderr, dynamic_ncols=True)


def _step_within_epoch(optimizer: Any) -> Callable[..., Any]:
    """The step :func:`fit` takes after the first of each epoch.

    Within an epoch only fit's loop touches params, grads and state, so each
    such step passes back exactly what the last one returned, and an
    :class:`~anyoptim.optimizers.base.Optimizer` may skip confirming that
    (:meth:`Optimizer.step_again <anyoptim.optimizers.base.Optimizer.step_again>`).
    Not when ``step`` is anything but Optimizer's own (a subclass or an
    instance that replaces it): then every step goes through it.
    """
    if getattr(optimizer.step, "__func__", None) is Optimizer.step:
        return optimizer.step_again
    return optimizer.step


def _start_params(model: MLP, params: Any, seed: Seed, X: Any, xp: Any, device: Any) -> dict:
    """The parameters training starts from: drawn from ``seed``, or a flat copy of the given ones."""
    if params is None:
        params = model.init(seed=seed, like=X)
    else:
        p_xp, p_device = model.check_params(params)
        if p_xp is not xp:
            raise TypeError("params and X come from different array libraries")
        if p_device != device:
            raise ValueError(f"params are on device {p_device} but X is on {device}")
        if params["W1"].dtype != X.dtype:
            raise TypeError(f"params have dtype {params['W1'].dtype} but X has {X.dtype}")
        if any(not bool(xp.all(xp.isfinite(value))) for value in params.values()):
            raise ValueError("params contain NaN or infinity")
    # flatten copies, so the caller's arrays are never updated in place.
    return flatten(params) if is_mutable(xp) else dict(params)


def _start_state(optimizer: Any, params: dict, state: Any, xp: Any) -> Any:
    """The state training starts from: a new one, or a copy of ``state`` laid out beside ``params``.

    An :class:`OptimizerState` is copied into the optimizer's own layout for the
    (flat) training parameters, so a resumed run takes the same fast path as a
    new one; the caller's arrays are never updated in place.
    """
    fresh = optimizer.init(params)
    if state is None or not isinstance(state, OptimizerState) or not isinstance(fresh, OptimizerState):
        return fresh if state is None else state
    # The checks step applies (the maker, the slots, each leaf's library, device, shape and dtype), so a state
    # refused by step is refused here, before training, with the same message.
    names, p_leaves, p_treedef = tree_flatten(params)
    owner = fresh.optimizer or state_owner(type(optimizer))  # the maker (a wrapper such as ParallelOptimizer: its own)
    given_slots = check_state(owner, tuple(fresh.slots), names, p_leaves, p_treedef, state)
    slots = {}
    for slot, tree in fresh.slots.items():
        _, targets, treedef = tree_flatten(tree)
        given = given_slots[slot]
        if is_mutable(xp):
            for target, value in zip(targets, given, strict=True):
                target[...] = value
        else:
            targets = list(given)
        slots[slot] = tree_unflatten(treedef, targets)
    return OptimizerState(
        state.count, state.learning_rate, slots, state.skipped, fresh.structure, fresh.optimizer or owner, state.static
    )


@ending_every_process_on_failure  # data-parallel: a failure on one process ends all (the others would wait forever)
def fit(
    model: MLP,
    optimizer: Any,
    X: Any,
    y: Any,
    epochs: int = 1000,
    batch_size: int = 64,
    seed: Seed = 0,
    params: dict | None = None,
    callbacks: Iterable[Callback] = (),
    progress: bool | None = None,
    state: Any = None,
    initial_epoch: int = 0,
    comm: Any = None,
    jit: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``(X, y)`` with mini-batch ``optimizer`` steps.

    Each epoch shuffles the examples (:func:`anyoptim.minibatches` with
    ``seed=anyoptim.nn.data.epoch_seed(seed, epoch)``), and for every batch
    computes the loss and gradients at the current parameters and takes one
    optimizer step.

    Parameters
    ----------
    model : MLP
        The network; its ``layer_dims[0]`` must equal ``n_features``.  Only
        read: the parameters are returned, not stored in the model.
    optimizer : Optimizer
        Any anyoptim optimizer (or an object with the same ``init`` / ``step``).
    X : array, shape (n_samples, n_features)
        Floating point, finite; the parameters get its namespace, device and dtype.
    y : array, shape (n_samples,) or (n_samples, n_outputs)
        Labels for the model's output (see :class:`~anyoptim.nn.MLP`), of
        ``X``'s namespace and device.
    epochs : int, default 1000
        Passes over the data (at least 1); callbacks may stop earlier.
    batch_size : int, default 64
        ``n_samples`` for batch gradient descent, 1 for stochastic gradient descent.
    seed : int or sequence of int, default 0
        Fixes the initial parameters (when ``params`` is None) and the shuffling:
        the same seed gives the same run on every backend.
    params : dict, optional
        Start from these parameters instead (they are copied, never changed).
    callbacks : sequence of callables, default ()
        Called after every epoch as ``callback(epoch, cost, params, state)``
        with the 0-based epoch; returning True stops training.  ``params`` are
        the live training arrays: copy them to keep them.
    progress : bool, optional
        Show a tqdm progress bar (epoch, cost, epochs/s).  By default only when
        stderr is a terminal and tqdm is installed.
    state : OptimizerState, optional
        Continue from this optimizer state (step count, moments, skipped steps)
        instead of ``optimizer.init(params)``; needs ``params``.  It is copied,
        never changed.
    initial_epoch : int, default 0
        The epoch to start at: epochs ``initial_epoch`` to ``epochs - 1`` run,
        each shuffled as in an uninterrupted run (the shuffle depends only on
        ``seed`` and the epoch), so ``params`` and ``state`` saved after epoch
        ``k - 1`` and given back with ``initial_epoch=k`` continue the run bit
        for bit (:func:`anyoptim.checkpoint.resumable_fit` does this with a
        file).  The history holds the epochs run.
    comm : communicator, optional
        Train data-parallel with the processes of ``comm`` (:mod:`anyoptim.distributed`): every
        process takes its rows of each global batch (the batches of a one-process run), gradients
        are averaged, costs summed; progress shows on rank 0.  Every process returns the same result.
    jit : bool, optional
        On JAX arrays, compile each epoch's steps (forward, backward, update) with
        ``jax.jit`` (:mod:`anyoptim.nn.jitted`): the same cost history as the eager
        loop, many times faster.  None (default): on JAX with an anyoptim optimizer
        (not under ``on_nonfinite="raise"``), eagerly with a warning if its step cannot
        be traced; False: eagerly; True: always (JAX only; a ``TypeError`` if it cannot).

    Returns
    -------
    FitResult
        ``params`` (trained), ``state`` (the optimizer's) and ``history``.

    Raises
    ------
    TypeError
        If ``model`` is not an :class:`~anyoptim.MLP`, ``optimizer`` lacks
        ``init`` / ``step``, an argument has the wrong type, or ``X``, ``y``
        and ``params`` mix array libraries or dtypes.
    ValueError
        If shapes disagree with the model or each other, ``X`` or ``params``
        hold NaN or infinity, labels do not suit the model's output, or
        ``epochs`` or ``batch_size`` is below 1, ``initial_epoch`` is negative
        or above ``epochs``, ``state`` is given without ``params`` or does not
        fit them, or ``jit=True`` without JAX arrays.
    ImportError
        If ``progress=True`` and tqdm is not installed.

    See Also
    --------
    minibatches : The batches of one epoch.
    predict, accuracy : Use the trained parameters.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim import datasets
    >>> X, y = datasets.make_moons(n_samples=200, noise=0.1, seed=0)
    >>> model = anyoptim.MLP([2, 16, 1], hidden_activation="tanh")
    >>> result = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=100, seed=0, progress=False)
    >>> len(result.history.cost), result.history.cost[-1] < result.history.cost[0]
    (100, True)
    >>> anyoptim.accuracy(model, result.params, X, y) > 0.85
    True

    A callback that returns True stops training, here once the cost is below 0.3:

    >>> def good_enough(epoch, cost, params, state):
    ...     return cost < 0.3
    >>> result = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, callbacks=[good_enough], progress=False)
    >>> len(result.history) < 1000, result.history.cost[-1] < 0.3
    (True, True)
    """
    model = _check_model(model)
    _check_optimizer(optimizer)
    xp, device = check_features(X)
    if X.shape[1] != model.layer_dims[0]:
        raise ValueError(f"X has {X.shape[1]} features but the model expects {model.layer_dims[0]}")
    check_labels(y, X.shape[0], xp, device)
    targets = model.targets(y, xp, X.dtype)
    epochs = check_int("epochs", epochs)
    batch_size = check_int("batch_size", batch_size)
    host_rng(seed)  # a bad seed fails here, before any work
    chosen_callbacks = _check_callbacks(callbacks)
    compiled = wants_jit(jit, xp, optimizer)
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch <= epochs:
        raise ValueError(f"initial_epoch must be an int from 0 to epochs ({epochs}), got {initial_epoch!r}")
    if state is not None and params is None:
        raise ValueError("state needs the params it belongs to: pass params= as well")
    team = team_of(comm, optimizer)
    taken = state.count if isinstance(getattr(state, "count", None), int) else 0  # steps of the state resumed
    run = {"rows": X.shape[0], "features": X.shape[1], "epochs": epochs, "batch size": batch_size, "steps taken": taken}
    params = team.broadcast(_start_params(model, params, seed, X, xp, device), {**run, "first epoch": initial_epoch})
    state = _start_state(team.optimizer, params, state, xp)
    bar = _progress_bar(progress if team.rank == 0 else False, epochs)

    grads = flatten({key: xp.zeros_like(value) for key, value in params.items()}) if is_mutable(xp) else None
    n_samples = X.shape[0]
    batches = batch_slices(n_samples, batch_size)
    run_epoch = jitted_epoch(model, team.optimizer, X, targets, seed, batch_size, jit is True) if compiled else None
    value_and_grad = team.value_and_grad(model.value_and_grad)
    step, step_again = team.optimizer.step, _step_within_epoch(team.optimizer)
    history = History()
    zero = xp.zeros((), dtype=compute_dtype(xp, [X.dtype]), device=device)  # losses summed in float32 (or wider)
    start = time.perf_counter()
    try:
        for epoch in range(initial_epoch, epochs):
            take_step = step
            # On JAX: the epoch (shuffle, steps, losses) as one compiled function; None when it cannot be (jit=None).
            done = run_epoch(params, state, epoch) if run_epoch is not None else None
            params, state, total = (params, state, zero) if done is None else done
            if done is None:
                X_epoch, t_epoch = shuffled(X, targets, epoch_seed(seed, epoch), xp, device)
            for rows in batches if done is None else ():
                X_batch = X_epoch[rows, ...]
                loss, grads = value_and_grad(xp, params, X_batch, t_epoch[rows, ...], out=grads)
                params, state = take_step(params, grads, state)
                take_step = step_again
                total = total + loss * X_batch.shape[0]
            cost = team.total(total) / n_samples
            history.cost.append(cost)
            history.learning_rate.append(float(state.learning_rate))
            history.time.append(time.perf_counter() - start)
            if bar is not None:
                bar.set_postfix(cost=f"{cost:.4g}", refresh=False)
                bar.update(1)
            shown = team.gathered(state, bool(chosen_callbacks))  # a collective when sharded: on every process
            if team.agree(any([callback(epoch, cost, params, shown) is True for callback in chosen_callbacks])):
                break
    finally:
        if bar is not None:
            bar.close()
    return FitResult(params=params, state=team.gathered(state), history=history)


def predict(model: MLP, params: dict, X: Any) -> Any:
    """The model's predictions: class labels (n,) for sigmoid and softmax outputs, values for identity.

    Parameters
    ----------
    model : MLP
        The network.
    params : dict of str to array
        Its parameters, from :meth:`MLP.init <anyoptim.MLP.init>` or
        :func:`fit` (``result.params``).
    X : array, shape (n_samples, n_features)
        Finite inputs of the parameters' namespace, device and dtype.

    Returns
    -------
    array
        For a ``"sigmoid"`` output, labels 0 or 1 of shape (n_samples,): 1 where
        the logit is positive (probability above 0.5); for ``"softmax"``, the
        index of the largest output, shape (n_samples,); both of the library's
        default integer dtype.  For ``"identity"``, the outputs themselves, of
        shape (n_samples,) for one output unit, else (n_samples, n_outputs).

    Raises
    ------
    TypeError
        If ``model`` is not an :class:`~anyoptim.MLP`, or ``params`` and ``X``
        differ in array library or dtype.
    ValueError
        If ``params`` do not fit the model, ``X`` has the wrong number of
        features, or holds NaN or infinity.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> model = anyoptim.MLP([2, 3, 1])
    >>> params = model.init(seed=0)
    >>> anyoptim.predict(model, params, np.zeros((4, 2))).shape
    (4,)
    >>> X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    >>> model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
    >>> result = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=13, batch_size=20, progress=False)
    >>> anyoptim.predict(model, result.params, X[:5]).tolist(), y[:5].tolist()
    ([0, 1, 0, 1, 1], [0, 1, 0, 1, 1])
    """
    return _check_model(model).predict(params, X)


def accuracy(model: MLP, params: dict, X: Any, y: Any) -> float:
    """Fraction of the examples whose predicted class equals the label, a float in [0, 1].

    Parameters
    ----------
    model : MLP
        A classifier: its output is ``"sigmoid"`` or ``"softmax"``.
    params : dict of str to array
        Its parameters, from :meth:`MLP.init <anyoptim.MLP.init>` or :func:`fit`.
    X : array, shape (n_samples, n_features)
        Finite inputs of the parameters' namespace, device and dtype.
    y : array, shape (n_samples,), (n_samples, 1) or (n_samples, n_classes)
        Class labels (n,), binary labels (n, 1) or one-hot rows (n, K), of
        ``X``'s namespace and device, as :func:`fit` takes them.

    Returns
    -------
    float
        ``mean(predict(model, params, X) == labels)``, in [0, 1].

    Raises
    ------
    ValueError
        If the model regresses (``"identity"`` output), or ``X``, ``y`` and
        ``params`` do not fit the model and each other (as in :func:`fit`).
    TypeError
        If ``model`` is not an :class:`~anyoptim.MLP`, or the arrays mix
        libraries or dtypes.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> model = anyoptim.MLP([2, 3, 1])
    >>> params = model.init(seed=0)
    >>> 0.0 <= anyoptim.accuracy(model, params, np.ones((4, 2)), np.array([0, 1, 1, 0])) <= 1.0
    True
    >>> X, y = anyoptim.datasets.make_moons(n_samples=40, noise=0.1, seed=0)
    >>> model = anyoptim.MLP([2, 8, 1], hidden_activation="tanh")
    >>> result = anyoptim.fit(model, anyoptim.Adam(0.05), X, y, epochs=13, batch_size=20, progress=False)
    >>> anyoptim.accuracy(model, result.params, X, y)
    0.9
    """
    model = _check_model(model)
    if model.output == "identity":
        raise ValueError("accuracy needs a classifier (sigmoid or softmax output); this model regresses values")
    predicted = model.predict(params, X)
    xp = array_namespace(X)
    check_labels(y, X.shape[0], xp, device_of(X))
    model.targets(y, xp, X.dtype)  # the same label checks as training
    if y.ndim == 2:
        labels = y[:, 0] if y.shape[1] == 1 else xp.argmax(y, axis=1)
    else:
        labels = y
    hits = predicted == xp.astype(labels, predicted.dtype)
    return float(xp.sum(xp.astype(hits, X.dtype))) / X.shape[0]
