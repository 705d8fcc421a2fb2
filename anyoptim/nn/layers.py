r"""The math of :class:`~anyoptim.nn.mlp.MLP`'s layers, written against the Array API: activations, losses, backprop.

Each hidden activation returns the activation and what its derivative needs
(:data:`HIDDEN`); each loss takes the last layer's *logits* :math:`z_L`, never
probabilities, so no logarithm ever sees 0 (:data:`LOSSES`):

* sigmoid + binary cross-entropy:
  :math:`\ell = \operatorname{softplus}(z) - y z` with
  :math:`\operatorname{softplus}(z) = \log(1 + e^z) = \operatorname{logaddexp}(0, z)`,
  :math:`\partial \ell / \partial z = \sigma(z) - y` and
  :math:`\sigma(z) = \exp(z - \operatorname{softplus}(z))`;
* softmax + categorical cross-entropy, with the row maximum subtracted:
  :math:`\ell = \sum_k y_k (\operatorname{logsumexp}(z) - z_k)`,
  :math:`\partial \ell / \partial z_j = p_j \sum_k y_k - y_j`;
* identity + mean squared error: :math:`\ell = \frac{1}{K}\sum_k (z_k - y_k)^2`.

Every loss is the mean over the samples.  :func:`encode_targets` turns labels
into the targets a loss compares the logits with, and :func:`backprop` is the
backward pass (:meth:`~anyoptim.nn.mlp.MLP.targets` and
:meth:`~anyoptim.nn.mlp.MLP.value_and_grad` document them).
"""

from __future__ import annotations

from typing import Any

from .._namespace import device_of, is_floating, is_mutable
from ..engines import matmul  # `@`, or a product a CUDA graph can capture

__all__ = [
    "HIDDEN",
    "LEAKY_SLOPE",
    "LOSSES",
    "backprop",
    "encode_targets",
    "loss_and_delta",
    "output_activation",
    "row_ones",
]

LEAKY_SLOPE = 0.01


# --------------------------------------------------------------------------- activations
# Each returns the activation and what its derivative needs: da/dz is a function
# of that value alone, so the backward pass keeps one array per layer.


def _softplus(xp: Any, z: Any) -> Any:
    """log(1 + e^z) = logaddexp(0, z), finite for every finite z."""
    return xp.logaddexp(z * 0.0, z)


def _sigmoid_from_softplus(xp: Any, z: Any, softplus: Any) -> Any:
    """σ(z) = exp(z - softplus(z)): the exponent is log σ(z) <= 0, so nothing overflows."""
    return xp.exp(z - softplus)


def _sigmoid(xp: Any, z: Any) -> Any:
    """The logistic function σ(z) = 1 / (1 + e^{-z}), without overflow."""
    return _sigmoid_from_softplus(xp, z, _softplus(xp, z))


def _relu(xp: Any, z: Any) -> tuple[Any, Any]:
    """max(z, 0) as z times its slope (1 where z > 0, else 0), and the slope."""
    slope = xp.astype(z > 0.0, z.dtype)  # 0.0, not 0: NumPy compares with a float faster
    return z * slope, slope


def _leaky_relu(xp: Any, z: Any) -> tuple[Any, Any]:
    """z times its slope (1 where z > 0, else LEAKY_SLOPE), and the slope."""
    slope = xp.astype(z > 0.0, z.dtype) * (1 - LEAKY_SLOPE) + LEAKY_SLOPE
    return z * slope, slope


def _tanh(xp: Any, z: Any) -> tuple[Any, Any]:
    a = xp.tanh(z)
    return a, a


def _logistic(xp: Any, z: Any) -> tuple[Any, Any]:
    a = _sigmoid(xp, z)
    return a, a


def _times_slope(da: Any, slope: Any) -> Any:
    return da * slope


def _tanh_backward(da: Any, a: Any) -> Any:
    return da * (1 - a * a)


def _logistic_backward(da: Any, a: Any) -> Any:
    return da * (a * (1 - a))


#: name -> (``activate(xp, z) -> (a, kept)``, ``backward(dL/da, kept) -> dL/dz``)
HIDDEN = {
    "relu": (_relu, _times_slope),
    "leaky_relu": (_leaky_relu, _times_slope),
    "tanh": (_tanh, _tanh_backward),
    "sigmoid": (_logistic, _logistic_backward),
}


# --------------------------------------------------------------------------- output losses


def row_ones(X: Any) -> Any:
    """A vector of ones, one per row of ``X``, with its namespace, device and dtype.

    ``x ** 0.0`` is 1 for every x (NaN and infinity included): one elementwise
    call, where NumPy's ``ones_like`` behind array-api-compat costs three times as much.
    """
    return X[:, 0] ** 0.0


def _total(xp: Any, ones: Any, values: Any) -> Any:
    r"""The sum of every element of ``values`` (n, k), a 0-D array (a NumPy scalar on NumPy).

    First the column sums :math:`1^T V` as a product with a ones vector: one
    BLAS call, faster than a reduction on the small batches of a training step
    (NumPy's ``sum`` costs twice as much there); the backward pass takes the
    bias gradients :math:`1^T \delta` the same way.
    """
    sums = matmul(ones, values)
    return sums[0] if sums.shape[0] == 1 else xp.sum(sums)


def _row_sums(values: Any, ones_k: Any) -> Any:
    """The sum of each row of ``values`` (n, k) as a column (n, 1): the product :math:`V 1`.

    NumPy's ``sum(axis=1, keepdims=True)`` over rows of a few classes costs
    about three times this product.
    """
    return matmul(values, ones_k)[:, None]


def _softmax_parts(xp: Any, z: Any) -> tuple[Any, Any]:
    """Softmax probabilities and log-sum-exp of each row, with the row maximum subtracted first."""
    shifted = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(shifted)
    total = _row_sums(e, row_ones(e.T))
    return e / total, shifted - xp.log(total)


def output_activation(xp: Any, kind: str, z: Any) -> Any:
    """The output layer's values for the logits ``z``: σ(z) (sigmoid), softmax rows (softmax), or ``z`` (identity)."""
    if kind == "sigmoid":
        return _sigmoid(xp, z)
    if kind == "softmax":
        return _softmax_parts(xp, z)[0]
    return z


# Each takes the logits z (n, k), the targets t of z's shape and a ones vector of
# length n, and returns the mean loss over the rows and its gradient dL/dz.


def _binary_cross_entropy(xp: Any, z: Any, t: Any, ones: Any) -> tuple[Any, Any]:
    n = z.shape[0]
    softplus = _softplus(xp, z)  # serves both the loss and σ(z)
    loss = _total(xp, ones, softplus - t * z) / n
    return loss, (_sigmoid_from_softplus(xp, z, softplus) - t) * (1 / n)


def _categorical_cross_entropy(xp: Any, z: Any, t: Any, ones: Any) -> tuple[Any, Any]:
    n = z.shape[0]
    p, log_p = _softmax_parts(xp, z)
    loss = -_total(xp, ones, t * log_p) / n
    return loss, (p * _row_sums(t, row_ones(t.T)) - t) * (1 / n)


def _mean_squared_error(xp: Any, z: Any, t: Any, ones: Any) -> tuple[Any, Any]:
    diff = z - t
    size = z.shape[0] * z.shape[1]
    return _total(xp, ones, diff * diff) / size, diff * (2 / size)


#: output -> ``loss(xp, z, t, ones) -> (mean loss, dL/dz)``
LOSSES = {
    "sigmoid": _binary_cross_entropy,
    "softmax": _categorical_cross_entropy,
    "identity": _mean_squared_error,
}


def loss_and_delta(xp: Any, kind: str, z: Any, t: Any) -> tuple[Any, Any]:
    """Mean loss over the rows and its gradient with respect to the logits ``z``; ``t`` has z's shape."""
    return LOSSES[kind](xp, z, t, row_ones(z))


# --------------------------------------------------------------------------- targets and the backward pass


def encode_targets(y: Any, xp: Any, dtype: Any, *, output: str, n_outputs: int) -> Any:
    """Labels ``y`` as the (n, n_outputs) targets of ``dtype`` that ``output``'s loss compares the logits with.

    Checks the labels' shape and range for the output, as :meth:`anyoptim.MLP.targets` documents.
    """
    k = n_outputs
    if output == "softmax" and y.ndim == 1:
        if not bool(xp.all((y >= 0) & (y < k))) or not _integral(xp, y):
            raise ValueError(f"class labels must be integers in [0, {k}) for {k} softmax outputs")
        classes = xp.arange(k, dtype=y.dtype, device=device_of(y))
        return xp.astype(y[:, None] == classes[None, :], dtype)
    if y.ndim == 1:
        y = xp.reshape(y, (-1, 1))
    if y.shape[1] != k:
        raise ValueError(f"y has {y.shape[1]} columns but the model has {k} outputs")
    t = xp.astype(y, dtype)
    if output != "identity" and not bool(xp.all((t >= 0) & (t <= 1))):
        raise ValueError(f"labels for a {output} output must lie in [0, 1]")
    return t


def _integral(xp: Any, y: Any) -> bool:
    if not is_floating(xp, y.dtype):
        return True
    return bool(xp.all(y == xp.round(y)))


def backprop(
    xp: Any, params: dict, X: Any, t: Any, out: Any, *, keys: Any, hidden_activation: str, output: str
) -> tuple[Any, dict]:
    """Mean loss and gradients by backpropagation through the layers ``keys``, ``(("W1", "b1"), ...)``.

    The backward pass, samples first; the math and the arguments are those of
    :meth:`anyoptim.MLP.value_and_grad`, which calls it.
    """
    activate, backward = HIDDEN[hidden_activation]
    ones = row_ones(X)
    activations = [X]
    kept = []
    a = X
    for W, b in keys[:-1]:
        a, info = activate(xp, matmul(a, params[W]) + params[b])
        activations.append(a)
        kept.append(info)
    W, b = keys[-1]
    loss, delta = LOSSES[output](xp, matmul(a, params[W]) + params[b], t, ones)
    write = out is not None and is_mutable(xp)
    grads = out if write else {}
    for layer in range(len(keys) - 1, -1, -1):
        W, b = keys[layer]
        dW = matmul(activations[layer].T, delta)
        db = matmul(ones, delta)  # 1^T δ, as in _total
        if layer > 0:
            delta = backward(matmul(delta, params[W].T), kept[layer - 1])
        if write:
            grads[W][...] = dW
            grads[b][...] = db
        else:
            grads[W] = dW
            grads[b] = db
    return loss, grads
