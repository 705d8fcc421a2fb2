"""
The lesson's comparison: GD, Momentum, RMSprop and Adam on the moons
=====================================================================

The whole experiment of the lesson, as ``anyoptim compare`` runs it: a 2-5-2-1
network (ReLU, ReLU, sigmoid) on 300 two-moons samples with noise 0.2,
mini-batches of 64, 5000 epochs.  First GD, Momentum, RMSprop and Adam at the
learning rate 0.0007, then GD, Momentum (from 0.1) and Adam (from 0.01) with
the stepped decay :math:`\\alpha_0 / (1 + \\lfloor \\text{epoch}/1000 \\rfloor)`.

Every run starts from the same initial weights and sees the same mini-batches,
both drawn from one seed (2, the command's default), so the rows differ only in
the optimizer.  The figures are drawn by :mod:`anyoptim.lesson.plots`, the
functions the command line uses.
"""

from pathlib import Path

from anyoptim.lesson.compare import run_comparison
from anyoptim.lesson.plots import plot_decision_boundary, plot_loss_curves
from anyoptim.lesson.problem import lesson_problem

problem = lesson_problem("numpy", seed=2)
rows = run_comparison("numpy", seed=2, problem=problem, progress=False)

print(f"{'optimizer':<18} {'learning rate':>13} {'final cost':>10} {'train accuracy':>14}")
for row in rows:
    print(f"{row.label:<18} {row.learning_rate:>13g} {row.final_cost:>10.4f} {row.train_accuracy:>13.1%}")

# %%
# The loss curves
# ---------------
# At 0.0007 plain GD and Momentum crawl (their curves lie on top of each
# other: with :math:`\beta = 0.9` the velocity is an average of the same small
# gradients); RMSprop and Adam divide by the root of the squared-gradient
# average and take steps of about the rate in every direction.  With the decay
# (dashed) every optimizer starts fast and settles.

figures = Path("figures")
_ = plot_loss_curves({row.label: row.history.cost for row in rows}, figures / "loss_curves.png")

# %%
# The decision boundaries
# -----------------------
# GD's nearly straight line against Adam's curved one; with the decay all
# three separate the moons.

for row in rows:
    name = row.label.lower().replace(" + ", "_")
    _ = plot_decision_boundary(
        problem.model,
        row.params,
        problem.X,
        problem.y,
        figures / f"boundary_{name}.png",
        title=f"{row.label} (lr {row.learning_rate:g}): {row.train_accuracy:.1%}",
        resolution=200,
    )
