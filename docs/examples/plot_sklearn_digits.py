"""
Digits with ``MLPClassifier`` and a grid search over optimizers
===============================================================

:class:`anyoptim.sklearn.MLPClassifier` is a scikit-learn estimator, so it
drops into a :class:`~sklearn.pipeline.Pipeline` and a
:class:`~sklearn.model_selection.GridSearchCV` like scikit-learn's own MLP.
Its ``optimizer`` takes any anyoptim optimizer by name (or an instance), so the
optimizer is one more hyperparameter to search.  Here: the 8×8 digits, a
64-64-10 network, three optimizers and two learning rates, 3-fold
cross-validation, 30 epochs per fit (a few seconds in all).
"""

import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anyoptim.sklearn import MLPClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

pipe = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=30, batch_size=64, random_state=0))
grid = {
    "mlpclassifier__optimizer": ["adam", "rmsprop", "lion"],
    "mlpclassifier__learning_rate": [3e-4, 3e-3],
}
warnings.filterwarnings("ignore", category=ConvergenceWarning)  # 30 epochs on purpose
search = GridSearchCV(pipe, grid, cv=3)
start = time.perf_counter()
search.fit(X_train, y_train)
print(f"{len(search.cv_results_['params']) * 3 + 1} fits in {time.perf_counter() - start:.1f} s")
print("best:", search.best_params_, f"cross-validated accuracy {search.best_score_:.3f}")
print(f"test accuracy of the refitted best pipeline: {search.score(X_test, y_test):.3f}")

# %%
# Mean cross-validated accuracy of every setting.  Lion's update has the size of
# the learning rate in every coordinate, so it wants a smaller rate than Adam's.

results = search.cv_results_
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for rate in grid["mlpclassifier__learning_rate"]:
    rows = [i for i, p in enumerate(results["params"]) if p["mlpclassifier__learning_rate"] == rate]
    names = [results["params"][i]["mlpclassifier__optimizer"] for i in rows]
    ax.plot(names, np.asarray(results["mean_test_score"])[rows], "o-", label=f"learning rate {rate:g}")
ax.set(ylabel="mean CV accuracy", title="digits, 64-64-10, 30 epochs")
ax.legend()

# %%
# The fitted estimator keeps scikit-learn's attributes: the loss curve (the L2
# penalty ``alpha`` included), the classes and the number of epochs run.

best = search.best_estimator_[-1]
print(best.classes_, best.n_iter_, f"final loss {best.loss_curve_[-1]:.4f}")
