"""
Regression with ``MLPRegressor``: early stopping and scikit-learn's MLP side by side
====================================================================================

:class:`anyoptim.sklearn.MLPRegressor` fits scikit-learn's ``squared_loss``
(half the mean squared error) plus the L2 penalty ``alpha`` on the weights,
from scikit-learn's Glorot-uniform initialization, so its numbers compare with
:class:`sklearn.neural_network.MLPRegressor`'s.  Here both fit the diabetes data
with Adam and early stopping; anyoptim's keeps the weights of the best
validation epoch.
"""

import matplotlib.pyplot as plt
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor as SklearnMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anyoptim.sklearn import MLPRegressor

X, y = load_diabetes(return_X_y=True)
y = (y - y.mean()) / y.std()
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)

settings = dict(hidden_layer_sizes=(32, 16), alpha=1e-3, early_stopping=True, max_iter=500, random_state=0)
ours = make_pipeline(StandardScaler(), MLPRegressor(optimizer="adam", learning_rate=3e-3, **settings))
theirs = make_pipeline(StandardScaler(), SklearnMLPRegressor(solver="adam", learning_rate_init=3e-3, **settings))
for name, pipe in (("anyoptim", ours), ("scikit-learn", theirs)):
    pipe.fit(X_train, y_train)
    est = pipe[-1]
    print(
        f"{name:>12}: {est.n_iter_} epochs, best validation R² {est.best_validation_score_:.3f}, "
        f"test R² {pipe.score(X_test, y_test):.3f}"
    )

# %%
# The loss curves (penalty included) and the validation R² of every epoch.

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
for name, pipe in (("anyoptim", ours), ("scikit-learn", theirs)):
    left.plot(pipe[-1].loss_curve_, label=name)
    right.plot(pipe[-1].validation_scores_, label=name)
left.set(xlabel="epoch", ylabel="loss", yscale="log", title="training loss")
right.set(xlabel="epoch", ylabel="R²", title="validation R²")
right.legend()
