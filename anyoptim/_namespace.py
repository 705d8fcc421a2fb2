"""The one module that talks to array-api-compat.

Everything else in anyoptim asks this module for the array namespace of a
parameter tree, for the device its arrays live on, and for new arrays (state
slots, scalars) created on that device with the parameters' dtype.  Keeping
this in one place means a new array library needs changes here and in
``engines/`` only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import array_api_compat

__all__ = [
    "array_namespace",
    "backend_name",
    "check_leaves",
    "default_integer_dtype",
    "device_of",
    "is_array",
    "is_floating",
    "is_mutable",
]


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array of a library that array-api-compat supports."""
    return array_api_compat.is_array_api_obj(x) and not isinstance(x, (int, float, complex, bool))


def array_namespace(x: Any) -> Any:
    """The (compat-wrapped) Array API namespace of one array."""
    return array_api_compat.array_namespace(x)


def device_of(x: Any) -> Any:
    """The device an array lives on."""
    return array_api_compat.device(x)


def backend_name(xp: Any) -> str:
    """A short, stable name for a namespace: numpy, cupy, torch, jax, array_api_strict, ...

    Engines are chosen by this name; nothing outside ``engines/`` should branch on it.
    """
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", type(xp).__name__)


def is_mutable(xp: Any) -> bool:
    """Whether arrays of this namespace support in-place item assignment."""
    return not array_api_compat.is_jax_namespace(xp)


def is_floating(xp: Any, dtype: Any) -> bool:
    """Whether ``dtype`` is a real floating-point dtype of ``xp`` (False for a dtype ``xp`` does not know)."""
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except TypeError:  # NumPy refuses dtypes added from outside (ml_dtypes' bfloat16)
        return False


def check_leaves(names: Sequence[str], leaves: Sequence[Any], *, what: str = "params") -> tuple[Any, Any]:
    """Resolve the one namespace and device shared by every leaf of a tree.

    Parameters
    ----------
    names, leaves
        The leaves of a flattened tree and their names (see :mod:`anyoptim.tree`).
    what
        How the tree is called in error messages ("params", "grads").

    Returns
    -------
    xp, device
        The array namespace and the device of every leaf.

    Raises
    ------
    TypeError
        If a leaf is not an array (None: a torch ``.grad`` that backward never
        filled), is a sparse torch tensor, is not of a real floating dtype, or
        comes from a different array library than the first leaf.
    ValueError
        If the tree is empty or a leaf lives on a different device than the first.
    """
    if not leaves:
        raise ValueError(f"{what} is empty: an optimizer needs at least one array")
    first_name, first = names[0], leaves[0]
    if not is_array(first):
        raise TypeError(_not_an_array(what, first_name, first))
    xp = array_namespace(first)
    device = device_of(first)
    torch = backend_name(xp) == "torch"
    for name, leaf in zip(names, leaves, strict=False):
        if not is_array(leaf):
            raise TypeError(_not_an_array(what, name, leaf))
        if torch and str(getattr(leaf, "layout", "torch.strided")) != "torch.strided":
            raise TypeError(
                f"{what}[{name!r}] is a {str(leaf.layout).partition('.')[2]} tensor: optimizers update dense "
                "arrays; pass dense gradients (nn.Embedding(sparse=False), or g.to_dense()), or use "
                "torch.optim.SparseAdam for sparse ones"
            )
        leaf_xp = array_namespace(leaf)
        if leaf_xp is not xp:
            raise TypeError(
                f"{what}[{name!r}] is a {backend_name(leaf_xp)} array but {what}[{first_name!r}] "
                f"is a {backend_name(xp)} array: one tree must use one array library"
            )
        if not is_floating(xp, leaf.dtype):
            hint = (
                " (NumPy has no bfloat16: use float16 or float32, or torch or JAX arrays)"
                if "bfloat16" in str(leaf.dtype)
                else ""
            )
            raise TypeError(
                f"{what}[{name!r}] has dtype {leaf.dtype}; optimizers need real floating-point arrays{hint}"
            )
        leaf_device = device_of(leaf)
        if leaf_device != device:
            raise ValueError(
                f"{what}[{name!r}] is on device {leaf_device} but {what}[{first_name!r}] is on "
                f"{device}: move every array to one device"
            )
    return xp, device


def _not_an_array(what: str, name: str, leaf: Any) -> str:
    if leaf is None:
        return (
            f"{what}[{name!r}] is None, not an array (a torch parameter's .grad is None until backward() reaches "
            "it: did backward() run before the grads tree was built, and does the loss use this parameter?)"
        )
    if isinstance(leaf, Iterator) or hasattr(leaf, "named_parameters"):  # a generator, or a torch nn.Module
        return (
            f"{what}[{name!r}] is a {type(leaf).__name__}, not an array: pass a tree of arrays, such as "
            "anyoptim.tree.nest(model.named_parameters()) or a list(...) of the arrays"
        )
    return f"{what}[{name!r}] is a {type(leaf).__name__}, not an array"


def default_integer_dtype(xp: Any, device: Any = None) -> Any:
    """The namespace's default integer dtype (int32 on JAX without x64, int64 elsewhere)."""
    return xp.__array_namespace_info__().default_dtypes(device=device)["integral"]
