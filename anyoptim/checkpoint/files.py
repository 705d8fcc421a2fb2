"""The checkpoint file itself: safetensors tensors plus JSON metadata, written atomically, read defensively.

Nothing here knows optimizers: :func:`write` takes named NumPy arrays and a
metadata mapping, :func:`read` returns a :class:`CheckpointFile` whose header
(names, shapes, dtypes, metadata) has been checked before any tensor is read.
safetensors is imported inside the functions, so ``import anyoptim`` never
imports it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._namespace import array_namespace, backend_name

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointError", "CheckpointFile", "read", "to_host", "write"]

#: The ``format`` metadata entry of every anyoptim checkpoint, and the layout version this code writes and reads.
FORMAT = "anyoptim.checkpoint"
FORMAT_VERSION = 1

#: safetensors dtype codes anyoptim checkpoints hold, and their NumPy names.
DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match what it is loaded into (a ``ValueError``).

    Raised by :func:`anyoptim.load`, :func:`~anyoptim.checkpoint.read_info` and
    :func:`~anyoptim.checkpoint.resumable_fit` with a one-line message naming
    the file and every difference found; catch ``ValueError`` to handle it with
    the library's other input errors.

    Examples
    --------
    >>> import os, tempfile, anyoptim
    >>> path = os.path.join(tempfile.mkdtemp(), "not-a-checkpoint.safetensors")
    >>> with open(path, "wb") as file:
    ...     _ = file.write(b"hello")
    >>> try:
    ...     anyoptim.load(path)
    ... except anyoptim.checkpoint.CheckpointError as error:
    ...     print("refused:", str(error).split(" is ")[1].split(" (")[0])
    refused: not a readable safetensors checkpoint
    """


def _install_hint() -> str:
    return "anyoptim checkpoints need safetensors: pip install safetensors (or anyoptim[checkpoint])"


def _safetensors() -> Any:
    try:
        import safetensors.numpy  # noqa: F401  (the NumPy API: no torch needed)
        from safetensors import safe_open
    except ImportError:
        raise ImportError(_install_hint()) from None
    return safe_open


def to_host(leaf: Any) -> np.ndarray:
    """A C-contiguous NumPy array with ``leaf``'s values (copied from a device when the library needs it)."""
    name = backend_name(array_namespace(leaf))
    if name == "cupy":
        host = leaf.get()
    elif name == "torch":
        host = leaf.detach().cpu().numpy()
    else:
        try:
            host = np.asarray(leaf)
        except (TypeError, ValueError, RuntimeError):
            host = np.from_dlpack(leaf)
    return np.asarray(host, order="C")  # (ascontiguousarray would make a 0-D array 1-D)


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` and ``metadata`` to ``path`` atomically; return the path.

    The file is written to a temporary file in the same folder, flushed to disk
    (``fsync``) and renamed over ``path``, so a crash or ``kill -9`` at any
    moment leaves either the previous file or the complete new one.
    """
    _safetensors()
    from safetensors.numpy import save_file

    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"cannot save {target}: folder {folder} does not exist")
    if target.is_dir():
        raise CheckpointError(f"cannot save to {target}: it is a folder")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        directory = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return target
    try:
        os.fsync(directory)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(directory)
    return target


@dataclass(frozen=True)
class CheckpointFile:
    """A checked header of a checkpoint file: where it is, its metadata, each tensor's shape and dtype.

    Tensors are read one at a time by :meth:`tensor`, so loading never holds two
    copies of the data.
    """

    path: Path
    metadata: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    _handle: Any = field(repr=False, compare=False, default=None)
    _raw: Any = field(repr=False, compare=False, default=None)
    _offsets: dict[str, tuple[int, int]] = field(repr=False, compare=False, default_factory=dict)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a new NumPy array."""
        try:
            return self._handle.get_tensor(name)
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read ({error})") from None

    def close(self) -> None:
        """Close the file opened for :meth:`read_into` (the safetensors handle closes itself)."""
        if self._raw is not None:
            self._raw.close()

    def read_into(self, name: str, target: Any) -> bool:
        """Read tensor ``name`` straight into ``target``'s memory; False (nothing read) if ``target`` cannot take it.

        ``target`` must be a writable, C-contiguous NumPy array of the tensor's
        shape and dtype in little-endian order; the bytes go from the file into it
        with no array in between (one copy of the data, not two).
        """
        if name not in self._offsets or self._raw is None or self._raw.closed or not isinstance(target, np.ndarray):
            return False
        begin, end = self._offsets[name]
        wanted = np.dtype(self.dtypes[name]).newbyteorder("<")
        if not (target.flags.c_contiguous and target.flags.writeable) or target.dtype != wanted:
            return False
        if tuple(target.shape) != self.shapes[name] or target.nbytes != end - begin:
            return False
        view = memoryview(target.reshape(-1)).cast("B") if target.nbytes else memoryview(b"")
        position = begin
        while view:
            read = _read_at(self._raw, view, position)
            if read <= 0:
                raise CheckpointError(f"{self.path}: tensor {name!r} is cut short (the file changed while read)")
            view, position = view[read:], position + read
        return True


def _read_at(raw: Any, view: memoryview, position: int) -> int:
    """Read into ``view`` from byte ``position`` of the open file ``raw``; the count read (0 at the end).

    ``os.preadv`` where the platform has it (it leaves the file position alone), else seek and ``readinto``
    (Windows, older macOS).
    """
    if hasattr(os, "preadv"):
        return os.preadv(raw.fileno(), [view], position)
    raw.seek(position)
    return raw.readinto(view) or 0


def _decode_metadata(path: Path, raw: dict[str, str] | None) -> dict[str, Any]:
    if not raw or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an anyoptim checkpoint (no format={FORMAT!r})")
    decoded: dict[str, Any] = {}
    for key, text in raw.items():
        try:
            decoded[key] = json.loads(text) if key != "format" else text
        except (json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"{path}: metadata entry {key!r} is not valid JSON") from None
    version = decoded.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: metadata entry 'format_version' is missing or not an integer")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this anyoptim reads version {FORMAT_VERSION}"
            + (" (written by a newer anyoptim: upgrade to read it)" if version > FORMAT_VERSION else "")
        )
    return decoded


def read(path: str | os.PathLike) -> CheckpointFile:
    """Open and check a checkpoint: a clear :class:`CheckpointError` for anything that is not a readable one.

    safetensors checks the header (its JSON, every tensor's offsets against the
    file's size), so a truncated, damaged or hostile file fails here, before any
    tensor is read; no code in the file is ever executed (the format has none).
    """
    safe_open = _safetensors()
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"checkpoint {source} does not exist or is not a file")
    # The file is opened twice (by safetensors for the header and the tensors it reads, and here for the bytes read
    # straight into their targets): both opens must be of one file, not of two checkpoints a concurrent save
    # renamed over one another.  The raw open comes first and holds that file, so if the path still names it after
    # safetensors opened it, safetensors opened it too (a save never renames an old file back).
    for _attempt in range(_OPEN_ATTEMPTS):
        raw = _open_raw(source)
        try:
            checked = _read_checked(safe_open, source, raw)
        except BaseException:
            if raw is not None:
                raw.close()
            raise
        if checked is not None:
            return checked
        raw.close()
    raise CheckpointError(f"{source} kept being replaced while it was read (a save running at the same time?)")


#: How many times :func:`read` opens a checkpoint that a concurrent save replaced while it was being opened.
_OPEN_ATTEMPTS = 5


def _open_raw(source: Path) -> Any:
    try:
        return open(source, "rb", buffering=0)
    except OSError:
        return None


def _same_file(raw: Any, source: Path) -> bool:
    try:
        held, named = os.fstat(raw.fileno()), os.stat(source)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _read_checked(safe_open: Any, source: Path, raw: Any) -> CheckpointFile | None:
    """:func:`read` with ``raw`` already open; None if the path was replaced between the two opens."""
    try:
        handle = safe_open(str(source), framework="numpy")
        raw_metadata = handle.metadata()
        names = list(handle.keys())
        shapes, dtypes = {}, {}
        for name in names:
            part = handle.get_slice(name)
            shapes[name] = tuple(int(size) for size in part.get_shape())
            dtypes[name] = part.get_dtype()
    except Exception as error:  # safetensors raises SafetensorError, OSError, ValueError...
        message = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"{source} is not a readable safetensors checkpoint ({message})") from None
    metadata = _decode_metadata(source, raw_metadata)
    odd = sorted(name for name, code in dtypes.items() if code not in DTYPES)
    if odd:
        raise CheckpointError(f"{source}: tensors {odd} have dtypes {[dtypes[n] for n in odd]}; expected F16/F32/F64")
    if raw is not None and not _same_file(raw, source):
        return None
    offsets = _data_offsets(raw, shapes, dtypes)
    return CheckpointFile(source, metadata, shapes, {n: DTYPES[c] for n, c in dtypes.items()}, handle, raw, offsets)


def _data_offsets(raw: Any, shapes: dict, dtypes: dict) -> dict[str, tuple[int, int]]:
    """Each tensor's absolute byte range in the open file ``raw``, from its header (already checked by safetensors).

    Used only to read tensors straight into their targets (:meth:`CheckpointFile.read_into`); the ranges are
    checked against the shapes and dtypes safetensors read and against the file's size, and any doubt leaves
    them out, so tensors are then read by safetensors.
    """
    if raw is None:
        return {}
    try:
        raw.seek(0)
        length = int.from_bytes(raw.read(8), "little")
        header = json.loads(raw.read(length)) if 0 < length <= 100 * 2**20 else {}
        size, start = os.fstat(raw.fileno()).st_size, 8 + length
        offsets = {}
        for name, shape in shapes.items():
            entry = header.get(name) or {}
            begin, end = (int(x) for x in entry.get("data_offsets", (-1, -1)))
            itemsize = np.dtype(DTYPES.get(dtypes[name], "float64")).itemsize
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if entry.get("dtype") != dtypes[name] or list(entry.get("shape", ())) != list(shape):
                return {}
            if not 0 <= begin <= end or end - begin != count * itemsize or start + end > size:
                return {}
            offsets[name] = (start + begin, start + end)
    except (ValueError, TypeError, AttributeError, RecursionError, OSError):
        return {}
    return offsets
