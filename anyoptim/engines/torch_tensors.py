"""What the torch engine asks of a tensor: whether a fused engine can view it, whether it can be written in place.

And the views themselves: :class:`StorageViews` makes NumPy (``Tensor.numpy``)
or CuPy (DLPack) views of torch storage for
:class:`~anyoptim.engines.torch_bridge.TorchStep`, one view per storage so
leaves laid back to back stay one span.  Nothing here imports torch until it is
called (:func:`torch_module`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["FUSED_TORCH_DTYPES", "StorageViews", "fused_dtypes", "hp_views", "torch_module", "unwritable", "viewable"]

#: The dtypes whose tensors the fused engines update through views; others run the rule with torch.
FUSED_TORCH_DTYPES = ("float32", "float64")


@functools.cache
def torch_module() -> Any:
    """Import torch, once: this module's functions import it when first called, never at import."""
    import torch

    return torch


@functools.cache
def fused_dtypes() -> frozenset:
    """The torch dtypes of :data:`FUSED_TORCH_DTYPES`."""
    torch = torch_module()
    return frozenset(getattr(torch, name) for name in FUSED_TORCH_DTYPES)


def viewable(tensor: Any, device_type: str) -> bool:
    """Whether ``tensor`` can be handed to a fused engine as a view: dense, C-contiguous, of a fused dtype."""
    torch = torch_module()
    return (
        isinstance(tensor, torch.Tensor)
        and tensor.layout is torch.strided
        and tensor.dtype in fused_dtypes()
        and (tensor.is_cpu if device_type == "cpu" else tensor.device.type == device_type)
        and tensor.is_contiguous()
        and not (tensor.is_neg() or tensor.is_conj() or tensor.is_inference())
    )


def unwritable(tensor: Any) -> str | None:
    """Why ``tensor`` cannot be updated in place outside autograd, or None where it can.

    Parameters
    ----------
    tensor : torch.Tensor
        A parameter or a state array of a step.

    Returns
    -------
    str or None
        What is wrong and what to do, for a message naming the tensor: an inference tensor (made under
        :func:`torch.inference_mode`, which refuses writes outside it), or one whose elements share memory (a
        stride of 0, as ``expand()`` makes).

    Examples
    --------
    >>> import torch
    >>> from anyoptim.engines.torch_tensors import unwritable
    >>> print(unwritable(torch.zeros(3)))
    None
    >>> unwritable(torch.zeros(1).expand(3))[:46]
    'a tensor whose elements share memory (a stride'
    """
    if tensor.is_inference():
        return (
            "an inference tensor (made under torch.inference_mode()), which cannot be updated in place outside "
            "it: make it outside inference mode (or pass t.clone() made outside it)"
        )
    if any(stride == 0 and size > 1 for size, stride in zip(tensor.shape, tensor.stride(), strict=True)):
        return (
            "a tensor whose elements share memory (a stride of 0, as expand() makes): an update in place would "
            "write each of them several times; pass a tensor of its own (t.clone())"
        )
    return None


class StorageViews:
    """Views of tensors made by ``view`` (``Tensor.numpy``, ``cupy.from_dlpack``): one view of each whole storage,
    sliced, so leaves that lie back to back in one storage are views of one array (one span)."""

    def __init__(self, view: Callable[[Any], Any]) -> None:
        self.view = view
        self.wholes: dict[tuple[int, Any], Any] = {}

    def __call__(self, tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.dtype)
        whole = self.wholes.get(key)
        if whole is None:
            length = storage.nbytes() // tensor.element_size()
            whole = self.view(tensor.detach().as_strided((length,), (1,), 0))
            self.wholes[key] = whole
        start = tensor.storage_offset()
        return whole[start : start + tensor.numel()].reshape(tuple(tensor.shape))


def hp_views(hps: Sequence[Mapping[str, Any]], view: Callable[[Any], Any]) -> list[Mapping[str, Any]]:
    """``hps`` with every tensor scalar (the global-norm scale) as a view; shared mappings stay shared."""
    torch = torch_module()
    made: dict[int, Mapping[str, Any]] = {}
    out = []
    for hp in hps:
        found = made.get(id(hp))
        if found is None:
            found = {k: view(v.detach()) if isinstance(v, torch.Tensor) else v for k, v in hp.items()}
            made[id(hp)] = found
        out.append(found)
    return out
