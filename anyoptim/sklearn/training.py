"""Training the estimators: the settings' checks, the epoch loop and scikit-learn's stopping rules.

Training is :func:`anyoptim.fit` on a :class:`~.model.PenalizedMLP`: one call
per ``fit`` (``max_iter`` epochs) or ``partial_fit`` (one epoch), with a
callback that records ``loss_curve_`` and applies scikit-learn's stopping
rule after every epoch (no improvement of the loss, or of the validation score
under ``early_stopping``, by more than ``tol`` for ``n_iter_no_change``
epochs).  Under ``early_stopping`` the weights of the best validation score
are restored at the end.  ``partial_fit`` resumes the optimizer's state and
the epoch count, so calls over the same data take the same batches as ``fit``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._namespace import array_namespace, device_of
from ..nn import ACTIVATIONS, fit
from ..nn.data import to_namespace
from .hints import check_learning_rate
from .inputs import check_X, take_rows
from .model import ESTIMATOR_INITS, PenalizedMLP, initial_params, make_optimizer

__all__ = ["check_settings", "logits", "targets_like", "train"]

#: scikit-learn's activation names -> the MLP's
ACTIVATION_NAMES = {"logistic": "sigmoid", **{name: name for name in ACTIVATIONS if name != "sigmoid"}}
OUT_ACTIVATIONS = {"sigmoid": "logistic", "softmax": "softmax", "identity": "identity"}

#: ``score(xp, logits, targets) -> float``: the validation score of early stopping (higher is better)
Score = Callable[[Any, Any, Any], float]


def check_settings(est: Any) -> tuple[tuple[int, ...], str]:
    """Every parameter checked before anything changes; the hidden widths and the MLP's activation."""
    sizes = est.hidden_layer_sizes
    sizes = (sizes,) if isinstance(sizes, numbers.Integral) else sizes
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints, got {sizes!r}") from None
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes):
        raise ValueError(f"hidden_layer_sizes must hold positive ints, got {est.hidden_layer_sizes!r}")
    if est.activation not in ACTIVATION_NAMES:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATION_NAMES))}, got {est.activation!r}")
    if est.init not in ESTIMATOR_INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, ESTIMATOR_INITS))}, got {est.init!r}")
    _check_number("alpha", est.alpha, low=0.0)
    _check_number("tol", est.tol, low=0.0)
    _check_number("validation_fraction", est.validation_fraction, low=0.0, high=1.0, open_ends=True)
    _check_int("max_iter", est.max_iter)
    _check_int("n_iter_no_change", est.n_iter_no_change)
    if not (isinstance(est.batch_size, str) and est.batch_size == "auto"):
        if isinstance(est.batch_size, str):
            raise ValueError(f"batch_size must be 'auto' or an int, got {est.batch_size!r}")
        _check_int("batch_size", est.batch_size)
    check_learning_rate(est.learning_rate)  # scikit-learn's names ("adaptive") get a hint
    make_optimizer(est.optimizer, est.learning_rate)  # a bad optimizer or rate fails here
    return sizes, ACTIVATION_NAMES[est.activation]


def _seed(random_state: Any) -> int:
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool) and random_state >= 0:
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _start(est: Any, X: Any, n_outputs: int, output: str, loss_scale: float, settings: tuple) -> None:
    """A new network, optimizer, seed and record: the state of an estimator that has not trained yet."""
    sizes, activation = settings
    est.model_ = PenalizedMLP([X.shape[1], *sizes, n_outputs], activation, output, est.alpha, loss_scale)
    est.seed_ = _seed(est.random_state)
    _set_params(est, initial_params(est.model_, est.init, est.seed_, X))
    est.optimizer_, est.state_ = make_optimizer(est.optimizer, est.learning_rate), None
    est.n_iter_, est.t_, est.loss_curve_ = 0, 0, []
    est.best_loss_ = est.validation_scores_ = est.best_validation_score_ = None
    est.n_outputs_, est.n_layers_ = n_outputs, len(sizes) + 2
    est.out_activation_ = OUT_ACTIVATIONS[output]


def _set_params(est: Any, params: dict) -> None:
    layers = range(1, len(params) // 2 + 1)
    est.coefs_ = [params[f"W{layer}"] for layer in layers]
    est.intercepts_ = [params[f"b{layer}"] for layer in layers]


def _params(est: Any) -> dict:
    params = {}
    for layer, (W, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True), start=1):
        params[f"W{layer}"], params[f"b{layer}"] = W, b
    return params


def train(
    est: Any,
    X: Any,
    t: Any,
    *,
    strata: Any,
    output: str,
    loss_scale: float,
    score: Score,
    incremental: bool,
) -> None:
    """Train ``est`` on ``X`` and the prepared targets ``t`` (n, n_outputs): ``max_iter`` epochs, or one.

    ``strata`` (host labels or None) stratifies the validation split; ``output``
    and ``loss_scale`` choose the network's loss; ``score`` is early stopping's.
    """
    settings = check_settings(est)
    n_outputs = t.shape[1]
    fresh = not hasattr(est, "coefs_") or (not est.warm_start and not incremental)
    if not fresh and (est.coefs_[0].shape[0] != X.shape[1] or est.n_outputs_ != n_outputs):
        raise ValueError("the data do not fit the trained network; set warm_start=False to start afresh")
    if not fresh and not _same_library(X, est.coefs_[0]):
        raise TypeError("X must come from the array library the estimator was trained on")
    if fresh:
        _start(est, X, n_outputs, output, loss_scale, settings)
    elif not incremental:
        est.optimizer_, est.state_ = make_optimizer(est.optimizer, est.learning_rate), None
    est.model_.alpha = float(est.alpha)
    if X.dtype != est.coefs_[0].dtype:
        X, t = _cast(X, est.coefs_[0].dtype), _cast(t, est.coefs_[0].dtype)
    early = bool(est.early_stopping) and not incremental
    X_val = t_val = None
    if early:
        rows = np.arange(X.shape[0])
        try:
            kept, val = train_test_split(
                rows, test_size=est.validation_fraction, random_state=est.seed_ + est.n_iter_, stratify=strata
            )
        except ValueError as error:
            raise ValueError(f"early_stopping cannot split off a validation set: {error}") from None
        X, t, X_val, t_val = take_rows(X, kept), take_rows(t, kept), take_rows(X, val), take_rows(t, val)
    n = X.shape[0]
    batch = min(200, n) if est.batch_size == "auto" else est.batch_size
    if batch > n:
        warnings.warn(f"batch_size {batch} is larger than the {n} samples: using {n}", UserWarning, stacklevel=4)
        batch = n
    record = _Record(est, early, X_val, t_val, score)
    result = fit(
        est.model_,
        est.optimizer_,
        X,
        t,
        epochs=est.n_iter_ + (1 if incremental else est.max_iter),  # the epoch to stop at (Keras's convention)
        batch_size=batch,
        seed=est.seed_,
        params=_params(est),
        callbacks=[record],
        progress=False,
        state=est.state_,
        initial_epoch=est.n_iter_,
    )
    est.optimizer_.forget_prepared()  # a prepared step holds ctypes frames: not picklable, not needed
    est.state_ = result.state
    est.t_ = int(result.state.count)
    _set_params(est, record.best_params if record.best_params is not None else result.params)
    if not incremental and not record.stopped:
        warnings.warn(
            f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the optimization "
            "hasn't converged yet.",
            ConvergenceWarning,
            stacklevel=4,  # the user's fit: train <- _fit <- fit <- caller
        )


def _same_library(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    return array_namespace(a) is array_namespace(b)


def _cast(a: Any, dtype: Any) -> Any:
    return array_namespace(a).astype(a, dtype)


def logits(est: Any, X: Any) -> tuple[Any, Any]:
    """The namespace and the network's logits (n, n_outputs) on ``X`` (validated, cast to the weights' dtype)."""
    check_is_fitted(est, "coefs_")
    X = check_X(est, X, reset=False)
    params = _params(est)
    if not _same_library(X, params["W1"]):
        raise TypeError("X must come from the array library the estimator was trained on")
    xp = array_namespace(params["W1"])
    if X.dtype != params["W1"].dtype:
        X = xp.astype(X, params["W1"].dtype)
    return xp, est.model_.logits(xp, params, X)


def targets_like(values: Any, X: Any) -> Any:
    """Host values as a 2-D array of ``X``'s library, device and floating dtype; ``X``'s own arrays are cast."""
    if not isinstance(values, np.ndarray):
        xp = array_namespace(values)
        values = xp.astype(values, X.dtype)
        return values if values.ndim == 2 else xp.reshape(values, (-1, 1))
    values = np.asarray(values, dtype=np.float64)
    values = values if values.ndim == 2 else values.reshape(-1, 1)
    if isinstance(X, np.ndarray):
        return values.astype(X.dtype)
    return to_namespace(values, xp=array_namespace(X), dtype=X.dtype, device=device_of(X))


class _Record:
    """fit's callback: the loss curve, the validation scores, the best weights and scikit-learn's stopping rule."""

    def __init__(self, est: Any, early: bool, X_val: Any, t_val: Any, score: Score):
        self.est, self.early, self.X_val, self.t_val, self.score = est, early, X_val, t_val, score
        self.best_params = None
        self.stopped = False
        self.no_improvement = 0
        if early:
            est.validation_scores_ = est.validation_scores_ or []
            if est.best_validation_score_ is None:
                est.best_validation_score_ = -np.inf
            est.best_loss_ = None
        else:
            est.validation_scores_ = est.best_validation_score_ = None
            if est.best_loss_ is None:
                est.best_loss_ = np.inf

    def __call__(self, epoch: int, cost: float, params: dict, state: Any) -> bool:
        est, tol = self.est, float(self.est.tol)
        est.loss_curve_.append(cost)
        est.n_iter_ += 1
        if self.early:
            xp = array_namespace(params["W1"])
            value = self.score(xp, est.model_.logits(xp, params, self.X_val), self.t_val)
            est.validation_scores_.append(value)
            self.no_improvement = self.no_improvement + 1 if value < est.best_validation_score_ + tol else 0
            if value > est.best_validation_score_:
                est.best_validation_score_ = value
                self.best_params = {name: xp.asarray(array, copy=True) for name, array in params.items()}
        else:
            self.no_improvement = self.no_improvement + 1 if cost > est.best_loss_ - tol else 0
            est.best_loss_ = min(est.best_loss_, cost)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {cost:.8f}")
        if self.no_improvement > est.n_iter_no_change:
            self.stopped = True
            if est.verbose:
                what = "Validation score" if self.early else "Training loss"
                print(f"{what} did not improve more than tol={tol} for {est.n_iter_no_change} consecutive epochs.")
        return self.stopped


def _check_number(name: str, value: Any, *, low: float, high: float = np.inf, open_ends: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    inside = low < value < high if open_ends else low <= value <= high
    if not inside or np.isnan(value):
        bounds = f"in ({low}, {high})" if open_ends else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
