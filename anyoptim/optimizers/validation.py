"""The checks of a step's input that every optimizer shares: nothing is touched before they pass.

:meth:`Optimizer.step <anyoptim.optimizers.base.Optimizer.step>` runs them, in
order, on its validated path: distinct parameter leaves, the gradients against
the parameters, the state against the parameters and the optimizer's slots;
then the ``on_nonfinite`` policy on the gradients.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from .._namespace import array_namespace, check_leaves, device_of
from ..count_math import is_traced
from ..engines.memory import overlapping, untracked
from ..engines.precision import is_narrow
from ..state import OptimizerState
from ..transforms import first_nonfinite
from ..tree import TreeDef, check_same_structure, tree_flatten

__all__ = ["apply_nonfinite_policy", "check_distinct", "check_grads", "check_state"]


def check_grads(xp: Any, device: Any, names: list[str], p_leaves: list[Any], treedef: TreeDef, grads: Any) -> list[Any]:
    """Check ``grads`` against the params' leaves and return its leaves.

    Parameters
    ----------
    xp, device : object
        The params' namespace and device.
    names, p_leaves : list
        The params' leaf names and leaves, in tree order.
    treedef : TreeDef
        The params' structure.
    grads : tree of arrays
        The gradients: the same structure, library and device, and each leaf
        the shape and dtype of its parameter.

    Returns
    -------
    list of arrays
        The leaves of ``grads``, in the params' leaf order.

    Raises
    ------
    TypeError
        For another array library or dtype.
    ValueError
        For another structure, device or shape.
    """
    grad_names, g_leaves, grad_def = tree_flatten(grads)
    check_same_structure(treedef, grad_def, what="grads", like="params")
    g_xp, g_device = check_leaves(grad_names, g_leaves, what="grads")
    if g_xp is not xp:
        raise TypeError("grads and params must come from the same array library")
    if g_device != device and not (is_traced(g_leaves[0]) or is_traced(p_leaves[0])):  # a traced array has no device
        raise ValueError(f"grads are on device {g_device} but params are on {device}")
    for name, p, g in zip(names, p_leaves, g_leaves, strict=True):
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(
                f"grads[{name!r}] has shape {tuple(g.shape)} but params[{name!r}] has shape {tuple(p.shape)}"
            )
        if g.dtype != p.dtype:
            raise TypeError(f"grads[{name!r}] has dtype {g.dtype} but params[{name!r}] has dtype {p.dtype}")
    return g_leaves


@functools.cache
def state_owner(cls: type) -> str:
    """The name a state records as its maker: the first class of ``cls``'s MRO defined in anyoptim.

    A subclass written outside anyoptim (to log, say) runs its parent's rule, so
    the two share states; two anyoptim optimizers never do.
    """
    return next(
        (base.__name__ for base in cls.__mro__ if base.__module__.startswith("anyoptim.optimizers")), cls.__name__
    )


def check_state(
    owner: str, slot_names: tuple[str, ...], names: list[str], p_leaves: list[Any], treedef: TreeDef, state: Any
) -> dict[str, list[Any]]:
    """Check ``state`` against the params and the optimizer's slots and return each slot's leaves.

    Parameters
    ----------
    owner : str
        The optimizer's class name, for the message.
    slot_names : tuple of str
        The slots the optimizer needs, in order.
    names, p_leaves : list
        The params' leaf names and leaves, in tree order.
    treedef : TreeDef
        The params' structure.
    state : OptimizerState
        What ``init`` or ``step`` returned for these params.

    Returns
    -------
    dict of str to list of arrays
        Each slot's leaves, in the params' leaf order.

    Raises
    ------
    TypeError
        If ``state`` is not an :class:`~anyoptim.state.OptimizerState`.
    ValueError
        If it was made for another structure, holds other slots, a slot leaf
        of another count, shape or dtype (float32 is allowed for a float16 or
        bfloat16 parameter), or a slot leaf that shares memory with a
        parameter or another slot leaf.
    """
    if not isinstance(state, OptimizerState):
        raise TypeError(f"state must be the OptimizerState returned by init or step, got {type(state).__name__}")
    made_by = getattr(state, "optimizer", None)
    if made_by is not None and made_by != owner:
        raise ValueError(f"state was made by {made_by}, not by {owner}: its slots mean something else there")
    if state.structure is not None:
        check_same_structure(state.structure, treedef, what="params", like="the params this state was made for")
    if tuple(state.slots) != slot_names:
        raise ValueError(
            f"state has slots {list(state.slots)} but {owner} needs {list(slot_names)}: "
            "was it made by another optimizer?"
        )
    slots: dict[str, list[Any]] = {}
    for slot, tree in state.slots.items():
        _, leaves, _ = tree_flatten(tree)
        if len(leaves) != len(p_leaves):
            raise ValueError(f"state slot {slot!r} has {len(leaves)} arrays but params have {len(p_leaves)}")
        for name, p, s in zip(names, p_leaves, leaves, strict=True):
            # (a traced array has no device; one closed over by the trace is still JAX's: the step warns)
            if _library(s) != _library(p) or (device_of(s) != device_of(p) and not (is_traced(s) or is_traced(p))):
                raise TypeError(
                    f"state slot {slot!r} of {name!r} is a {_library(s)} array on {device_of(s)}, but the parameter "
                    f"is a {_library(p)} array on {device_of(p)}: state and params must be arrays of one library "
                    "on one device"
                )
            if tuple(s.shape) != tuple(p.shape) or (s.dtype != p.dtype and not _float32_state_of_narrow(p, s)):
                raise ValueError(
                    f"state slot {slot!r} of {name!r} has shape {tuple(s.shape)} and dtype {s.dtype}, "
                    f"but the parameter has {tuple(p.shape)} and {p.dtype}"
                )
        slots[slot] = leaves
    # A slot written in place over a parameter or another slot (``state.slots["m"]["w"] = params["w"]``) would make
    # every update read what another just wrote: refused, as params sharing memory are.
    owners = [f"params[{name!r}]" for name in names]
    owners += [f"state slot {slot!r} of {name!r}" for slot in slots for name in names]
    everything = [*p_leaves, *(leaf for leaves in slots.values() for leaf in leaves)]
    for first, second in overlapping(everything, range(len(p_leaves), len(everything))):
        raise ValueError(f"{owners[second]} shares memory with {owners[first]}: each must be an array of its own")
    return slots


def _float32_state_of_narrow(p: Any, s: Any) -> bool:
    """Whether ``s`` is a float32 slot of a float16 or bfloat16 parameter ``p`` (master weights)."""
    xp = array_namespace(p)
    return is_narrow(xp, p.dtype) and s.dtype == xp.float32


def _library(array: Any) -> str:
    """The library an array belongs to, by its type's top-level module (``numpy``, ``torch``, ``jax``)."""
    library = type(array).__module__.partition(".")[0]
    return "jax" if library == "jaxlib" else library  # a concrete JAX array is a jaxlib type, a traced one jax's


def check_distinct(names: list[str], leaves: list[Any]) -> None:
    """Refuse a tree that holds one array, or two views of one memory, under two names (or a torch tensor that
    cannot be updated in place: :func:`~anyoptim.engines.torch_tensors.unwritable`).

    An in-place engine would update it twice (``{"a": x, "b": x[:]}``).  Views
    that share no element (``x[::2]`` and ``x[1::2]``) are distinct parameters.
    """
    first_name: dict[int, str] = {}
    for name, leaf in zip(names, leaves, strict=True):
        if _library(leaf) == "torch":  # updated in place; the bridge is loaded for torch tensors only
            from ..engines.torch_tensors import unwritable

            if (problem := unwritable(leaf)) is not None:
                raise ValueError(f"params[{name!r}] is {problem}")
        other = first_name.setdefault(id(leaf), name)
        if other != name:
            raise ValueError(
                f"params[{name!r}] is the same array as params[{other!r}]: to tie parameters, keep one leaf "
                "and add up the gradients of its uses"
            )
    for first, second in overlapping(leaves, range(len(leaves))):
        raise ValueError(
            f"params[{names[second]!r}] and params[{names[first]!r}] are views of one memory: an update of one "
            "would change the other; to tie parameters, keep one leaf and add up the gradients of its uses"
        )


def separate_grads(xp: Any, g_leaves: list[Any], others: list[Any]) -> tuple[list[Any], bool]:
    """The gradients, each one that shares memory with a parameter or state array copied (and whether any was).

    ``grads = {"a": params["b"], "b": params["a"]}`` (the gradient of ``a·b``)
    would otherwise read ``a`` after an in-place engine updated it.
    """
    everything = [*g_leaves, *others]
    aliased = {index for pair in overlapping(everything, range(len(g_leaves))) for index in pair}
    aliased = {index for index in aliased if index < len(g_leaves)}
    if not aliased:
        return g_leaves, False
    # untracked: a torch parameter passed as its own gradient is copied as values (no graph, no torch warning)
    return [xp.asarray(untracked(g), copy=True) if i in aliased else g for i, g in enumerate(g_leaves)], True


def apply_nonfinite_policy(
    policy: str, xp: Any, names: list[str], g_leaves: list[Any], params: Any, state: OptimizerState
) -> tuple[Any, OptimizerState] | None:
    """Apply an ``on_nonfinite`` policy to this step's gradients.

    Parameters
    ----------
    policy : {"ignore", "raise", "skip"}
        The optimizer's ``on_nonfinite``.
    xp : namespace
        The gradients' namespace.
    names, g_leaves : list
        The leaf names and gradient arrays.
    params, state
        What a skipped step returns unchanged (``state.skipped`` counted up).

    Returns
    -------
    (params, state) or None
        The result of a skipped step, or None to go on with the step.

    Raises
    ------
    FloatingPointError
        Under ``"raise"``, naming the first leaf whose gradient holds NaN or infinity.
    """
    if policy == "ignore" or any(map(is_traced, g_leaves)):  # under jax.jit: see optimizers/traced.py
        return None
    bad = first_nonfinite(xp, names, g_leaves)
    if bad is None:
        return None
    if policy == "raise":
        raise FloatingPointError(f"grads[{bad!r}] holds NaN or infinity (on_nonfinite='raise')")
    return params, replace(state, skipped=state.skipped + 1)
