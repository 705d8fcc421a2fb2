"""Gradient descent and momentum: each rule (:mod:`~anyoptim.optimizers.contract`) right above its class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .._checks import check_choice
from ..schedules import Schedule
from .base import Optimizer
from .contract import Scalar, declare

__all__ = ["SGD", "Momentum", "momentum", "sgd"]

Slots = dict[str, Any]


@declare(scalars=("learning_rate",))
def sgd(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Gradient descent: :math:`\theta \leftarrow \theta - \alpha g`."""
    return p - hp["learning_rate"] * g, {}


class SGD(Optimizer):
    r"""Gradient descent: :math:`\theta \leftarrow \theta - \alpha g`.

    Batch, mini-batch and stochastic gradient descent differ only in the data the
    gradients are computed on (see :func:`anyoptim.minibatches`), not in the update.

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
    **options
        ``weight_decay``, ``weight_decay_mask``, ``clip_global_norm``, ``clip_value``,
        ``on_nonfinite``, ``engine``: see :class:`Optimizer`.

    Notes
    -----
    torch.optim.SGD with ``momentum=0``; optax.sgd; Keras SGD with ``momentum=0``.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.SGD(learning_rate=0.1)
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, {"w": np.array([1.0, 1.0])}, state)
    >>> params["w"]
    array([ 0.9, -2.1])
    """

    rule = staticmethod(sgd)

    def __init__(self, learning_rate: float | Schedule = 0.01, **options: Any):
        super().__init__(learning_rate, **options)


@declare(
    slots=("v",),
    scalars=("learning_rate", "beta", Scalar("dampening", when="dampened")),
    options=("nesterov", "dampened"),
)
def momentum(
    xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any], *, nesterov: bool, dampened: bool
) -> tuple[Any, Slots]:
    r"""Momentum, as an exponential moving average or as a heavy ball.

    .. math::

        v \leftarrow \beta v + c\,g, \qquad
        d = \begin{cases} \beta v + c\,g & \text{Nesterov} \\ v & \text{otherwise}\end{cases}, \qquad
        \theta \leftarrow \theta - \alpha d

    with ``hp["dampening"]`` :math:`c = 1 - \beta` for the course's EMA form
    (``dampened=True``) and :math:`c = 1` for the heavy ball of torch.optim
    (``dampened=False``, where the product is left out).
    """
    beta = hp["beta"]
    scaled_g = hp["dampening"] * g if dampened else g
    v = beta * slots["v"] + scaled_g
    direction = beta * v + scaled_g if nesterov else v
    return p - hp["learning_rate"] * direction, {"v": v}


class Momentum(Optimizer):
    r"""Gradient descent with momentum (Polyak, 1964), optionally Nesterov's (Sutskever et al., 2013).

    .. math::

        v \leftarrow \beta v + c\, g, \qquad \theta \leftarrow \theta - \alpha v
        \quad(\text{Nesterov: } \theta \leftarrow \theta - \alpha(\beta v + c\, g))

    with :math:`c = 1 - \beta` in the ``"ema"`` form (the course's
    :math:`v = \beta v + (1-\beta) g`) and :math:`c = 1` in the ``"heavy_ball"``
    form, and :math:`v_0 = 0`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
    beta : float, default 0.9
        Momentum coefficient, in [0, 1).
    form : {"ema", "heavy_ball"}, default "ema"
    nesterov : bool, default False
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Conventions elsewhere:

    * torch.optim.SGD(momentum=μ, dampening=0) is ``form="heavy_ball", beta=μ``
      (torch's first buffer is ``g``, which is ours too, since :math:`v_0 = 0`);
      torch's ``dampening=μ`` after its first step is the EMA form.
    * optax.sgd(momentum=μ) is ``form="heavy_ball"`` (``m = g + μ m``).
    * Keras SGD keeps :math:`v = μv - αg`: the heavy ball with the rate inside
      the velocity; equal to ours for a constant rate.
    * The EMA form's velocity is :math:`1-\beta` times the heavy ball's, so it
      needs a rate :math:`1/(1-\beta)` times larger for the same steps.
    """

    rule = staticmethod(momentum)
    setting_checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **Optimizer.setting_checks,
        "form": lambda name, value: check_choice(name, value, ("ema", "heavy_ball")),
    }

    def __init__(
        self,
        learning_rate: float | Schedule = 0.01,
        beta: float = 0.9,
        *,
        form: str = "ema",
        nesterov: bool = False,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta = beta
        self.form = form
        self.nesterov = bool(nesterov)

    def _options(self) -> dict[str, Any]:
        return {"nesterov": self.nesterov, "dampened": self.form == "ema"}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "dampening": 1.0 - self.beta if self.form == "ema" else 1.0}
