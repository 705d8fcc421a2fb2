""":class:`BaseMLP`: the parameters both estimators share, stored as given (scikit-learn's convention).

Checking them and training are :mod:`.training`'s: ``fit`` and ``partial_fit``
check every parameter before anything changes.
"""

from __future__ import annotations

import inspect
from typing import Any

from sklearn.base import BaseEstimator

from .hints import accepted_names, check_setting_names

__all__ = ["BaseMLP"]


class BaseMLP(BaseEstimator):
    """Shared parameters and training of :class:`MLPClassifier` and :class:`MLPRegressor` (see them)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> BaseMLP:
        # Before __init__ refuses an unknown keyword: scikit-learn's own names get a hint (solver -> optimizer),
        # and any other names the class called, not BaseMLP.__init__.
        check_setting_names(cls.__name__, kwargs, accepted=accepted_names(cls))
        return super().__new__(cls)

    def set_params(self, **params: Any) -> BaseMLP:
        """Set parameters, as :meth:`sklearn.base.BaseEstimator.set_params`; scikit-learn-only names get a hint.

        Parameters
        ----------
        **params : dict
            Parameter names and their new values.

        Returns
        -------
        BaseMLP
            The estimator itself.

        Raises
        ------
        ValueError
            For an unknown name, with a hint for a setting of scikit-learn's
            estimators that anyoptim's spell otherwise (``solver``: ``optimizer``).

        Examples
        --------
        >>> from anyoptim.sklearn import MLPClassifier
        >>> MLPClassifier().set_params(alpha=0.01).alpha
        0.01
        """
        check_setting_names(type(self).__name__, params, ValueError)
        return super().set_params(**params)

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

    # The class's signature stays __init__'s (inspect would otherwise report __new__'s *args, **kwargs).
    __signature__ = inspect.signature(__init__).replace(
        parameters=list(inspect.signature(__init__).parameters.values())[1:]
    )
