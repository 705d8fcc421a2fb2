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


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_torch_lr_names_the_class_called_and_learning_rate(estimator):
    with pytest.raises(
        TypeError, match=f"^{estimator.__name__}\\(\\) got an unexpected keyword argument 'lr': "
    ) as raised:
        estimator(lr=0.1)
    assert "learning_rate=" in str(raised.value) and "BaseMLP" not in str(raised.value)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="'lr': pass learning_rate="):
        estimator().set_params(lr=0.1)


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_unknown_keywords_name_the_class_called_and_the_closest_name(estimator):
    name = estimator.__name__
    with pytest.raises(TypeError, match=f"^{name}\\(\\) got an unexpected keyword argument 'hidden_layers'; "):
        estimator(hidden_layers=(3,))
    with pytest.raises(TypeError, match=r"did you mean 'hidden_layer_sizes'\?$"):
        estimator(hidden_layers=(3,))
    with pytest.raises(TypeError, match=f"'colour'; {name} takes hidden_layer_sizes, activation, optimizer, "):
        estimator(colour=1)
    assert estimator((3,), "tanh", alpha=0.5, learning_rate=0.1).get_params()["alpha"] == 0.5


@pytest.mark.parametrize("nesterov", [True, False])
def test_momentum_hint_is_scikit_learns_momentum(nesterov):
    # The hint's optimizer takes scikit-learn's SGD steps (heavy ball, Nesterov's by default).
    from sklearn.neural_network._stochastic_optimizers import SGDOptimizer

    import anyoptim

    assert "Momentum(0.001, beta=0.9, form='heavy_ball', nesterov=True)" in SKLEARN_SETTINGS["momentum"]
    assert "Momentum(0.001, beta=0.9, form='heavy_ball', nesterov=True)" in SKLEARN_SETTINGS["nesterovs_momentum"]
    theirs = [np.array([1.0, -2.0, 0.5])]
    sgd = SGDOptimizer(theirs, learning_rate_init=0.001, momentum=0.9, nesterov=nesterov)
    opt = anyoptim.Momentum(0.001, beta=0.9, form="heavy_ball", nesterov=nesterov)
    ours = {"w": theirs[0].copy()}
    state = opt.init(ours)
    for _ in range(5):
        sgd.update_params(theirs, [2 * theirs[0] + 1])
        ours, state = opt.step(ours, {"w": 2 * ours["w"] + 1}, state)
    np.testing.assert_allclose(ours["w"], theirs[0], rtol=1e-14)


def test_a_subclass_takes_its_own_keywords():
    class Explicit(MLPClassifier):
        def __init__(self, extra=1, hidden_layer_sizes=(100,)):
            super().__init__(hidden_layer_sizes)
            self.extra = extra

    class Forwarding(MLPClassifier):
        def __init__(self, extra=1, **kwargs):
            super().__init__(**kwargs)
            self.extra = extra

    assert Explicit(extra=2).extra == 2 and Forwarding(extra=3, alpha=0.5).alpha == 0.5
    with pytest.raises(TypeError, match=r"^Explicit\(\) got an unexpected keyword argument 'alpha'"):
        Explicit(alpha=0.5)
    with pytest.raises(TypeError, match="scikit-learn's setting 'solver'"):
        Forwarding(solver="sgd")
