"""
A jitted training step on JAX
=============================

``jax.jit`` compiles a whole training step: the loss's gradient by
``jax.grad`` and the optimizer's update, with the optimizer's state passed in
and returned like the parameters (an :class:`anyoptim.OptimizerState` is a JAX
pytree).  The compiled step takes the same steps as the eager one, schedule
and skipped non-finite gradients included, many times faster.

This example runs in the docs build where JAX is installed (shown only
otherwise).
"""

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import anyoptim

jax.config.update("jax_enable_x64", True)
key_x, key_noise = jax.random.split(jax.random.PRNGKey(0))
X = jax.random.normal(key_x, (512, 4))
y = jnp.tanh(X @ jnp.array([1.5, -2.0, 0.5, 1.0])) + 0.05 * jax.random.normal(key_noise, (512,))


def loss(params, X, y):
    hidden = jnp.tanh(X @ params["W1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


def init_params():
    key = jax.random.PRNGKey(1)
    return {"W1": 0.5 * jax.random.normal(key, (4, 16)), "b1": jnp.zeros(16), "w2": jnp.zeros(16), "b2": jnp.zeros(())}


optimizer = anyoptim.Adam(
    anyoptim.schedules.warmup_cosine_decay(0.05, warmup_steps=20, decay_steps=200), on_nonfinite="skip"
)


# %%
# The training step, compiled once
# --------------------------------
# The state goes in and comes out: never close over it (the compiled function
# would start again from that very state on every call).


@jax.jit
def train_step(params, state, X, y):
    value, grads = jax.value_and_grad(loss)(params, X, y)
    params, state = optimizer.step(params, grads, state)
    return params, state, value


def train(step, epochs=200):
    params = init_params()
    state = optimizer.init(params)
    history = []
    for _ in range(epochs):
        params, state, value = step(params, state, X, y)
        history.append(value)
    return params, state, [float(v) for v in history]


def eager_step(params, state, X, y):
    value, grads = jax.value_and_grad(loss)(params, X, y)
    params, state = optimizer.step(params, grads, state)
    return params, state, value


train(train_step, epochs=2)  # compile outside the timing
timings = {}
for name, step, epochs in [("jitted", train_step, 200), ("eager", eager_step, 40)]:
    start = time.perf_counter()
    params, state, history = train(step, epochs)
    timings[name] = ((time.perf_counter() - start) / epochs, params, state, history)

jitted, eager = timings["jitted"], timings["eager"]
print(f"per step: jitted {jitted[0] * 1e3:.3f} ms, eager {eager[0] * 1e3:.1f} ms")
print("largest difference of the first 40 losses:", max(abs(a - b) for a, b in zip(jitted[3], eager[3], strict=False)))
print("steps taken:", int(jitted[2].count), "learning rate now:", float(jitted[2].learning_rate))

# %%
# A NaN gradient under ``on_nonfinite="skip"``
# --------------------------------------------
# Under ``jax.jit`` the skip is a selection on the device: the parameters and
# the state keep their old values, and ``state.skipped`` counts the step.

params, state = jitted[1], jitted[2]
bad = jax.tree_util.tree_map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), jax.grad(loss)(params, X, y))
new_params, new_state = jax.jit(optimizer.step)(params, bad, state)
print("skipped:", int(new_state.skipped), "count unchanged:", int(new_state.count) == int(state.count))

# %%
# Many steps as one ``lax.scan``
# ------------------------------
# The state is a pytree, so it can be a scan's carry: 200 steps, one call.


@jax.jit
def train_scan(params, state):
    def body(carry, _):
        params, state, value = train_step(*carry, X, y)
        return (params, state), value

    (params, state), values = jax.lax.scan(body, (params, state), None, length=200)
    return params, state, values


params0 = init_params()
_, scan_state, scan_values = train_scan(params0, optimizer.init(params0))
print("scan equals the loop:", float(jnp.max(jnp.abs(scan_values - jnp.asarray(jitted[3])))) < 1e-12)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(eager[3], lw=3, alpha=0.4, label=f"eager ({eager[0] * 1e3:.1f} ms per step)")
ax.semilogy(jitted[3], "--", label=f"jax.jit ({jitted[0] * 1e3:.3f} ms per step)")
ax.set_xlabel("step")
ax.set_ylabel("mean squared error")
ax.set_title("Adam with warm-up and cosine decay, on JAX")
ax.legend()
fig.tight_layout()
