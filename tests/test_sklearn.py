"""anyoptim.sklearn: scikit-learn's own estimator checks, labels, penalties, early stopping, partial_fit, backends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the sklearn extra (absent on the offline GPU machines, say)

from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from anyoptim.sklearn import MLPClassifier, MLPRegressor
from tests.helpers import from_numpy, to_numpy

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


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _small_problem(n_classes=3, n=120, seed=0):
    return make_classification(
        n_samples=n, n_features=5, n_informative=4, n_redundant=0, n_classes=n_classes, random_state=seed
    )


@pytest.mark.parametrize(
    "names",
    [["cat", "dog", "emu"], [-1, 1], [1, 2], [1, 2, 3, 4], [0.0, 2.0, 5.0], [True, False]],
    ids=["strings", "minus-one-one", "one-two", "one-to-four", "floats", "bools"],
)
def test_any_labels_round_trip(names):
    X, index = _small_problem(n_classes=len(names))
    y = np.asarray(names)[index]
    clf = MLPClassifier((16,), learning_rate=0.02, max_iter=100, random_state=0).fit(X, y)
    assert clf.classes_.tolist() == sorted(set(y.tolist()))
    predicted = clf.predict(X)
    assert predicted.dtype == clf.classes_.dtype
    assert set(predicted.tolist()) <= set(names)
    assert clf.score(X, y) > 0.8
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.classes_[np.argmax(proba, axis=1)], predicted)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_predict_proba_shape_and_rows(n_classes):
    X, y = _small_problem(n_classes=n_classes)
    clf = MLPClassifier((8,), max_iter=5, random_state=1).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (X.shape[0], n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-12)
    assert clf.out_activation_ == ("logistic" if n_classes == 2 else "softmax")


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_early_stopping_restores_the_best_weights(Estimator):
    if Estimator is MLPClassifier:
        X, y = _small_problem(n=300, seed=3)
    else:
        X, y = make_regression(n_samples=300, n_features=5, noise=20.0, random_state=3)
        y = y / y.std()
    settings = dict(hidden_layer_sizes=(32,), learning_rate=0.05, early_stopping=True, random_state=0)
    est = Estimator(max_iter=200, n_iter_no_change=5, **settings).fit(X, y)
    scores = est.validation_scores_
    best = int(np.argmax(scores))
    assert est.best_validation_score_ == max(scores)
    assert est.best_loss_ is None
    assert est.n_iter_ == len(scores) == len(est.loss_curve_) > best + 1, "training went on past the best epoch"
    # The same run cut at the best epoch ends with the weights the long run restored.
    short = Estimator(max_iter=best + 1, n_iter_no_change=5, **settings).fit(X, y)
    for restored, at_best in zip(est.coefs_ + est.intercepts_, short.coefs_ + short.intercepts_, strict=True):
        np.testing.assert_array_equal(restored, at_best)


@pytest.mark.parametrize(
    ("Ours", "Theirs", "kind"),
    [(MLPClassifier, SkMLPClassifier, 2), (MLPClassifier, SkMLPClassifier, 3), (MLPRegressor, SkMLPRegressor, 0)],
    ids=["binary", "multiclass", "regression"],
)
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic"])
def test_alpha_matches_scikit_learns_penalty_on_one_step(Ours, Theirs, kind, activation):
    if kind:
        X, y = _small_problem(n_classes=kind, n=40)
    else:
        X, y = make_regression(n_samples=40, n_features=5, random_state=0)
        y = y / y.std()
    shared = dict(hidden_layer_sizes=(7, 4), activation=activation, alpha=0.3, batch_size=40, max_iter=1)
    theirs = Theirs(solver="sgd", momentum=0.0, learning_rate_init=0.05, shuffle=False, random_state=0, **shared)
    ours = Ours(optimizer="sgd", learning_rate=0.05, random_state=0, **shared)
    theirs.fit(X, y)
    ours.fit(X, y)
    rng = np.random.default_rng(5)
    start_W = [rng.standard_normal(W.shape) for W in ours.coefs_]
    start_b = [rng.standard_normal(b.shape) for b in ours.intercepts_]
    for est in (theirs, ours):
        est.coefs_ = [W.copy() for W in start_W]
        est.intercepts_ = [b.copy() for b in start_b]
        est.partial_fit(X, y)  # one epoch of one full batch: one step
    # scikit-learn's log loss clips probabilities, anyoptim's works from the logits: equal to ~1e-11.
    np.testing.assert_allclose(ours.loss_curve_[-1], theirs.loss_curve_[-1], rtol=1e-9)
    for mine, sk in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(mine, sk, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["adam", "momentum", "rmsprop", "lion"])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_equals_fit_over_the_same_batches(Estimator, optimizer):
    X, y = _small_problem(n=90)
    if Estimator is MLPRegressor:
        y = y.astype(float)
    settings = dict(hidden_layer_sizes=(9,), optimizer=optimizer, batch_size=16, random_state=4, alpha=0.01)
    whole = Estimator(max_iter=4, tol=0.0, n_iter_no_change=100, **settings).fit(X, y)
    pieces = Estimator(**settings)
    for _ in range(4):
        if Estimator is MLPClassifier:
            pieces.partial_fit(X, y, classes=np.unique(y))
        else:
            pieces.partial_fit(X, y)
    assert pieces.n_iter_ == whole.n_iter_ == 4 and pieces.t_ == whole.t_ == 4 * 6
    np.testing.assert_array_equal(pieces.loss_curve_, whole.loss_curve_)
    for a, b in zip(pieces.coefs_ + pieces.intercepts_, whole.coefs_ + whole.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)


def test_loss_curve_includes_the_penalty():
    X, y = _small_problem()
    plain = MLPClassifier((8,), alpha=0.0, max_iter=1, random_state=0).fit(X, y)
    penalized = MLPClassifier((8,), alpha=10.0, max_iter=1, random_state=0).fit(X, y)
    assert penalized.loss_curve_[0] > plain.loss_curve_[0] + 0.01


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_same_seed_same_results_on_every_backend(Estimator, backend, xp):
    X, y = load_iris(return_X_y=True)
    if Estimator is MLPRegressor:
        y = X[:, 3].copy()
        X = X[:, :3]
    settings = dict(hidden_layer_sizes=(8,), learning_rate=0.01, max_iter=5, batch_size=32, random_state=0)
    reference = Estimator(**settings).fit(X, y)
    est = Estimator(**settings).fit(from_numpy(xp, X), from_numpy(xp, y))
    np.testing.assert_allclose(est.loss_curve_, reference.loss_curve_, rtol=1e-12)
    for a, b in zip(est.coefs_, reference.coefs_, strict=True):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-12)
    X_device = from_numpy(xp, X)
    if Estimator is MLPClassifier:
        proba = est.predict_proba(X_device)
        np.testing.assert_allclose(to_numpy(proba), reference.predict_proba(X), rtol=1e-10)
        np.testing.assert_array_equal(to_numpy(est.predict(X_device)), reference.predict(X))
    else:
        np.testing.assert_allclose(to_numpy(est.predict(X_device)), reference.predict(X), rtol=1e-10)


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ({"hidden_layer_sizes": (0,)}, ValueError),
        ({"hidden_layer_sizes": "wide"}, ValueError),
        ({"activation": "identity"}, ValueError),
        ({"optimizer": "newton"}, ValueError),
        ({"optimizer": 3}, TypeError),
        ({"learning_rate": -1.0}, ValueError),
        ({"alpha": -0.1}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"batch_size": "big"}, ValueError),
        ({"max_iter": 0}, ValueError),
        ({"validation_fraction": 1.0}, ValueError),
        ({"init": "orthogonal"}, ValueError),
        ({"n_iter_no_change": 1.5}, TypeError),
    ],
)
def test_bad_settings_fail_in_fit_before_anything_changes(setting, error):
    X, y = _small_problem()
    clf = MLPClassifier(max_iter=2, random_state=0).fit(X, y)
    before = [W.copy() for W in clf.coefs_]
    clf.set_params(warm_start=True, **setting)
    with pytest.raises(error):
        clf.fit(X, y)
    for a, b in zip(clf.coefs_, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_partial_fit_needs_classes_first_and_known_labels():
    X, y = _small_problem()
    clf = MLPClassifier((4,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    assert clf.classes_.tolist() == [0, 1, 2, 3] and clf.n_outputs_ == 4
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X, y + 7)


def test_optimizer_instance_is_copied_and_kept_unchanged():
    import anyoptim

    X, y = _small_problem()
    opt = anyoptim.AdamW(0.01, weight_decay=0.1)
    clf = MLPClassifier((8,), optimizer=opt, learning_rate=0.005, max_iter=3, random_state=0).fit(X, y)
    assert opt.learning_rate == 0.01
    assert clf.t_ == 3


def test_schedule_learning_rate_and_pipeline_grid_search():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import anyoptim

    X, y = _small_problem()
    schedule = anyoptim.schedules.exponential_decay(0.05, decay_steps=10, decay_rate=0.9)
    pipe = make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=10, random_state=0))
    grid = {"mlpclassifier__optimizer": ["adam", "lion"], "mlpclassifier__learning_rate": [schedule, 0.01]}
    grid = GridSearchCV(pipe, grid, cv=2)
    grid.fit(X, y)
    assert grid.best_score_ > 0.5
