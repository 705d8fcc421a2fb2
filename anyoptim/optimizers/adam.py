"""The Adam family: Adam, AdamW, NAdam, RAdam as settings of one family; each rule above its class.

:class:`AdamFamily` holds what the moment-estimating optimizers share: β1, β2, ε, ``eps_root``, AMSGrad, and the scalars
of one step (the betas, ε and the bias corrections :math:`1-\\beta^t`).  Adam, NAdam and RAdam are siblings that differ
in their rule and in the settings of the family they fix (:attr:`AdamFamily.fixed`); AdamW is Adam with decoupled decay
by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..count_math import select, sqrt
from ..schedules import Schedule
from ..transforms import decay_weights_only
from .base import Optimizer
from .contract import Scalar, Slot, declare

__all__ = ["Adam", "AdamFamily", "AdamW", "NAdam", "RAdam", "adam", "nadam", "radam"]

Slots = dict[str, Any]

#: What every rule of the family reads (with ``eps_root`` only when it is compiled in).
MOMENT_SCALARS = ("learning_rate", "beta1", "beta2", "epsilon", "bias_correction1", "bias_correction2")


def _moments(slots: Slots, g: Any, hp: Mapping[str, Any]) -> tuple[Any, Any]:
    r"""The family's moments, :math:`\beta_1 m + (1-\beta_1) g` and :math:`\beta_2 v + (1-\beta_2) g^2`."""
    beta1, beta2 = hp["beta1"], hp["beta2"]
    return beta1 * slots["m"] + (1 - beta1) * g, beta2 * slots["v"] + (1 - beta2) * (g * g)


def _adaptive_step(xp: Any, p: Any, m_hat: Any, v_hat: Any, hp: Mapping[str, Any], with_eps_root: bool) -> Any:
    r""":math:`\theta - \alpha \hat m / (\sqrt{\hat v + \epsilon_{root}} + \epsilon)`, the step of Adam and NAdam.

    :math:`\epsilon_{root}` is compiled in only when not zero (``with_eps_root``): that saves the fused engines a pass.
    """
    radicand = v_hat + hp["eps_root"] if with_eps_root else v_hat
    return p - hp["learning_rate"] * m_hat / (xp.sqrt(radicand) + hp["epsilon"])


class AdamFamily(Optimizer):
    r"""The moment-estimating optimizers: Adam, AdamW, NAdam and RAdam.

    Every member keeps :math:`m \leftarrow \beta_1 m + (1-\beta_1) g` and :math:`v \leftarrow \beta_2 v + (1-\beta_2)
    g^2` and corrects their bias by :math:`1-\beta_1^t` and :math:`1-\beta_2^t`; members differ in their rule and in the
    family settings they offer.  A member is constructed through its own signature; this base holds the shared settings.

    Parameters
    ----------
    learning_rate : float or callable
        α, a rate >= 0 or a schedule ``f(count) -> float``.
    beta1, beta2, epsilon : float
        Decays of the first and second moments, in [0, 1), and ε, added outside the square root.
    **options
        ``eps_root`` (default 0: added inside the square root, optax's) and ``amsgrad`` (default
        False: use the running maximum of the uncorrected :math:`v`), and those of :class:`Optimizer`.

    Raises
    ------
    TypeError
        If ``options`` name a setting of :attr:`fixed` ("NAdam has no 'amsgrad' option").
    """

    #: The family settings this member does not offer, each with the value it is fixed at.
    fixed: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        learning_rate: float | Schedule,
        beta1: float,
        beta2: float,
        epsilon: float,
        **options: Any,
    ):
        for name in self.fixed:
            if name in options:
                raise TypeError(f"{type(self).__name__} has no {name!r} option (got {name}={options[name]!r})")
        settings = {"eps_root": 0.0, "amsgrad": False, **self.fixed}
        eps_root = options.pop("eps_root", settings["eps_root"])
        amsgrad = options.pop("amsgrad", settings["amsgrad"])
        super().__init__(learning_rate, **options)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.eps_root = eps_root
        self.amsgrad = amsgrad

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.fixed and value != self.fixed[name]:  # fixed at construction and after it
            raise TypeError(f"{type(self).__name__} has no {name!r} option (got {name}={value!r})")
        super().__setattr__(name, value)

    def _step_scalars(self, count: int) -> dict[str, float]:
        t = count + 1
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
            "eps_root": self.eps_root,
            "bias_correction1": 1.0 - self.beta1**t,
            "bias_correction2": 1.0 - self.beta2**t,
        }


@declare(
    slots=("m", "v", Slot("v_max", when="amsgrad")),
    scalars=(*MOMENT_SCALARS, Scalar("eps_root", when="with_eps_root")),
    options=("amsgrad", "with_eps_root"),
)
def adam(
    xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any], *, amsgrad: bool, with_eps_root: bool
) -> tuple[Any, Slots]:
    r"""Adam (Kingma & Ba, 2015), ε outside the root and ``eps_root`` inside: :class:`Adam`'s rule, whose math it is.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"m"``, ``"v"`` and, with ``amsgrad``, ``"v_max"``: of ``p``'s shape and dtype, 0 before the first step.
    hp : mapping of str to scalar
        ``"learning_rate"``, ``"beta1"``, ``"beta2"``, ``"epsilon"``, ``"bias_correction1"`` (:math:`1-\beta_1^t`),
        ``"bias_correction2"`` (:math:`1-\beta_2^t` at step :math:`t`) and ``"eps_root"`` if ``with_eps_root``.
    amsgrad, with_eps_root : bool
        Use the running maximum ``v_max`` of :math:`v` (AMSGrad); add ``hp["eps_root"]`` under the square root.

    Returns
    -------
    new_p : array
        The updated parameter, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        The updated slots, with the keys of ``slots``.

    Examples
    --------
    >>> import array_api_compat.numpy as xp, anyoptim
    >>> p, slots = xp.asarray([1.0, -2.0]), {"m": xp.zeros(2), "v": xp.zeros(2)}
    >>> [hp], _ = anyoptim.Adam(0.1).host_scalars({"w": p})(0)  # the scalars of step 1, as Adam makes them
    >>> anyoptim.Adam.rule(xp, p, 2 * p, slots, hp, amsgrad=False, with_eps_root=False)  # -0.1 sign(g) at step 1
    (array([ 0.9, -1.9]), {'m': array([ 0.2, -0.4]), 'v': array([0.004, 0.016])})
    """
    m, v = _moments(slots, g, hp)
    new_slots = {"m": m, "v": v}
    if amsgrad:
        v = xp.maximum(slots["v_max"], v)
        new_slots["v_max"] = v
    m_hat = m / hp["bias_correction1"]
    v_hat = v / hp["bias_correction2"]
    return _adaptive_step(xp, p, m_hat, v_hat, hp, with_eps_root), new_slots


class Adam(AdamFamily):
    r"""Adam (Kingma & Ba, 2015) [1]_, with bias correction exactly as the course.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2

        \hat m = \frac{m}{1-\beta_1^t}, \qquad \hat v = \frac{v}{1-\beta_2^t}, \qquad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{\hat v + \epsilon_{root}} + \epsilon}

    At step 1 the corrected moments are exactly ``g`` and ``g**2``: the first update is :math:`\alpha g/(|g|+\epsilon)`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    beta1, beta2 : float, default 0.9, 0.999
        β1 and β2, the decays of the moments :math:`m` and :math:`v`, in [0, 1).
    epsilon, eps_root : float, default 1e-8, 0
        Added outside the square root (course, torch.optim, optax) and inside it (optax's ``eps_root``).
    amsgrad : bool, default False
        Use the running maximum of :math:`v` (Reddi et al., 2018) [2]_, as torch.optim does: the maximum of the
        *uncorrected* :math:`v`, then corrected.
    **options
        See :class:`Optimizer`; ``weight_decay`` is torch.optim.Adam's L2 on the gradient; :class:`AdamW` decouples it.

    Notes
    -----
    Same as torch.optim.Adam and optax.adam with equal arguments.  Keras 3 Adam uses the "ε-hat" form,
    :math:`\alpha\sqrt{1-\beta_2^t}/(1-\beta_1^t) \cdot m/(\sqrt v + \hat\epsilon)`, with
    :math:`\hat\epsilon = 10^{-7}`: ε there is not scaled by the correction.

    References
    ----------
    .. [1] Kingma, D. P. and Ba, J., "Adam: A Method for Stochastic Optimization", ICLR 2015, arXiv:1412.6980.
    .. [2] Reddi, S. J.; Kale, S. and Kumar, S., "On the Convergence of Adam and Beyond", ICLR 2018.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt, params = anyoptim.Adam(learning_rate=0.1), {"w": np.array([1.0, -2.0])}
    >>> params, state = opt.step(params, {"w": np.array([0.5, 0.5])}, opt.init(params))
    >>> np.round(params["w"], 4), state.count  # the first step is -0.1 sign(g)
    (array([ 0.9, -2.1]), 1)
    """

    rule = staticmethod(adam)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        eps_root: float = 0.0,
        amsgrad: bool = False,
        **options: Any,
    ):
        super().__init__(learning_rate, beta1, beta2, epsilon, eps_root=eps_root, amsgrad=amsgrad, **options)

    def _options(self) -> dict[str, Any]:
        return {"amsgrad": self.amsgrad, "with_eps_root": self.eps_root > 0}


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019) [1]_.

    .. math::

        \theta \leftarrow \theta - \alpha \left(
            \frac{\hat m}{\sqrt{\hat v + \epsilon_{root}} + \epsilon} + \lambda \theta\right)

    The decay is multiplied by the (scheduled) learning rate, as in torch.optim.AdamW and optax.adamw.  By default
    biases and other vectors are not decayed (:func:`decay_weights_only`); pass ``weight_decay_mask=anyoptim.decay_all``
    for torch.optim's behaviour (and optax's without a ``mask``).

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    beta1, beta2, epsilon : float, default 0.9, 0.999, 1e-8
        As :class:`Adam`'s: the decays of the moments, in [0, 1), and ε outside the root.
    weight_decay : float, default 0.01
        λ >= 0, as torch.optim.AdamW (optax's default is 1e-4).
    **options
        ``eps_root`` and ``amsgrad`` (:class:`Adam`) and those of :class:`Optimizer`.

    References
    ----------
    .. [1] Loshchilov, I. and Hutter, F., "Decoupled Weight Decay Regularization", ICLR 2019, arXiv:1711.05101.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.AdamW(learning_rate=0.1, weight_decay=0.5)
    >>> params = {"W": np.array([[1.0, 2.0]]), "b": np.array([1.0])}
    >>> grads = {"W": np.array([[0.5, 0.5]]), "b": np.array([0.5])}
    >>> params, state = opt.step(params, grads, opt.init(params))  # W - 0.1 (1 + 0.5 W); b - 0.1, a bias
    >>> np.round(params["W"], 4), np.round(params["b"], 4)
    (array([[0.85, 1.8 ]]), array([0.9]))
    """

    decoupled_weight_decay = True
    default_weight_decay_mask = staticmethod(decay_weights_only)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        weight_decay: float = 0.01,
        **options: Any,
    ):
        super().__init__(learning_rate, beta1, beta2, epsilon, weight_decay=weight_decay, **options)


@declare(
    slots=("m", "v"),
    scalars=(*MOMENT_SCALARS, "bias_correction1_next", Scalar("eps_root", when="with_eps_root")),
    options=("with_eps_root",),
)
def nadam(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any], *, with_eps_root: bool) -> tuple[Any, Slots]:
    r"""NAdam, Adam with Nesterov momentum (Dozat, 2016), in optax's form: :class:`NAdam`'s rule, whose math it is.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"m"`` and ``"v"``, of ``p``'s shape and dtype, 0 before the first step.
    hp : mapping of str to scalar
        ``"learning_rate"``, ``"beta1"``, ``"beta2"``, ``"epsilon"``, ``"bias_correction1"``, ``"bias_correction2"``,
        ``"bias_correction1_next"`` (:math:`1-\beta_1^{t+1}` at step :math:`t`) and ``"eps_root"`` if ``with_eps_root``.
    with_eps_root : bool
        Add ``hp["eps_root"]`` under the root.

    Returns
    -------
    new_p : array
        The updated parameter, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        The updated slots, with the keys of ``slots``.

    Examples
    --------
    >>> import array_api_compat.numpy as xp, anyoptim
    >>> p, slots = xp.asarray([1.0, -2.0]), {"m": xp.zeros(2), "v": xp.zeros(2)}
    >>> [hp], _ = anyoptim.NAdam(0.1).host_scalars({"w": p})(0)  # the scalars of step 1
    >>> anyoptim.NAdam.rule(xp, p, 2 * p, slots, hp, with_eps_root=False)  # 1 + β1 / (1 + β1) times Adam's step
    (array([ 0.85263158, -1.85263158]), {'m': array([ 0.2, -0.4]), 'v': array([0.004, 0.016])})
    """
    m, v = _moments(slots, g, hp)
    beta1 = hp["beta1"]
    m_hat = beta1 * m / hp["bias_correction1_next"] + (1 - beta1) * g / hp["bias_correction1"]
    v_hat = v / hp["bias_correction2"]
    return _adaptive_step(xp, p, m_hat, v_hat, hp, with_eps_root), {"m": m, "v": v}


class NAdam(AdamFamily):
    r"""NAdam: Adam with Nesterov momentum (Dozat, 2016) [1]_, in optax's form.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2

        \hat m = \frac{\beta_1 m_t}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g}{1-\beta_1^t}, \qquad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    Parameters
    ----------
    learning_rate : float or callable, default 0.002
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    beta1, beta2, epsilon, eps_root : float, default 0.9, 0.999, 1e-8, 0
        As :class:`Adam`'s: the decays of the moments, in [0, 1), and ε outside and inside the root.
    **options
        See :class:`Optimizer`.

    Raises
    ------
    TypeError
        For ``amsgrad``, which NAdam does not offer.

    Notes
    -----
    Equal to optax.nadam.  torch.optim.NAdam and Keras Nadam also decay the momentum over time (``momentum_decay``,
    Dozat's :math:`\mu_t` schedule); this class does not.

    References
    ----------
    .. [1] Dozat, T., "Incorporating Nesterov Momentum into Adam", ICLR 2016 Workshop.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt, params = anyoptim.NAdam(learning_rate=0.1), {"w": np.array([1.0, -2.0])}
    >>> params, state = opt.step(params, {"w": np.array([2.0, -4.0])}, opt.init(params))
    >>> np.round(params["w"], 4)  # the look-ahead: -(1 + β1 / (1 + β1)) 0.1 sign(g), 1.47 times Adam's
    array([ 0.8526, -1.8526])
    """

    rule = staticmethod(nadam)
    fixed: ClassVar[dict[str, Any]] = {"amsgrad": False}

    def __init__(
        self,
        learning_rate: float | Schedule = 0.002,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        eps_root: float = 0.0,
        **options: Any,
    ):
        super().__init__(learning_rate, beta1, beta2, epsilon, eps_root=eps_root, **options)

    def _options(self) -> dict[str, Any]:
        return {"with_eps_root": self.eps_root > 0}

    def _step_scalars(self, count: int) -> dict[str, float]:
        scalars = super()._step_scalars(count)
        scalars["bias_correction1_next"] = 1.0 - self.beta1 ** (count + 2)
        return scalars


@declare(slots=("m", "v"), scalars=(*MOMENT_SCALARS, "rectification", "unrectified"))
def radam(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Rectified Adam (Liu et al., 2020): :class:`RAdam`'s rule, whose math it is.

    Parameters
    ----------
    xp : namespace
        The Array API namespace of ``p`` and ``g`` (``array_api_compat.numpy`` for NumPy arrays).
    p, g : array
        One parameter and its gradient, of the same shape and floating dtype.
    slots : dict of str to array
        ``"m"`` and ``"v"``, of ``p``'s shape and dtype, 0 before the first step.
    hp : mapping of str to scalar
        ``"learning_rate"``, ``"beta1"``, ``"beta2"``, ``"epsilon"``, ``"bias_correction1"``, ``"bias_correction2"``,
        ``"rectification"`` (:math:`r_t` or 0) and ``"unrectified"`` (0 or 1): the host picks the branch.

    Returns
    -------
    new_p : array
        The updated parameter, of ``p``'s shape and dtype.
    new_slots : dict of str to array
        The updated slots, with the keys of ``slots``.

    Examples
    --------
    >>> import array_api_compat.numpy as xp, anyoptim
    >>> p, slots = xp.asarray([1.0, -2.0]), {"m": xp.zeros(2), "v": xp.zeros(2)}
    >>> [hp], _ = anyoptim.RAdam(0.1).host_scalars({"w": p})(0)  # step 1: rho_1 = 1 <= 5, hp["unrectified"] = 1
    >>> anyoptim.RAdam.rule(xp, p, 2 * p, slots, hp)  # not rectified: momentum SGD, -0.1 m_hat = -0.1 g
    (array([ 0.8, -1.6]), {'m': array([ 0.2, -0.4]), 'v': array([0.004, 0.016])})
    """
    m, v = _moments(slots, g, hp)
    m_hat = m / hp["bias_correction1"]
    v_hat = v / hp["bias_correction2"]
    direction = hp["rectification"] * m_hat / (xp.sqrt(v_hat) + hp["epsilon"]) + hp["unrectified"] * m_hat
    return p - hp["learning_rate"] * direction, {"m": m, "v": v}


class RAdam(AdamFamily):
    r"""Rectified Adam (Liu et al., 2020) [1]_.

    .. math::

        \theta \leftarrow \theta - \alpha\, r_t \frac{\hat m}{\sqrt{\hat v} + \epsilon}
        \ \text{if}\ \rho_t > \rho_{min}, \ \text{else}\ \theta \leftarrow \theta - \alpha \hat m

    with Adam's moments and their corrections :math:`\hat m = m/(1-\beta_1^t)`, :math:`\hat v = v/(1-\beta_2^t)`.
    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`:
    while :math:`\rho_t \le \rho_{min}` (``threshold``) the step is momentum SGD with the corrected :math:`\hat m`;
    after, Adam's step scaled by

    .. math:: r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
        α, a rate >= 0 or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    beta1, beta2, epsilon : float, default 0.9, 0.999, 1e-8
        As :class:`Adam`'s: the decays of the moments, in [0, 1), and ε outside the root.
    threshold : float, default 5
        :math:`\rho_{min}` >= 4 (optax, torch.optim: 5; the paper: 4): the default β2 leaves 5 steps unrectified.
    **options
        See :class:`Optimizer`.

    Raises
    ------
    TypeError
        For ``amsgrad`` or ``eps_root``, which RAdam does not offer.
    ValueError
        If a setting is out of range, such as a threshold below 4.

    Notes
    -----
    Equal to optax.radam; torch.optim.RAdam adds ε to the uncorrected :math:`\sqrt{v}`, not to :math:`\sqrt{\hat v}`.

    References
    ----------
    .. [1] Liu, L. et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020, arXiv:1908.03265.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt, params = anyoptim.RAdam(learning_rate=0.1), {"w": np.array([1.0, -2.0])}
    >>> params, state = opt.step(params, {"w": np.array([2.0, -4.0])}, opt.init(params))
    >>> np.round(params["w"], 4)  # rho_1 = 1 <= 5: the step is -0.1 g, not Adam's -0.1 sign(g)
    array([ 0.8, -1.6])
    """

    rule = staticmethod(radam)
    fixed: ClassVar[dict[str, Any]] = {"amsgrad": False, "eps_root": 0.0}

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        threshold: float = 5.0,
        **options: Any,
    ):
        super().__init__(learning_rate, beta1, beta2, epsilon, **options)
        self.threshold = threshold

    def _step_scalars(self, count: int) -> dict[str, float]:
        scalars = super()._step_scalars(count)
        t = count + 1
        rho_inf = 2.0 / (1.0 - self.beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * self.beta2**t / (1.0 - self.beta2**t)
        rectified = rho_t > self.threshold  # traced under jax.jit: the device computes both sides and keeps one
        ratio = lambda: (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)  # noqa: E731
        scalars["rectification"] = select(rectified, lambda: sqrt(select(rectified, ratio, lambda: 1.0)), lambda: 0.0)
        scalars["unrectified"] = select(rectified, lambda: 0.0, lambda: 1.0)
        return scalars
