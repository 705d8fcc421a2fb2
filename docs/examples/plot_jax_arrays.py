"""
Optimizing JAX arrays
=====================

JAX arrays are immutable, so ``step`` returns **new** arrays and you keep the
returned ``params`` (which is the pattern for every library: ``params, state =
opt.step(params, grads, state)``).  Gradients come from ``jax.grad``.

To compile the step (``jax.jit(opt.step)``, the state passed in and out) see
:ref:`sphx_glr_auto_examples_plot_jax_jit.py`.

This example runs in the docs build where JAX is installed (shown only
otherwise).
"""

import jax
import jax.numpy as jnp

import anyoptim

jax.config.update("jax_enable_x64", True)
key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
X = jax.random.normal(key_x, (256, 3))
y = X @ jnp.array([1.5, -2.0, 0.5])


def loss(params):
    return jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


grad = jax.jit(jax.grad(loss))
params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
optimizer = anyoptim.Adam(learning_rate=0.1)
state = optimizer.init(params)
for _ in range(300):
    before = params["w"]
    params, state = optimizer.step(params, grad(params), state)

print(params["w"], float(params["b"]), float(loss(params)))
print("the old array is unchanged:", before is not params["w"])
