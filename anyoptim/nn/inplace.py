r""":meth:`MLP.value_and_grad <anyoptim.MLP.value_and_grad>` with fewer passes over memory, where arrays take ``out=``.

The same backpropagation as :func:`anyoptim.nn.layers.backprop` (the math is
documented there and in :meth:`~anyoptim.MLP.value_and_grad`), computed with
the operations of :func:`anyoptim.engines.inplace.in_place_ops` when the
library has them and the caller gave gradient arrays to fill (as
:func:`anyoptim.fit` does):

* each layer's bias is added to its product in place, and a ReLU is applied in
  place (:math:`\max(z, 0)`: one pass, where the portable form makes a slope
  array and multiplies);
* the gradient through a ReLU is the incoming one with its inactive entries
  zeroed, in place;
* every :math:`\nabla W_l = a_{l-1}^T \delta_l` and :math:`\nabla b_l = 1^T
  \delta_l` is written by the product itself into the caller's array (a slice
  of the flat gradient buffer), not computed and then copied.

The results equal the portable pass's up to the sign of zeros (a ReLU gives
``+0.0`` where ``z * 0.0`` gives ``-0.0``).  Elsewhere (JAX, torch,
array-api-strict, CuPy, or no ``out``) :func:`backprop_into` is
:func:`~anyoptim.nn.layers.backprop`, so a traced function stays pure.
"""

from __future__ import annotations

from typing import Any

from ..engines import matmul
from ..engines.inplace import in_place_ops
from .layers import HIDDEN, LOSSES, backprop, row_ones

__all__ = ["backprop_into"]


def backprop_into(
    xp: Any, params: dict, X: Any, t: Any, out: Any, *, keys: Any, hidden_activation: str, output: str
) -> tuple[Any, dict]:
    """Mean loss and gradients, written into ``out`` where the library allows; else :func:`.layers.backprop`.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``params``, ``X`` and ``t``.
    params : dict of str to array
        ``W1, b1, ..., WL, bL``.
    X : array of shape (n_samples, n_features)
        The inputs.
    t : array of shape (n_samples, n_outputs)
        The targets, as :meth:`anyoptim.MLP.targets` returns them.
    out : dict of str to array or None
        Arrays shaped like ``params`` to write the gradients into.
    keys : sequence of (str, str)
        The layers' parameter names, ``(("W1", "b1"), ...)``.
    hidden_activation, output : str
        As for :class:`anyoptim.MLP`.

    Returns
    -------
    loss : 0-D array or scalar
        The mean loss (a NumPy scalar on NumPy).
    grads : dict of str to array
        ``out``, written, on NumPy; else what :func:`~anyoptim.nn.layers.backprop` returns.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.nn.inplace import backprop_into
    >>> params = {"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}
    >>> out = {"W1": np.empty((2, 1)), "b1": np.empty(1)}
    >>> settings = {"keys": (("W1", "b1"),), "hidden_activation": "relu", "output": "sigmoid"}
    >>> loss, grads = backprop_into(np, params, np.eye(2), np.ones((2, 1)), out, **settings)
    >>> grads is out, np.round(out["W1"][:, 0], 4)
    (True, array([-0.1345, -0.3655]))
    """
    ops = in_place_ops(xp) if out is not None else None
    if ops is None:
        return backprop(xp, params, X, t, out, keys=keys, hidden_activation=hidden_activation, output=output)
    relu = hidden_activation == "relu"
    activate, backward = HIDDEN[hidden_activation]
    ones = row_ones(X)
    activations, kept = [X], []
    a = X
    for W, b in keys[:-1]:
        z = matmul(a, params[W])  # a new array: the bias and the activation go into it
        z += params[b]
        if relu:
            ops.relu(z)
            a = z
        else:
            a, info = activate(xp, z)
            kept.append(info)
        activations.append(a)
    W, b = keys[-1]
    z = matmul(a, params[W])
    z += params[b]
    loss, delta = LOSSES[output](xp, z, t, ones)
    for layer in range(len(keys) - 1, -1, -1):
        W, b = keys[layer]
        previous = delta
        if layer > 0:  # the next delta first, so out may even share memory with params
            delta = matmul(previous, params[W].T)
            if relu:
                ops.mask_inactive(delta, activations[layer])
            else:
                delta = backward(delta, kept[layer - 1])
        ops.matmul(activations[layer].T, previous, out[W])
        ops.matmul(ones, previous, out[b])  # 1^T δ, as in layers._total
    return loss, out
