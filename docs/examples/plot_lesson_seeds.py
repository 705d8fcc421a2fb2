"""
The lesson's comparison over several initialization seeds
=========================================================

One seed is one draw: the lesson's 2-5-2-1 ReLU network is fragile to its
initial weights, so a single run of ``anyoptim compare`` can make an optimizer
look better or worse than it is.  ``anyoptim compare --seeds N`` trains every
configuration from N initializations (seeds ``--seed``, ``--seed + 1``, ...; the
moons stay those of ``--seed``) and reports the median and the range.  Here
the same with :func:`anyoptim.lesson.seeds.run_seeds`: five seeds and 1000
epochs instead of 5000, so that it runs in a few seconds.
"""

from pathlib import Path

from anyoptim.lesson.plots import plot_loss_bands
from anyoptim.lesson.problem import lesson_problem
from anyoptim.lesson.seeds import run_seeds, seed_list

problem = lesson_problem("numpy", seed=2)
seeds = seed_list(2, 5)
summaries, _ = run_seeds(seeds, epochs=1000, problem=problem, progress=False)

print(f"{'optimizer':<18} {'final cost: median (min-max)':>30} {'accuracy: median (min-max)':>28}")
for s in summaries:
    cost, acc = s.final_cost, s.train_accuracy
    print(
        f"{s.label:<18} {cost.median:>12.4f} ({cost.low:.4f}-{cost.high:.4f})"
        f" {acc.median:>11.1%} ({acc.low:.1%}-{acc.high:.1%})"
    )

# %%
# The spread of the loss curves
# -----------------------------
# The line is the median cost of the five runs at each epoch, the band the
# lowest and highest.  Where two bands overlap, the seeds alone can reorder the
# two optimizers.  One of these five initializations leaves every optimizer at
# a cost of ln 2 = 0.693 and 50 % (its ReLUs are dead from the start): the top
# of every band, and the lesson's fragility in one row.

_ = plot_loss_bands({s.label: s.band() for s in summaries}, Path("figures") / "loss_bands.png")
