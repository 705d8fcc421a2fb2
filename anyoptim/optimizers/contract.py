"""The rule contract: what an update rule is, what it may use, and how it declares what it reads.

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
``xp.maximum``, ``xp.minimum`` and ``xp.where`` applied to arrays,
``xp.clip`` with scalar bounds, and :func:`anyoptim.engines.muladd.muladd`
(``muladd(xp, a, b, c)``: :math:`ab + c` rounded once in float32, where
``a * b + c`` rounds twice; the built-in rules step with it, as torch.optim's
``p.add_(d, alpha=-lr)`` does).  With that
contract the same function runs

* on any Array API namespace, one array at a time (the generic engine),
* on blocks of flat NumPy buffers, written back in place (the NumPy engine),
* traced into one CUDA kernel per step (the CuPy engine).

The scalars in ``hp`` are computed on the host by the optimizer classes
(:mod:`anyoptim.optimizers`) from the hyperparameters and the step count, so a
rule never needs a power or a logarithm of the step.

Each built-in rule sits in its family's module (:mod:`~anyoptim.optimizers.sgd`,
:mod:`~anyoptim.optimizers.adaptive`, :mod:`~anyoptim.optimizers.adam`,
:mod:`~anyoptim.optimizers.lion`) right above the class that runs it; the
optimizer table :data:`anyoptim.optimizers.REGISTRY` is their index
(``REGISTRY["adam"].rule``).

Declarations
------------
A rule names, once, what it reads: :func:`declare` attaches a
:class:`RuleDeclaration` (its state slots with their initial values, the
scalars it reads from ``hp`` and its options), and checks it against the
rule's own signature.  :class:`~anyoptim.optimizers.base.Optimizer` creates the
slots from the declaration and checks, when an optimizer is constructed, that
its options, slots and scalars are those its rule declares: a mismatch raises
:class:`RuleMismatchError` there, not at the first step.  A rule without a
declaration (a user's own) runs unchecked.

This module imports nothing but the standard library.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["RuleDeclaration", "RuleMismatchError", "Scalar", "Slot", "check_against_rule", "declaration_of", "declare"]

Rule = TypeVar("Rule", bound=Callable[..., Any])

#: The positional parameters every rule takes, in order.
RULE_PARAMETERS = ("xp", "p", "g", "slots", "hp")


class RuleMismatchError(TypeError):
    """A rule's declaration disagrees with its own signature, or an optimizer with its rule's declaration.

    Raised where the mistake is made: by :func:`declare` when the rule is
    defined, and by the optimizer's constructor (:func:`check_against_rule`),
    never at a step.  A :class:`TypeError`, as a wrong call signature is.

    Examples
    --------
    >>> from anyoptim.optimizers.contract import RuleMismatchError, declare
    >>> try:
    ...     @declare(scalars=("learning_rate",))
    ...     def bad(xp, p, g, hp):
    ...         return p - hp["learning_rate"] * g
    ... except RuleMismatchError as error:
    ...     print(error)
    rule bad takes (xp, p, g, hp, *, ) but a rule takes (xp, p, g, slots, hp, *, <options>) with the declared options []
    """


@dataclass(frozen=True)
class Slot:
    """A state slot of a rule.

    Parameters
    ----------
    name : str
        The key in ``slots`` (and in ``OptimizerState.slots``).
    fill : float or str, default 0.0
        The value every element starts at, or the name of the optimizer setting
        that holds it (Adagrad's ``"initial_accumulator_value"``).
    when : str, optional
        The option that adds the slot: it exists only while that option is true
        (AMSGrad's ``v_max`` when ``amsgrad``).  Default: always.

    Examples
    --------
    >>> from anyoptim.optimizers.contract import Slot
    >>> Slot("v_max", when="amsgrad")
    Slot(name='v_max', fill=0.0, when='amsgrad')
    """

    name: str
    fill: float | str = 0.0
    when: str | None = None


@dataclass(frozen=True)
class Scalar:
    """A scalar a rule reads from ``hp``.

    Parameters
    ----------
    name : str
        The key in ``hp``.
    when : str, optional
        The option under which the rule reads it (``"eps_root"`` only
        ``when="with_eps_root"``).  Default: always.

    Examples
    --------
    >>> from anyoptim.optimizers.contract import Scalar
    >>> Scalar("eps_root", when="with_eps_root")
    Scalar(name='eps_root', when='with_eps_root')
    """

    name: str
    when: str | None = None


def _present(when: str | None, options: Mapping[str, Any]) -> bool:
    return when is None or bool(options.get(when))


@dataclass(frozen=True)
class RuleDeclaration:
    """What a rule reads: its slots, its scalars and its options (made by :func:`declare`).

    Parameters
    ----------
    slots : tuple of Slot
        The state slots, in the order the state holds them.
    scalars : tuple of Scalar
        The scalars read from ``hp``, ``"learning_rate"`` included.
    options : tuple of str
        The rule's keyword-only parameters.

    Examples
    --------
    >>> from anyoptim.optimizers.contract import RuleDeclaration, Scalar, Slot
    >>> d = RuleDeclaration(slots=(Slot("m"), Slot("v_max", when="amsgrad")),
    ...                     scalars=(Scalar("learning_rate"),), options=("amsgrad",))
    >>> d.slot_fills({"amsgrad": False}, settings=None), d.slot_fills({"amsgrad": True}, settings=None)
    ({'m': 0.0}, {'m': 0.0, 'v_max': 0.0})
    """

    slots: tuple[Slot, ...]
    scalars: tuple[Scalar, ...]
    options: tuple[str, ...]

    def slot_fills(self, options: Mapping[str, Any], settings: Any) -> dict[str, float]:
        """The slots that exist under ``options`` and the value each starts at.

        Parameters
        ----------
        options : mapping of str to object
            The rule's options, as the optimizer passes them.
        settings : object
            Where a fill that names a setting is read from (the optimizer).

        Returns
        -------
        dict of str to float
            Slot name to initial value, in declaration order.

        Examples
        --------
        >>> from types import SimpleNamespace
        >>> from anyoptim.optimizers.contract import RuleDeclaration, Slot
        >>> d = RuleDeclaration(slots=(Slot("sum", fill="initial_accumulator_value"),), scalars=(), options=())
        >>> d.slot_fills({}, SimpleNamespace(initial_accumulator_value=0.1))
        {'sum': 0.1}
        """
        return {
            slot.name: getattr(settings, slot.fill) if isinstance(slot.fill, str) else slot.fill
            for slot in self.slots
            if _present(slot.when, options)
        }

    def scalars_read(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The names of the scalars the rule reads under ``options``.

        Parameters
        ----------
        options : mapping of str to object
            The rule's options, as the optimizer passes them.

        Returns
        -------
        tuple of str
            The scalar names, in declaration order, without those whose ``when``
            option is false.

        Examples
        --------
        >>> from anyoptim.optimizers.contract import RuleDeclaration, Scalar
        >>> d = RuleDeclaration(slots=(), scalars=(Scalar("learning_rate"), Scalar("eps_root", when="with_eps_root")),
        ...                     options=("with_eps_root",))
        >>> d.scalars_read({"with_eps_root": False}), d.scalars_read({"with_eps_root": True})
        (('learning_rate',), ('learning_rate', 'eps_root'))
        """
        return tuple(scalar.name for scalar in self.scalars if _present(scalar.when, options))

    def check(
        self,
        owner: str,
        rule_name: str,
        options: Mapping[str, Any],
        slot_names: Iterable[str],
        scalar_names: Iterable[str],
    ) -> None:
        """Check what an optimizer gives its rule against this declaration.

        Parameters
        ----------
        owner : str
            The optimizer's class name, for the message.
        rule_name : str
            The rule's name, for the message.
        options : mapping of str to object
            The options the optimizer passes: exactly the declared ones.
        slot_names : iterable of str
            The slots the optimizer creates: exactly those declared under ``options``, in order.
        scalar_names : iterable of str
            The scalars the optimizer provides (with the learning rate): at least
            those the rule reads under ``options``.

        Raises
        ------
        RuleMismatchError
            Naming what is missing or extra.

        Examples
        --------
        >>> from anyoptim.optimizers.contract import RuleDeclaration, RuleMismatchError, Scalar, Slot
        >>> d = RuleDeclaration(slots=(Slot("v"),), scalars=(Scalar("learning_rate"),), options=())
        >>> d.check("Mine", "heavy_ball", {}, ["v"], ["learning_rate"])  # agrees: returns None
        >>> try:
        ...     d.check("Mine", "heavy_ball", {}, [], ["learning_rate"])
        ... except RuleMismatchError as error:
        ...     print(error)
        Mine does not match its rule heavy_ball: it creates the slots [] but the rule reads ['v']
        """
        where = f"{owner} does not match its rule {rule_name}"
        if set(options) != set(self.options):
            raise RuleMismatchError(
                f"{where}: it passes the options {sorted(options)} but the rule takes {sorted(self.options)}"
            )
        expected = [slot.name for slot in self.slots if _present(slot.when, options)]
        given = list(slot_names)
        if given != expected:
            raise RuleMismatchError(f"{where}: it creates the slots {given} but the rule reads {expected}")
        provided = set(scalar_names)
        missing = [name for name in self.scalars_read(options) if name not in provided]
        if missing:
            raise RuleMismatchError(f"{where}: the rule reads the scalars {missing}, which it does not provide")


def declare(
    *,
    slots: Iterable[str | Slot] = (),
    scalars: Iterable[str | Scalar] = (),
    options: Iterable[str] = (),
) -> Callable[[Rule], Rule]:
    """Declare what a rule reads; the decorated rule is the same function with a ``declaration`` attribute.

    Parameters
    ----------
    slots : iterable of str or Slot
        The state slots the rule reads and returns; a bare name starts at 0.
    scalars : iterable of str or Scalar
        The scalars the rule reads from ``hp``, ``"learning_rate"`` included.
    options : iterable of str
        The rule's keyword-only options.

    Returns
    -------
    callable
        A decorator that attaches the :class:`RuleDeclaration` and returns the rule itself.

    Raises
    ------
    RuleMismatchError
        When the rule is defined, if its parameters are not ``(xp, p, g, slots, hp)``
        followed by exactly the declared options, if a name is declared twice, or
        if a ``when`` names no declared option.

    Examples
    --------
    >>> from anyoptim.optimizers.contract import declare
    >>> @declare(slots=("v",), scalars=("learning_rate", "beta"))
    ... def heavy_ball(xp, p, g, slots, hp):
    ...     v = hp["beta"] * slots["v"] + g
    ...     return p - hp["learning_rate"] * v, {"v": v}
    >>> [slot.name for slot in heavy_ball.declaration.slots]
    ['v']
    """
    declaration = RuleDeclaration(
        slots=tuple(slot if isinstance(slot, Slot) else Slot(slot) for slot in slots),
        scalars=tuple(scalar if isinstance(scalar, Scalar) else Scalar(scalar) for scalar in scalars),
        options=tuple(options),
    )

    def attach(rule: Rule) -> Rule:
        name = getattr(rule, "__name__", repr(rule))
        parameters = inspect.signature(rule).parameters.values()
        positional = tuple(p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY)
        keyword = tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
        if positional != RULE_PARAMETERS or set(keyword) != set(declaration.options):
            raise RuleMismatchError(
                f"rule {name} takes ({', '.join(positional)}, *, {', '.join(keyword)}) but a rule takes "
                f"({', '.join(RULE_PARAMETERS)}, *, <options>) with the declared options {list(declaration.options)}"
            )
        for kind, names in (
            ("slot", [slot.name for slot in declaration.slots]),
            ("scalar", [scalar.name for scalar in declaration.scalars]),
        ):
            if len(set(names)) != len(names):
                raise RuleMismatchError(f"rule {name} declares a {kind} twice: {names}")
        for entry in (*declaration.slots, *declaration.scalars):
            if entry.when is not None and entry.when not in declaration.options:
                raise RuleMismatchError(
                    f"rule {name} declares {entry.name!r} when {entry.when!r}, which is not one of its options "
                    f"{list(declaration.options)}"
                )
        rule.declaration = declaration  # type: ignore[attr-defined]
        return rule

    return attach


def declaration_of(rule: Any) -> RuleDeclaration | None:
    """Get the :class:`RuleDeclaration` that :func:`declare` attached to ``rule``.

    Parameters
    ----------
    rule : callable
        An update rule (or any object).

    Returns
    -------
    RuleDeclaration or None
        Its declaration; None for an undeclared rule (a user's own).

    Examples
    --------
    >>> from anyoptim.optimizers.contract import declaration_of, declare
    >>> @declare(slots=("v",), scalars=("learning_rate", "beta"))
    ... def heavy_ball(xp, p, g, slots, hp):
    ...     v = hp["beta"] * slots["v"] + g
    ...     return p - hp["learning_rate"] * v, {"v": v}
    >>> declaration_of(heavy_ball).slots
    (Slot(name='v', fill=0.0, when=None),)
    >>> declaration_of(lambda xp, p, g, slots, hp: (p, slots)) is None
    True
    """
    declaration = getattr(rule, "declaration", None)
    return declaration if isinstance(declaration, RuleDeclaration) else None


def check_against_rule(
    optimizer: str, rule: Any, describe: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any], Iterable[str]]]
) -> None:
    """Refuse an optimizer whose options, slots or scalars disagree with its rule's declaration.

    Parameters
    ----------
    optimizer : str
        The optimizer class's name, for messages.
    rule : callable or None
        Its rule; one without a declaration (a user's own) is not checked.
    describe : callable
        ``describe() -> (options, slot_fills, step_scalars)``: what the optimizer
        gives its rule (its options, its slots with their fills, and the names
        of the scalars of one step other than the learning rate).

    Raises
    ------
    RuleMismatchError
        If they disagree with the declaration, or if ``describe`` fails for a
        setting the optimizer never set (an ``__init__`` that skipped ``super().__init__``).

    Examples
    --------
    >>> from anyoptim.optimizers.contract import RuleMismatchError, check_against_rule, declare
    >>> @declare(slots=("v",), scalars=("learning_rate", "beta"))
    ... def heavy_ball(xp, p, g, slots, hp):
    ...     v = hp["beta"] * slots["v"] + g
    ...     return p - hp["learning_rate"] * v, {"v": v}
    >>> check_against_rule("Mine", heavy_ball, lambda: ({}, {"v": 0.0}, ("beta",)))  # agrees: returns None
    >>> try:
    ...     check_against_rule("Mine", heavy_ball, lambda: ({}, {"v": 0.0}, ()))
    ... except RuleMismatchError as error:
    ...     print(error)
    Mine does not match its rule heavy_ball: the rule reads the scalars ['beta'], which it does not provide
    """
    declaration = declaration_of(rule)
    if declaration is None:
        return
    try:
        options, fills, scalars = describe()
    except AttributeError as error:
        raise RuleMismatchError(
            f"{optimizer} could not describe its rule {rule.__name__}: {error} "
            "(does its __init__ call super().__init__ and set every setting?)"
        ) from error
    declaration.check(optimizer, rule.__name__, options, fills, ("learning_rate", *scalars))
