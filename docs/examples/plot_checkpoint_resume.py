"""
Stop a run and resume it, bit for bit
=====================================

:func:`anyoptim.checkpoint.resumable_fit` writes a checkpoint every few epochs;
run it again with ``resume=True`` and it continues where the file left off.
Here a run of 60 epochs with a decaying learning rate is stopped after 25
(as if the machine had gone down) and resumed: its cost curve is the very one of
the run that was never stopped, and so are its parameters.
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import anyoptim
from anyoptim.checkpoint import read_info, resumable_fit

X, y = anyoptim.datasets.make_moons(n_samples=300, noise=0.2, seed=0)
model = anyoptim.MLP([2, 16, 1], hidden_activation="tanh")


def optimizer():
    return anyoptim.Adam(anyoptim.schedules.exponential_decay(0.02, decay_steps=100, decay_rate=0.8))


run = {"epochs": 60, "batch_size": 32, "seed": 0, "progress": False}
path = os.path.join(tempfile.mkdtemp(), "run.safetensors")

whole = anyoptim.fit(model, optimizer(), X, y, **run)
stopped = resumable_fit(model, optimizer(), X, y, checkpoint=path, checkpoint_every=5, **{**run, "epochs": 25})
print("saved after epoch", read_info(path).extra["fit"]["epoch"], "- step count", read_info(path).count)
resumed = resumable_fit(model, optimizer(), X, y, checkpoint=path, resume=True, **run)

print("same cost history:", resumed.history.cost == whole.history.cost)
print("same parameters:", all(np.array_equal(resumed.params[k], whole.params[k]) for k in whole.params))

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
ax.plot(whole.history.cost, linewidth=4, alpha=0.35, label="uninterrupted run")
ax.plot(range(25), stopped.history.cost, label="first run (stopped after 25 epochs)")
ax.plot(range(25, 60), resumed.history.cost[25:], "--", label="resumed from the checkpoint")
ax.axvline(24.5, color="grey", linewidth=0.8)
ax.set_xlabel("epoch")
ax.set_ylabel("mean binary cross-entropy")
ax.legend()
plt.show()
