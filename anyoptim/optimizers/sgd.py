"""Gradient descent and momentum: each rule (:mod:`~anyoptim.optimizers.contract`) right above its class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .._checks import check_choice
from ..engines.muladd import muladd
from ..schedules import Schedule
from .base import Optimizer
from .contract import Scalar, declare

__all__ = ["SGD", "Momentum", "momentum", "sgd"]

Slots = dict[str, Any]


@declare(scalars=("learning_rate",))
def sgd(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Gradient descent, :math:`\theta \leftarrow \theta - \alpha g`: the rule of :class:`SGD`.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        The state slots: none, ``{}``.
    hp : mapping of str to scalar
        This step's scalars: ``"learning_rate"`` (α).

    Returns
    -------
    new_p : array
        :math:`\theta - \alpha g`, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        ``{}``.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> from anyoptim.optimizers.sgd import sgd
    >>> sgd(xp, xp.asarray([1.0, -2.0]), xp.asarray([1.0, 1.0]), {}, {"learning_rate": 0.1})
    (array([ 0.9, -2.1]), {})
    """
    return muladd(xp, -hp["learning_rate"], g, p), {}


class SGD(Optimizer):
    r"""Gradient descent: :math:`\theta \leftarrow \theta - \alpha g`.

    Batch, mini-batch and stochastic gradient descent (Robbins & Monro, 1951) [1]_
    differ only in the data the gradients are computed on (see
    :func:`anyoptim.minibatches`), not in the update.  The optimizer keeps no state
    slots.

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    **options
        ``weight_decay``, ``weight_decay_mask``, ``clip_global_norm``, ``clip_value``,
        ``on_nonfinite``, ``engine``: see :class:`Optimizer`.

    Notes
    -----
    torch.optim.SGD with ``momentum=0``; optax.sgd; Keras SGD with ``momentum=0``.

    References
    ----------
    .. [1] Robbins, H. and Monro, S., "A Stochastic Approximation Method", The Annals of Mathematical
       Statistics 22(3), 400-407, 1951.

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
    (``dampened=False``, where the product is left out): the rule of :class:`Momentum`.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"v"``, the velocity :math:`v`, of ``p``'s shape and dtype (0 before the first step).
    hp : mapping of str to scalar
        This step's scalars: ``"learning_rate"`` (α), ``"beta"`` (β) and, when
        ``dampened``, ``"dampening"`` (:math:`c`).
    nesterov : bool
        Step along the look-ahead :math:`\beta v + c\,g` instead of :math:`v`.
    dampened : bool
        Multiply the gradient by ``hp["dampening"]`` (the EMA form); else :math:`c = 1`.

    Returns
    -------
    new_p : array
        The updated parameter, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        ``{"v": ...}``, the updated velocity.

    Examples
    --------
    Two steps of the EMA form on :math:`f(w) = \lVert w \rVert^2`, whose gradient is :math:`2w`:

    >>> import array_api_compat.numpy as xp
    >>> from anyoptim.optimizers.sgd import momentum
    >>> p, slots = xp.asarray([1.0, -2.0]), {"v": xp.zeros(2)}
    >>> hp = {"learning_rate": 0.1, "beta": 0.9, "dampening": 1 - 0.9}
    >>> for _ in range(2):
    ...     p, slots = momentum(xp, p, 2 * p, slots, hp, nesterov=False, dampened=True)
    >>> xp.round(p, 4), xp.round(slots["v"], 4)
    (array([ 0.9424, -1.8848]), array([ 0.376, -0.752]))
    """
    beta = hp["beta"]
    scaled_g = hp["dampening"] * g if dampened else g
    v = beta * slots["v"] + scaled_g
    direction = muladd(xp, beta, v, scaled_g) if nesterov else v
    return muladd(xp, -hp["learning_rate"], direction, p), {"v": v}


class Momentum(Optimizer):
    r"""Gradient descent with momentum (Polyak, 1964) [1]_, optionally Nesterov's (Sutskever et al., 2013) [2]_.

    .. math::

        v \leftarrow \beta v + c\, g, \qquad \theta \leftarrow \theta - \alpha v
        \quad(\text{Nesterov: } \theta \leftarrow \theta - \alpha(\beta v + c\, g))

    with :math:`c = 1 - \beta` in the ``"ema"`` form (the course's
    :math:`v = \beta v + (1-\beta) g`) and :math:`c = 1` in the ``"heavy_ball"``
    form, and :math:`v_0 = 0`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    beta : float, default 0.9
        Momentum coefficient, in [0, 1).
    form : {"ema", "heavy_ball"}, default "ema"
        The velocity's form: an exponential moving average of the gradients
        (:math:`c = 1-\beta`) or their sum decayed by β (:math:`c = 1`).
    nesterov : bool, default False
        Step along the look-ahead :math:`\beta v + c\,g` instead of :math:`v`.
    **options
        See :class:`Optimizer`.

    Raises
    ------
    ValueError
        If ``form`` is neither ``"ema"`` nor ``"heavy_ball"``, or ``beta`` is outside [0, 1).

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

    References
    ----------
    .. [1] Polyak, B. T., "Some methods of speeding up the convergence of iteration methods",
       USSR Computational Mathematics and Mathematical Physics 4(5), 1-17, 1964.
    .. [2] Sutskever, I.; Martens, J.; Dahl, G. and Hinton, G., "On the importance of initialization
       and momentum in deep learning", ICML 2013.

    Examples
    --------
    Two steps on :math:`f(w) = \lVert w \rVert^2`, whose gradient is :math:`2w`:

    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Momentum(learning_rate=0.1, beta=0.9)
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> for _ in range(2):
    ...     params, state = opt.step(params, {"w": 2 * params["w"]}, state)
    >>> np.round(params["w"], 4), np.round(state.slots["v"]["w"], 4)
    (array([ 0.9424, -1.8848]), array([ 0.376, -0.752]))

    The heavy ball's velocity is :math:`1/(1-\beta) = 10` times larger at first, and so are its steps:

    >>> opt = anyoptim.Momentum(learning_rate=0.1, beta=0.9, form="heavy_ball")
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> for _ in range(2):
    ...     params, state = opt.step(params, {"w": 2 * params["w"]}, state)
    >>> np.round(params["w"], 4), np.round(state.slots["v"]["w"], 4)
    (array([ 0.46, -0.92]), array([ 3.4, -6.8]))
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
        self.nesterov = nesterov

    def _options(self) -> dict[str, Any]:
        return {"nesterov": self.nesterov, "dampened": self.form == "ema"}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "dampening": 1.0 - self.beta if self.form == "ema" else 1.0}
