"""
Training a torch ``nn.Module``
==============================

anyoptim's optimizers update torch tensors in place, outside autograd: pass a
module's parameters by name and their ``.grad`` tensors, and the module trains.
Here a small regression network is trained twice from the same initial
weights, with ``anyoptim.Adam`` and with ``torch.optim.Adam``: the two runs
follow the same path (anyoptim documents its Adam as equal to torch's).

CPU float32 tensors run on the NumPy engine's compiled loop through views of
their memory (no copy); see the user guide's torch page.  This example runs in
the docs build where torch is installed.
"""

import copy

import matplotlib.pyplot as plt
import torch

import anyoptim
from anyoptim.tree import nest

torch.manual_seed(0)
X = torch.randn(512, 8)
y = torch.tanh(X @ torch.randn(8, 1)) + 0.05 * torch.randn(512, 1)

model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
twin = copy.deepcopy(model)  # the same initial weights, for torch.optim

# %%
# anyoptim: parameters in by name (``nest`` turns ``"0.weight"`` into nested dicts), ``p.grad`` out.
# ``zero_grad`` and ``backward`` are the user's, as with torch.optim.

optimizer = anyoptim.Adam(learning_rate=0.01)
params = nest(model.named_parameters())
state = optimizer.init(params)
ours = []
for _ in range(200):
    model.zero_grad()
    loss = torch.nn.functional.mse_loss(model(X), y)
    loss.backward()
    grads = nest((name, p.grad) for name, p in model.named_parameters())
    params, state = optimizer.step(params, grads, state)
    ours.append(loss.item())

print("the module's own tensors:", params["0"]["weight"] is model[0].weight, "| still a leaf:", model[0].weight.is_leaf)

# %%
# torch.optim, from the same weights:

reference = torch.optim.Adam(twin.parameters(), lr=0.01)
theirs = []
for _ in range(200):
    reference.zero_grad()
    loss = torch.nn.functional.mse_loss(twin(X), y)
    loss.backward()
    reference.step()
    theirs.append(loss.item())

difference = max((a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters(), strict=True))
print(f"final loss {ours[-1]:.5f} (torch.optim {theirs[-1]:.5f}); largest weight difference {difference:.1e}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(ours, label="anyoptim.Adam", linewidth=3, alpha=0.6)
ax.semilogy(theirs, "--", label="torch.optim.Adam", color="black")
ax.set_xlabel("step")
ax.set_ylabel("training loss (MSE)")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# The optimizer state is keyed by torch's own names, one Adam moment per parameter:

print(state.count, anyoptim.tree.leaf_names(state.slots["m"]))
