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
    """Weight-decay mask that decays every parameter (torch.optim's behaviour).

    Parameters
    ----------
    name : str
        The leaf's name in the parameter tree, its keys joined by dots (``"layer.W"``).
    leaf : array
        The parameter array (not read).

    Returns
    -------
    bool
        Always True.

    See Also
    --------
    decay_weights_only : The default mask of AdamW and Lion.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> anyoptim.transforms.decay_all("b1", np.zeros(3))
    True
    >>> opt = anyoptim.AdamW(weight_decay_mask=anyoptim.transforms.decay_all)  # as torch.optim.AdamW
    """
    return True


def decay_weights_only(name: str, leaf: Any) -> bool:
    """Weight-decay mask that spares biases and normalisation scales.

    A leaf is decayed when it has at least two dimensions and the last part of
    its name is not bias-like (``b``, ``b1``, ``b2``, ..., ``bias``, ``biases``;
    any case).  So the course's ``W1`` is decayed and ``b1`` is not, whatever
    its shape, and a 1-D scale or offset is never decayed.

    Parameters
    ----------
    name : str
        The leaf's name in the parameter tree, its keys joined by dots (``"layer.W"``).
    leaf : array
        The parameter array; only its number of dimensions is read.

    Returns
    -------
    bool
        Whether the leaf is decayed.

    See Also
    --------
    decay_all : Decay every parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.transforms import decay_weights_only
    >>> decay_weights_only("W1", np.zeros((2, 3))), decay_weights_only("b1", np.zeros((1, 3)))
    (True, False)
    >>> decay_weights_only("layer.scale", np.zeros(3)), decay_weights_only("layer.bias", np.zeros((2, 2)))
    (False, False)
    """
    return len(leaf.shape) >= 2 and not _BIAS_NAME.match(name.rsplit(".", 1)[-1])


def frozen_mask(mask: Any) -> Any:
    """A weight-decay mask as the optimizer keeps it: a callable as is, a tree of bools copied.

    The copy means that changing the caller's dict later changes nothing here
    (the step's fast path would not see it); a malformed tree or a leaf that is
    not a bool fails now, not at the first step.

    Parameters
    ----------
    mask : callable or tree of bool
        ``mask(name, leaf) -> bool``, or a tree of bools shaped like the parameters.

    Returns
    -------
    callable or tree of bool
        ``mask`` itself if it is callable, else a copy of the tree.

    Raises
    ------
    TypeError
        If a leaf of the tree is not a bool, or a key is not a string.
    ValueError
        If a key of the tree is empty or holds a dot.

    Examples
    --------
    >>> from anyoptim.transforms import frozen_mask
    >>> mask = {"W": True, "b": False}
    >>> frozen = frozen_mask(mask)
    >>> mask["b"] = True
    >>> frozen
    {'W': True, 'b': False}
    """
    if callable(mask):
        return mask
    names, flags, treedef = tree_flatten(mask)
    for name, flag in zip(names, flags, strict=True):
        if not isinstance(flag, bool):
            raise TypeError(f"weight_decay_mask[{name!r}] must be a bool, got {flag!r}")
    return tree_unflatten(treedef, flags)


def mask_values(mask: Any, names: list[str], leaves: list[Any], treedef: TreeDef) -> list[bool]:
    """Which leaves a weight-decay mask (a callable or a tree of bools) decays.

    Parameters
    ----------
    mask : callable or tree of bool
        ``mask(name, leaf) -> bool``, or a tree of bools with the structure of the parameters.
    names : list of str
        The parameters' leaf names, as :func:`anyoptim.tree.tree_flatten` gives them.
    leaves : list of arrays
        The parameter arrays, in the same order.
    treedef : TreeDef
        The parameters' tree structure, to check a tree ``mask`` against.

    Returns
    -------
    list of bool
        One flag per leaf, in leaf order: True where the leaf is decayed.

    Raises
    ------
    TypeError
        If a leaf of a tree ``mask`` is not a bool.
    ValueError
        If a tree ``mask`` does not have the parameters' structure.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.transforms import decay_weights_only, mask_values
    >>> from anyoptim.tree import tree_flatten
    >>> names, leaves, treedef = tree_flatten({"W": np.ones((2, 2)), "b": np.ones(2)})
    >>> names, mask_values(decay_weights_only, names, leaves, treedef)
    (['W', 'b'], [True, False])
    >>> mask_values({"W": False, "b": True}, names, leaves, treedef)
    [False, True]
    """
    if callable(mask):
        return [bool(mask(name, leaf)) for name, leaf in zip(names, leaves, strict=True)]
    _, flags, mask_def = tree_flatten(mask)
    check_same_structure(treedef, mask_def, what="weight_decay_mask", like="params")
    for name, flag in zip(names, flags, strict=True):
        if not isinstance(flag, bool):
            raise TypeError(f"weight_decay_mask[{name!r}] must be a bool, got {flag!r}")
    return flags


def first_nonfinite(xp: Any, names: list[str], leaves: list[Any]) -> str | None:
    """The name of the first leaf holding NaN or infinity, or None (reads one flag per leaf back to the host).

    Parameters
    ----------
    xp : module
        The leaves' array namespace (:mod:`numpy`, or an Array API namespace).
    names : list of str
        The leaves' names, in the same order as ``leaves``.
    leaves : list of arrays
        The arrays to check, of any shape and floating-point dtype.

    Returns
    -------
    str or None
        The name of the first leaf with a NaN or infinite element; None if every
        element is finite.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.transforms import first_nonfinite
    >>> first_nonfinite(np, ["W", "b"], [np.ones(2), np.array([1.0, np.inf])])
    'b'
    >>> print(first_nonfinite(np, ["W", "b"], [np.ones(2), np.ones(3)]))
    None
    """
    for name, leaf in zip(names, leaves, strict=True):
        if not bool(xp.all(xp.isfinite(leaf))):
            return name
    return None


def clip_factor(xp: Any, leaves: list[Any], max_norm: float) -> Any:
    r"""The global-norm clip factor :math:`\min(1, c / \lVert g \rVert_2)` over all leaves, a 0-D array.

    An infinite norm (an infinite element anywhere) gives 0, as torch.optim's
    ``clip_grad_norm_`` and optax's ``clip_by_global_norm`` do.

    The norm is accumulated in the widest dtype of the tree, and every leaf is
    divided by the largest magnitude first, so that neither float32 rounding nor
    overflow of the squares (gradients near the dtype's maximum) changes the
    factor: :math:`c/\lVert g\rVert = (c/a) / \lVert g/a \rVert` with :math:`a = \max|g|`.
    The scaled copy is one leaf at a time, so the extra memory is one leaf's.
    Computed with device-side operations only: no value is read back to the host.
    Multiplying every gradient by the factor is the clipping of Pascanu et al. (2013) [1]_.

    Parameters
    ----------
    xp : module
        The leaves' array namespace (:mod:`numpy`, or an Array API namespace).
    leaves : list of arrays
        The gradients, of any shapes and floating-point dtypes, on one device.
    max_norm : float
        :math:`c` > 0, the largest joint L2 norm allowed.

    Returns
    -------
    array
        The factor, 0-D, of the widest dtype of ``leaves`` and at least float32,
        on their device; 1 when the norm is at most :math:`c` or zero.

    References
    ----------
    .. [1] Pascanu, R.; Mikolov, T. and Bengio, Y., "On the difficulty of training recurrent neural
       networks", ICML 2013, arXiv:1211.5063.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.transforms import clip_factor
    >>> grads = [np.array([3.0]), np.array([4.0])]  # joint norm 5
    >>> clip_factor(np, grads, 1.0), clip_factor(np, grads, 10.0)
    (array(0.2), array(1.))
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
    # c / scale overflows (a warning, then min(inf, 1) = 1) for a subnormal largest element; below c * 2**-100 the
    # norm is far below c whatever the count, so the scale is raised there and the factor is 1 without overflow.
    ratio_scale = xp.maximum(scale, xp.full_like(scale, max_norm * 2.0**-100))
    factor = xp.where(total > 0, xp.minimum((max_norm / ratio_scale) / norm_of_scaled, one), one)
    # An infinite norm: min(1, c / inf) = 0, as torch.optim and optax have it (the infinite leaves become NaN).
    return xp.where(largest == xp.inf, xp.zeros_like(factor), factor)
