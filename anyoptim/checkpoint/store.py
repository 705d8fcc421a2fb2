"""Saving parameters and optimizer state by leaf name (:func:`save`), and the JSON records it writes."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from .._namespace import check_leaves
from ..optimizers.base import Optimizer
from ..optimizers.validation import check_state, state_owner
from ..schedules import describe
from ..state import OptimizerState
from ..tree import TreeDef, tree_flatten
from .files import DTYPES, FORMAT, FORMAT_VERSION, CheckpointError, to_host, write

__all__ = ["dtype_name", "save", "setting_record", "settings_record", "treedef_from_record"]

_MAX_LISTED = 8


# --------------------------------------------------------------------------- settings and structure as JSON


def setting_record(value: Any) -> Any:
    """A setting as JSON: numbers, strings, booleans and None as they are; anything else as a description.

    A schedule of :mod:`anyoptim.schedules` is ``{"schedule": <its spec>}``
    (rebuilt by :func:`~anyoptim.schedules.from_spec`); any other object is
    ``{"custom": "module.qualname"}``, which only the caller can supply again.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"custom": repr(value)}
    spec = describe(value)
    if spec is not None:
        return {"schedule": spec}
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    module = getattr(value, "__module__", None) or type(value).__module__
    return {"custom": f"{module}.{name}"}


def settings_record(optimizer: Optimizer) -> dict[str, Any]:
    return {key: setting_record(value) for key, value in sorted(vars(optimizer).items()) if not key.startswith("_")}


def _structure(treedef: TreeDef) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": treedef.kind}
    if treedef.kind == "dict":
        record["keys"] = list(treedef.keys)
    if treedef.kind != "leaf":
        record["children"] = [_structure(child) for child in treedef.children]
    if treedef.node_type is not None:
        record["type"] = treedef.node_type.__qualname__
    return record


def treedef_from_record(record: Any, depth: int = 0) -> TreeDef:
    """The structure recorded by :func:`_structure` (named tuples come back as plain tuples)."""
    if depth > 100 or not isinstance(record, dict) or record.get("kind") not in ("leaf", "dict", "list", "tuple"):
        raise CheckpointError("the recorded tree structure is damaged")
    if record["kind"] == "leaf":
        return TreeDef("leaf")
    children = record.get("children")
    keys = record.get("keys", []) if record["kind"] == "dict" else []
    if not isinstance(children, list) or not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError("the recorded tree structure is damaged")
    if record["kind"] == "dict" and len(keys) != len(children):
        raise CheckpointError("the recorded tree structure is damaged")
    return TreeDef(record["kind"], tuple(keys), tuple(treedef_from_record(child, depth + 1) for child in children))


def dtype_name(xp: Any, dtype: Any) -> str:
    for name in ("float16", "float32", "float64"):
        if getattr(xp, name, None) == dtype:
            return name
    return str(dtype)


# --------------------------------------------------------------------------- save


def _version() -> str:
    """The installed anyoptim's version (read from its metadata: importing the package here would be a cycle)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anyoptim")
    except PackageNotFoundError:
        return "unknown"


def _check_state(state: Any, names: list[str], leaves: list[Any], treedef: TreeDef) -> dict[str, list[Any]]:
    if not isinstance(state, OptimizerState):
        raise TypeError(f"state must be an anyoptim.OptimizerState, got {type(state).__name__}")
    if state.structure is not None and state.structure != treedef:
        raise ValueError("state belongs to parameters of another tree structure than params")
    slots = {}
    for slot, tree in state.slots.items():
        if not isinstance(slot, str) or not slot.isidentifier():
            raise ValueError(f"state slot names must be identifiers, got {slot!r}")
        slot_names, slot_leaves, _ = tree_flatten(tree)
        if slot_names != names:
            raise ValueError(f"state slot {slot!r} has leaves {slot_names[:_MAX_LISTED]}, params have {names}")
        for name, leaf, value in zip(names, leaves, slot_leaves, strict=True):
            if tuple(getattr(value, "shape", ())) != tuple(leaf.shape):
                raise ValueError(f"state slot {slot!r} of {name!r} has shape {value.shape}, the param {leaf.shape}")
        slots[slot] = slot_leaves
    return slots


def _maker(state: OptimizerState, optimizer: Optimizer | None) -> str | None:
    """The optimizer that made ``state`` (as :meth:`Optimizer.step <anyoptim.Optimizer.step>` names it), checked
    against ``optimizer``: a state made by another optimizer is refused with ``step``'s message."""
    made_by = getattr(state, "optimizer", None)
    if optimizer is None:
        return made_by
    owner = state_owner(type(optimizer))
    if made_by is not None and made_by != owner:
        raise ValueError(f"state was made by {made_by}, not by {owner}: its slots mean something else there")
    return owner


def _check_dtypes(xp: Any, names: list[str], leaves: list[Any]) -> None:
    """Refuse, before anything is converted, a leaf of a dtype a checkpoint cannot hold (bfloat16...)."""
    supported = set(DTYPES.values())
    odd = [
        f"params[{name!r}] is {leaf.dtype}"
        for name, leaf in zip(names, leaves, strict=True)
        if dtype_name(xp, leaf.dtype) not in supported
    ]
    if odd:
        more = f" and {len(odd) - _MAX_LISTED} more" if len(odd) > _MAX_LISTED else ""
        raise CheckpointError(
            f"cannot save: {', '.join(odd[:_MAX_LISTED])}{more}; checkpoints hold float16, float32 and float64 "
            "arrays (convert the tree first, e.g. to float32)"
        )


def save(
    path: str | os.PathLike,
    params: Any,
    state: OptimizerState,
    optimizer: Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save parameters and optimizer state to a safetensors file, by leaf name, atomically.

    Every parameter is stored as the tensor ``params/<leaf name>`` and every
    state slot as ``state/<slot>/<leaf name>`` (``params/W1``,
    ``state/m/W1``); the file's metadata (JSON strings) records the format
    version, the anyoptim version, the optimizer's class and settings, the step
    count, skipped steps, the last learning rate, the tree structure, leaf order,
    dtypes and ``extra``.  Any safetensors reader (``safetensors.numpy.load_file``)
    can read it; nothing in it is pickled.

    Parameters
    ----------
    path : str or path-like
        The file to write (``.safetensors`` by convention).  It is written to a
        temporary file in the same folder, flushed to disk and renamed, so a crash
        mid-save leaves the previous file intact.
    params : tree of arrays
        The parameters, of one library (NumPy, CuPy, torch, JAX, array-api-strict) on one device.
    state : OptimizerState
        The optimizer's state for ``params``.
    optimizer : Optimizer, optional
        The optimizer; its class and settings are recorded and checked at load.
        A learning-rate schedule or other callable setting is recorded by name
        only (``{"custom": "module.name"}``): give the same optimizer at load.
    extra : dict, optional
        Anything JSON can hold (numbers, strings, lists, dicts), returned by
        :func:`read_info` as ``extra``.

    Raises
    ------
    TypeError
        If ``state`` is not an :class:`~anyoptim.OptimizerState`, ``optimizer``
        not an :class:`~anyoptim.Optimizer`, or ``extra`` not a dict JSON can hold.
    ValueError
        If ``params`` are not a tree of floating-point arrays of one library and
        device, or ``state`` does not belong to them or was made by another
        optimizer than ``optimizer``; a :class:`CheckpointError` for a dtype a
        checkpoint cannot hold (only float16, float32 and float64: not bfloat16).
        Nothing is written then.  (State is saved in its own dtypes: float32
        for the float16 parameters of ``master_weights=True``.)
    ImportError
        If safetensors is not installed.

    See Also
    --------
    load : The inverse.
    read_info : What a checkpoint holds, without loading it.

    Examples
    --------
    >>> import os, tempfile, numpy as np, anyoptim
    >>> opt = anyoptim.Adam(0.01)
    >>> params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    >>> state = opt.init(params)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.safetensors")
    >>> anyoptim.save(path, params, state, optimizer=opt, extra={"epoch": 3})
    >>> from safetensors.numpy import load_file
    >>> sorted(load_file(path))
    ['params/W', 'params/b', 'state/m/W', 'state/m/b', 'state/v/W', 'state/v/b']
    """
    names, leaves, treedef = tree_flatten(params)
    xp, _ = check_leaves(names, leaves, what="params")
    slots = _check_state(state, names, leaves, treedef)
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an anyoptim.Optimizer, got {type(optimizer).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    try:
        extra_json = json.dumps({} if extra is None else extra, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"extra must hold only what JSON can (numbers, strings, lists, dicts): {error}") from None
    maker = _maker(state, optimizer)
    # step's own checks of each slot leaf (library, device, shape, dtype), so a state step refuses is refused here
    check_state(maker or "its optimizer", tuple(slots), names, leaves, treedef, state)
    _check_dtypes(xp, names, leaves)
    record = None if optimizer is None else {"class": type(optimizer).__name__, "settings": settings_record(optimizer)}
    metadata = {
        "format": FORMAT,
        "format_version": json.dumps(FORMAT_VERSION),
        "anyoptim_version": json.dumps(_version()),
        "optimizer": json.dumps(record),
        "count": json.dumps(int(state.count)),
        "skipped": json.dumps(int(state.skipped)),
        "learning_rate": json.dumps(setting_record(float(state.learning_rate))),
        "structure": json.dumps(_structure(treedef)),
        "leaves": json.dumps(names),
        "slots": json.dumps(list(slots)),
        "dtypes": json.dumps({name: dtype_name(xp, leaf.dtype) for name, leaf in zip(names, leaves, strict=True)}),
        "extra": extra_json,
        "state_optimizer": json.dumps(maker),
    }
    tensors = {f"params/{name}": to_host(leaf) for name, leaf in zip(names, leaves, strict=True)}
    for slot, values in slots.items():
        tensors.update({f"state/{slot}/{name}": to_host(value) for name, value in zip(names, values, strict=True)})
    write(path, tensors, metadata)
