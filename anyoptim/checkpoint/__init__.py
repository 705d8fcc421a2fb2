"""Checkpoints: parameters and optimizer state saved by leaf name in safetensors files, and resumable training.

A checkpoint is one safetensors file: every parameter as the tensor
``params/<leaf name>``, every state slot as ``state/<slot>/<leaf name>``, and
JSON metadata (format version, optimizer class and settings, step count,
skipped steps, tree structure, dtypes, ``extra``).  Any safetensors reader can
open it; nothing in it is pickled or executed.

======================  ==================================================
:func:`save`            write params and state, atomically
:func:`load`            read them back onto ``like``'s library, device and layout
:func:`read_info`       what a file holds, from its header alone
:func:`read_optimizer`  the optimizer it was saved with, schedule included
:func:`resumable_fit`   :func:`anyoptim.fit` that writes a checkpoint and resumes from it
======================  ==================================================

safetensors (``pip install anyoptim[checkpoint]``) is imported only when a
file is written or read, never by ``import anyoptim``.
"""

from .files import FORMAT_VERSION, CheckpointError
from .rebuild import read_optimizer
from .restore import CheckpointInfo, CheckpointWarning, load, read_info
from .resume import resumable_fit
from .store import save

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointWarning",
    "load",
    "read_info",
    "read_optimizer",
    "resumable_fit",
    "save",
]
