"""
Batch, mini-batch and stochastic gradient descent
==================================================

The same 500 steps of plain gradient descent at the rate 0.1 on the lesson's
moons, from the same initial weights; only the batch each gradient is computed
on differs: all 300 examples (batch GD), 64 (mini-batch: 300 = 4 x 64 + 44, the
last batch of each epoch is the remainder) and one (stochastic GD).  This is
``anyoptim batch-sizes``.

The left panel is the curve a training loop sees, the cost of each step's own
batch; the right one is the cost on the whole set after each step.  Per
*step*, the mini-batch curve follows batch GD closely at a fifth of the work;
one example per step makes a noisy path.
"""

from pathlib import Path

from anyoptim.lesson.batch_sizes import run_batch_sizes, step_noise
from anyoptim.lesson.plots import plot_batch_sizes

curves = run_batch_sizes("numpy", seed=2)
for curve in curves:
    print(
        f"{curve.label:<16} final whole-set cost {curve.full_costs[-1]:.4f}  "
        f"step-to-step jitter of the batch cost {step_noise(curve.batch_costs):.4f}"
    )
_ = plot_batch_sizes(curves, Path("figures") / "batch_sizes.png")
