"""Lion, the evolved sign-momentum optimizer: its rule right above its class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..schedules import Schedule
from ..transforms import decay_weights_only
from .base import Optimizer
from .contract import declare

__all__ = ["Lion", "lion"]

Slots = dict[str, Any]


@declare(slots=("m",), scalars=("learning_rate", "beta1", "beta2"))
def lion(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Lion, the evolved sign-momentum optimizer (Chen et al., 2023).

    .. math::

        c = \beta_1 m + (1-\beta_1) g, \quad \theta \leftarrow \theta - \alpha\, \mathrm{sign}(c), \quad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    The rule of :class:`Lion`; its decoupled weight decay is applied outside the rule.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"m"``, the momentum :math:`m`, of ``p``'s shape and dtype, 0 before the first step.
    hp : mapping of str to scalar
        This step's scalars: ``"learning_rate"`` (α), ``"beta1"`` (β1) and ``"beta2"`` (β2).

    Returns
    -------
    new_p : array
        :math:`\theta - \alpha\,\mathrm{sign}(c)`, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        ``{"m": ...}``, the updated momentum.

    Examples
    --------
    Every coordinate moves by exactly α, whatever the size of its gradient:

    >>> import array_api_compat.numpy as xp
    >>> from anyoptim.optimizers.lion import lion
    >>> hp = {"learning_rate": 0.1, "beta1": 0.9, "beta2": 0.99}
    >>> p, slots = lion(xp, xp.asarray([1.0, -2.0]), xp.asarray([0.5, -300.0]), {"m": xp.zeros(2)}, hp)
    >>> xp.round(p, 4), xp.round(slots["m"], 4)
    (array([ 0.9, -1.9]), array([ 0.005, -3.   ]))
    """
    m = slots["m"]
    interpolation = hp["beta1"] * m + (1 - hp["beta1"]) * g
    new_m = hp["beta2"] * m + (1 - hp["beta2"]) * g
    return p - hp["learning_rate"] * xp.sign(interpolation), {"m": new_m}


class Lion(Optimizer):
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms") [1]_.

    .. math::

        \theta \leftarrow \theta - \alpha\left(\mathrm{sign}(\beta_1 m + (1-\beta_1) g) + \lambda\theta\right), \qquad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    Every coordinate moves by exactly α (plus the decay) whatever the size of its
    gradient: the step is the sign of an interpolation between the momentum
    :math:`m` (:math:`m_0 = 0`) and the gradient.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-4
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
        Lion wants a rate 3-10x smaller than AdamW's.
    beta1 : float, default 0.9
        β1, the weight of the momentum in the interpolation whose sign is the step, in [0, 1).
    beta2 : float, default 0.99
        β2, the decay of the momentum :math:`m`, in [0, 1).
    **options
        ``weight_decay`` (λ, default 0): decoupled, multiplied by the learning rate,
        biases spared by default (:func:`~anyoptim.transforms.decay_weights_only`);
        and the other settings of :class:`Optimizer`.

    Notes
    -----
    Equal to optax.lion; Keras Lion the same.

    References
    ----------
    .. [1] Chen, X. et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, arXiv:2302.06675.

    Examples
    --------
    The matrix ``W`` is decayed, the bias ``b`` is not; each coordinate moves by
    :math:`\alpha = 0.1` whatever its gradient:

    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Lion(learning_rate=0.1, weight_decay=0.5)
    >>> params = {"W": np.array([[1.0, 2.0]]), "b": np.array([1.0])}
    >>> grads = {"W": np.array([[0.5, -3.0]]), "b": np.array([0.01])}
    >>> params, state = opt.step(params, grads, opt.init(params))
    >>> np.round(params["W"], 4), np.round(params["b"], 4)
    (array([[0.85, 2.  ]]), array([0.9]))
    """

    rule = staticmethod(lion)
    decoupled_weight_decay = True
    default_weight_decay_mask = staticmethod(decay_weights_only)

    def __init__(
        self,
        learning_rate: float | Schedule = 1e-4,
        beta1: float = 0.9,
        beta2: float = 0.99,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta1 = beta1
        self.beta2 = beta2

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta1": self.beta1, "beta2": self.beta2}
