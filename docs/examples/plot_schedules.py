"""
Learning-rate schedules
=======================

A schedule is a function of the optimizer's step count (the number of steps
taken *before* the one that uses the rate), and every optimizer's
``learning_rate`` accepts one.  The course decays its rate per *epoch*; with
``steps_per_epoch`` mini-batches per epoch its stepped decay
:math:`\\alpha_0 / (1 + \\lfloor \\text{epoch} / 1000 \\rfloor)` is
``inverse_time_decay(lr0, decay_steps=1000 * steps_per_epoch, decay_rate=1, staircase=True)``.
"""

import matplotlib.pyplot as plt
import numpy as np

import anyoptim
from anyoptim import schedules

steps_per_epoch = 5  # the lesson's 300 samples in mini-batches of 64
total = 5000 * steps_per_epoch
count = np.arange(total)

examples = {
    "constant(0.01)": schedules.constant(0.01),
    "exponential_decay(0.01, 5000, 0.5)": schedules.exponential_decay(0.01, decay_steps=5000, decay_rate=0.5),
    "inverse_time_decay (the lesson's stepped decay)": schedules.inverse_time_decay(
        0.01, decay_steps=1000 * steps_per_epoch, decay_rate=1.0, staircase=True
    ),
    "piecewise_constant([10000, 20000], [0.01, 0.001, 0.0001])": schedules.piecewise_constant(
        [10_000, 20_000], [0.01, 0.001, 0.0001]
    ),
    "cosine_decay(0.01, 25000)": schedules.cosine_decay(0.01, decay_steps=total),
    "warmup_cosine_decay(0.01, 2500, 25000)": schedules.warmup_cosine_decay(0.01, warmup_steps=2500, decay_steps=total),
}

fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True, layout="constrained")
for ax, (label, schedule) in zip(axes.flat, examples.items(), strict=True):
    ax.plot(count, [schedule(int(c)) for c in count], linewidth=1.2)
    ax.set_title(label, fontsize="small")
    ax.set_xlabel("step count")
    ax.grid(True, alpha=0.3)
axes[0, 0].set_ylabel("learning rate")
axes[1, 0].set_ylabel("learning rate")

# %%
# An optimizer reports the rate of its next step, and the state records the
# rate of the last one:

optimizer = anyoptim.Adam(examples["inverse_time_decay (the lesson's stepped decay)"])
print([optimizer.learning_rate_at(c) for c in (0, 4_999, 5_000, 10_000)])
