"""
Optimizing torch tensors
========================

anyoptim's optimizers take any tree of arrays, torch tensors included: compute
the gradients with autograd and pass the ``.grad`` tensors to ``step``.  On
torch, ``step`` runs the generic engine and returns **new** tensors (only the
NumPy and CuPy engines update in place), so to train a ``torch.nn.Module`` copy
the returned values into its parameters, as below.

This example runs in the docs build where torch is installed (shown only
otherwise).
"""

import torch

import anyoptim

torch.manual_seed(0)
X = torch.randn(512, 8)
true_w = torch.randn(8, 1)
y = torch.tanh(X @ true_w) + 0.05 * torch.randn(512, 1)

model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def leaves(module):
    """The module's parameters as a tree; leaf names may not contain ".": "0.weight" becomes "0_weight"."""
    return {name.replace(".", "_"): p for name, p in module.named_parameters()}


optimizer = anyoptim.Adam(learning_rate=0.01)
state = optimizer.init(leaves(model))
print(list(state.slots["m"]))

for epoch in range(200):
    loss = torch.nn.functional.mse_loss(model(X), y)
    model.zero_grad()
    loss.backward()
    params = leaves(model)
    grads = {name: p.grad for name, p in params.items()}
    new_params, state = optimizer.step(params, grads, state)
    with torch.no_grad():  # the returned tensors are the truth: copy them into the module
        for name, p in params.items():
            p.copy_(new_params[name])
    if epoch % 50 == 0 or epoch == 199:
        print(f"epoch {epoch:>3}  loss {loss.item():.5f}")

# %%
# The optimizer state is keyed by the same leaf names, one Adam moment per parameter:

print(state.count, {name: tuple(m.shape) for name, m in state.slots["m"].items()})
