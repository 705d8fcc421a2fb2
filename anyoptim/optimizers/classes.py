"""The optimizers: each names its rule, its state slots and the scalars of a step.

Everything they share — validation, gradient processing, the step itself — is
:class:`anyoptim.base.Optimizer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

from .._checks import check_choice
from ..schedules import Schedule
from ..state import OptimizerState
from ..transforms import decay_all, decay_weights_only
from . import rules
from .base import Optimizer

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Momentum",
    "NAdam",
    "Optimizer",
    "OptimizerState",
    "RAdam",
    "RMSprop",
    "decay_all",
    "decay_weights_only",
]


def _refuse(optimizer: str, options: dict[str, Any], names: tuple[str, ...]) -> None:
    """Reject options a subclass inherits from Adam's signature but does not implement."""
    for name in names:
        if name in options:
            raise TypeError(f"{optimizer} has no {name!r} option (got {name}={options[name]!r})")


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

    rule = staticmethod(rules.sgd)

    def __init__(self, learning_rate: float | Schedule = 0.01, **options: Any):
        super().__init__(learning_rate, **options)


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

    rule = staticmethod(rules.momentum)
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

    def _slot_fills(self) -> dict[str, float]:
        return {"v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {"nesterov": self.nesterov, "dampened": self.form == "ema"}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "dampening": 1.0 - self.beta if self.form == "ema" else 1.0}


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton, 2012, Lecture 6.5).

    .. math::

        s \leftarrow \beta s + (1-\beta) g^2, \qquad
        \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}

    ``eps_in_sqrt=True`` uses :math:`\sqrt{s + \epsilon}`; ``centered=True``
    divides by :math:`\sqrt{s - \bar g^2}` with :math:`\bar g` the moving mean of
    the gradient (Graves, 2013); ``momentum=μ > 0`` keeps
    :math:`b \leftarrow \mu b + g/\sqrt{\cdot}` and steps by :math:`\alpha b`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta : float, default 0.9
        Decay of the squared-gradient average (the course's β).
    epsilon : float, default 1e-8
    eps_in_sqrt : bool, default False
    centered : bool, default False
    momentum : float, default 0
    **options
        See :class:`Optimizer`.

    Notes
    -----
    * torch.optim.RMSprop calls β ``alpha`` (default 0.99) and puts ε outside the
      root: ``RMSprop(alpha=a, eps=e)`` is ``beta=a, epsilon=e``.
    * optax.rmsprop calls β ``decay`` (0.9) and puts ε inside the root by default
      (``eps_in_sqrt=True``).
    * Keras RMSprop calls β ``rho`` (0.9), ε inside the root, 1e-7.
    """

    rule = staticmethod(rules.rmsprop)

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
        self.eps_in_sqrt = bool(eps_in_sqrt)
        self.centered = bool(centered)
        self.momentum = momentum

    def _slot_fills(self) -> dict[str, float]:
        fills = {"s": 0.0}
        if self.centered:
            fills["mean_g"] = 0.0
        if self.momentum:
            fills["buf"] = 0.0
        return fills

    def _options(self) -> dict[str, Any]:
        return {"eps_in_sqrt": self.eps_in_sqrt, "centered": self.centered, "use_momentum": bool(self.momentum)}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "epsilon": self.epsilon, "momentum": self.momentum}


class Adam(Optimizer):
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

    rule = staticmethod(rules.adam)

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
        super().__init__(learning_rate, **options)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.eps_root = eps_root
        self.amsgrad = bool(amsgrad)

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "v": 0.0, "v_max": 0.0} if self.amsgrad else {"m": 0.0, "v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {"amsgrad": self.amsgrad, "with_eps_root": self.eps_root > 0}

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


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer, 2011).

    .. math::

        s \leftarrow s + g^2, \qquad \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
    epsilon : float, default 1e-10
    initial_accumulator_value : float, default 0
        :math:`s_0` (torch.optim: 0; optax: 0.1).
    **options
        See :class:`Optimizer`.

    Notes
    -----
    torch.optim.Adagrad with ``lr_decay=0`` (use a schedule instead); optax.adagrad
    puts ε inside the root.
    """

    rule = staticmethod(rules.adagrad)

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

    def _slot_fills(self) -> dict[str, float]:
        return {"s": self.initial_accumulator_value}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"epsilon": self.epsilon}


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, 2015, Algorithm 2).

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad u \leftarrow \max(\beta_2 u, |g|), \quad
        \theta \leftarrow \theta - \frac{\alpha}{1-\beta_1^t} \frac{m}{u + \epsilon}

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

    rule = staticmethod(rules.adamax)

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

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "u": 0.0}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
            "bias_correction1": 1.0 - self.beta1 ** (count + 1),
        }


class NAdam(Adam):
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

    rule = staticmethod(rules.nadam)

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
        _refuse("NAdam", options, ("amsgrad",))
        super().__init__(learning_rate, beta1, beta2, epsilon, eps_root=eps_root, **options)

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {"with_eps_root": self.eps_root > 0}

    def _step_scalars(self, count: int) -> dict[str, float]:
        scalars = super()._step_scalars(count)
        scalars["bias_correction1_next"] = 1.0 - self.beta1 ** (count + 2)
        return scalars


class RAdam(Adam):
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

    rule = staticmethod(rules.radam)

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
        _refuse("RAdam", options, ("amsgrad", "eps_root"))
        super().__init__(learning_rate, beta1, beta2, epsilon, **options)
        self.threshold = threshold

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {}

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

    rule = staticmethod(rules.lion)
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

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta1": self.beta1, "beta2": self.beta2}
