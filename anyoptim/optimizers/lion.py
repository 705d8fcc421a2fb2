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
    """
    m = slots["m"]
    interpolation = hp["beta1"] * m + (1 - hp["beta1"]) * g
    new_m = hp["beta2"] * m + (1 - hp["beta2"]) * g
    return p - hp["learning_rate"] * xp.sign(interpolation), {"m": new_m}


class Lion(Optimizer):
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    .. math::

        \theta \leftarrow \theta - \alpha\left(\mathrm{sign}(\beta_1 m + (1-\beta_1) g) + \lambda\theta\right), \qquad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    Parameters
    ----------
    learning_rate : float or callable, default 1e-4
        Lion wants a rate 3-10x smaller than AdamW's.
    beta1, beta2 : float, default 0.9, 0.99
    weight_decay : float, default 0
        Decoupled, multiplied by the learning rate, biases spared by default.
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Equal to optax.lion; Keras Lion the same.
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
