"""The Adam family: Adam, AdamW, NAdam, RAdam as settings of one family, and Adamax; each rule above its class.

:class:`AdamFamily` holds what the moment-estimating optimizers share: β1, β2,
ε, ``eps_root``, AMSGrad, and the scalars of one step (the betas, ε and the
bias corrections :math:`1-\\beta^t`).  Adam, NAdam and RAdam are siblings that
differ in their rule and in the settings of the family they fix
(:attr:`AdamFamily.fixed`); AdamW is Adam with decoupled decay by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from ..schedules import Schedule
from ..transforms import decay_weights_only
from .base import Optimizer
from .contract import Scalar, Slot, declare

__all__ = ["Adam", "AdamFamily", "AdamW", "Adamax", "NAdam", "RAdam", "adam", "adamax", "nadam", "radam"]

Slots = dict[str, Any]

#: What every rule of the family reads (with ``eps_root`` only when it is compiled in).
MOMENT_SCALARS = ("learning_rate", "beta1", "beta2", "epsilon", "bias_correction1", "bias_correction2")


def _adaptive_step(xp: Any, p: Any, m_hat: Any, v_hat: Any, hp: Mapping[str, Any], with_eps_root: bool) -> Any:
    r""":math:`\theta - \alpha \hat m / (\sqrt{\hat v + \epsilon_{root}} + \epsilon)`, the step of Adam and NAdam.

    The :math:`\epsilon_{root}` term is compiled in only when it is not zero
    (``with_eps_root``): adding 0 changes no value, and leaving it out saves a
    pass in the fused engines.
    """
    radicand = v_hat + hp["eps_root"] if with_eps_root else v_hat
    return p - hp["learning_rate"] * m_hat / (xp.sqrt(radicand) + hp["epsilon"])


class AdamFamily(Optimizer):
    r"""The moment-estimating optimizers: Adam, AdamW, NAdam and RAdam.

    Every member keeps :math:`m \leftarrow \beta_1 m + (1-\beta_1) g` and
    :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2` and corrects their bias by
    :math:`1-\beta_1^t` and :math:`1-\beta_2^t`; members differ in their rule and
    in the family settings they offer.  A member is constructed through its
    own signature; this base only holds the shared settings.

    Parameters
    ----------
    learning_rate : float or callable
    beta1, beta2 : float
        Decays of the first and second moments, in [0, 1).
    epsilon : float
        Added outside the square root.
    eps_root : float, default 0
        Added inside the square root (optax's ``eps_root``).
    amsgrad : bool, default False
        Use the running maximum of the uncorrected :math:`v`.
    **options
        See :class:`Optimizer`.

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
        self.amsgrad = bool(amsgrad)

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
    r"""Adam (Kingma & Ba, 2015) with bias correction, ε outside the root and ``eps_root`` inside.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,

        \hat m = \frac{m}{1-\beta_1^t}, \quad \hat v = \frac{v}{1-\beta_2^t}, \quad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{\hat v + \epsilon_{root}} + \epsilon}

    ``hp["bias_correction1"]`` is :math:`1-\beta_1^t`, ``hp["bias_correction2"]``
    is :math:`1-\beta_2^t`.  With AMSGrad (Reddi et al., 2018) :math:`\hat v` uses
    the running maximum of :math:`v`, as torch.optim does.
    """
    beta1, beta2 = hp["beta1"], hp["beta2"]
    m = beta1 * slots["m"] + (1 - beta1) * g
    v = beta2 * slots["v"] + (1 - beta2) * (g * g)
    new_slots = {"m": m, "v": v}
    if amsgrad:
        v = xp.maximum(slots["v_max"], v)
        new_slots["v_max"] = v
    m_hat = m / hp["bias_correction1"]
    v_hat = v / hp["bias_correction2"]
    return _adaptive_step(xp, p, m_hat, v_hat, hp, with_eps_root), new_slots


class Adam(AdamFamily):
    r"""Adam (Kingma & Ba, 2015), with bias correction exactly as the course.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2

        \hat m = \frac{m}{1-\beta_1^t}, \qquad \hat v = \frac{v}{1-\beta_2^t}, \qquad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{\hat v + \epsilon_{root}} + \epsilon}

    At step 1 the corrected moments are exactly ``g`` and ``g**2``, so the first
    update is :math:`\alpha g / (|g| + \epsilon)`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta1, beta2 : float, default 0.9, 0.999
    epsilon : float, default 1e-8
        Added outside the square root (course, torch.optim, optax).
    eps_root : float, default 0
        Added inside the square root (optax's ``eps_root``).
    amsgrad : bool, default False
        Use the running maximum of :math:`v` (Reddi et al., 2018), as torch.optim
        does: the maximum of the *uncorrected* :math:`v`, then corrected.
    **options
        See :class:`Optimizer`; ``weight_decay`` here is L2 added to the gradient
        (torch.optim.Adam's); for decoupled decay use :class:`AdamW`.

    Notes
    -----
    Same as torch.optim.Adam and optax.adam with equal arguments.  Keras 3 Adam
    uses the "ε-hat" form, :math:`\alpha\sqrt{1-\beta_2^t}/(1-\beta_1^t) \cdot m/(\sqrt v + \hat\epsilon)`,
    with :math:`\hat\epsilon = 10^{-7}`: ε there is not scaled by the correction.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Adam(learning_rate=0.1)
    >>> params = {"w": np.array([1.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, {"w": np.array([0.5])}, state)
    >>> round(float(params["w"][0]), 6), state.count
    (0.9, 1)
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
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    .. math::

        \theta \leftarrow \theta - \alpha \left(
            \frac{\hat m}{\sqrt{\hat v + \epsilon_{root}} + \epsilon} + \lambda \theta\right)

    The decay is multiplied by the (scheduled) learning rate, as in torch.optim.AdamW
    and optax.adamw.  By default biases and other vectors are not decayed
    (:func:`decay_weights_only`); pass ``weight_decay_mask=anyoptim.decay_all``
    for torch.optim's behaviour.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta1, beta2, epsilon : see :class:`Adam`
    weight_decay : float, default 0.01
        λ, as torch.optim.AdamW (optax's default is 1e-4).
    **options
        See :class:`Adam` and :class:`Optimizer`.
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
    r"""NAdam, Adam with Nesterov momentum (Dozat, 2016), in the form optax uses.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,

        \hat m = \frac{\beta_1 m}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g}{1-\beta_1^t}, \quad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{v / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    ``hp["bias_correction1_next"]`` is :math:`1-\beta_1^{t+1}`.
    """
    beta1, beta2 = hp["beta1"], hp["beta2"]
    m = beta1 * slots["m"] + (1 - beta1) * g
    v = beta2 * slots["v"] + (1 - beta2) * (g * g)
    m_hat = beta1 * m / hp["bias_correction1_next"] + (1 - beta1) * g / hp["bias_correction1"]
    v_hat = v / hp["bias_correction2"]
    return _adaptive_step(xp, p, m_hat, v_hat, hp, with_eps_root), {"m": m, "v": v}


class NAdam(AdamFamily):
    r"""NAdam: Adam with Nesterov momentum (Dozat, 2016), in optax's form.

    .. math::

        \hat m = \frac{\beta_1 m_t}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g}{1-\beta_1^t}, \qquad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    Parameters
    ----------
    learning_rate : float or callable, default 0.002
    beta1, beta2, epsilon, eps_root : see :class:`Adam`
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Equal to optax.nadam.  torch.optim.NAdam and Keras Nadam also decay the
    momentum over time (``momentum_decay``, Dozat's :math:`\mu_t` schedule); this
    class does not.
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
    r"""Rectified Adam (Liu et al., 2020).

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
        \hat m = \frac{m}{1-\beta_1^t}, \quad \hat v = \frac{v}{1-\beta_2^t}

        \theta \leftarrow \theta - \alpha \left( r_t \frac{\hat m}{\sqrt{\hat v} + \epsilon}
        \ \text{if}\ \rho_t > \rho_{min} \ \text{else}\ \hat m \right)

    The host decides the branch once per step: ``hp["rectification"]`` is
    :math:`r_t` (or 0) and ``hp["unrectified"]`` is 0 (or 1).
    """
    beta1, beta2 = hp["beta1"], hp["beta2"]
    m = beta1 * slots["m"] + (1 - beta1) * g
    v = beta2 * slots["v"] + (1 - beta2) * (g * g)
    m_hat = m / hp["bias_correction1"]
    v_hat = v / hp["bias_correction2"]
    direction = hp["rectification"] * m_hat / (xp.sqrt(v_hat) + hp["epsilon"]) + hp["unrectified"] * m_hat
    return p - hp["learning_rate"] * direction, {"m": m, "v": v}


class RAdam(AdamFamily):
    r"""Rectified Adam (Liu et al., 2020).

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`: while
    :math:`\rho_t \le` ``threshold`` the step is momentum SGD with the corrected
    :math:`\hat m`; after, Adam's step scaled by

    .. math:: r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta1, beta2, epsilon : see :class:`Adam`
    threshold : float, default 5
        optax and torch.optim use 5; the paper 4.
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Equal to optax.radam; torch.optim.RAdam adds ε to :math:`\sqrt{v}` before
    the bias correction instead of to :math:`\sqrt{\hat v}`.
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
        if rho_t > self.threshold:
            ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            scalars.update(rectification=math.sqrt(ratio), unrectified=0.0)
        else:
            scalars.update(rectification=0.0, unrectified=1.0)
        return scalars


@declare(slots=("m", "u"), scalars=("learning_rate", "beta1", "beta2", "epsilon", "bias_correction1"))
def adamax(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Adamax, the infinity-norm variant of Adam (Kingma & Ba, 2015, Algorithm 2).

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad u \leftarrow \max(\beta_2 u, |g|), \quad
        \theta \leftarrow \theta - \frac{\alpha}{1-\beta_1^t} \frac{m}{u + \epsilon}
    """
    beta1 = hp["beta1"]
    m = beta1 * slots["m"] + (1 - beta1) * g
    u = xp.maximum(hp["beta2"] * slots["u"], xp.abs(g))
    m_hat = m / hp["bias_correction1"]
    return p - hp["learning_rate"] * m_hat / (u + hp["epsilon"]), {"m": m, "u": u}


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, 2015, Algorithm 2).

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad u \leftarrow \max(\beta_2 u, |g|), \quad
        \theta \leftarrow \theta - \frac{\alpha}{1-\beta_1^t} \frac{m}{u + \epsilon}

    The infinity norm replaces the second moment, so there is no :math:`v`, no
    second bias correction and no AMSGrad: Adamax is not a member of
    :class:`AdamFamily`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.002
    beta1, beta2 : float, default 0.9, 0.999
    epsilon : float, default 1e-8
        Added to :math:`u`, as Keras; torch.optim.Adamax and optax.adamax put it
        inside the max (:math:`\max(\beta_2 u, |g| + \epsilon)`), which differs
        from ours only while :math:`|g|` is within ε of :math:`\beta_2 u`.
    **options
        See :class:`Optimizer`.
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
