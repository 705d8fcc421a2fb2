"""
Every optimizer on the Rosenbrock function
==========================================

Each optimizer of :data:`anyoptim.optimizers.REGISTRY` (so a new optimizer
appears here by its registry row) minimises the Rosenbrock function
:math:`f(x, y) = (1 - x)^2 + 100\\,(y - x^2)^2` from :math:`(-1.5, 2)` for 1000
steps, with its analytic gradient.  The position is one NumPy 2-vector that the
optimizer updates in place.

The rates are set by family, not tuned to win: gradient descent needs a small
one (the valley walls are steep); Adam's family, whose steps are about the rate
in every direction, a larger one.  RAdam's first steps are plain SGD with
momentum (until its variance estimate is trusted), so at Adam's 0.05 it is
thrown out of the valley (0.02 already is); it gets 0.01.
"""

import matplotlib.pyplot as plt
import numpy as np

from anyoptim.optimizers import REGISTRY


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def gradient(w):
    x, y = w
    return np.array([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


RATES = {"sgd": 1e-3, "momentum": 5e-3, "rmsprop": 0.01, "adagrad": 1.0, "adamax": 0.2, "radam": 0.01, "lion": 0.01}
STEPS = 1000

paths = {}
for name, cls in REGISTRY.items():
    optimizer = cls(RATES.get(name, 0.05))
    params = {"w": np.array([-1.5, 2.0])}
    state = optimizer.init(params)
    path = [params["w"].copy()]  # copy: step updates params["w"] in place
    for _ in range(STEPS):
        params, state = optimizer.step(params, {"w": gradient(params["w"])}, state)
        path.append(params["w"].copy())
    paths[cls.__name__] = np.array(path)
    x, y = path[-1]
    print(f"{cls.__name__:<9} lr {RATES.get(name, 0.05):<6g} end ({x:+.4f}, {y:+.4f})  f = {rosenbrock(x, y):.2e}")

# %%
# The paths on the contour plot; the star is the minimum at (1, 1).

grid_x, grid_y = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
ax.contour(
    grid_x, grid_y, rosenbrock(grid_x, grid_y), levels=np.geomspace(0.01, 2500, 25), colors="0.7", linewidths=0.6
)
for label, path in paths.items():
    ax.plot(path[:, 0], path[:, 1], "-", linewidth=1.0, label=label)
    ax.plot(*path[-1], "o", markeredgecolor="k", markersize=5)
ax.plot(1, 1, "k*", markersize=12)
ax.plot(-1.5, 2, "ko")
ax.set(xlim=(-2, 2), ylim=(-1, 3), xlabel="x", ylabel="y", title=f"{len(paths)} optimizers, {STEPS} steps each")
ax.legend(loc="lower right", fontsize="small", ncols=2)

# %%
# And the function value along the way.

fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
for label, path in paths.items():
    ax.semilogy(rosenbrock(path[:, 0], path[:, 1]) + 1e-16, label=label, linewidth=1.0)
ax.set(xlabel="step", ylabel="f", title="Rosenbrock value per step")
ax.legend(fontsize="small", ncols=2)
ax.grid(True, which="both", alpha=0.3)
