"""Loading a checkpoint by leaf name onto any library and device: :func:`load`, :func:`read_info`."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from .. import optimizers
from .._namespace import check_leaves, is_mutable
from ..engines.memory import untracked
from ..engines.precision import MASTER, is_narrow
from ..engines.spans import flat_views
from ..optimizers.base import Optimizer
from ..optimizers.traced import static_of
from ..optimizers.validation import state_owner
from ..state import OptimizerState
from ..transforms import mask_values
from ..tree import tree_flatten, tree_unflatten
from .files import CheckpointError, CheckpointFile, read
from .in_place import check_in_place_target
from .store import dtype_name, settings_record, treedef_from_record

__all__ = ["CheckpointInfo", "CheckpointWarning", "load", "read_info"]

#: Settings not compared at load: where a step runs does not change what it computes.
UNCOMPARED_SETTINGS = frozenset({"engine"})
#: Settings newer than the checkpoint format: a file saved before one existed ran with this value.
ADDED_SETTINGS = {"master_weights": False}
_MAX_LISTED = 8


class CheckpointWarning(UserWarning):
    """What a partial load (``strict=False``) left out: names, shapes, dtypes or settings that did not match.

    Examples
    --------
    >>> import os, tempfile, warnings, numpy as np, anyoptim
    >>> opt = anyoptim.SGD(0.1)
    >>> path = os.path.join(tempfile.mkdtemp(), "c.safetensors")
    >>> anyoptim.save(path, {"W": np.ones(2)}, opt.init({"W": np.ones(2)}), optimizer=opt)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     params, _ = anyoptim.load(path, like={"W": np.zeros(2), "b": np.zeros(1)}, optimizer=opt, strict=False)
    >>> caught[0].category.__name__, params["W"].tolist(), params["b"].tolist()
    ('CheckpointWarning', [1.0, 1.0], [0.0])
    """


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint holds, read from its header alone (no tensor is read).

    Each parameter is an attribute of the same name.

    Parameters
    ----------
    path : str
        The file.
    names : list of str
        The parameters' leaf names, in leaf order.
    shapes : dict of str to tuple of int
        Each parameter's shape.
    dtypes : dict of str to str
        Each parameter's dtype (``"float32"``...).
    slots : list of str
        The optimizer state's slots (``["m", "v"]`` for Adam).
    optimizer : dict or None
        ``{"class": name, "settings": {...}}`` as recorded, or None if saved without an optimizer.
    count : int
        Optimizer steps taken.
    skipped : int
        Steps skipped by ``on_nonfinite="skip"``.
    learning_rate : float
        The learning rate of the last step.
    extra : dict
        The ``extra`` given to :func:`~anyoptim.save` (``{}`` if none).
    anyoptim_version : str
        The anyoptim that wrote the file.

    See Also
    --------
    read_info : Makes one.

    Examples
    --------
    >>> import os, tempfile, numpy as np, anyoptim
    >>> opt = anyoptim.Adam()
    >>> params = {"W": np.ones((2, 2))}
    >>> path = os.path.join(tempfile.mkdtemp(), "c.safetensors")
    >>> anyoptim.save(path, params, opt.init(params), optimizer=opt)
    >>> info = anyoptim.checkpoint.read_info(path)
    >>> info.slots, info.count, info.optimizer["settings"]["beta2"]
    (['m', 'v'], 0, 0.999)
    """

    path: str
    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    slots: list[str]
    optimizer: dict[str, Any] | None
    count: int
    skipped: int
    learning_rate: float
    extra: dict[str, Any]
    anyoptim_version: str


def _entry(file: CheckpointFile, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = file.metadata.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CheckpointError(f"{file.path}: metadata entry {key!r} is missing or not {what}")
    return value


def _info(file: CheckpointFile) -> CheckpointInfo:
    names = _entry(file, "leaves", list, "a list of names")
    slots = _entry(file, "slots", list, "a list of names")
    if not all(isinstance(n, str) for n in [*names, *slots]) or len(set(names)) != len(names):
        raise CheckpointError(f"{file.path}: the recorded leaf or slot names are damaged")
    expected = {f"params/{n}" for n in names} | {f"state/{s}/{n}" for s in slots for n in names}
    if expected != set(file.shapes):
        missing = sorted(expected - set(file.shapes))[:_MAX_LISTED]
        unexpected = sorted(set(file.shapes) - expected)[:_MAX_LISTED]
        raise CheckpointError(f"{file.path} is damaged: tensors missing {missing}, unexpected {unexpected}")
    for slot in slots:
        for name in names:
            key = f"state/{slot}/{name}"
            param_dtype = file.dtypes[f"params/{name}"]
            state_dtype_fits = file.dtypes[key] in (param_dtype, "float32" if param_dtype == "float16" else None)
            if file.shapes[key] != file.shapes[f"params/{name}"] or not state_dtype_fits:  # float32: master weights
                raise CheckpointError(f"{file.path} is damaged: {key} does not match params/{name}")
    optimizer = file.metadata.get("optimizer")
    if optimizer is not None and not (isinstance(optimizer, dict) and isinstance(optimizer.get("class"), str)):
        raise CheckpointError(f"{file.path}: metadata entry 'optimizer' is damaged")
    learning_rate = file.metadata.get("learning_rate")
    return CheckpointInfo(
        path=str(file.path),
        names=names,
        shapes={n: file.shapes[f"params/{n}"] for n in names},
        dtypes={n: file.dtypes[f"params/{n}"] for n in names},
        slots=slots,
        optimizer=optimizer,
        count=_entry(file, "count", int, "an integer"),
        skipped=_entry(file, "skipped", int, "an integer"),
        learning_rate=float(learning_rate) if isinstance(learning_rate, (int, float)) else float("nan"),
        extra=_entry(file, "extra", dict, "a dict"),
        anyoptim_version=str(file.metadata.get("anyoptim_version")),
    )


def read_info(path: str | os.PathLike) -> CheckpointInfo:
    """What a checkpoint holds (names, shapes, optimizer, count, ``extra``), without reading its tensors.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`~anyoptim.save`.

    Returns
    -------
    CheckpointInfo
        The header's content, checked.

    Raises
    ------
    ValueError
        If the file is missing, not a safetensors file, damaged or truncated,
        not an anyoptim checkpoint, or of another format version.
    ImportError
        If safetensors is not installed.

    Examples
    --------
    >>> import os, tempfile, numpy as np, anyoptim
    >>> from anyoptim.checkpoint import read_info
    >>> opt = anyoptim.SGD(0.1)
    >>> params = {"w": np.zeros(3, dtype=np.float32)}
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> anyoptim.save(path, params, opt.init(params), optimizer=opt, extra={"note": "hi"})
    >>> info = read_info(path)
    >>> info.names, info.shapes, info.dtypes, info.optimizer["class"], info.extra
    (['w'], {'w': (3,)}, {'w': 'float32'}, 'SGD', {'note': 'hi'})
    """
    file = read(path)
    file.close()
    return _info(file)


# --------------------------------------------------------------------------- matching


def _setting_differences(recorded: dict[str, Any], optimizer: Optimizer) -> list[str]:
    current = settings_record(optimizer)
    differences = []
    for key in sorted(set(recorded) | set(current)):
        if key in UNCOMPARED_SETTINGS:
            continue
        saved, now = recorded.get(key, ADDED_SETTINGS.get(key, "<absent>")), current.get(key, "<absent>")
        if isinstance(saved, dict) and isinstance(now, dict) and ("custom" in saved or "custom" in now):
            continue  # a custom object (a hand-written schedule, a mask function): not comparable, the caller's is used
        if saved != now:
            differences.append(f"{key}: saved {saved!r}, given {now!r}")
    return differences


def _check_optimizer(info: CheckpointInfo, optimizer: Optimizer | None, strict: bool) -> list[str]:
    if optimizer is None:
        return []
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an anyoptim.Optimizer, got {type(optimizer).__name__}")
    given = type(optimizer).__name__
    if info.optimizer is None:
        return []
    if info.optimizer["class"] != given:
        raise CheckpointError(
            f"{info.path} holds the state of optimizer class {info.optimizer['class']}; "
            f"it cannot be loaded into {given}"
        )
    recorded = info.optimizer.get("settings")
    differences = _setting_differences(recorded if isinstance(recorded, dict) else {}, optimizer)
    if differences and strict:
        raise CheckpointError(
            f"{info.path} was saved with other {given} settings ({'; '.join(differences)}); "
            "give the same optimizer, or strict=False to load anyway"
        )
    return [f"setting {d}" for d in differences]


def _maker(file: CheckpointFile, info: CheckpointInfo, optimizer: Optimizer | None) -> str | None:
    """The optimizer that made the saved state (``OptimizerState.optimizer``), checked against ``optimizer``.

    Recorded by :func:`~anyoptim.save` as ``state_optimizer``; a file without it names the optimizer class it was
    saved with, which for an anyoptim optimizer is the maker.
    """
    made_by = file.metadata.get("state_optimizer")
    if made_by is not None and not isinstance(made_by, str):
        raise CheckpointError(f"{file.path}: metadata entry 'state_optimizer' is damaged")
    if made_by is None and info.optimizer is not None and "state_optimizer" not in file.metadata:
        cls = (
            getattr(optimizers, info.optimizer["class"], None)
            if info.optimizer["class"] in optimizers.__all__
            else None
        )
        made_by = state_owner(cls) if isinstance(cls, type) and issubclass(cls, Optimizer) else None
    if optimizer is None:
        return made_by
    owner = state_owner(type(optimizer))
    if made_by is not None and made_by != owner:
        raise CheckpointError(
            f"{info.path}: state was made by {made_by}, not by {owner}: its slots mean something else there"
        )
    return owner


def _limited(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _match(info: CheckpointInfo, names: list[str], leaves: list[Any], xp: Any) -> tuple[list[str], list[str]]:
    """The names to load, and what does not match (missing, unexpected, other shapes or dtypes)."""
    saved = set(info.names)
    problems = []
    missing = [n for n in names if n not in saved]
    unexpected = [n for n in info.names if n not in set(names)]
    if missing:
        problems.append(f"missing from the file: {_limited(missing)}")
    if unexpected:
        problems.append(f"in the file but not in like: {_limited(unexpected)}")
    matched = []
    for name, leaf in zip(names, leaves, strict=True):
        if name not in saved:
            continue
        shape, dtype = tuple(int(s) for s in leaf.shape), dtype_name(xp, leaf.dtype)
        if info.shapes[name] != shape:
            problems.append(f"{name}: shape {info.shapes[name]} in the file, {shape} in like")
        elif info.dtypes[name] != dtype:
            problems.append(f"{name}: dtype {info.dtypes[name]} in the file, {dtype} in like")
        else:
            matched.append(name)
    return matched, problems


# --------------------------------------------------------------------------- placing arrays


def _slot_leaves(
    file: CheckpointFile, xp: Any, leaves: list[Any], names: list[str], slot: str, loaded: set[str], master: bool
) -> list[Any]:
    """The leaves a slot is read like: ``leaves``, or float32 copies of the float16/bfloat16 ones whose state is
    float32: where the file holds it so (``master_weights=True``), and for a leaf the load skips, with master
    weights (as :meth:`~anyoptim.Optimizer.init` makes it)."""
    wide = [
        is_narrow(xp, leaf.dtype)
        and (file.dtypes.get(f"state/{slot}/{name}") == "float32" if name in loaded else master)
        for name, leaf in zip(names, leaves, strict=True)
    ]
    if not any(wide):
        return leaves
    return [xp.astype(untracked(leaf), xp.float32) if w else leaf for leaf, w in zip(leaves, wide, strict=True)]


def _read_leaves(
    file: CheckpointFile, xp: Any, device: Any, leaves: list[Any], keys: list[str | None], fill: float | None
) -> list[Any]:
    """New arrays shaped like ``leaves``: leaf ``i`` read from tensor ``keys[i]``, or where that is None set to
    ``fill`` (to the values of ``leaves[i]`` when ``fill`` is None).

    On libraries with views they are views of one new flat buffer per dtype, in leaf order (the layout of
    :func:`anyoptim.flatten` and of the fused engines' state), allocated uninitialised: every element is written
    once, by the file's bytes or the fill, so the result costs one copy of the data and one pass over it.  A NumPy
    target takes the file's bytes directly; other tensors are read one at a time (one host copy at most).
    """
    if not is_mutable(xp):  # JAX: no views and no writes, so new arrays (or like's own, kept)
        return [
            xp.asarray(file.tensor(key), device=device) if key else leaf if fill is None else xp.full_like(leaf, fill)
            for leaf, key in zip(leaves, keys, strict=True)
        ]
    out = flat_views(xp, leaves)
    for target, leaf, key in zip(out, leaves, keys, strict=True):
        if key is None:  # like's values (untracked: a torch Parameter's copy records no graph), or the fill
            target[...] = untracked(leaf) if fill is None else fill
        elif not file.read_into(key, target):  # a NumPy target took the bytes straight from the file
            target[...] = xp.asarray(file.tensor(key), device=device)
    return out


def load(
    path: str | os.PathLike,
    like: Any = None,
    optimizer: Optimizer | None = None,
    strict: bool = True,
    *,
    in_place: bool = False,
) -> tuple[Any, OptimizerState]:
    """Load parameters and optimizer state saved by :func:`~anyoptim.save`, matched by leaf name.

    Parameters
    ----------
    path : str or path-like
        The checkpoint file.
    like : tree of arrays, optional
        Parameters of the shape to load into: the result has its structure, its
        library (NumPy, CuPy, torch, JAX, array-api-strict), device and dtypes
        (float32 state saved for float16 parameters, ``master_weights=True``,
        stays float32).  Its values are not changed (and are kept for leaves a partial load
        skips).  On libraries with views the parameters and each state slot
        come back laid out flat (:func:`anyoptim.flatten`), read straight into
        their new buffers.  Default: NumPy arrays in the saved structure.
    optimizer : Optimizer, optional
        The optimizer that will continue: the checkpoint must come from the same
        class (and, with ``strict``, the same settings) and have its slots
        (:meth:`~anyoptim.Optimizer.slot_fills`, whose values fill the leaves a
        partial load skips).  Default: the state's slots as saved (zeros for
        skipped leaves; the master copies of ``master_weights=True``, like's values).
    strict : bool, default True
        Every name, shape, dtype, state slot and setting must match, else a
        ``ValueError`` lists all differences.  With False, what matches is
        loaded, the rest keeps ``like``'s values (and fresh state), and a
        :class:`CheckpointWarning` lists what was left out.
    in_place : bool, default False
        Copy the saved parameters into ``like``'s own arrays and return
        ``like`` itself, as ``torch.nn.Module.load_state_dict`` does: a torch
        module's parameters (``anyoptim.tree.nest(model.named_parameters())``)
        keep their identity, ``requires_grad`` and ``is_leaf``, and go on
        training.  The copy starts only after the whole file has been read
        and checked: a failed load changes nothing.  Needs ``like`` of a
        library with in-place writes (NumPy, CuPy, torch, array-api-strict),
        each leaf writeable and its own memory.

    Returns
    -------
    params : tree of arrays
        New arrays, nothing given changed; with ``in_place``, ``like`` with
        the saved values (leaves a partial load skips keep theirs).
    state : OptimizerState
        With the saved step count, skipped steps and last learning rate.

    Raises
    ------
    ValueError
        If the file is missing, damaged, truncated, not an anyoptim checkpoint
        or of another format version; if it holds another optimizer's state;
        or with ``strict``, for any mismatch.  Raised before anything is built.
    TypeError
        If ``optimizer`` is not an :class:`~anyoptim.Optimizer`, or ``like`` is
        not a tree of floating-point arrays; with ``in_place``, if ``like`` is
        missing or of a library without in-place writes (JAX).  Raised before
        the file is opened.
    ValueError
        With ``in_place``, if a leaf of ``like`` is read-only, an inference or
        expanded torch tensor, or shares memory with another leaf.
    ImportError
        If safetensors is not installed.

    See Also
    --------
    save : The inverse.
    read_info : What a checkpoint holds, without loading it.

    Examples
    --------
    >>> import os, tempfile, numpy as np, anyoptim
    >>> opt = anyoptim.Adam(0.01)
    >>> params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    >>> params, state = opt.step(params, {"W": np.ones((2, 3)), "b": np.ones(3)}, opt.init(params))
    >>> path = os.path.join(tempfile.mkdtemp(), "run.safetensors")
    >>> anyoptim.save(path, params, state, optimizer=opt)
    >>> loaded, loaded_state = anyoptim.load(path, like=params, optimizer=opt)
    >>> loaded_state.count, bool(np.array_equal(loaded_state.slots["m"]["W"], state.slots["m"]["W"]))
    (1, True)

    Into the arrays one already trains (a torch module's parameters, say):

    >>> target = {"W": np.zeros((2, 3)), "b": np.zeros(3)}
    >>> same, _ = anyoptim.load(path, like=target, optimizer=opt, in_place=True)
    >>> same is target, bool(np.array_equal(target["W"], params["W"]))
    (True, True)
    """
    for name, flag in (("strict", strict), ("in_place", in_place)):
        if flag not in (True, False):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if in_place:
        check_in_place_target(like)
    file = read(path)
    try:
        params, state = _load(file, like, optimizer, strict)
    finally:
        file.close()
    if not in_place:
        return params, state
    for target, value in zip(tree_flatten(like)[1], tree_flatten(params)[1], strict=True):
        untracked(target)[...] = value  # a torch Parameter: its values, no autograd record; version bumped
    return like, state


def _load(file: CheckpointFile, like: Any, optimizer: Optimizer | None, strict: bool) -> tuple[Any, OptimizerState]:
    info = _info(file)
    if like is None:
        treedef = treedef_from_record(file.metadata.get("structure"))
        if treedef.num_leaves != len(info.names):
            raise CheckpointError(f"{info.path}: the recorded tree structure does not match its leaves")
        import numpy as np

        like = tree_unflatten(treedef, [np.empty(info.shapes[n], dtype=info.dtypes[n]) for n in info.names])
    names, leaves, treedef = tree_flatten(like)
    xp, device = check_leaves(names, leaves, what="like")
    problems = _check_optimizer(info, optimizer, strict)
    maker = _maker(file, info, optimizer)
    matched, mismatches = _match(info, names, leaves, xp)
    problems += mismatches
    fills: dict[str, float | None] = {slot: None if slot == MASTER else 0.0 for slot in info.slots}  # None: like's
    if optimizer is not None:
        fills = optimizer.slot_fills()
        if sorted(fills) != sorted(info.slots):
            raise CheckpointError(
                f"{info.path} holds state slots {info.slots}; {type(optimizer).__name__} has {list(fills)}"
            )
        if optimizer.weight_decay:  # what optimizer.init checks of like: a mask that does not fit it fails here
            mask_values(optimizer.weight_decay_mask, names, leaves, treedef)
    if problems and strict:
        raise CheckpointError(f"{info.path} does not match: " + "; ".join(problems))
    if problems:
        warnings.warn(f"{info.path}: partial load; " + "; ".join(problems), CheckpointWarning, stacklevel=3)
    loaded = set(matched)

    def keys(prefix: str) -> list[str | None]:
        return [f"{prefix}/{n}" if n in loaded else None for n in names]

    params = tree_unflatten(treedef, _read_leaves(file, xp, device, leaves, keys("params"), None))
    slots = {
        slot: tree_unflatten(
            treedef,
            _read_leaves(
                file,
                xp,
                device,
                _slot_leaves(file, xp, leaves, names, slot, loaded, MASTER in fills),
                keys(f"state/{slot}"),
                fill,
            ),
        )
        for slot, fill in fills.items()
    }
    static = () if optimizer is None else static_of(optimizer)  # a jitted step from it passes what it must only
    return params, OptimizerState(info.count, info.learning_rate, slots, info.skipped, treedef, maker, static)
