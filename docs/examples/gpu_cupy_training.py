"""
Training on a GPU with CuPy
===========================

The lesson's network and :func:`anyoptim.fit` on CuPy arrays: only the arrays
change.  The data are made on the host and moved to the GPU; :func:`fit` lays
the parameters out in one flat buffer, so every step is one fused CUDA kernel
(the :class:`~anyoptim.engines.cupy.CupyEngine`).

The docs build runs this script only where CuPy sees a GPU; elsewhere it is
shown, not run.  Run by hand without a GPU, it stops with a message.
"""

import sys

try:
    import cupy as cp

    assert cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # no CuPy, no driver or no device
    sys.exit('this example needs a CUDA GPU and CuPy: pip install "anyoptim[cuda12]"')

import anyoptim
from anyoptim import datasets

X, y = datasets.make_moons(n_samples=300, noise=0.2, seed=2, xp=cp)  # on the GPU, float64
model = anyoptim.MLP([2, 5, 2, 1], hidden_activation="relu", output="sigmoid", init="he")
result = anyoptim.fit(model, anyoptim.Adam(0.0007), X, y, epochs=5000, batch_size=64, seed=2, progress=False)
print(type(result.params["W1"]), result.params["W1"].device)
print(f"final cost {result.history.cost[-1]:.4f}, accuracy {anyoptim.accuracy(model, result.params, X, y):.1%}")

# %%
# Any loop works the same way: ``step`` updates CuPy arrays in place, with one
# kernel for the whole flat buffer.

params = anyoptim.flatten({"w": cp.zeros(3), "b": cp.zeros(())})
Xs = cp.random.default_rng(0).standard_normal((256, 3))
ys = Xs @ cp.asarray([1.5, -2.0, 0.5])
optimizer = anyoptim.Adam(0.1)
state = optimizer.init(params)
for _ in range(500):
    r = Xs @ params["w"] + params["b"] - ys
    grads = {"w": 2 * Xs.T @ r / len(ys), "b": 2 * r.mean()}
    params, state = optimizer.step(params, grads, state)
print(params["w"], params["b"])
