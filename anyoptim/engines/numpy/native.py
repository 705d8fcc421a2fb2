"""Build and load C kernels with the system's C compiler, cached on disk (for the NumPy engine).

The NumPy engine prints a traced rule as one C loop (:mod:`anyoptim.engines.numpy.c_printer`);
this module turns that source into a function Python can call:

* **which compiler**: ``$CC``, else the compiler Python was built with, else
  ``cc``, ``gcc`` or ``clang`` on the ``PATH``;
* **which flags**: :data:`FLAGS`: optimised and vectorised, but without
  ``-ffast-math`` and without contracting ``a*b + c`` into one fused multiply-add
  (``-ffp-contract=off``), so every operation is rounded as NumPy rounds it
  (the rule's explicit :func:`~anyoptim.engines.muladd.muladd` aside);
* **where**: a per-user cache directory (``$ANYOPTIM_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/anyoptim`` or ``~/.cache/anyoptim``), one shared library per
  source, keyed by a hash of the source, the compiler's identity and the flags,
  built in the process's private temporary directory, then stored with a
  SHA-256 record; a cached library is loaded only if it, its record and every
  directory above it up to the cache root pass the checks of
  :mod:`anyoptim.engines.numpy.kernel_cache` (owned by this user, writable by no
  one else, no symbolic links, the bytes matching the record), and what is
  loaded is the very file that was checked.  Anything else is rebuilt;
* **how it is called**: ``ctypes``, one argument (the address of a frame the
  caller fills once), which costs about a tenth of a microsecond;
* **what is remembered**: per process, each loaded kernel and each kernel that
  failed to build (keyed like the cache, so a failure is never retried for that
  kernel and never stops another from building), and which failures were
  warned about.  These tables are guarded by locks, which a forked child
  starts with released.

Whether the engine uses compiled kernels at all is ``ANYOPTIM_NUMPY_KERNELS``
(:func:`kernels_choice`): ``auto`` (the default: compiled kernels when a working
compiler is found, NumPy ufuncs otherwise), ``c`` (compiled kernels, or an error
saying why not) or ``ufunc`` (never compile).

This module uses the standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from . import kernel_cache

__all__ = [
    "FLAGS",
    "KERNEL_CHOICES",
    "KernelBuildError",
    "KernelBuildWarning",
    "KernelCacheWarning",
    "cache_dir",
    "compiler",
    "compiler_found",
    "kernels_choice",
    "load_kernel",
    "warn_fallback",
]

#: Values of ``ANYOPTIM_NUMPY_KERNELS`` (and of ``NumpyEngine(kernels=...)``).
KERNEL_CHOICES = ("auto", "c", "ufunc")

#: Compiler flags of every kernel.  ``-fno-math-errno`` lets ``sqrt`` vectorise
#: (it only stops errno from being set); ``-ffp-contract=off`` keeps ``a*b + c``
#: two roundings, as NumPy computes it.  No ``-march=native``: a cached library
#: must run on any CPU of its architecture (the kernels carry an AVX2 clone
#: of their loop on x86-64 Linux instead, see :mod:`anyoptim.engines.numpy.c_printer`).
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno")

_COMPILE_SECONDS = 120


class KernelBuildError(RuntimeError):
    """A C kernel could not be built or loaded (no compiler, or the compiler failed).

    Attributes
    ----------
    kernel : str or None
        The kernel that failed, as :func:`load_kernel` names it (``symbol-hash``,
        its library's file name without the suffix); None where no kernel is
        concerned (no compiler at all).
    """

    kernel: str | None = None


class KernelCacheWarning(RuntimeWarning):
    """Issued once per process when the kernel cache directory fails a check: kernels are then built per process."""


class KernelBuildWarning(RuntimeWarning):
    """Issued once per kernel when ``auto`` runs NumPy ufuncs because that kernel failed to build."""


def kernels_choice() -> str:
    """``ANYOPTIM_NUMPY_KERNELS``, checked: ``"auto"`` (the default), ``"c"`` or ``"ufunc"``."""
    choice = os.environ.get("ANYOPTIM_NUMPY_KERNELS", "auto")
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"ANYOPTIM_NUMPY_KERNELS must be one of {', '.join(KERNEL_CHOICES)}, got {choice!r}")
    return choice


# --------------------------------------------------------------------------- the compiler


def _compiler_command() -> list[str] | None:
    """The C compiler command (with any flags it needs), or None if none is on this machine.

    ``$CC``, when set, is the only candidate: a compiler the user named is not
    silently swapped for another one.
    """
    if os.environ.get("CC"):
        candidates = [_split(os.environ["CC"])]
    else:
        built_with = sysconfig.get_config_var("CC")
        candidates = [_split(built_with)] if built_with else []
        candidates += [["cc"], ["gcc"], ["clang"]]
    for command in candidates:
        found = shutil.which(command[0]) if command else None
        if found:
            return [found, *command[1:]]
    return None


def _split(command: str) -> list[str]:
    """A compiler command line as words; none (no compiler) where it does not parse (``gcc "``)."""
    try:
        return shlex.split(command)
    except ValueError:
        return []


def _developer_tools_missing(command: list[str]) -> bool:
    """On macOS, whether ``command`` is Apple's stub that would ask to install the developer tools."""
    if sys.platform != "darwin" or not command[0].startswith("/usr/bin/"):
        return False
    try:
        done = subprocess.run(["xcode-select", "-p"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return True
    return done.returncode != 0


def _identity(command: list[str]) -> str:
    """What names the compiler's output: its ``--version`` text (changes with an upgrade)."""
    if _developer_tools_missing(command):
        raise KernelBuildError(f"{command[0]} needs the Xcode command-line tools, which are not installed")
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelBuildError(f"the C compiler {command[0]} does not run: {error}") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise KernelBuildError(f"the C compiler {command[0]} does not run: `--version` exited {done.returncode}")
    return done.stdout.strip()


_compiler_lock = threading.Lock()
_compiler: tuple[list[str], str] | KernelBuildError | None = None


def compiler() -> tuple[list[str], str]:
    """The compiler command and its identity, found once per process.

    Raises
    ------
    KernelBuildError
        If no C compiler is found (set ``CC`` to name one), or it does not run.
    """
    global _compiler
    with _compiler_lock:
        if _compiler is None:
            command = _compiler_command()
            try:
                if command is None:
                    raise KernelBuildError("no C compiler found (looked for $CC, Python's CC, cc, gcc, clang)")
                _compiler = (command, _identity(command))
            except KernelBuildError as error:
                _compiler = error
        if isinstance(_compiler, KernelBuildError):
            raise KernelBuildError(str(_compiler))
        return _compiler


def compiler_found() -> bool:
    """Whether :func:`compiler` finds a C compiler that runs (asked once per process)."""
    try:
        compiler()
    except KernelBuildError:
        return False
    return True


# --------------------------------------------------------------------------- the cache


def cache_dir() -> Path | None:
    """Where compiled kernels are kept: ``$ANYOPTIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/anyoptim``
    or ``~/.cache/anyoptim``, then ``kernels/``; None when no absolute home directory is known."""
    if os.environ.get("ANYOPTIM_CACHE_DIR"):
        root = Path(os.environ["ANYOPTIM_CACHE_DIR"])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "anyoptim"
    return root / "kernels" if root.is_absolute() else None


_fallback_dir: Path | None = None


def _private_dir() -> Path:
    """This process's own build directory (made by :func:`tempfile.mkdtemp`: mode 0700), removed at exit.

    Raises
    ------
    KernelBuildError
        If not even a temporary directory can be made.
    """
    global _fallback_dir
    if _fallback_dir is None:
        try:
            _fallback_dir = Path(tempfile.mkdtemp(prefix="anyoptim-kernels-"))
        except OSError as error:
            raise KernelBuildError(f"no directory to build kernels in: {error}") from None
        atexit.register(_remove_private_dir, _fallback_dir, os.getpid())
    return _fallback_dir


def _open_cache() -> int | None:
    """A descriptor of the checked cache directory (:func:`kernel_cache.open_directory`), or None.

    None where no cache directory is known, the platform cannot check it
    race-free, or it cannot be made or fails a check (owned by someone else,
    writable by others, a symbolic link): kernels are then built and loaded in
    :func:`_private_dir` only.
    """
    directory = cache_dir()
    if directory is None or not kernel_cache.supported():
        return None
    try:
        return kernel_cache.open_directory(directory)
    except kernel_cache.UntrustedCacheError as error:
        _warn_cache_once(directory, error)
        return None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and (directory.is_symlink() or directory.parent.is_symlink()):
            # a symbolic link where the cache or its root should be: said once, like any untrusted directory
            _warn_cache_once(directory, OSError(error.errno, "a symbolic link in the cache path is not followed"))
        return None


_cache_warned: set[str] = set()


def _warn_cache_once(directory: Path, error: OSError) -> None:
    with _warned_lock:
        if str(directory) in _cache_warned:
            return
        _cache_warned.add(str(directory))
    warnings.warn(
        f"anyoptim: the kernel cache {directory} is not used ({error}): compiled kernels are built again in "
        "every process; make it yours and writable by you only (chmod go-w) or set ANYOPTIM_CACHE_DIR",
        KernelCacheWarning,
        stacklevel=2,
    )


def _remove_private_dir(directory: Path, owner: int) -> None:
    """At exit, remove the process's private build directory: only in the process that made it, not a fork."""
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def _library_suffix() -> str:
    return ".dll" if sys.platform == "win32" else ".so"


def _build(source: str, command: list[str], target: Path) -> None:
    """Compile ``source`` into the shared library ``target`` (in :func:`_private_dir`), atomically.

    Raises
    ------
    KernelBuildError
        For any failure: the compiler's, or the file system's (a full disk, say).
    """
    leftovers: list[str] = []
    try:
        descriptor, source_path = tempfile.mkstemp(suffix=".c", dir=target.parent)
        leftovers.append(source_path)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(source)
        partial = f"{source_path[:-2]}{_library_suffix()}"
        leftovers.append(partial)
        done = subprocess.run(
            [*command, *FLAGS, source_path, "-o", partial, "-lm"],
            capture_output=True,
            text=True,
            timeout=_COMPILE_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise KernelBuildError(f"{command[0]} failed ({done.returncode}) on a generated kernel:\n{done.stderr}")
        try:
            os.replace(partial, target)
        except PermissionError:
            if not target.exists():  # on Windows a library this process has loaded cannot be replaced
                raise
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelBuildError(f"building a kernel with {command[0]} failed: {error}") from None
    finally:
        for leftover in leftovers:
            with contextlib.suppress(OSError):
                os.remove(leftover)


_loaded_lock = threading.Lock()
_loaded: dict[str, Callable[[int], None]] = {}  # key -> the loaded function
_failed: dict[str, str] = {}  # key -> why its build failed


def load_kernel(source: str, symbol: str) -> Callable[[int], None]:
    """The C function ``void symbol(const int64_t *frame)`` of ``source``, compiled (or cached) and loaded.

    The returned callable takes the frame's address as a Python int.  It
    releases the GIL while it runs.  A cached library that does not load (a
    damaged file) is built again, once.  A kernel that fails is remembered for
    the rest of the process: asking for it again raises the same error at once,
    without running the compiler; other kernels are unaffected.  Thread-safe.

    Raises
    ------
    KernelBuildError
        If there is no compiler, it rejects the source, or the library does not
        load (now or in an earlier call); its :attr:`~KernelBuildError.kernel`
        names the kernel, except when there is no compiler.
    """
    command, identity = compiler()
    key = hashlib.sha256(
        "\0".join([source, shlex.join(command), identity, *FLAGS, platform.machine(), sys.platform]).encode()
    ).hexdigest()[:32]
    name = f"{symbol}-{key}"
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
        try:
            if key in _failed:
                raise KernelBuildError(_failed[key])
            function = _build_and_load(source, symbol, command, name)
        except KernelBuildError as error:
            _failed.setdefault(key, str(error))
            error.kernel = name
            raise
        _loaded[key] = function
        return function


_held_descriptors: list[int] = []  # the open files loaded as /proc/self/fd/N, for the life of the process


def _build_and_load(source: str, symbol: str, command: list[str], name: str) -> Callable[[int], None]:
    """Load the cached library ``name`` if it passes every check, else build it privately, load and cache it.

    What is loaded from the cache is the very file that was checked
    (:mod:`~anyoptim.engines.numpy.kernel_cache`); a library that fails a check
    (foreign, damaged, or not matching its record) or does not load is built
    again and replaces it.
    """
    file_name = f"{name}{_library_suffix()}"
    directory = _open_cache()
    try:
        if directory is not None:
            with contextlib.suppress(OSError, KernelBuildError):
                descriptor, data = kernel_cache.open_verified(directory, file_name)
                try:
                    path = kernel_cache.loadable_path(descriptor, data, _private_dir(), _library_suffix())
                    function = _load(path, symbol)
                except BaseException:
                    os.close(descriptor)
                    raise
                if path.startswith("/proc/"):
                    # dlopen knows a library by its path: the number stays taken while the library is loaded
                    _held_descriptors.append(descriptor)
                else:
                    os.close(descriptor)
                return function
        target = _private_dir() / file_name
        _build(source, command, target)
        function = _load(target, symbol)
        if directory is not None:
            with contextlib.suppress(OSError):  # not cached (a full disk, say): the next process builds it again
                kernel_cache.install(directory, file_name, target.read_bytes())
        return function
    finally:
        if directory is not None:
            os.close(directory)


def _load(path: Path | str, symbol: str) -> Callable[[int], None]:
    try:
        function = getattr(ctypes.CDLL(str(path)), symbol)
    except (OSError, AttributeError) as error:
        raise KernelBuildError(f"the compiled kernel {path} does not load: {error}") from None
    function.argtypes = (ctypes.c_void_p,)
    function.restype = None
    return function


_warned_lock = threading.Lock()
_warned: set[str | None] = set()  # the kernels (KernelBuildError.kernel) warned about


def warn_fallback(error: KernelBuildError) -> None:
    """Say once per failed kernel (``error.kernel``) that ``auto`` runs NumPy ufuncs instead of it.

    Issues a :class:`KernelBuildWarning`; later calls for the same kernel say nothing.
    """
    kernel = getattr(error, "kernel", None)
    with _warned_lock:
        if kernel in _warned:
            return
        _warned.add(kernel)
    which = "a compiled kernel" if kernel is None else f"the compiled kernel {kernel}"
    warnings.warn(
        f"anyoptim: the NumPy engine runs NumPy ufuncs, not {which} ({error}); "
        "set ANYOPTIM_NUMPY_KERNELS=ufunc to silence this",
        KernelBuildWarning,
        stacklevel=3,
    )


def _after_fork_in_child() -> None:
    """A forked child gets new locks: one held by another thread of the parent at the fork stays held."""
    global _compiler_lock, _loaded_lock, _warned_lock, _fallback_dir
    _fallback_dir = None  # the parent's, removed when the parent exits
    _compiler_lock = threading.Lock()
    _loaded_lock = threading.Lock()
    _warned_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
