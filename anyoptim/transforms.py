"""Gradient processing around the update rules: weight-decay masks, global-norm clipping, non-finite checks.

The elementwise parts (scaling by the clip factor, value clipping, coupled and
decoupled weight decay) are terms of :class:`anyoptim.engines.program.Program`, so they
fuse with the update; this module holds what happens on whole trees before it:
which leaves are decayed, the clip factor (a reduction over every leaf), and
whether a gradient holds NaN or infinity.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ._namespace import device_of
from .tree import TreeDef, check_same_structure, tree_flatten, tree_unflatten

__all__ = ["clip_factor", "decay_all", "decay_weights_only", "first_nonfinite", "frozen_mask", "mask_values"]


_BIAS_NAME = re.compile(r"^(b\d*|bias(es)?)$", re.IGNORECASE)


def decay_all(name: str, leaf: Any) -> bool:
    """Weight-decay mask that decays every parameter (torch.optim's behaviour)."""
    return True


def decay_weights_only(name: str, leaf: Any) -> bool:
    """Weight-decay mask that spares biases and normalisation scales.

    A leaf is decayed when it has at least two dimensions and the last part of
    its name is not bias-like (``b``, ``b1``, ``b2``, ..., ``bias``, ``biases``;
    any case).  So the course's ``W1`` is decayed and ``b1`` is not, whatever
    its shape, and a 1-D scale or offset is never decayed.
    """
    return len(leaf.shape) >= 2 and not _BIAS_NAME.match(name.rsplit(".", 1)[-1])


def frozen_mask(mask: Any) -> Any:
    """A weight-decay mask as the optimizer keeps it: a callable as is, a tree of bools copied.

    The copy means that changing the caller's dict later changes nothing here
    (the step's fast path would not see it); a malformed tree or a leaf that is
    not a bool fails now, not at the first step.
    """
    if callable(mask):
        return mask
    names, flags, treedef = tree_flatten(mask)
    for name, flag in zip(names, flags, strict=True):
        if not isinstance(flag, bool):
            raise TypeError(f"weight_decay_mask[{name!r}] must be a bool, got {flag!r}")
    return tree_unflatten(treedef, flags)


def mask_values(mask: Any, names: list[str], leaves: list[Any], treedef: TreeDef) -> list[bool]:
    """Which leaves a weight-decay mask (a callable or a tree of bools) decays."""
    if callable(mask):
        return [bool(mask(name, leaf)) for name, leaf in zip(names, leaves, strict=True)]
    _, flags, mask_def = tree_flatten(mask)
    check_same_structure(treedef, mask_def, what="weight_decay_mask", like="params")
    for name, flag in zip(names, flags, strict=True):
        if not isinstance(flag, bool):
            raise TypeError(f"weight_decay_mask[{name!r}] must be a bool, got {flag!r}")
    return flags


def first_nonfinite(xp: Any, names: list[str], leaves: list[Any]) -> str | None:
    """The name of the first leaf holding NaN or infinity, or None (reads one flag per leaf back to the host)."""
    for name, leaf in zip(names, leaves, strict=True):
        if not bool(xp.all(xp.isfinite(leaf))):
            return name
    return None


def clip_factor(xp: Any, leaves: list[Any], max_norm: float) -> Any:
    r"""The global-norm clip factor :math:`\min(1, c / \lVert g \rVert_2)` over all leaves, a 0-D array.

    The norm is accumulated in the widest dtype of the tree, and every leaf is
    divided by the largest magnitude first, so that neither float32 rounding nor
    overflow of the squares (gradients near the dtype's maximum) changes the
    factor: :math:`c/\lVert g\rVert = (c/a) / \lVert g/a \rVert` with :math:`a = \max|g|`.
    The scaled copy is one leaf at a time, so the extra memory is one leaf's.
    Computed with device-side operations only: no value is read back to the host.
    """
    # At least float32: float16 sums of squares overflow after about 65,504 unit elements.
    wide = xp.result_type(xp.float32, *(leaf.dtype for leaf in leaves))
    flat = [xp.reshape(leaf, (-1,)) for leaf in leaves if math.prod(leaf.shape)]
    if not flat:
        return xp.ones((), dtype=wide, device=device_of(leaves[0]))
    largest = None
    for leaf in flat:
        # max and -min instead of max(abs(.)): no leaf-sized temporary.
        magnitude = xp.astype(xp.maximum(xp.max(leaf), -xp.min(leaf)), wide)
        largest = magnitude if largest is None else xp.maximum(largest, magnitude)
    one = xp.ones_like(largest)
    scale = xp.where(largest > 0, largest, one)
    total = None
    for leaf in flat:
        scaled = xp.astype(leaf, wide, copy=False) / scale
        part = xp.vecdot(scaled, scaled)
        total = part if total is None else total + part
    norm_of_scaled = xp.where(total > 0, xp.sqrt(total), one)
    return xp.where(total > 0, xp.minimum((max_norm / scale) / norm_of_scaled, one), one)
