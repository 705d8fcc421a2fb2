"""scikit-learn estimators on anyoptim: :class:`MLPClassifier` and :class:`MLPRegressor`.

Needs scikit-learn (``pip install anyoptim[sklearn]``); ``import anyoptim``
does not import this package.

=====================  ===================================================
module                 holds
=====================  ===================================================
:mod:`.base`           :class:`BaseMLP`: the shared parameters
:mod:`.classifier`     :class:`MLPClassifier`
:mod:`.regressor`      :class:`MLPRegressor`
:mod:`.training`       the epoch loop on :func:`anyoptim.fit`, stopping rules
:mod:`.model`          scikit-learn's loss on an MLP, Glorot init, the optimizer
:mod:`.inputs`         input validation: scikit-learn's, or the Array API's
:mod:`.hints`          scikit-learn's setting names (``solver``) -> anyoptim's
=====================  ===================================================
"""

try:
    import sklearn  # noqa: F401
except ModuleNotFoundError as error:  # a hint instead of a bare traceback from deep inside
    raise ModuleNotFoundError(
        "anyoptim.sklearn needs scikit-learn: pip install scikit-learn (or anyoptim[sklearn])", name=error.name
    ) from error

from .classifier import MLPClassifier
from .regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
