"""The update rules: the math of every optimizer, written once.

A *rule* is a pure elementwise function

.. code-block:: python

    rule(xp, p, g, slots, hp, **options) -> (new_p, new_slots)

of one parameter array ``p``, its gradient ``g``, a dict ``slots`` of state
arrays of the same shape (``{"m": ..., "v": ...}`` for Adam) and a mapping
``hp`` of scalars for this step (learning rate, betas, bias corrections).
``options`` are Python values fixed when the optimizer is built (``nesterov``,
``centered``); they choose the code, never the data.

A rule may use only what every engine can run: the arithmetic operators
(``+ - * /``, unary ``-``, ``**`` with a constant exponent, comparisons) between
arrays and scalars, and the functions ``xp.sqrt``, ``xp.abs``, ``xp.sign``,
``xp.maximum``, ``xp.minimum`` and ``xp.where`` applied to arrays, and
``xp.clip`` with scalar bounds.  With that
contract the same function runs

* on any Array API namespace, one array at a time (the generic engine),
* on blocks of flat NumPy buffers, written back in place (the NumPy engine),
* traced into one CUDA kernel per step (the CuPy engine).

The scalars in ``hp`` are computed on the host by the optimizer classes
(:mod:`anyoptim.optimizers`) from the hyperparameters and the step count, so a
rule never needs a power or a logarithm of the step.

This module imports nothing but the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "adagrad",
    "adam",
    "adamax",
    "lion",
    "momentum",
    "nadam",
    "radam",
    "rmsprop",
    "sgd",
]

Slots = dict[str, Any]


def sgd(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Gradient descent: :math:`\theta \leftarrow \theta - \alpha g`."""
    return p - hp["learning_rate"] * g, {}


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
        r = s - \bar g^2 \ \text{(centered) or } s

        u = \frac{g}{\sqrt{r} + \epsilon} \ \text{or}\ \frac{g}{\sqrt{r + \epsilon}}, \quad
        b \leftarrow \mu b + u \ \text{(momentum)}, \quad
        \theta \leftarrow \theta - \alpha\,(b \text{ or } u)
    """
    beta = hp["beta"]
    s = beta * slots["s"] + (1 - beta) * (g * g)
    new_slots = {"s": s}
    radicand = s
    if centered:
        mean_g = beta * slots["mean_g"] + (1 - beta) * g
        new_slots["mean_g"] = mean_g
        radicand = s - mean_g * mean_g
    if eps_in_sqrt:
        step = g / xp.sqrt(radicand + hp["epsilon"])
    else:
        step = g / (xp.sqrt(radicand) + hp["epsilon"])
    if use_momentum:
        step = hp["momentum"] * slots["buf"] + step
        new_slots["buf"] = step
    return p - hp["learning_rate"] * step, new_slots


def _adaptive_step(xp: Any, p: Any, m_hat: Any, v_hat: Any, hp: Mapping[str, Any], with_eps_root: bool) -> Any:
    r""":math:`\theta - \alpha \hat m / (\sqrt{\hat v + \epsilon_{root}} + \epsilon)`, the step of Adam and NAdam.

    The :math:`\epsilon_{root}` term is compiled in only when it is not zero
    (``with_eps_root``): adding 0 changes no value, and leaving it out saves a
    pass in the fused engines.
    """
    radicand = v_hat + hp["eps_root"] if with_eps_root else v_hat
    return p - hp["learning_rate"] * m_hat / (xp.sqrt(radicand) + hp["epsilon"])


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


def adagrad(xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
    r"""Adagrad (Duchi, Hazan & Singer, 2011).

    .. math::

        s \leftarrow s + g^2, \qquad \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}
    """
    s = slots["s"] + g * g
    return p - hp["learning_rate"] * g / (xp.sqrt(s) + hp["epsilon"]), {"s": s}


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
