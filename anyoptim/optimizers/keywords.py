"""Unknown keyword arguments of an optimizer: an error that names the class called and the keyword meant.

Python's own message names the ``__init__`` that finally refused the keyword
(``Optimizer.__init__() got an unexpected keyword argument 'lr'``), several
classes away from the one the user called.  :func:`check_keywords` runs before
the outermost ``__init__`` of an optimizer and says instead which class it was,
and what to write: torch.optim's names map to anyoptim's (:data:`TORCH_NAMES`),
other near misses get :mod:`difflib`'s closest match.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Mapping
from typing import Any

__all__ = ["TORCH_NAMES", "accepted_keywords", "check_keywords"]

#: torch.optim's keyword -> what anyoptim calls it (a tuple when one torch setting is several here).
TORCH_NAMES: dict[str, tuple[str, ...]] = {
    "lr": ("learning_rate",),
    "betas": ("beta1", "beta2"),
    "eps": ("epsilon",),
    "alpha": ("beta",),  # RMSprop's decay
    "momentum": ("beta",),  # SGD(momentum=...) is Momentum(beta=..., form="heavy_ball")
    "dampening": ("beta",),
    "initial_accumulator_value": ("initial_accumulator_value",),
}

#: What to say beyond the name, for torch keywords that are more than a rename.
_HINTS = {
    "betas": "torch's betas=(b1, b2) is beta1=b1, beta2=b2",
    "momentum": "torch's SGD(lr, momentum=m) is anyoptim.Momentum(lr, beta=m, form='heavy_ball')",
    "nesterov": "torch's SGD(nesterov=True) is anyoptim.Momentum(beta=m, form='heavy_ball', nesterov=True)",
    "dampening": "torch's SGD(momentum=m, dampening=m) is anyoptim.Momentum(beta=m) (form='ema')",
    "alpha": "torch's RMSprop(alpha=a) is RMSprop(beta=a); torch's default is 0.99, anyoptim's 0.9",
    "lr_decay": "use a schedule as the learning rate (anyoptim.schedules)",
    "maximize": "negate the gradients (or the loss) instead",
}


@functools.cache
def accepted_keywords(cls: type) -> tuple[str, ...]:
    """The keyword arguments that constructing ``cls`` accepts, along the ``__init__`` chain.

    Each ``__init__`` that takes ``**kwargs`` passes them on to its parent's, so
    the names are gathered up the MRO until an ``__init__`` without ``**kwargs``.

    Parameters
    ----------
    cls : type
        An optimizer class.

    Returns
    -------
    tuple of str
        The accepted names, the outermost ``__init__``'s first; empty when some
        ``__init__`` in the chain takes ``**kwargs`` and ends it (anything goes).

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.optimizers.keywords import accepted_keywords
    >>> accepted_keywords(anyoptim.SGD)[:3]
    ('learning_rate', 'weight_decay', 'weight_decay_mask')
    """
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        parameters = list(inspect.signature(inspect.unwrap(init)).parameters.values())[1:]
        names += [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return tuple(dict.fromkeys(names))
    return ()


def check_keywords(cls: type, kwargs: Mapping[str, Any]) -> None:
    """Refuse a keyword that constructing ``cls`` does not take, naming ``cls`` and what was meant.

    Parameters
    ----------
    cls : type
        The optimizer class being constructed (``type(self)``).
    kwargs : mapping of str to object
        The keyword arguments of the call.

    Raises
    ------
    TypeError
        ``"Adam() got an unexpected keyword argument 'lr'; did you mean
        'learning_rate'?"``: torch.optim's names are mapped to anyoptim's, other
        names get the closest accepted one, if any, or the list of them.

    Examples
    --------
    >>> import anyoptim
    >>> from anyoptim.optimizers.keywords import check_keywords
    >>> check_keywords(anyoptim.Adam, {"learning_rate": 0.1})
    >>> check_keywords(anyoptim.Adam, {"lr": 0.1})
    Traceback (most recent call last):
    ...
    TypeError: Adam() got an unexpected keyword argument 'lr'; did you mean 'learning_rate'?
    """
    accepted = accepted_keywords(cls)
    if not accepted:
        return
    for name in kwargs:
        if name not in accepted and name not in getattr(cls, "fixed", ()):  # a family's fixed option says so itself
            raise TypeError(_message(cls.__name__, name, accepted))


def _message(owner: str, name: str, accepted: tuple[str, ...]) -> str:
    message = f"{owner}() got an unexpected keyword argument {name!r}"
    meant = [n for n in TORCH_NAMES.get(name, ()) if n in accepted]
    if not meant and name not in _HINTS:  # a hint says what to do; a near spelling (lr_decay, weight_decay) misleads
        meant = difflib.get_close_matches(name, accepted, n=1)
    if meant:
        message += "; did you mean " + " and ".join(map(repr, meant)) + "?"
    hint = _HINTS.get(name)
    if hint is not None:
        message += f" ({hint})"
    elif not meant:
        message += f"; {owner} takes {', '.join(accepted)}"
    return message
