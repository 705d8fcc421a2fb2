"""
float16 parameters, with and without master weights
===================================================

Adam at a learning rate of ``1e-4`` fits a float16 linear model.  anyoptim
computes every step in float32 and rounds once on store, so nothing becomes
NaN; but a float16 weight near 1 cannot move by less than about ``5e-4``, so
most of each ``1e-4`` step is rounded away.  With ``master_weights=True`` the
state keeps a float32 copy of the weights, the small steps add up, and the run
follows the float32 one.  (bfloat16 on torch or JAX behaves the same way, with
a coarser spacing still.)
"""

import matplotlib.pyplot as plt
import numpy as np

import anyoptim

rng = np.random.default_rng(0)
X = rng.normal(size=(256, 8))
w_true = 1.0 + 0.1 * rng.normal(size=8)
y = X @ w_true


def run(dtype, master_weights, steps=3000):
    """Full-batch Adam on the least-squares loss; returns the loss after each step."""
    opt = anyoptim.Adam(1e-4, master_weights=master_weights)
    params = {"w": np.full(8, 0.8, dtype=dtype)}
    state = opt.init(params)
    losses = []
    for _ in range(steps):
        w = params["w"].astype(np.float64)
        residual = X @ w - y
        losses.append(float(np.mean(residual**2)))
        grad = (2.0 / len(y)) * (X.T @ residual)  # the gradient as the model would give it, in its dtype
        params, state = opt.step(params, {"w": grad.astype(dtype)}, state)
    return np.array(losses)


runs = {
    "float32": run(np.float32, False),
    "float16": run(np.float16, False),
    "float16, master_weights=True": run(np.float16, True),
}

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for label, losses in runs.items():
    ax.semilogy(losses, label=label, linestyle="--" if "master" in label else "-")
ax.set_xlabel("step")
ax.set_ylabel("mean squared error")
ax.set_title("Adam, learning rate 1e-4")
ax.legend()
plt.show()

for label, losses in runs.items():
    print(f"{label:30s} loss after {len(losses)} steps: {losses[-1]:.3g}")
