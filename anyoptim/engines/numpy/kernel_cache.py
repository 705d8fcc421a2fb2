"""The on-disk cache of compiled kernels, trusted only as far as it is checked (for the NumPy engine).

A shared library loaded into a process runs as that process's user, so a cached
library is loaded only when it is certainly the one this user built:

* **the directories**: the cache root and its ``kernels/`` directory are opened
  one level at a time, without following a symbolic link, and each open
  directory must be owned by this user and writable by no one else; everything
  below is reached through that open directory, so a directory swapped after the
  check is never used;
* **the file**: the library is opened once, without following a symbolic link,
  and the open file must be a regular file owned by this user and writable by no
  one else; its bytes must hash to the SHA-256 record (``<name>.sha256``, checked
  the same way) written next to it when it was built;
* **the load**: the process loads that same open file (``/proc/self/fd/N`` on
  Linux; elsewhere a private copy of the bytes that were checked), never the
  name again.

A truncated or otherwise damaged library fails the hash check before it is
mapped, so it never crashes the process; the caller builds it again.  Libraries
are written as a record and a library, each to a new name first, flushed and
then renamed into place.

This module uses the standard library only, and POSIX calls (``dir_fd``,
``O_NOFOLLOW``): :func:`supported` says whether this platform has them; where it
does not, the engine keeps no cache on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

__all__ = [
    "MAX_LIBRARY_BYTES",
    "RECORD_SUFFIX",
    "UntrustedCacheError",
    "install",
    "loadable_path",
    "open_directory",
    "open_verified",
    "supported",
]

#: The suffix of the SHA-256 record of a library (its hexadecimal digest, written when it was built).
RECORD_SUFFIX = ".sha256"

#: A cached library larger than this is not read (a kernel is some tens of KiB).
MAX_LIBRARY_BYTES = 64 << 20

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)


class UntrustedCacheError(OSError):
    """A cache directory or file failed a check (owner, permissions, kind, content hash)."""


def supported() -> bool:
    """Whether this platform can check the cache race-free (POSIX with ``dir_fd`` and ``O_NOFOLLOW``)."""
    return os.name == "posix" and bool(_NOFOLLOW) and os.open in os.supports_dir_fd


def _check(descriptor: int, is_kind, what: str) -> None:
    status = os.fstat(descriptor)
    if not is_kind(status.st_mode):
        raise UntrustedCacheError(f"{what} is not a {'directory' if is_kind is stat.S_ISDIR else 'regular file'}")
    if status.st_uid != os.geteuid():
        raise UntrustedCacheError(f"{what} is owned by uid {status.st_uid}, not by this user ({os.geteuid()})")
    if status.st_mode & 0o022:
        raise UntrustedCacheError(f"{what} is writable by others (mode {stat.S_IMODE(status.st_mode):o})")


def open_directory(directory: Path) -> int:
    """A descriptor of ``directory`` (the ``kernels/`` directory), made if missing, it and its parent checked.

    Each level is opened without following a symbolic link and must be owned by
    this user and writable by no one else.  The caller closes the descriptor.

    Raises
    ------
    OSError
        If a level cannot be made or opened, or fails a check (:class:`UntrustedCacheError`).
    """
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(directory.parent, _DIRECTORY_FLAGS)
    try:
        _check(descriptor, stat.S_ISDIR, str(directory.parent))
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory.name, 0o700, dir_fd=descriptor)
        inner = os.open(directory.name, _DIRECTORY_FLAGS, dir_fd=descriptor)
    finally:
        os.close(descriptor)
    try:
        _check(inner, stat.S_ISDIR, str(directory))
    except OSError:
        os.close(inner)
        raise
    return inner


def _read(descriptor: int, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := os.read(descriptor, 1 << 20):
        size += len(chunk)
        if size > limit:
            raise UntrustedCacheError(f"larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _open_checked(directory: int, name: str) -> int:
    descriptor = os.open(name, _FILE_FLAGS, dir_fd=directory)
    try:
        _check(descriptor, stat.S_ISREG, name)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def open_verified(directory: int, name: str) -> tuple[int, bytes]:
    """The library ``name`` in the open ``directory``: its open descriptor and its bytes, every check passed.

    The caller closes the descriptor.

    Raises
    ------
    FileNotFoundError
        If there is no such library (or no record of it).
    OSError
        If it is a symbolic link, fails a check, or its bytes do not hash to its
        record (:class:`UntrustedCacheError`): a damaged or foreign file.
    """
    descriptor = _open_checked(directory, name)
    try:
        data = _read(descriptor, MAX_LIBRARY_BYTES)
        record = _open_checked(directory, name + RECORD_SUFFIX)
        try:
            expected = _read(record, 256).decode("ascii", "replace").strip()
        finally:
            os.close(record)
        if hashlib.sha256(data).hexdigest() != expected:
            raise UntrustedCacheError(f"{name} does not match its SHA-256 record (damaged or replaced)")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, data


def _write_new(directory: int, name: str, data: bytes, mode: int) -> None:
    """Write ``data`` as ``name`` in the open ``directory``: to a new private name, flushed, then renamed."""
    partial = f".{name}.{secrets.token_hex(8)}.partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(partial, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial, dir_fd=directory)
        raise


def install(directory: int, name: str, data: bytes) -> None:
    """Store the library ``data`` as ``name`` in the open ``directory``, with its SHA-256 record.

    Raises
    ------
    OSError
        If the file system fails (a full disk, say); nothing partial is left.
    """
    _write_new(directory, name + RECORD_SUFFIX, hashlib.sha256(data).hexdigest().encode("ascii"), 0o600)
    _write_new(directory, name, data, 0o700)


def loadable_path(descriptor: int, data: bytes, private: Path, suffix: str) -> str:
    """A path that names the open, checked file ``descriptor``: ``/proc/self/fd/N`` where the system has it,
    else a new copy of ``data`` (the checked bytes) in this process's ``private`` directory."""
    if os.path.isdir("/proc/self/fd"):
        return f"/proc/self/fd/{descriptor}"
    handle, path = tempfile.mkstemp(suffix=suffix, dir=private)
    with os.fdopen(handle, "wb") as copy:
        copy.write(data)
    return path
