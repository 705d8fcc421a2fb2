"""Adamax, Adam's infinity-norm variant: its rule above its class.

Adamax keeps Adam's first moment but replaces the second by an exponentially
weighted infinity norm, so it has no second bias correction and none of the
Adam family's settings (``eps_root``, AMSGrad): it is a plain optimizer, not an
:class:`~anyoptim.optimizers.adam.AdamFamily` member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..schedules import Schedule
from .base import Optimizer
from .contract import declare

__all__ = ["Adamax", "adamax"]

Slots = dict[str, Any]


@declare(slots=("m", "u"), scalars=("learning_rate", "beta1", "beta2", "epsilon", "bias_correction1"))
def adamax(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Adamax, the infinity-norm variant of Adam (Kingma & Ba, 2015, Algorithm 2): the rule of :class:`Adamax`.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad u \leftarrow \max(\beta_2 u, |g|), \quad
        \theta \leftarrow \theta - \frac{\alpha}{1-\beta_1^t} \frac{m}{u + \epsilon}

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"m"`` (:math:`m`) and ``"u"`` (:math:`u`), each of ``p``'s shape and dtype, 0 before the first step.
    hp : mapping of str to scalar
        This step's scalars: ``"learning_rate"`` (α), ``"beta1"`` (β1), ``"beta2"`` (β2),
        ``"epsilon"`` (ε) and ``"bias_correction1"`` (:math:`1-\beta_1^t` at step :math:`t`).

    Returns
    -------
    new_p : array
        The updated parameter, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        ``{"m": ..., "u": ...}``, the updated moment and norm.

    Examples
    --------
    The first step, :math:`t = 1`, is :math:`-\alpha\,\mathrm{sign}(g)`, as Adam's:

    >>> import array_api_compat.numpy as xp
    >>> from anyoptim.optimizers.adamax import adamax
    >>> slots = {"m": xp.zeros(2), "u": xp.zeros(2)}
    >>> hp = {"learning_rate": 0.1, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "bias_correction1": 1 - 0.9}
    >>> p, slots = adamax(xp, xp.asarray([1.0, -2.0]), xp.asarray([2.0, -4.0]), slots, hp)
    >>> xp.round(p, 4), xp.round(slots["m"], 4), slots["u"]
    (array([ 0.9, -1.9]), array([ 0.2, -0.4]), array([2., 4.]))
    """
    beta1 = hp["beta1"]
    m = beta1 * slots["m"] + (1 - beta1) * g
    u = xp.maximum(hp["beta2"] * slots["u"], xp.abs(g))
    m_hat = m / hp["bias_correction1"]
    return p - hp["learning_rate"] * m_hat / (u + hp["epsilon"]), {"m": m, "u": u}


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, 2015, Algorithm 2) [1]_.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad u \leftarrow \max(\beta_2 u, |g|), \quad
        \theta \leftarrow \theta - \frac{\alpha}{1-\beta_1^t} \frac{m}{u + \epsilon}

    The infinity norm replaces the second moment, so there is no :math:`v`, no second bias correction and no AMSGrad:
    Adamax is not a member of :class:`AdamFamily`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.002
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    beta1, beta2 : float, default 0.9, 0.999
        The decays of :math:`m` and of the norm :math:`u`, in [0, 1).
    epsilon : float, default 1e-8
        Added to :math:`u`, as Keras; torch.optim.Adamax and optax.adamax put it
        inside the max (:math:`\max(\beta_2 u, |g| + \epsilon)`), which differs
        from ours only while :math:`|g|` is within ε of :math:`\beta_2 u`.
    **options
        See :class:`Optimizer`.

    References
    ----------
    .. [1] Kingma, D. P. and Ba, J., "Adam: A Method for Stochastic Optimization", ICLR 2015, Section 7.1.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt, params = anyoptim.Adamax(learning_rate=0.1), {"w": np.array([1.0, -2.0])}
    >>> params, state = opt.step(params, {"w": np.array([2.0, -4.0])}, opt.init(params))
    >>> np.round(params["w"], 4), sorted(state.slots)  # -0.1 sign(g) again; u in place of v
    (array([ 0.9, -1.9]), ['m', 'u'])
    """

    rule = staticmethod(adamax)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.002,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
            "bias_correction1": 1.0 - self.beta1 ** (count + 1),
        }
