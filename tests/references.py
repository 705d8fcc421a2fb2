"""Independent float64 NumPy transcriptions of every optimizer's published algorithm.

The references are written from the papers (and, where a paper leaves a choice
open, from the convention the optimizer's docstring promises), one leaf at a
time in float64 NumPy.  They never call :mod:`anyoptim.optimizers`.
:data:`tests.cases.CASES` pairs each optimizer configuration with its reference;
``tests/test_reference.py`` checks anyoptim against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- the references
#
# A reference is (init, update): init(theta) -> state dict, update(theta, g, state, t, lr)
# -> (theta, state), with t the 1-based step number.  All arithmetic in float64.


@dataclass(frozen=True)
class Reference:
    init: Callable[[np.ndarray], dict[str, np.ndarray]]
    update: Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]]


def _zeros(*names: str) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    return lambda theta: {name: np.zeros_like(theta) for name in names}


def ref_sgd() -> Reference:
    """Robbins & Monro (1951): theta <- theta - lr g."""
    return Reference(_zeros(), lambda theta, g, s, t, lr: (theta - lr * g, s))


def ref_momentum(beta: float, form: str, nesterov: bool) -> Reference:
    """Polyak's heavy ball as torch.optim.SGD writes it (buf = beta buf + g, zero dampening),
    Nesterov's variant as Sutskever et al. (2013) reformulated it (step g + beta buf).
    The course's EMA form weights the fresh gradient by (1 - beta) in both places."""
    weight = 1.0 - beta if form == "ema" else 1.0

    def update(theta, g, s, t, lr):
        buf = beta * s["v"] + weight * g
        direction = weight * g + beta * buf if nesterov else buf
        return theta - lr * direction, {"v": buf}

    return Reference(_zeros("v"), update)


def ref_rmsprop(beta: float, epsilon: float, eps_in_sqrt: bool, centered: bool, momentum: float) -> Reference:
    """Tieleman & Hinton (2012, lecture 6.5); centered as Graves (2013, eq. 38-40); momentum as torch.optim."""

    def update(theta, g, s, t, lr):
        mean_square = beta * s["ms"] + (1 - beta) * g**2
        mean_grad = beta * s["mg"] + (1 - beta) * g
        variance = mean_square - mean_grad**2 if centered else mean_square
        denominator = np.sqrt(variance + epsilon) if eps_in_sqrt else np.sqrt(variance) + epsilon
        scaled = g / denominator
        buf = momentum * s["buf"] + scaled
        step = buf if momentum else scaled
        return theta - lr * step, {"ms": mean_square, "mg": mean_grad, "buf": buf}

    return Reference(_zeros("ms", "mg", "buf"), update)


def ref_adam(beta1: float, beta2: float, epsilon: float, eps_root: float = 0.0, amsgrad: bool = False) -> Reference:
    """Kingma & Ba (2015), Algorithm 1; AMSGrad (Reddi et al., 2018) as torch.optim: the running
    maximum of the uncorrected second moment, then corrected; eps_root inside the root as optax."""

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        v = beta2 * s["v"] + (1 - beta2) * g * g
        v_max = np.maximum(s["v_max"], v)
        m_hat = m / (1 - beta1**t)
        v_hat = (v_max if amsgrad else v) / (1 - beta2**t)
        return theta - lr * m_hat / (np.sqrt(v_hat + eps_root) + epsilon), {"m": m, "v": v, "v_max": v_max}

    return Reference(_zeros("m", "v", "v_max"), update)


def ref_adagrad(epsilon: float, initial_accumulator_value: float) -> Reference:
    """Duchi, Hazan & Singer (2011), diagonal version, epsilon outside the root (torch.optim)."""

    def update(theta, g, s, t, lr):
        total = s["G"] + g * g
        return theta - lr * g / (np.sqrt(total) + epsilon), {"G": total}

    return Reference(lambda theta: {"G": np.full_like(theta, initial_accumulator_value)}, update)


def ref_adamax(beta1: float, beta2: float, epsilon: float) -> Reference:
    """Kingma & Ba (2015), Algorithm 2, with epsilon added to u (optax, Keras)."""

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        u = np.maximum(beta2 * s["u"], np.abs(g))
        return theta - (lr / (1 - beta1**t)) * m / (u + epsilon), {"m": m, "u": u}

    return Reference(_zeros("m", "u"), update)


def ref_nadam(beta1: float, beta2: float, epsilon: float, eps_root: float) -> Reference:
    """Dozat (2016), with a constant momentum, as optax.nadam."""

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        v = beta2 * s["v"] + (1 - beta2) * g * g
        m_bar = beta1 * m / (1 - beta1 ** (t + 1)) + (1 - beta1) * g / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return theta - lr * m_bar / (np.sqrt(v_hat + eps_root) + epsilon), {"m": m, "v": v}

    return Reference(_zeros("m", "v"), update)


def ref_radam(beta1: float, beta2: float, epsilon: float, threshold: float) -> Reference:
    """Liu et al. (2020), Algorithm 2, with optax's epsilon on sqrt(v_hat) and its threshold."""
    rho_inf = 2 / (1 - beta2) - 1

    def update(theta, g, s, t, lr):
        m = beta1 * s["m"] + (1 - beta1) * g
        v = beta2 * s["v"] + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho > threshold:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            step = r * m_hat / (np.sqrt(v / (1 - beta2**t)) + epsilon)
        else:
            step = m_hat
        return theta - lr * step, {"m": m, "v": v}

    return Reference(_zeros("m", "v"), update)


def ref_lion(beta1: float, beta2: float) -> Reference:
    """Chen et al. (2023), Algorithm 2 (decoupled decay is added by the runner)."""

    def update(theta, g, s, t, lr):
        c = beta1 * s["m"] + (1 - beta1) * g
        return theta - lr * np.sign(c), {"m": beta2 * s["m"] + (1 - beta2) * g}

    return Reference(_zeros("m"), update)


def ref_adadelta(rho: float, epsilon: float) -> Reference:
    """Zeiler (2012), Algorithm 1, with the learning rate as torch.optim.Adadelta and optax.adadelta apply it."""

    def update(theta, g, s, t, lr):
        mean_square = rho * s["ms"] + (1 - rho) * g * g
        delta = np.sqrt(s["md"] + epsilon) / np.sqrt(mean_square + epsilon) * g
        return theta - lr * delta, {"ms": mean_square, "md": rho * s["md"] + (1 - rho) * delta * delta}

    return Reference(_zeros("ms", "md"), update)


def run_reference(
    reference: Reference,
    params: list[np.ndarray],
    grad_sequence: list[list[np.ndarray] | None],
    learning_rate: float | Callable[[int], float],
    *,
    weight_decay: float = 0.0,
    decayed: list[bool] | None = None,
    decoupled: bool = False,
    clip_global_norm: float | None = None,
    clip_value: float | None = None,
) -> list[list[np.ndarray]]:
    """The parameters after every step; a ``None`` step is one the optimizer must skip."""
    params = [np.asarray(p, dtype=np.float64) for p in params]
    states = [reference.init(p) for p in params]
    decayed = decayed or [False] * len(params)
    trajectory = []
    t = 0
    for grads in grad_sequence:
        if grads is None:
            trajectory.append(params)
            continue
        t += 1
        rate = learning_rate(t - 1) if callable(learning_rate) else learning_rate
        grads = [np.asarray(g, dtype=np.float64) for g in grads]
        if clip_global_norm is not None:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
            if norm > clip_global_norm:
                grads = [g * (clip_global_norm / norm) for g in grads]
        if clip_value is not None:
            grads = [np.clip(g, -clip_value, clip_value) for g in grads]
        new_params = []
        for i, (theta, g) in enumerate(zip(params, grads, strict=True)):
            if weight_decay and decayed[i] and not decoupled:
                g = g + weight_decay * theta
            new_theta, states[i] = reference.update(theta, g, states[i], t, rate)
            if weight_decay and decayed[i] and decoupled:
                new_theta = new_theta - rate * weight_decay * theta
            new_params.append(new_theta)
        params = new_params
        trajectory.append(params)
    return trajectory
