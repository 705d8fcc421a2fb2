"""
Training on your own CSV file
=============================

:func:`anyoptim.datasets.load_csv` reads a table of numbers, one column of
labels and the others features (a header row is detected when a field is not a
number).  Here we write such a file first, three classes of points in the
plane, so the example runs anywhere; point ``path`` at your own file instead.
``anyoptim train --data yours.csv`` does the same from the command line.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import anyoptim
from anyoptim import datasets

# A CSV file as it might come from a spreadsheet: a header, two features, an integer label.
rng = np.random.default_rng(0)
centres = np.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])
labels = rng.integers(0, 3, size=240)
points = centres[labels] + rng.normal(scale=0.8, size=(240, 2))
path = Path(tempfile.mkdtemp()) / "points.csv"
np.savetxt(path, np.column_stack([points, labels]), delimiter=",", header="x1,x2,label", comments="", fmt="%.5g")
print(path.read_text().splitlines()[:3])

X, y = datasets.load_csv(path)  # label column: the last one by default
print(X.shape, X.dtype, y.shape, y.dtype, np.unique(y))

# %%
# Integer labels 0, 1, 2 and three softmax outputs: the model reads them as
# class indices and trains with the categorical cross-entropy.

model = anyoptim.MLP([2, 16, 3], hidden_activation="relu", output="softmax")
result = anyoptim.fit(model, anyoptim.Adam(0.01), X, y, epochs=300, batch_size=32, seed=0, progress=False)
print(f"final cost {result.history.cost[-1]:.4f}, train accuracy {anyoptim.accuracy(model, result.params, X, y):.1%}")

# %%
# The regions the network assigns to each class.

grid_x, grid_y = np.meshgrid(np.linspace(-5, 5, 200), np.linspace(-4, 5, 200))
grid = np.column_stack([grid_x.ravel(), grid_y.ravel()])
regions = anyoptim.predict(model, result.params, grid).reshape(grid_x.shape)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
left.contourf(grid_x, grid_y, regions, levels=[-0.5, 0.5, 1.5, 2.5], colors=["#f4c7c3", "#c6dbef", "#c7e9c0"])
left.scatter(X[:, 0], X[:, 1], c=y, cmap="brg", s=10, edgecolors="k", linewidths=0.3)
left.set_title("decision regions")
right.plot(result.history.cost)
right.set(xlabel="epoch", ylabel="mean categorical cross-entropy", yscale="log", title="cost per epoch")
