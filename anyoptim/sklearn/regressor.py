""":class:`MLPRegressor`: scikit-learn's multilayer-perceptron regressor, trained by any anyoptim optimizer."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin

from .base import BaseMLP
from .inputs import check_X_y
from .training import check_settings, logits, targets_like, train

__all__ = ["MLPRegressor"]


class MLPRegressor(RegressorMixin, BaseMLP):
    """A multilayer perceptron regressor with scikit-learn's interface, trained by any anyoptim optimizer.

    The network is an :class:`anyoptim.MLP` with an identity output, trained by
    :func:`anyoptim.fit` on scikit-learn's ``squared_loss`` (half the mean
    squared error) plus the L2 penalty; the parameters are named as
    :class:`sklearn.neural_network.MLPRegressor`'s where the concept is the
    same.  ``y`` may have several columns (one output unit each).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers.
    activation : {"relu", "tanh", "logistic", "leaky_relu"}, default "relu"
        The hidden layers' activation (``leaky_relu`` has slope 0.01 below zero).
    optimizer : str or Optimizer, default "adam"
        A name of :data:`anyoptim.optimizers.REGISTRY` or an anyoptim optimizer
        instance, which is copied, never changed (scikit-learn's ``solver``).
    learning_rate : float or schedule, optional
        The optimizer's learning rate (a float, or a schedule of
        :mod:`anyoptim.schedules`, counted in steps); by default the
        optimizer's own (0.001 for ``"adam"``).
    alpha : float, default 0.0001
        Strength of the L2 penalty on the weights (not the biases),
        :math:`\\frac{\\alpha}{2 n}\\sum_l \\lVert W_l\\rVert^2` per batch of
        :math:`n` samples, as scikit-learn's; ``loss_curve_`` includes it.
    batch_size : int or "auto", default "auto"
        Samples per step; ``"auto"`` is ``min(200, n_samples)``.
    max_iter : int, default 200
        Epochs of ``fit`` (each ``partial_fit`` runs one).
    tol : float, default 1e-4
        Training stops when the loss (or, with ``early_stopping``, the
        validation R²) has not improved by ``tol`` for more than
        ``n_iter_no_change`` epochs.
    init : {"glorot_uniform", "he", "xavier"}, default "glorot_uniform"
        Initial weights: scikit-learn's Glorot uniform draw (weights and biases),
        or :meth:`anyoptim.MLP.init`'s He or Xavier normal weights with zero biases.
    random_state : int, RandomState or None, default None
        Seeds the initial weights, the shuffles and the validation split; an int
        gives the same run on every array library.
    warm_start : bool, default False
        Let ``fit`` start from the trained weights (with a new optimizer state).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data, stop when its R² stops
        improving, and keep the weights of the best epoch.
    validation_fraction : float, default 0.1
        The held-out fraction for ``early_stopping``, in (0, 1).
    n_iter_no_change : int, default 10
        Epochs without improvement by ``tol`` that stop training.
    verbose : bool, default False
        Print the loss after every epoch.

    Attributes
    ----------
    loss_curve_ : list of float
        The loss of every epoch (mean over its batches, penalty included).
    best_loss_ : float or None
        The lowest loss reached; None under ``early_stopping``.
    validation_scores_ : list of float or None
        The validation R² of every epoch under ``early_stopping``, else None.
    best_validation_score_ : float or None
        The best of ``validation_scores_``; None without ``early_stopping``.
    coefs_, intercepts_ : list of arrays
        Weights (n_in, n_out) and biases (n_out,) of every layer, in the
        training data's array library.
    n_iter_ : int
        Epochs run.
    t_ : int
        Optimizer steps taken.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features,)
        Names of the features, when ``X`` had string column names.
    n_layers_, n_outputs_ : int
        Layers (input and output included) and output units.
    model_ : anyoptim.MLP
        The network, its L2 penalty included (``alpha``).
    optimizer_, state_ : anyoptim.Optimizer, anyoptim.OptimizerState
        The optimizer training uses (a copy of ``optimizer``) and its state, which
        ``partial_fit`` and ``warm_start`` continue from.
    seed_ : int
        The seed drawn from ``random_state`` for initialization and shuffling.
    out_activation_ : str
        ``"identity"``.

    See Also
    --------
    MLPClassifier : The same network for classification.
    anyoptim.fit : The training loop underneath.

    Notes
    -----
    Arrays of another Array-API library (torch, JAX, CuPy, array-api-strict)
    train in that library and on their device; ``predict`` answers in it.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.sklearn import MLPRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, (200, 2))
    >>> y = X[:, 0] ** 2 + X[:, 1]
    >>> reg = MLPRegressor((32,), learning_rate=0.01, max_iter=300, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape, reg.score(X, y) > 0.9
    ((3,), True)
    """

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train on ``X`` and the targets ``y`` for ``max_iter`` epochs (fewer when training stops early).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets.

        Returns
        -------
        MLPRegressor
            The estimator itself, trained.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPRegressor
        >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> y = X[:, 0] - X[:, 1]
        >>> reg = MLPRegressor((8,), learning_rate=0.1, max_iter=100, random_state=0).fit(X, y)
        >>> reg.score(X, y) > 0.99, reg.n_outputs_
        (True, 1)
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train for one epoch on ``X`` and ``y``, continuing the weights and the optimizer's state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets.

        Returns
        -------
        MLPRegressor
            The estimator itself, trained one epoch further.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPRegressor
        >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> y = X[:, 0] - X[:, 1]
        >>> reg = MLPRegressor((8,), learning_rate=0.1, random_state=0)
        >>> for _ in range(3):  # one epoch each: one step of a batch of 4
        ...     reg = reg.partial_fit(X, y)
        >>> reg.n_iter_, reg.t_, bool(reg.loss_curve_[-1] < reg.loss_curve_[0])
        (3, 3, True)
        """
        return self._fit(X, y, incremental=True)

    def _fit(self, X: Any, y: Any, *, incremental: bool) -> MLPRegressor:
        check_settings(self)  # every parameter, before the data or anything else is touched
        first = not hasattr(self, "coefs_") or not (incremental or self.warm_start)
        X, y = check_X_y(self, X, y, reset=first, regression=True)
        if isinstance(y, np.ndarray) and not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity")
        train(
            self,
            X,
            targets_like(y, X),
            strata=None,
            output="identity",
            loss_scale=0.5,
            score=_r2,
            incremental=incremental,
        )
        return self

    def predict(self, X: Any) -> Any:
        """The network's output for every sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.

        Returns
        -------
        array of shape (n_samples,) or (n_samples, n_outputs)
            One column per output; a 1-D array for a single output.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPRegressor
        >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> y = X[:, 0] - X[:, 1]
        >>> reg = MLPRegressor((8,), learning_rate=0.1, max_iter=100, random_state=0).fit(X, y)
        >>> prediction = reg.predict(X)
        >>> prediction.shape, bool(np.abs(prediction - y).max() < 0.1)
        ((4,), True)
        """
        z = logits(self, X)[1]
        return z[:, 0] if z.shape[1] == 1 else z

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: a regressor of one or several outputs.

        Returns
        -------
        sklearn.utils.Tags
            A regressor's tags with ``target_tags.multi_output`` set.
        """
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _r2(xp: Any, z: Any, t: Any) -> float:
    """Early stopping's validation score: the coefficient of determination R², averaged over the outputs."""
    residual = xp.sum((t - z) ** 2, axis=0)
    total = xp.sum((t - xp.mean(t, axis=0)) ** 2, axis=0)
    safe = xp.where(total > 0, total, residual * 0 + 1)
    scores = xp.where(total > 0, 1 - residual / safe, xp.where(residual > 0, residual * 0, residual * 0 + 1))
    return float(xp.mean(scores))
