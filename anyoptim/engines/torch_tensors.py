"""What the torch engine asks of a tensor: whether a fused engine can view it, whether it can be written in place.

And the views themselves: :class:`StorageViews` makes NumPy (``Tensor.numpy``)
or CuPy (DLPack) views of torch storage for
:class:`~anyoptim.engines.torch_bridge.TorchStep`, one view per storage so
leaves laid back to back stay one span.  Nothing here imports torch until it is
called (:func:`torch_module`).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "FUSED_TORCH_DTYPES",
    "StorageViews",
    "fused_dtypes",
    "hp_views",
    "one_per_version_counter",
    "share_one_counter",
    "torch_module",
    "unwritable",
    "viewable",
]

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


#: id(view) -> the token of the version counter it shares with the other views of its buffer (share_one_counter).
_COUNTER_OF: dict[int, object] = {}


def share_one_counter(views: Sequence[Any]) -> None:
    """Record that ``views``, views this package made of one buffer, hold one version counter.

    A view shares its base's version counter for life (``.data =`` and ``set_()`` keep it), so
    :func:`one_per_version_counter` bumps one of them for all.  Each entry leaves with its tensor.

    Parameters
    ----------
    views : sequence of torch.Tensor
        Views of one buffer (torch's view operations: slices, reshapes of them).

    Examples
    --------
    >>> import torch
    >>> from anyoptim.engines.torch_tensors import one_per_version_counter, share_one_counter
    >>> buffer = torch.zeros(4)
    >>> views = [buffer[:2], buffer[2:]]
    >>> share_one_counter(views)
    >>> len(one_per_version_counter(views))
    1
    """
    token = object()
    for view in views:
        _COUNTER_OF[id(view)] = token
        weakref.finalize(view, _COUNTER_OF.pop, id(view), None)


def one_per_version_counter(tensors: Sequence[Any]) -> list[Any]:
    """One tensor of ``tensors`` per version counter they hold: bumping those bumps every one of them.

    Tensors recorded by :func:`share_one_counter` (the state slots
    :meth:`~anyoptim.engines.torch_bridge.TorchEngine.init_slots` lays out, views of one buffer per slot and
    dtype) hold their buffer's counter: a step's 2n written slot tensors of Adam then hold 2 counters, not 2n.
    Every other tensor counts as its own (tensors that share a counter unrecorded are bumped more than once,
    which torch allows).

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        Tensors a step writes outside torch's own operations.

    Returns
    -------
    list of torch.Tensor
        The first tensor of each counter, in order.

    Examples
    --------
    >>> import torch
    >>> from anyoptim.engines.torch_tensors import one_per_version_counter
    >>> [t.shape for t in one_per_version_counter([torch.zeros(2), torch.zeros(3)])]
    [torch.Size([2]), torch.Size([3])]
    """
    seen: set[int] = set()
    kept = []
    for tensor in tensors:
        token = _COUNTER_OF.get(id(tensor))
        key = id(tensor) if token is None else id(token)
        if key not in seen:
            seen.add(key)
            kept.append(tensor)
    return kept
