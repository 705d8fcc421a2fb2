"""Which leaves share a step's scalars and a program: fixed while the arrays are.

Leaves with equal dtype and weight decay share one scalars mapping (the very
same object), which lets the fused engines join them into one span; leaves
that are decayed and leaves that are not run different programs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["leaf_keys", "leaf_scalars"]


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


def leaf_scalars(
    xp: Any,
    common: Mapping[str, Any],
    keys: Sequence[tuple[Any, bool]],
    key_of_leaf: Sequence[int],
    grad_scale: Any,
    weight_decay: float,
    learning_rate: float,
) -> list[dict[str, Any]]:
    """Each leaf's scalars for a step: one shared mapping per key of :func:`leaf_keys`.

    Parameters
    ----------
    xp : namespace
        The arrays' namespace (to cast ``grad_scale`` to each key's dtype).
    common : dict
        The scalars every leaf gets (learning rate, betas, bias corrections,
        ``clip_value``); used as it is when there is one key.
    keys, key_of_leaf
        From :func:`leaf_keys`.
    grad_scale : 0-D array or None
        The global-norm clip factor, added as ``"grad_scale"`` in each key's dtype.
    weight_decay : float
        λ, added with ``"decay"`` :math:`= \\alpha\\lambda` for decayed keys.
    learning_rate : float
        This step's α.

    Returns
    -------
    list of dict
        One mapping per leaf; leaves of one key share the same object.
    """
    shared = []
    for dtype, is_decayed in keys:
        hp = common if len(keys) == 1 else dict(common)
        if grad_scale is not None:
            hp["grad_scale"] = xp.astype(grad_scale, dtype)
        if is_decayed:
            hp["weight_decay"] = weight_decay
            hp["decay"] = learning_rate * weight_decay
        shared.append(hp)
    if len(shared) == 1:
        return shared * len(key_of_leaf)
    return [shared[index] for index in key_of_leaf]
