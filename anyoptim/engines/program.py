"""A program: one optimizer step for one array, the thing every engine runs.

A :class:`Program` joins an update *rule* (a pure elementwise function, see
:mod:`anyoptim.optimizers`) with the gradient processing around it.  Engines
receive programs and never optimizer classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .muladd import muladd

__all__ = ["Program", "Slots"]

Slots = dict[str, Any]


@dataclass(frozen=True)
class Program:
    """One optimizer step for one array: gradient processing, the rule, decoupled decay.

    A program is what engines run.  It is hashable (compiled kernels are cached
    by it) and callable with the rule's signature:

    .. math::

        g' = \\mathrm{clip}(s\\,g, -c, c) + \\lambda_{L2}\\, \\theta, \\qquad
        \\tilde\\theta = (1 - \\alpha\\lambda)\\, \\theta, \\qquad
        (\\theta', \\text{slots}') = \\text{rule}(\\tilde\\theta, g', \\text{slots})

    where each term is compiled in only when its flag is set: ``scale_grad`` (the
    global-norm clip factor :math:`s`, ``hp["grad_scale"]``), ``clip_value``
    (``hp["clip_value"]``), ``coupled_decay`` (L2 regularisation added to the
    gradient, ``hp["weight_decay"]``) and ``decoupled_decay`` (AdamW-style decay,
    ``hp["decay"]`` :math:`= \\alpha\\lambda`).  Decoupled decay scales the parameter *before* the rule steps
    from it, as Loshchilov & Hutter's Algorithm 2 and torch.optim.AdamW evaluate
    :math:`\\theta - \\alpha\\lambda\\theta - \\alpha u`: the decay rounds once (for a rule that reads
    :math:`\\theta` only to step from it, as every built-in rule does, exact arithmetic gives what decaying
    after would).

    Parameters
    ----------
    rule : callable
        The update rule, ``rule(xp, p, g, slots, hp, **options) -> (new_p, new_slots)``
        (:mod:`anyoptim.optimizers.contract`).
    options : tuple of (str, object) pairs, default ()
        The rule's keyword options, as sorted pairs (so the program hashes).
    slot_names : tuple of str, default ()
        The state slots the rule reads and returns, in state order.
    scale_grad : bool, default False
        Multiply the gradient by ``hp["grad_scale"]`` first.
    clip_value : bool, default False
        Clip the gradient to ``[-hp["clip_value"], hp["clip_value"]]``.
    coupled_decay : bool, default False
        Add ``hp["weight_decay"] * p`` to the gradient (L2 regularisation).
    decoupled_decay : bool, default False
        Multiply ``p`` by ``1 - hp["decay"]`` before the rule (AdamW-style decay).
    master : bool, default False
        Master weights: the slot ``"master"`` (last in ``slot_names``, not
        passed to the rule) holds the parameter in a wider dtype; the step
        reads it instead of ``p`` and writes the new value to both, each
        rounded into its own dtype by the engine
        (:mod:`anyoptim.engines.precision`).

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.program import Program
    >>> def sgd(xp, p, g, slots, hp):
    ...     return p - hp["learning_rate"] * g, {}
    >>> program = Program(sgd, clip_value=True)
    >>> new_p, _ = program(np, np.array([1.0, 2.0]), np.array([5.0, -0.5]), {},
    ...                    {"learning_rate": 0.1, "clip_value": 1.0})
    >>> new_p
    array([0.9 , 2.05])
    """

    rule: Callable[..., tuple[Any, Slots]]
    options: tuple[tuple[str, Any], ...] = ()
    slot_names: tuple[str, ...] = ()
    scale_grad: bool = False
    clip_value: bool = False
    coupled_decay: bool = False
    decoupled_decay: bool = False
    master: bool = False

    def __call__(self, xp: Any, p: Any, g: Any, slots: Slots, hp: Mapping[str, Any]) -> tuple[Any, Slots]:
        if self.master:
            p, slots = slots["master"], {name: value for name, value in slots.items() if name != "master"}
        if self.scale_grad:
            g = g * hp["grad_scale"]
        if self.clip_value:
            g = xp.clip(g, -hp["clip_value"], hp["clip_value"])
        if self.coupled_decay:
            g = muladd(xp, hp["weight_decay"], p, g)
        if self.decoupled_decay:
            p = p * (1 - hp["decay"])
        new_p, new_slots = self.rule(xp, p, g, slots, hp, **dict(self.options))
        if self.master:
            new_slots = {**new_slots, "master": new_p}
        return new_p, new_slots
