""":class:`BaseMLP`: the parameters both estimators share, stored as given (scikit-learn's convention).

Checking them and training are :mod:`.training`'s: ``fit`` and ``partial_fit``
check every parameter before anything changes.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator

__all__ = ["BaseMLP"]


class BaseMLP(BaseEstimator):
    """Shared parameters and training of :class:`MLPClassifier` and :class:`MLPRegressor` (see them)."""

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        optimizer: Any = "adam",
        learning_rate: Any = None,
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        max_iter: int = 200,
        tol: float = 1e-4,
        init: str = "glorot_uniform",
        random_state: Any = None,
        warm_start: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        verbose: bool = False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.random_state = random_state
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.verbose = verbose
