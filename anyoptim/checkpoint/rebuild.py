"""The optimizer a checkpoint was saved with, built again from its record: :func:`read_optimizer`."""

from __future__ import annotations

import inspect
import os
from typing import Any

from .. import optimizers, transforms
from ..optimizers.base import Optimizer
from ..schedules import from_spec
from .files import CheckpointError
from .restore import read_info
from .store import settings_record

__all__ = ["read_optimizer"]

#: Settings left at their default when recorded as custom: an engine object (where a step runs) becomes "auto".
_DEFAULT_IF_CUSTOM = frozenset({"engine"})
#: The masks of anyoptim.transforms, recorded by their qualified names.
_KNOWN_CALLABLES = {
    f"anyoptim.transforms.{mask.__name__}": mask for mask in (transforms.decay_all, transforms.decay_weights_only)
}


def _optimizer_class(path: str, name: str) -> type[Optimizer]:
    cls = getattr(optimizers, name, None) if name in optimizers.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)) or cls is Optimizer:
        raise CheckpointError(
            f"{path} was saved with optimizer class {name!r}, which is not an anyoptim optimizer: "
            "construct it yourself and pass it to anyoptim.load(..., optimizer=...)"
        )
    return cls


def _setting(path: str, key: str, recorded: Any) -> Any:
    if not isinstance(recorded, dict):
        return recorded
    if set(recorded) == {"schedule"}:
        try:
            return from_spec(recorded["schedule"])
        except ValueError as error:
            raise CheckpointError(f"{path}: the recorded schedule of {key!r} cannot be rebuilt ({error})") from None
    custom = recorded.get("custom")
    if isinstance(custom, str) and custom in _KNOWN_CALLABLES:
        return _KNOWN_CALLABLES[custom]
    raise CheckpointError(
        f"{path}: setting {key!r} was recorded as custom ({custom!r}), which a file cannot hold: "
        "construct the optimizer yourself (with the same setting) and pass it to anyoptim.load(..., optimizer=...)"
    )


def read_optimizer(path: str | os.PathLike) -> Optimizer:
    """The optimizer a checkpoint was saved with, built again from its class and settings in the file.

    A learning-rate schedule made by :mod:`anyoptim.schedules` is rebuilt from
    its recorded name and arguments (:func:`anyoptim.schedules.from_spec`), so
    it computes the same rates, bit for bit, and continues from the state's
    step count.  The masks of :mod:`anyoptim.transforms` are rebuilt too.  An
    engine given by name comes back as it was; an engine object comes back as
    ``"auto"`` (where a step runs does not change what it computes).  Nothing in the file is executed: only
    anyoptim's own optimizer classes and schedule functions are called.

    Parameters
    ----------
    path : str or path-like
        A checkpoint written by :func:`anyoptim.save` with ``optimizer=``.

    Returns
    -------
    Optimizer
        A new optimizer of the recorded class and settings; pass it to
        :func:`anyoptim.load` to lay the state out for it.

    Raises
    ------
    ValueError
        (:class:`CheckpointError`) If the file is not a readable checkpoint, was
        saved without an optimizer, or records a setting a file cannot hold
        again: a hand-written schedule, a custom mask function or a mask tree
        (``{"custom": ...}``; give that optimizer yourself), or a class that is
        not an anyoptim optimizer.
    ImportError
        If safetensors is not installed.

    See Also
    --------
    anyoptim.load : Loads the parameters and state, for this optimizer.
    anyoptim.schedules.describe : How a schedule is recorded.

    Examples
    --------
    >>> import os, tempfile, numpy as np, anyoptim
    >>> from anyoptim import schedules
    >>> from anyoptim.checkpoint import read_optimizer
    >>> opt = anyoptim.Adam(schedules.cosine_decay(0.01, decay_steps=100), beta2=0.99)
    >>> params = {"W": np.ones((2, 3))}
    >>> path = os.path.join(tempfile.mkdtemp(), "run.safetensors")
    >>> anyoptim.save(path, params, opt.init(params), optimizer=opt)
    >>> again = read_optimizer(path)
    >>> again.beta2, again.learning_rate(50) == opt.learning_rate(50)
    (0.99, True)
    >>> params, state = anyoptim.load(path, like=params, optimizer=again)
    """
    info = read_info(path)
    if info.optimizer is None:
        raise CheckpointError(f"{info.path} was saved without an optimizer: there is none to rebuild")
    cls = _optimizer_class(info.path, info.optimizer["class"])
    recorded = info.optimizer.get("settings")
    if not isinstance(recorded, dict) or not all(isinstance(key, str) for key in recorded):
        raise CheckpointError(f"{info.path}: metadata entry 'optimizer' has no settings")
    kept = {k: v for k, v in recorded.items() if not (k in _DEFAULT_IF_CUSTOM and isinstance(v, dict))}
    settings = {key: _setting(info.path, key, value) for key, value in kept.items()}
    accepted = set(inspect.signature(cls).parameters) | set(inspect.signature(Optimizer).parameters)
    try:
        optimizer = cls(**{key: value for key, value in settings.items() if key in accepted})
        unknown = sorted(set(settings) - set(settings_record(optimizer)))
        if unknown:
            raise CheckpointError(f"{info.path}: {cls.__name__} has no settings {unknown}")
        for key, value in settings.items():  # settings the constructor does not take (fixed by the class)
            if key not in accepted and getattr(optimizer, key, None) != value:
                setattr(optimizer, key, value)
    except CheckpointError:
        raise
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{info.path}: the recorded {cls.__name__} settings are refused ({error})") from None
    rebuilt = settings_record(optimizer)
    differences = sorted(
        key
        for key, value in kept.items()
        if rebuilt.get(key) != value and not (isinstance(value, dict) and "custom" in value)
    )
    if differences:
        raise CheckpointError(f"{info.path}: {cls.__name__} cannot be rebuilt with the recorded settings {differences}")
    return optimizer
