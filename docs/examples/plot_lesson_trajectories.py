"""
Trajectories on an ill-conditioned quadratic and on Rosenbrock
===============================================================

GD, Momentum, RMSprop and Adam started from the same point on two surfaces, as
``anyoptim trajectories`` draws them.  On the narrow quadratic valley
:math:`f(x, y) = x^2/2 + 50\\,y^2/2`, gradient descent zig-zags across the steep
direction; Momentum's velocity, an exponential average of the gradients,
cancels the alternating component and keeps the steady one.  RMSprop and Adam
rescale each coordinate by its own gradient size and head almost straight for
the minimum.
"""

from pathlib import Path

from anyoptim.lesson.plots import plot_trajectories
from anyoptim.lesson.trajectories import SURFACES, reversals, run_trajectories

paths = run_trajectories()
for path in paths:
    print(
        f"{path.surface:<10} {path.optimizer:<9} lr {path.learning_rate:<6g} "
        f"steps {len(path.points) - 1:>5}  reversals {reversals(path.points):>4}  "
        f"distance to the minimum {path.final_distance:.2e}"
    )

# %%
# One figure per surface; the star is the minimum, the black dot the start,
# the coloured dots where each optimizer stopped.

for surface in SURFACES:
    mine = [path for path in paths if path.surface == surface.name]
    _ = plot_trajectories(surface, mine, Path("figures") / f"trajectories_{surface.name}.png", resolution=250)
