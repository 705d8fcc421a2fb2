"""Per-coordinate adaptive rates: RMSprop, Adagrad and Adadelta, each rule right above its class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .._checks import check_beta
from ..schedules import Schedule
from .base import Optimizer
from .contract import Scalar, Slot, declare

__all__ = ["Adadelta", "Adagrad", "RMSprop", "adadelta", "adagrad", "rmsprop"]

Slots = dict[str, Any]


@declare(
    slots=("s", Slot("mean_g", when="centered"), Slot("buf", when="use_momentum")),
    scalars=("learning_rate", "beta", "epsilon", Scalar("momentum", when="use_momentum")),
    options=("eps_in_sqrt", "centered", "use_momentum"),
)
def rmsprop(
    xp: Any,
    p: Any,
    g: Any,
    slots: Slots,
    hp: Mapping[str, Any],
    *,
    eps_in_sqrt: bool,
    centered: bool,
    use_momentum: bool,
) -> tuple[Any, Slots]:
    r"""RMSprop (Tieleman & Hinton, 2012), optionally centered (Graves, 2013) and with momentum.

    .. math::

        s \leftarrow \beta s + (1-\beta) g^2, \quad
        \bar g \leftarrow \beta \bar g + (1-\beta) g \ \text{(centered)}, \quad
        r = \max(s - \bar g^2, 0) \ \text{(centered) or } s

        u = \frac{g}{\sqrt{r} + \epsilon} \ \text{or}\ \frac{g}{\sqrt{r + \epsilon}}, \quad
        b \leftarrow \mu b + u \ \text{(momentum)}, \quad
        \theta \leftarrow \theta - \alpha\,(b \text{ or } u)

    The rule of :class:`RMSprop`.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"s"`` (:math:`s`), and ``"mean_g"`` (:math:`\bar g`) when ``centered``, ``"buf"``
        (:math:`b`) when ``use_momentum``; each of ``p``'s shape and dtype, 0 before the first step.
    hp : mapping of str to scalar
        This step's scalars: ``"learning_rate"`` (α), ``"beta"`` (β), ``"epsilon"`` (ε) and,
        when ``use_momentum``, ``"momentum"`` (μ).
    eps_in_sqrt : bool
        Divide by :math:`\sqrt{r + \epsilon}` instead of :math:`\sqrt{r} + \epsilon`.
    centered : bool
        Subtract the squared moving mean :math:`\bar g^2` from :math:`s` under the root.
    use_momentum : bool
        Accumulate the steps in :math:`b` and step by :math:`\alpha b`.

    Returns
    -------
    new_p : array
        The updated parameter, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        The updated slots, with the keys of ``slots``.

    Examples
    --------
    Two steps on :math:`f(w) = \lVert w \rVert^2`, whose gradient is :math:`2w`:

    >>> import array_api_compat.numpy as xp
    >>> from anyoptim.optimizers.adaptive import rmsprop
    >>> p, slots = xp.asarray([1.0, -2.0]), {"s": xp.zeros(2)}
    >>> hp = {"learning_rate": 0.01, "beta": 0.9, "epsilon": 1e-8}
    >>> for _ in range(2):
    ...     p, slots = rmsprop(xp, p, 2 * p, slots, hp, eps_in_sqrt=False, centered=False, use_momentum=False)
    >>> xp.round(p, 4), xp.round(slots["s"], 4)
    (array([ 0.9458, -1.9456]), array([0.7351, 2.9898]))
    """
    beta = hp["beta"]
    s = beta * slots["s"] + (1 - beta) * (g * g)
    new_slots = {"s": s}
    radicand = s
    if centered:
        mean_g = beta * slots["mean_g"] + (1 - beta) * g
        new_slots["mean_g"] = mean_g
        # s >= mean_g**2 in exact arithmetic; rounded (float16 state underflows first) it may not be: no NaN.
        radicand = xp.maximum(s - mean_g * mean_g, 0.0)
    if eps_in_sqrt:
        step = g / xp.sqrt(radicand + hp["epsilon"])
    else:
        step = g / (xp.sqrt(radicand) + hp["epsilon"])
    if use_momentum:
        step = hp["momentum"] * slots["buf"] + step
        new_slots["buf"] = step
    return p - hp["learning_rate"] * step, new_slots


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton, 2012, Lecture 6.5) [1]_.

    .. math::

        s \leftarrow \beta s + (1-\beta) g^2, \qquad
        \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}

    ``eps_in_sqrt=True`` uses :math:`\sqrt{s + \epsilon}`; ``centered=True``
    divides by :math:`\sqrt{s - \bar g^2}` with :math:`\bar g` the moving mean of
    the gradient (Graves, 2013) [2]_; ``momentum=μ > 0`` keeps
    :math:`b \leftarrow \mu b + g/\sqrt{\cdot}` and steps by :math:`\alpha b`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    beta : float, default 0.9
        Decay of the squared-gradient average (the course's β), in [0, 1).
    epsilon : float, default 1e-8
        ε >= 0, added to the root (under it with ``eps_in_sqrt``).
    eps_in_sqrt : bool, default False
        Divide by :math:`\sqrt{s + \epsilon}` instead of :math:`\sqrt{s} + \epsilon`.
    centered : bool, default False
        Divide by the root of the variance estimate :math:`s - \bar g^2` (at least 0: rounded
        state, float16 above all, can make it negative; torch.optim gives NaN there); adds the
        state slot ``mean_g`` (:math:`\bar g`).
    momentum : float, default 0
        μ, in [0, 1); when > 0 the steps are accumulated in the state slot ``buf`` (:math:`b`).
    **options
        See :class:`Optimizer`.

    Notes
    -----
    * torch.optim.RMSprop calls β ``alpha`` (default 0.99) and puts ε outside the
      root: ``RMSprop(alpha=a, eps=e)`` is ``beta=a, epsilon=e``.
    * optax.rmsprop calls β ``decay`` (0.9) and puts ε inside the root by default
      (``eps_in_sqrt=True``).
    * Keras RMSprop calls β ``rho`` (0.9), ε inside the root, 1e-7.

    References
    ----------
    .. [1] Tieleman, T. and Hinton, G., "Lecture 6.5 - RMSprop: Divide the gradient by a running average
       of its recent magnitude", COURSERA: Neural Networks for Machine Learning, 2012.
    .. [2] Graves, A., "Generating Sequences With Recurrent Neural Networks", arXiv:1308.0850, 2013.

    Examples
    --------
    Two steps on :math:`f(w) = \lVert w \rVert^2`, whose gradient is :math:`2w`:

    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.RMSprop(learning_rate=0.01)
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> for _ in range(2):
    ...     params, state = opt.step(params, {"w": 2 * params["w"]}, state)
    >>> np.round(params["w"], 4)
    array([ 0.9458, -1.9456])
    >>> sorted(anyoptim.RMSprop(centered=True, momentum=0.9).init(params).slots)
    ['buf', 'mean_g', 's']
    """

    rule = staticmethod(rmsprop)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta: float = 0.9,
        epsilon: float = 1e-8,
        *,
        eps_in_sqrt: bool = False,
        centered: bool = False,
        momentum: float = 0.0,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta = beta
        self.epsilon = epsilon
        self.eps_in_sqrt = eps_in_sqrt
        self.centered = centered
        self.momentum = momentum

    def _options(self) -> dict[str, Any]:
        return {"eps_in_sqrt": self.eps_in_sqrt, "centered": self.centered, "use_momentum": bool(self.momentum)}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "epsilon": self.epsilon, "momentum": self.momentum}


@declare(slots=(Slot("s", fill="initial_accumulator_value"),), scalars=("learning_rate", "epsilon"))
def adagrad(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Adagrad (Duchi, Hazan & Singer, 2011).

    .. math::

        s \leftarrow s + g^2, \qquad \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}

    The rule of :class:`Adagrad`.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"s"``, the sum of the squared gradients, of ``p``'s shape and dtype
        (``initial_accumulator_value`` before the first step).
    hp : mapping of str to scalar
        This step's scalars: ``"learning_rate"`` (α) and ``"epsilon"`` (ε).

    Returns
    -------
    new_p : array
        The updated parameter, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        ``{"s": ...}``, the updated sum.

    Examples
    --------
    Two steps on :math:`f(w) = \lVert w \rVert^2`, whose gradient is :math:`2w`:

    >>> import array_api_compat.numpy as xp
    >>> from anyoptim.optimizers.adaptive import adagrad
    >>> p, slots = xp.asarray([1.0, -2.0]), {"s": xp.zeros(2)}
    >>> for _ in range(2):
    ...     p, slots = adagrad(xp, p, 2 * p, slots, {"learning_rate": 0.1, "epsilon": 1e-10})
    >>> xp.round(p, 4), xp.round(slots["s"], 4)
    (array([ 0.8331, -1.8311]), array([ 7.24, 30.44]))
    """
    s = slots["s"] + g * g
    return p - hp["learning_rate"] * g / (xp.sqrt(s) + hp["epsilon"]), {"s": s}


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer, 2011) [1]_.

    .. math::

        s \leftarrow s + g^2, \qquad \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}

    Each coordinate's rate shrinks with the sum of its squared gradients, from
    :math:`s_0` = ``initial_accumulator_value``.

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    epsilon : float, default 1e-10
        ε >= 0, added to the square root.
    initial_accumulator_value : float, default 0
        :math:`s_0` >= 0 (torch.optim: 0; optax: 0.1).
    **options
        See :class:`Optimizer`.

    Notes
    -----
    torch.optim.Adagrad with ``lr_decay=0`` (use a schedule instead); optax.adagrad
    puts ε inside the root.

    References
    ----------
    .. [1] Duchi, J.; Hazan, E. and Singer, Y., "Adaptive Subgradient Methods for Online Learning and
       Stochastic Optimization", Journal of Machine Learning Research 12, 2121-2159, 2011.

    Examples
    --------
    Two steps on :math:`f(w) = \lVert w \rVert^2`, whose gradient is :math:`2w`:

    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Adagrad(learning_rate=0.1)
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> for _ in range(2):
    ...     params, state = opt.step(params, {"w": 2 * params["w"]}, state)
    >>> np.round(params["w"], 4), np.round(state.slots["s"]["w"], 4)
    (array([ 0.8331, -1.8311]), array([ 7.24, 30.44]))
    """

    rule = staticmethod(adagrad)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.01,
        epsilon: float = 1e-10,
        *,
        initial_accumulator_value: float = 0.0,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.epsilon = epsilon
        self.initial_accumulator_value = initial_accumulator_value

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"epsilon": self.epsilon}


@declare(slots=("s", "u"), scalars=("learning_rate", "rho", "epsilon"))
def adadelta(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Adadelta (Zeiler, 2012): the step scaled by the ratio of two running RMS.

    .. math::

        s \leftarrow \rho s + (1-\rho) g^2, \quad
        \Delta = \frac{\sqrt{u + \epsilon}}{\sqrt{s + \epsilon}}\, g, \quad
        u \leftarrow \rho u + (1-\rho) \Delta^2, \quad
        \theta \leftarrow \theta - \alpha \Delta

    ``u`` is updated with this step's :math:`\Delta`, after it was used: the rule of :class:`Adadelta`.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"s"`` (:math:`E[g^2]`) and ``"u"`` (:math:`E[\Delta x^2]`), each of ``p``'s shape and
        dtype, 0 before the first step.
    hp : mapping of str to scalar
        This step's scalars: ``"learning_rate"`` (α), ``"rho"`` (ρ) and ``"epsilon"`` (ε).

    Returns
    -------
    new_p : array
        :math:`\theta - \alpha \Delta`, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        ``{"s": ..., "u": ...}``, the updated averages.

    Examples
    --------
    The first :math:`\Delta` is :math:`\sqrt{\epsilon / (\epsilon + (1-\rho) g^2)}\,g`, about
    :math:`\sqrt{\epsilon / (1-\rho)}\,\mathrm{sign}(g) \approx 0.00316\,\mathrm{sign}(g)` here:

    >>> import array_api_compat.numpy as xp
    >>> from anyoptim.optimizers.adaptive import adadelta
    >>> slots = {"s": xp.zeros(2), "u": xp.zeros(2)}
    >>> hp = {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6}
    >>> p, slots = adadelta(xp, xp.asarray([1.0, -2.0]), xp.asarray([2.0, -4.0]), slots, hp)
    >>> xp.round(p, 6), xp.round(slots["s"], 4)
    (array([ 0.996838, -1.996838]), array([0.4, 1.6]))
    """
    rho, epsilon = hp["rho"], hp["epsilon"]
    s = rho * slots["s"] + (1 - rho) * (g * g)
    delta = xp.sqrt(slots["u"] + epsilon) / xp.sqrt(s + epsilon) * g
    u = rho * slots["u"] + (1 - rho) * (delta * delta)
    return p - hp["learning_rate"] * delta, {"s": s, "u": u}


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012, "ADADELTA: An Adaptive Learning Rate Method", Algorithm 1) [1]_.

    .. math::

        s \leftarrow \rho s + (1-\rho) g^2, \qquad
        \Delta = \frac{\sqrt{u + \epsilon}}{\sqrt{s + \epsilon}}\, g, \qquad
        u \leftarrow \rho u + (1-\rho) \Delta^2, \qquad
        \theta \leftarrow \theta - \alpha \Delta

    :math:`s` is the running average :math:`E[g^2]` of the squared gradients and
    :math:`u` the running average :math:`E[\Delta x^2]` of the squared updates,
    both starting at 0.  The ratio of their RMS gives each coordinate a step in
    the units of the parameter, so the paper needs no learning rate
    (:math:`\alpha = 1`, the default here).

    Parameters
    ----------
    learning_rate : float or callable, default 1.0
        α, a factor on the paper's update.
    rho : float, default 0.9
        ρ, the decay of both running averages, in [0, 1).
    epsilon : float, default 1e-6
        ε, inside both roots: it also sets the size of the first steps
        (:math:`\sqrt{\epsilon / (\epsilon + (1-\rho) g^2)}\,g`).
    **options
        See :class:`Optimizer`; ``weight_decay`` is L2 added to the gradient,
        as torch.optim.Adadelta's and optax.adadelta's.

    Notes
    -----
    * torch.optim.Adadelta(lr=α, rho=ρ, eps=ε, weight_decay=λ) is
      ``Adadelta(α, ρ, ε, weight_decay=λ)``; torch's ``square_avg`` is ``s``,
      ``acc_delta`` is ``u``; torch's defaults are ours.
    * optax.adadelta(learning_rate=α, rho=ρ, eps=ε, weight_decay=λ) is the same
      (``e_g`` is ``s``, ``e_x`` is ``u``), with the same defaults for ρ and ε.
    * Keras Adadelta is the same update with other defaults:
      ``learning_rate=0.001, rho=0.95, epsilon=1e-7``.

    References
    ----------
    .. [1] Zeiler, M. D., "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Adadelta()
    >>> params = {"w": np.array([1.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, {"w": np.array([2.0])}, state)
    >>> round(float(params["w"][0]), 6)  # 1 - sqrt(1e-6 / (1e-6 + 0.1 * 4)) * 2
    0.996838
    >>> sorted(state.slots)
    ['s', 'u']
    """

    rule = staticmethod(adadelta)
    setting_checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **Optimizer.setting_checks,
        "rho": check_beta,
    }

    def __init__(
        self,
        learning_rate: float | Schedule = 1.0,
        rho: float = 0.9,
        epsilon: float = 1e-6,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.rho = rho
        self.epsilon = epsilon

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"rho": self.rho, "epsilon": self.epsilon}
