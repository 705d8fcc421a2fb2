"""The estimators' network: scikit-learn's loss on an :class:`~anyoptim.MLP`, its initialization, its optimizer.

:class:`PenalizedMLP` is an :class:`~anyoptim.MLP` whose loss is scikit-learn's:
the data loss (half the mean squared error for regression, as
scikit-learn's ``squared_loss``) plus the L2 penalty
:math:`\\frac{\\alpha}{2 n}\\sum_l \\lVert W_l \\rVert^2` on the weights only, with
:math:`n` the batch's size.  :func:`anyoptim.fit` calls its ``value_and_grad``
for every batch, so the penalty is in the gradients and in the reported loss.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from .._namespace import array_namespace, device_of
from ..engines import matmul
from ..nn import MLP
from ..nn.data import host_rng, to_namespace
from ..optimizers import REGISTRY, Optimizer

__all__ = ["ESTIMATOR_INITS", "PenalizedMLP", "initial_params", "make_optimizer"]

#: ``init`` choices: scikit-learn's Glorot uniform, and the MLP's own He and Xavier normal draws.
ESTIMATOR_INITS = ("glorot_uniform", "he", "xavier")


class PenalizedMLP(MLP):
    """An :class:`~anyoptim.MLP` whose loss adds scikit-learn's L2 penalty on the weights and scales the data loss.

    Parameters
    ----------
    layer_dims, hidden_activation, output
        As for :class:`~anyoptim.MLP`.
    alpha : float
        Strength of the L2 penalty :math:`\\frac{\\alpha}{2 n}\\sum_l \\lVert W_l \\rVert^2` (biases are not penalized).
    loss_scale : float
        Factor on the data loss: 0.5 turns the MLP's mean squared error into scikit-learn's ``squared_loss``.
    """

    def __init__(self, layer_dims: Any, hidden_activation: str, output: str, alpha: float, loss_scale: float = 1.0):
        super().__init__(layer_dims, hidden_activation=hidden_activation, output=output)
        self.alpha = float(alpha)
        self.loss_scale = float(loss_scale)
        self.weight_names = tuple(f"W{layer}" for layer in range(1, self.n_layers + 1))

    def penalty(self, xp: Any, params: dict, n_samples: int) -> float:
        """The L2 penalty :math:`\\frac{\\alpha}{2 n}\\sum_l \\lVert W_l \\rVert^2` of ``params`` as a float."""
        total = sum(float(xp.sum(params[name] * params[name])) for name in self.weight_names)
        return 0.5 * self.alpha * total / n_samples

    def value_and_grad(self, xp: Any, params: dict, X: Any, t: Any, out: Any = None) -> tuple[Any, dict]:
        """The MLP's loss and gradients, scaled by ``loss_scale``, plus the L2 penalty and its gradient.

        Called for every batch, so it adds few array calls: the gradients given
        in ``out`` are updated in place, and each :math:`\\lVert W_l\\rVert^2` is
        one dot product of the flattened weights (no squared copy).
        """
        loss, grads = super().value_and_grad(xp, params, X, t, out)
        scale, alpha = self.loss_scale, self.alpha
        if scale == 1.0 and alpha == 0.0:
            return loss, grads
        in_place = out is not None and grads is out
        grads = grads if in_place else dict(grads)
        if scale != 1.0:
            loss = loss * scale
            for name, grad in grads.items():
                if in_place:
                    grad *= scale
                else:
                    grads[name] = grad * scale
        if alpha != 0.0:
            factor = alpha / X.shape[0]
            squares = 0.0
            for name in self.weight_names:
                weights = params[name]
                flat = xp.reshape(weights, (-1,))
                squares = squares + matmul(flat, flat)
                if in_place:
                    grads[name] += weights * factor
                else:
                    grads[name] = grads[name] + weights * factor
            loss = loss + (0.5 * factor) * squares
        return loss, grads


def initial_params(model: MLP, scheme: str, seed: Any, like: Any) -> dict:
    """Initial parameters of ``model`` on ``like``'s namespace, device and dtype.

    ``"glorot_uniform"`` is scikit-learn's: weights and biases uniform in
    :math:`\\pm\\sqrt{f / (n_{in} + n_{out})}` with :math:`f = 2` for a logistic
    hidden activation and 6 otherwise (drawn on the host from ``seed``);
    ``"he"`` and ``"xavier"`` are :meth:`MLP.init <anyoptim.MLP.init>`'s normal draws.
    """
    if scheme != "glorot_uniform":
        return MLP(model.layer_dims, model.hidden_activation, model.output, init=scheme).init(seed=seed, like=like)
    rng = host_rng(seed)
    factor = 2.0 if model.hidden_activation == "sigmoid" else 6.0
    dims = model.layer_dims
    params = {}
    for layer in range(1, len(dims)):
        bound = math.sqrt(factor / (dims[layer - 1] + dims[layer]))
        weights = rng.uniform(-bound, bound, (dims[layer - 1], dims[layer]))
        biases = rng.uniform(-bound, bound, dims[layer])
        params[f"W{layer}"] = to_namespace(weights, xp=array_namespace(like), dtype=like.dtype, device=device_of(like))
        params[f"b{layer}"] = to_namespace(biases, xp=array_namespace(like), dtype=like.dtype, device=device_of(like))
    return params


def make_optimizer(optimizer: Any, learning_rate: Any) -> Optimizer:
    """A fresh optimizer for one fit: ``REGISTRY[optimizer]`` or a copy of the given instance, at ``learning_rate``.

    The estimator's ``optimizer`` parameter is never changed: an instance is
    copied (without its prepared step) before its learning rate is set.
    """
    if isinstance(optimizer, str):
        if optimizer not in REGISTRY:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(map(repr, REGISTRY))}")
        made = REGISTRY[optimizer]() if learning_rate is None else REGISTRY[optimizer](learning_rate)
        return made
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be an anyoptim optimizer or one of {', '.join(map(repr, REGISTRY))}, "
            f"got {type(optimizer).__name__}"
        )
    made = copy.copy(optimizer)
    made.forget_prepared()
    if learning_rate is not None:
        made.learning_rate = learning_rate
    return made
