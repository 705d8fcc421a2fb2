""":class:`MLPClassifier`: scikit-learn's multilayer-perceptron classifier, trained by any anyoptim optimizer."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets

from .._namespace import array_namespace, device_of
from .base import BaseMLP
from .inputs import as_host, check_X_y, is_device_array
from .training import check_settings, logits, targets_like, train

__all__ = ["MLPClassifier"]


class MLPClassifier(ClassifierMixin, BaseMLP):
    """A multilayer perceptron classifier with scikit-learn's interface, trained by any anyoptim optimizer.

    The network is an :class:`anyoptim.MLP`, trained by :func:`anyoptim.fit`;
    the parameters are named as :class:`sklearn.neural_network.MLPClassifier`'s
    where the concept is the same.  Two classes give one logistic output unit
    (binary cross-entropy), more give a softmax layer (categorical
    cross-entropy).  Labels may be anything :func:`numpy.unique` sorts
    (strings, {-1, 1}, 1 ... K): ``classes_`` holds them.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers.
    activation : {"relu", "tanh", "logistic", "leaky_relu"}, default "relu"
        The hidden layers' activation (``leaky_relu`` has slope 0.01 below zero).
    optimizer : str or Optimizer, default "adam"
        A name of :data:`anyoptim.optimizers.REGISTRY` (``"sgd"``, ``"momentum"``,
        ``"rmsprop"``, ``"adam"``, ``"lion"`` ...) or an anyoptim optimizer
        instance, which is copied, never changed (scikit-learn's ``solver``).
    learning_rate : float or schedule, optional
        The optimizer's learning rate (a float, or a schedule of
        :mod:`anyoptim.schedules`, counted in steps); by default the
        optimizer's own (0.001 for ``"adam"``, as scikit-learn's
        ``learning_rate_init``).
    alpha : float, default 0.0001
        Strength of the L2 penalty on the weights (not the biases), added to the
        loss of every batch as :math:`\\frac{\\alpha}{2 n}\\sum_l \\lVert W_l\\rVert^2`
        for a batch of :math:`n` samples, as scikit-learn does; ``loss_curve_``
        includes it.
    batch_size : int or "auto", default "auto"
        Samples per step; ``"auto"`` is ``min(200, n_samples)``.
    max_iter : int, default 200
        Epochs of ``fit`` (each ``partial_fit`` runs one).
    tol : float, default 1e-4
        Training stops when the loss (or, with ``early_stopping``, the
        validation score) has not improved by ``tol`` for more than
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
        Hold out ``validation_fraction`` of the data (stratified), stop when its
        accuracy stops improving, and keep the weights of the best epoch.
    validation_fraction : float, default 0.1
        The held-out fraction for ``early_stopping``, in (0, 1).
    n_iter_no_change : int, default 10
        Epochs without improvement by ``tol`` that stop training.
    verbose : bool, default False
        Print the loss after every epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    loss_curve_ : list of float
        The loss of every epoch (mean over its batches, penalty included).
    best_loss_ : float or None
        The lowest loss reached; None under ``early_stopping``.
    validation_scores_ : list of float or None
        The validation accuracy of every epoch under ``early_stopping``, else None.
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
        ``"logistic"`` (two classes) or ``"softmax"``.

    See Also
    --------
    MLPRegressor : The same network for regression.
    anyoptim.fit : The training loop underneath.

    Notes
    -----
    Arrays of another Array-API library (torch, JAX, CuPy, array-api-strict)
    train in that library and on their device; ``predict_proba`` answers in it.
    NumPy arrays, lists and data frames are validated by scikit-learn.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from anyoptim.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier((16,), optimizer="adam", learning_rate=0.01, max_iter=300, random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.predict_proba(X[:2]).shape
    ([0, 1, 2], (2, 3))
    >>> clf.score(X, y) > 0.95
    True
    """

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train on ``X`` and the labels ``y`` for ``max_iter`` epochs (fewer when training stops early).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like of shape (n_samples,)
            The labels, at least two classes.

        Returns
        -------
        MLPClassifier
            The estimator itself, trained.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPClassifier
        >>> X, y = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array(["no", "no", "yes", "yes"])
        >>> clf = MLPClassifier((4,), learning_rate=0.1, max_iter=50, random_state=0).fit(X, y)
        >>> clf.classes_.tolist(), clf.predict(X).tolist()
        (['no', 'yes'], ['no', 'no', 'yes', 'yes'])
        """
        return self._fit(X, y, classes=None, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """Train for one epoch on ``X`` and ``y``, continuing the weights and the optimizer's state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.
        y : array-like of shape (n_samples,)
            The labels, all among ``classes``.
        classes : array-like of shape (n_classes,), optional
            Every label the estimator will see: needed on the first call.

        Returns
        -------
        MLPClassifier
            The estimator itself, trained one epoch further.

        Raises
        ------
        ValueError
            If ``classes`` is not given on the first call, or ``y`` holds a label not in it.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPClassifier
        >>> X, y = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array(["no", "no", "yes", "yes"])
        >>> clf = MLPClassifier((4,), learning_rate=0.1, random_state=0)
        >>> for _ in range(3):  # one epoch each: one step of a batch of 4
        ...     clf = clf.partial_fit(X, y, classes=["no", "yes"])
        >>> clf.n_iter_, clf.t_, len(clf.loss_curve_)
        (3, 3, 3)
        """
        if not hasattr(self, "classes_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, classes=classes, incremental=True)

    def _fit(self, X: Any, y: Any, *, classes: Any, incremental: bool) -> MLPClassifier:
        check_settings(self)  # every parameter, before the data or anything else is touched
        first = not hasattr(self, "classes_") or not (incremental or self.warm_start)
        X, y = check_X_y(self, X, y, reset=first, regression=False)
        labels = as_host(y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels.ravel()
        check_classification_targets(labels)
        if labels.ndim != 1:
            raise ValueError(f"y must have shape (n_samples,), got {labels.shape}: no multilabel targets")
        known = np.unique(labels if classes is None or not first else np.asarray(classes))
        if not first:
            known = self.classes_
        missing = np.setdiff1d(labels, known)
        if missing.size:
            raise ValueError(f"y holds labels {missing.tolist()} not in classes {known.tolist()}")
        if known.size < 2:
            raise ValueError(f"MLPClassifier needs at least two classes; y holds one class: {known.tolist()}")
        indices = np.searchsorted(known, labels)
        onehot = (indices[:, None] == np.arange(known.size)[None, :]).astype(np.float64)
        targets = targets_like(onehot[:, 1:] if known.size == 2 else onehot, X)
        train(
            self,
            X,
            targets,
            strata=indices,
            output="sigmoid" if known.size == 2 else "softmax",
            loss_scale=1.0,
            score=_accuracy,
            incremental=incremental,
        )
        self.classes_ = known
        return self

    def predict_proba(self, X: Any) -> Any:
        """Probability of each class for every sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.

        Returns
        -------
        array of shape (n_samples, n_classes)
            Rows sum to 1; columns in the order of ``classes_``.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPClassifier
        >>> X, y = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array(["no", "no", "yes", "yes"])
        >>> clf = MLPClassifier((4,), learning_rate=0.1, max_iter=50, random_state=0).fit(X, y)
        >>> np.round(clf.predict_proba(X), 2)  # columns "no", "yes"
        array([[1., 0.],
               [1., 0.],
               [0., 1.],
               [0., 1.]])
        """
        xp, z = logits(self, X)
        if z.shape[1] == 1:
            p = 1.0 / (1.0 + xp.exp(-z))
            return xp.concat([1.0 - p, p], axis=1)
        shifted = z - xp.max(z, axis=1, keepdims=True)
        e = xp.exp(shifted)
        return e / xp.sum(e, axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> Any:
        """The logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.

        Returns
        -------
        array of shape (n_samples, n_classes)
            Log-probabilities, columns in the order of ``classes_``.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPClassifier
        >>> X, y = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array(["no", "no", "yes", "yes"])
        >>> clf = MLPClassifier((4,), learning_rate=0.1, max_iter=50, random_state=0).fit(X, y)
        >>> log_proba = clf.predict_log_proba(X)
        >>> log_proba.shape, bool(np.allclose(np.exp(log_proba), clf.predict_proba(X)))
        ((4, 2), True)
        """
        proba = self.predict_proba(X)
        xp = array_namespace(proba)
        return xp.log(proba)

    def predict(self, X: Any) -> Any:
        """The most probable class of every sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs.

        Returns
        -------
        array of shape (n_samples,)
            Labels from ``classes_``: a NumPy array, or for numeric labels and an
            Array-API ``X``, an array of ``X``'s library.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.sklearn import MLPClassifier
        >>> X, y = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array(["no", "no", "yes", "yes"])
        >>> clf = MLPClassifier((4,), learning_rate=0.1, max_iter=50, random_state=0).fit(X, y)
        >>> clf.predict(np.array([[0.9, 0.2], [0.1, 0.8]]))
        array(['yes', 'no'], dtype='<U3')
        """
        xp, z = logits(self, X)
        index = xp.astype(z[:, 0] > 0, xp.int64) if z.shape[1] == 1 else xp.argmax(z, axis=1)
        if is_device_array(z) and np.issubdtype(self.classes_.dtype, np.number):
            return xp.take(xp.asarray(self.classes_, device=device_of(z)), index)
        return self.classes_[as_host(index)]


def _accuracy(xp: Any, z: Any, t: Any) -> float:
    """Early stopping's validation score: the fraction of samples whose predicted class is the label."""
    if z.shape[1] == 1:
        hits = (z[:, 0] > 0) == (t[:, 0] > 0.5)
    else:
        hits = xp.argmax(z, axis=1) == xp.argmax(t, axis=1)
    return float(xp.mean(xp.astype(hits, z.dtype)))
