"""The lesson's own NumPy code, reproduced as the end-to-end baseline of the benchmark.

This is the course's "Optimization methods" assignment as its students run it
(deeplearning.ai, Improving Deep Neural Networks, week 2): a features-first
2-5-2-1 network (``X`` has shape (2, m)), ReLU, ReLU, sigmoid, He
initialisation, ``random_mini_batches``, ``initialize_adam`` and
``update_parameters_with_adam`` with bias correction, 5000 epochs of
mini-batches of 64 over the 300 moons samples.  It is kept as written there,
loops over ``parameters["W" + str(l)]`` included, because its speed is what
anyoptim is measured against: ``anyoptim.fit`` with the same setup should take
at most half its time (see ``benchmarks/README.md``).

Only two things differ from the notebook: the moons come from
:func:`anyoptim.datasets.make_moons` (scikit-learn's algorithm, without needing
scikit-learn), and ``model`` returns its wall time.

Run it alone::

    python benchmarks/lesson_numpy.py            # prints the cost every 1000 epochs and the time
"""

# The course's code is kept as students run it: the legacy global RNG and its unused unpacked names included.
# ruff: noqa: NPY002, RUF059

from __future__ import annotations

import math
import time

import numpy as np  # the lesson's code is NumPy by definition


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def relu(x):
    return np.maximum(0, x)


def initialize_parameters(layer_dims):
    """He initialisation, as the course's opt_utils.initialize_parameters."""
    parameters = {}
    L = len(layer_dims)
    for l in range(1, L):
        parameters["W" + str(l)] = np.random.randn(layer_dims[l], layer_dims[l - 1]) * np.sqrt(2 / layer_dims[l - 1])
        parameters["b" + str(l)] = np.zeros((layer_dims[l], 1))
    return parameters


def forward_propagation(X, parameters):
    W1, b1 = parameters["W1"], parameters["b1"]
    W2, b2 = parameters["W2"], parameters["b2"]
    W3, b3 = parameters["W3"], parameters["b3"]
    z1 = np.dot(W1, X) + b1
    a1 = relu(z1)
    z2 = np.dot(W2, a1) + b2
    a2 = relu(z2)
    z3 = np.dot(W3, a2) + b3
    a3 = sigmoid(z3)
    cache = (z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3)
    return a3, cache


def backward_propagation(X, Y, cache):
    m = X.shape[1]
    (z1, a1, W1, b1, z2, a2, W2, b2, z3, a3, W3, b3) = cache
    dz3 = 1.0 / m * (a3 - Y)
    dW3 = np.dot(dz3, a2.T)
    db3 = np.sum(dz3, axis=1, keepdims=True)
    da2 = np.dot(W3.T, dz3)
    dz2 = np.multiply(da2, np.int64(a2 > 0))
    dW2 = np.dot(dz2, a1.T)
    db2 = np.sum(dz2, axis=1, keepdims=True)
    da1 = np.dot(W2.T, dz2)
    dz1 = np.multiply(da1, np.int64(a1 > 0))
    dW1 = np.dot(dz1, X.T)
    db1 = np.sum(dz1, axis=1, keepdims=True)
    return {
        "dz3": dz3, "dW3": dW3, "db3": db3, "da2": da2, "dz2": dz2, "dW2": dW2,
        "db2": db2, "da1": da1, "dz1": dz1, "dW1": dW1, "db1": db1,
    }  # fmt: skip


def compute_cost(a3, Y):
    """The summed (not yet averaged) cross-entropy of a mini-batch, as in the course."""
    logprobs = np.multiply(-np.log(a3), Y) + np.multiply(-np.log(1 - a3), 1 - Y)
    return np.sum(logprobs)


def random_mini_batches(X, Y, mini_batch_size=64, seed=0):
    np.random.seed(seed)
    m = X.shape[1]
    mini_batches = []
    permutation = list(np.random.permutation(m))
    shuffled_X = X[:, permutation]
    shuffled_Y = Y[:, permutation].reshape((1, m))
    num_complete_minibatches = math.floor(m / mini_batch_size)
    for k in range(num_complete_minibatches):
        mini_batch_X = shuffled_X[:, k * mini_batch_size : (k + 1) * mini_batch_size]
        mini_batch_Y = shuffled_Y[:, k * mini_batch_size : (k + 1) * mini_batch_size]
        mini_batches.append((mini_batch_X, mini_batch_Y))
    if m % mini_batch_size != 0:
        mini_batch_X = shuffled_X[:, num_complete_minibatches * mini_batch_size :]
        mini_batch_Y = shuffled_Y[:, num_complete_minibatches * mini_batch_size :]
        mini_batches.append((mini_batch_X, mini_batch_Y))
    return mini_batches


def initialize_adam(parameters):
    L = len(parameters) // 2
    v = {}
    s = {}
    for l in range(1, L + 1):
        v["dW" + str(l)] = np.zeros(parameters["W" + str(l)].shape)
        v["db" + str(l)] = np.zeros(parameters["b" + str(l)].shape)
        s["dW" + str(l)] = np.zeros(parameters["W" + str(l)].shape)
        s["db" + str(l)] = np.zeros(parameters["b" + str(l)].shape)
    return v, s


def update_parameters_with_adam(parameters, grads, v, s, t, learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8):
    L = len(parameters) // 2
    v_corrected = {}
    s_corrected = {}
    for l in range(1, L + 1):
        v["dW" + str(l)] = beta1 * v["dW" + str(l)] + (1 - beta1) * grads["dW" + str(l)]
        v["db" + str(l)] = beta1 * v["db" + str(l)] + (1 - beta1) * grads["db" + str(l)]
        v_corrected["dW" + str(l)] = v["dW" + str(l)] / (1 - beta1**t)
        v_corrected["db" + str(l)] = v["db" + str(l)] / (1 - beta1**t)
        s["dW" + str(l)] = beta2 * s["dW" + str(l)] + (1 - beta2) * np.square(grads["dW" + str(l)])
        s["db" + str(l)] = beta2 * s["db" + str(l)] + (1 - beta2) * np.square(grads["db" + str(l)])
        s_corrected["dW" + str(l)] = s["dW" + str(l)] / (1 - beta2**t)
        s_corrected["db" + str(l)] = s["db" + str(l)] / (1 - beta2**t)
        parameters["W" + str(l)] = parameters["W" + str(l)] - learning_rate * v_corrected["dW" + str(l)] / (
            np.sqrt(s_corrected["dW" + str(l)]) + epsilon
        )
        parameters["b" + str(l)] = parameters["b" + str(l)] - learning_rate * v_corrected["db" + str(l)] / (
            np.sqrt(s_corrected["db" + str(l)]) + epsilon
        )
    return parameters, v, s, v_corrected, s_corrected


def model(
    X,
    Y,
    layers_dims,
    learning_rate=0.0007,
    mini_batch_size=64,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    num_epochs=5000,
    print_cost=True,
):
    """The course's ``model(..., optimizer="adam")``: returns the parameters, the costs and the wall time."""
    costs = []
    t = 0
    seed = 10
    m = X.shape[1]
    start = time.perf_counter()
    parameters = initialize_parameters(layers_dims)
    v, s = initialize_adam(parameters)
    for i in range(num_epochs):
        seed = seed + 1
        minibatches = random_mini_batches(X, Y, mini_batch_size, seed)
        cost_total = 0
        for minibatch in minibatches:
            (minibatch_X, minibatch_Y) = minibatch
            a3, caches = forward_propagation(minibatch_X, parameters)
            cost_total += compute_cost(a3, minibatch_Y)
            grads = backward_propagation(minibatch_X, minibatch_Y, caches)
            t = t + 1
            parameters, v, s, _, _ = update_parameters_with_adam(
                parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon
            )
        cost_avg = cost_total / m
        if print_cost and i % 1000 == 0:
            print(f"Cost after epoch {i}: {cost_avg:f}")
        if print_cost and i % 100 == 0:
            costs.append(cost_avg)
    return parameters, costs, time.perf_counter() - start


def load_dataset(n_samples=300, noise=0.2, seed=3):
    """The course's 300 noisy moons, features first: X (2, m) float64, Y (1, m)."""
    from anyoptim import datasets

    X, y = datasets.make_moons(n_samples=n_samples, noise=noise, seed=seed)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    return X.T.copy(), y.reshape(1, -1).astype(np.float64)


def run(num_epochs=5000, print_cost=False, seed=3):
    """Train the lesson's network with Adam; returns (seconds, final cost, accuracy)."""
    train_X, train_Y = load_dataset(seed=seed)
    np.random.seed(seed)  # the notebook seeds the global generator before initialising
    parameters, costs, seconds = model(train_X, train_Y, [2, 5, 2, 1], num_epochs=num_epochs, print_cost=print_cost)
    a3, _ = forward_propagation(train_X, parameters)
    accuracy = float(np.mean((a3 > 0.5) == (train_Y > 0.5)))
    final_cost = float(compute_cost(a3, train_Y) / train_X.shape[1])
    return seconds, final_cost, accuracy


if __name__ == "__main__":
    seconds, cost, accuracy = run(print_cost=True)
    print(f"5000 epochs of Adam (lesson's NumPy code): {seconds:.2f} s, final cost {cost:.4f}, accuracy {accuracy:.3f}")
