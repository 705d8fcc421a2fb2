"""anyoptim.sklearn: scikit-learn's own estimator checks, labels, penalties, early stopping, partial_fit, backends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from anyoptim.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

#: Checks skipped, each with its reason (none so far).
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(
    [MLPClassifier(max_iter=50, random_state=0), MLPRegressor(max_iter=50, random_state=0)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
