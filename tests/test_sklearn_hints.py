"""scikit-learn's own settings passed to anyoptim's estimators: the error says what to write instead."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the sklearn extra

from anyoptim.sklearn import MLPClassifier, MLPRegressor
from anyoptim.sklearn.hints import LEARNING_RATE_NAMES, SKLEARN_SETTINGS

X = np.random.default_rng(0).standard_normal((12, 3))
y = np.arange(12) % 2


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("name", sorted(SKLEARN_SETTINGS))
def test_constructor_names_the_anyoptim_setting(estimator, name):
    with pytest.raises(TypeError, match=f"scikit-learn's setting '{name}': ") as raised:
        estimator(**{name: 1})
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("name", "words"), [("solver", "optimizer="), ("learning_rate_init", "learning_rate=")])
def test_set_params_names_the_anyoptim_setting_and_changes_nothing(name, words):
    clf = MLPClassifier(alpha=0.5)
    with pytest.raises(ValueError, match=words):
        clf.set_params(alpha=0.1, **{name: 1})
    assert clf.alpha == 0.5
    assert clf.set_params(alpha=0.1).alpha == 0.1


@pytest.mark.parametrize("name", sorted(LEARNING_RATE_NAMES))
def test_learning_rate_names_get_a_hint_before_training(name):
    clf = MLPClassifier((3,), learning_rate=name, max_iter=2)
    with pytest.raises(ValueError, match=f"learning_rate='{name}' is a scikit-learn schedule name; "):
        clf.fit(X, y)
    assert not hasattr(clf, "coefs_")


def test_adaptive_points_to_schedules_and_solver_to_optimizer():
    with pytest.raises(ValueError, match=r"anyoptim\.schedules"):
        MLPRegressor(learning_rate="adaptive").fit(X, y.astype(float))
    with pytest.raises(TypeError, match=r"optimizer=.*'sgd'"):
        MLPClassifier(solver="sgd")


def test_other_strings_and_names_still_fail_plainly():
    with pytest.raises(ValueError, match="pass a float or a schedule"):
        MLPClassifier(learning_rate="fast").fit(X, y)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        MLPClassifier(colour=1)
