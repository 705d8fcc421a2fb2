"""Which leaves share a step's scalars and a program: fixed while the arrays are.

Leaves with equal dtype and weight decay share one scalars mapping (the very
same object), which lets the fused engines join them into one span; leaves
that are decayed and leaves that are not run different programs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..count_math import evaluate, is_traced
from ..engines.precision import compute_dtype

__all__ = ["leaf_keys", "step_scalars"]


def leaf_keys(
    leaves: Sequence[Any], decayed: Sequence[bool]
) -> tuple[list[tuple[Any, bool]], list[int], dict[bool, list[int]]]:
    """Group leaves by ``(dtype, decayed)`` for their scalars, and by ``decayed`` for their program.

    Parameters
    ----------
    leaves : sequence of arrays
        The parameters, in leaf order.
    decayed : sequence of bool
        Whether weight decay applies to each leaf.

    Returns
    -------
    keys : list of (dtype, bool)
        The distinct ``(dtype, decayed)`` pairs, in order of first appearance.
    key_of_leaf : list of int
        The index into ``keys`` of each leaf.
    groups : dict of bool to list of int
        The leaf indices that are decayed (``True``) and those that are not.
    """
    keys: list[tuple[Any, bool]] = []
    key_of_leaf = []
    groups: dict[bool, list[int]] = {}
    for index, (leaf, is_decayed) in enumerate(zip(leaves, decayed, strict=True)):
        key = (leaf.dtype, is_decayed)
        if key not in keys:
            keys.append(key)
        key_of_leaf.append(keys.index(key))
        groups.setdefault(is_decayed, []).append(index)
    return keys, key_of_leaf, groups


def step_scalars(
    xp: Any,
    scalars_of_count: Callable[[Any], Mapping[str, Any]],
    count: Any,
    learning_rate: Any,
    clip_value: float | None,
    grad_scale: Any,
    weight_decay: float,
    keys: Sequence[tuple[Any, bool]],
    key_of_leaf: Sequence[int],
) -> list[dict[str, Any]]:
    """Each leaf's scalars for a step: one shared mapping per key of :func:`leaf_keys`.

    On the host the scalars are Python floats.  Under ``jax.jit`` those of the
    count (and a schedule's rate) are traced 0-D arrays, computed in double
    precision (:func:`anyoptim.count_math.evaluate`) and cast to the dtype each
    key's leaves compute in (float32 for float16 and bfloat16,
    :mod:`anyoptim.engines.precision`), as a Python float is cast where it meets
    the widened arrays.

    Parameters
    ----------
    xp : namespace
        The arrays' namespace (to cast ``grad_scale`` to each key's compute dtype).
    scalars_of_count : callable
        ``f(count) -> dict``: the optimizer's scalars of the step after ``count``
        steps (betas, bias corrections), other than the rate.
    count : int or 0-D integer array
        The steps taken before this one.
    learning_rate : float or 0-D array
        This step's α.
    clip_value : float or None
        Added as ``"clip_value"`` when not None.
    grad_scale : 0-D array or None
        The global-norm clip factor, added as ``"grad_scale"`` in the dtype each key's leaves compute in (float32
        for float16 and bfloat16: a factor rounded to float16 may be 0).
    weight_decay : float
        λ, added with ``"decay"`` :math:`= \\alpha\\lambda` for decayed keys.
    keys, key_of_leaf
        From :func:`leaf_keys`.

    Returns
    -------
    list of dict
        One mapping per leaf; leaves of one key share the same object.
    """
    traced = is_traced(count) or is_traced(learning_rate)
    if not traced and grad_scale is None and clip_value is None and len(keys) == 1 and not keys[0][1]:
        # The usual host step (one dtype, no decay, no clipping): what of_leaves gives, without its general path.
        return [dict(scalars_of_count(count), learning_rate=learning_rate)] * len(key_of_leaf)

    def of_leaves(count: Any) -> list[dict[str, Any]]:
        common = dict(scalars_of_count(count), learning_rate=learning_rate)
        if clip_value is not None:
            common["clip_value"] = clip_value
        shared = []
        for dtype, is_decayed in keys:
            hp = common if len(keys) == 1 else dict(common)
            if grad_scale is not None or traced:  # float32 for float16/bfloat16 leaves: the dtype the step runs in
                dtype = compute_dtype(xp, [dtype])
            if grad_scale is not None:
                hp["grad_scale"] = xp.astype(grad_scale, dtype)
            if is_decayed:
                hp["weight_decay"] = weight_decay
                hp["decay"] = learning_rate * weight_decay
            if traced:
                hp.update({name: xp.astype(value, dtype) for name, value in hp.items() if is_traced(value)})
            shared.append(hp)
        if len(shared) == 1:
            return shared * len(key_of_leaf)
        return [shared[index] for index in key_of_leaf]

    return evaluate(of_leaves, count)
