"""
Regression with an identity output
==================================

With ``output="identity"`` the last layer is linear and :func:`anyoptim.fit`
minimises the mean squared error, so the same network does regression.  Here a
1-32-32-1 tanh network fits :math:`y = \\sin(2x) + \\varepsilon` on 200 noisy
points, with AdamW and a cosine-decayed rate.
"""

import matplotlib.pyplot as plt
import numpy as np

import anyoptim
from anyoptim import schedules

rng = np.random.default_rng(0)
X = rng.uniform(-3, 3, size=(200, 1))
y = np.sin(2 * X[:, 0]) + rng.normal(scale=0.1, size=200)  # targets of shape (n,) or (n, 1)

epochs, batch_size = 400, 32
steps = epochs * -(-len(X) // batch_size)
model = anyoptim.MLP([1, 32, 32, 1], hidden_activation="tanh", output="identity")
optimizer = anyoptim.AdamW(schedules.cosine_decay(0.01, decay_steps=steps), weight_decay=1e-4)
result = anyoptim.fit(model, optimizer, X, y, epochs=epochs, batch_size=batch_size, seed=0, progress=False)
print(f"final mean squared error {result.history.cost[-1]:.4f} (noise variance 0.01)")

# %%
# ``predict`` of an identity output is the network's value itself.

grid = np.linspace(-3.2, 3.2, 300)[:, None]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
left.plot(X[:, 0], y, ".", markersize=4, color="0.5", label="data")
left.plot(grid[:, 0], anyoptim.predict(model, result.params, grid).reshape(-1), "tab:red", label="network")
left.plot(grid[:, 0], np.sin(2 * grid[:, 0]), "k--", linewidth=0.8, label="sin(2x)")
left.legend()
right.semilogy(result.history.cost)
right.set(xlabel="epoch", ylabel="mean squared error", title="cost per epoch")
