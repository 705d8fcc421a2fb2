"""The kernel cache runs only code this user built (docs/design.md, "What the kernel cache trusts").

Each test plants what an attacker or a crash could leave in the cache and checks
that the kernel that runs is the one built from the source: a foreign library
(another user's file, a group-writable file, a symbolic link, a symlinked
directory), a library that does not match its record, a truncated library (which
used to crash every later process with SIGBUS).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from anyoptim.engines.numpy import native as _native

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="POSIX permissions"),
    pytest.mark.skipif(not _native.compiler_found(), reason="needs a C compiler"),
]

_PROBE = (
    "#include <stdint.h>\nvoid anyoptim_probe(const int64_t *frame) {{ ((double *)(uintptr_t)frame[0])[0] += {}; }}\n"
)
_SOURCE = _PROBE.format("1.0")


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    """An empty kernel cache in tmp_path and no kernel loaded in this process; returns its kernels/ directory."""
    monkeypatch.setenv("ANYOPTIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "_failed", {})
    monkeypatch.setattr(_native, "_warned", set())
    return tmp_path / "cache" / "kernels"


def _probe(function) -> float:
    value = np.zeros(1)
    frame = np.array([value.ctypes.data], dtype=np.int64)
    function(frame.ctypes.data)
    return float(value[0])


def _foreign_library(tmp_path: Path) -> bytes:
    """Someone else's library with the same symbol: it adds 100 instead of 1."""
    source = tmp_path / "foreign.c"
    source.write_text(_PROBE.format("100.0"))
    command, _ = _native.compiler()
    subprocess.run([*command, *_native.FLAGS, str(source), "-o", str(tmp_path / "foreign.so")], check=True)
    return (tmp_path / "foreign.so").read_bytes()


def _built_once(cache: Path, monkeypatch) -> Path:
    """Build the probe into the cache (as an earlier process would) and return its library's path."""
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    monkeypatch.setattr(_native, "_loaded", {})
    (library,) = (path for path in cache.iterdir() if path.suffix == ".so")
    return library


def _plant(library: Path, data: bytes) -> None:
    """Replace the library's bytes, and its SHA-256 record if there is one, as the attacker would."""
    library.write_bytes(data)
    record = library.with_name(library.name + ".sha256")
    if record.exists():
        record.write_text(hashlib.sha256(data).hexdigest())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_library_owned_by_another_user_is_not_loaded(cache, monkeypatch, tmp_path) -> None:
    library = _built_once(cache, monkeypatch)
    _plant(library, _foreign_library(tmp_path))
    for path in cache.iterdir():
        os.chown(path, 4242, 4242)
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0


def test_a_group_writable_library_is_not_loaded(cache, monkeypatch, tmp_path) -> None:
    library = _built_once(cache, monkeypatch)
    _plant(library, _foreign_library(tmp_path))
    library.chmod(0o775)
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0


def test_a_library_that_does_not_match_its_record_is_not_loaded(cache, monkeypatch, tmp_path) -> None:
    library = _built_once(cache, monkeypatch)
    library.write_bytes(_foreign_library(tmp_path))  # the record still holds the built library's hash
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0


def test_a_symbolic_link_in_place_of_the_library_is_not_followed(cache, monkeypatch, tmp_path) -> None:
    library = _built_once(cache, monkeypatch)
    foreign = tmp_path / "elsewhere.so"
    foreign.write_bytes(_foreign_library(tmp_path))
    library.unlink()
    library.symlink_to(foreign)
    _plant(foreign, foreign.read_bytes())
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0


@pytest.mark.parametrize("level", ["root", "kernels"])
def test_a_symlinked_cache_directory_is_not_used(cache, monkeypatch, tmp_path, level: str) -> None:
    """A directory reached through a link can be swapped after the check: it is not used at all."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = cache.parent if level == "root" else cache
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.setattr(_native, "_fallback_dir", None)
    monkeypatch.setattr(_native, "_cache_warned", set())
    with pytest.warns(_native.KernelCacheWarning, match="symbolic link"):  # said once, not silently off
        assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    assert not any(path.suffix == ".so" for path in real.rglob("*"))


@pytest.mark.parametrize("mode", [0o770, 0o707])
def test_a_cache_root_others_can_write_to_is_not_used(cache, monkeypatch, mode: int) -> None:
    cache.parent.mkdir(parents=True)
    cache.parent.chmod(mode)
    monkeypatch.setattr(_native, "_fallback_dir", None)
    monkeypatch.setattr(_native, "_cache_warned", set())
    with pytest.warns(_native.KernelCacheWarning, match="writable by others"):
        assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_library_without_a_record_is_built_again(cache, monkeypatch) -> None:
    """A cache from before records (or a record lost in a crash) is rebuilt, then used."""
    library = _built_once(cache, monkeypatch)
    for path in cache.iterdir():
        if path != library:
            path.unlink()
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
    assert library.with_name(library.name + ".sha256").exists()


_CHILD = textwrap.dedent(
    """
    import numpy as np
    from anyoptim.engines.numpy import native
    value = np.zeros(1)
    frame = np.array([value.ctypes.data], dtype=np.int64)
    native.load_kernel({source!r}, "anyoptim_probe")(frame.ctypes.data)
    print(value[0])
    """
)


def test_a_truncated_library_does_not_crash_later_processes(cache, tmp_path) -> None:
    """``truncate -s 5000`` on a cached library used to kill every later process with SIGBUS."""
    environment = {**os.environ, "ANYOPTIM_CACHE_DIR": str(cache.parent)}
    environment["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), *sys.path])
    child = [sys.executable, "-c", _CHILD.format(source=_SOURCE)]
    first = subprocess.run(child, env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0 and first.stdout.strip() == "1.0", first.stderr
    (library,) = (path for path in cache.iterdir() if path.suffix == ".so")
    os.truncate(library, 5000)
    for _ in range(2):
        later = subprocess.run(child, env=environment, capture_output=True, text=True, timeout=120, check=False)
        assert later.returncode == 0 and later.stdout.strip() == "1.0", later.stderr
    assert library.stat().st_size > 5000  # built again


def test_nothing_but_libraries_and_records_is_left_in_the_cache(cache) -> None:
    _native.load_kernel(_SOURCE, "anyoptim_probe")
    names = sorted(path.name for path in cache.iterdir())
    assert len(names) == 2 and names[0].endswith(".so") and names[1] == names[0] + ".sha256"
    assert all(not (path.stat().st_mode & 0o022) for path in cache.iterdir())


def test_two_cached_libraries_with_one_symbol_stay_apart(cache, monkeypatch) -> None:
    """Loaded through their open files, two libraries are never taken for one another (dlopen knows paths)."""
    sources = [_PROBE.format(f"{value}.0") for value in (1, 2, 3)]
    for source in sources:
        _native.load_kernel(source, "anyoptim_probe")
    monkeypatch.setattr(_native, "_loaded", {})
    assert [_probe(_native.load_kernel(source, "anyoptim_probe")) for source in sources] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("swap", ["file", "directory"])
def test_what_is_loaded_is_the_file_that_was_checked(cache, monkeypatch, tmp_path, swap: str) -> None:
    """Swapping the file or ``kernels/`` between the check and the load used to load the swapped-in library."""
    library = _built_once(cache, monkeypatch)
    foreign = _foreign_library(tmp_path)
    verified = _native.kernel_cache.open_verified

    def swapped_after_the_check(directory: int, name: str):
        found = verified(directory, name)
        if swap == "file":
            planted = tmp_path / "planted.so"
            planted.write_bytes(foreign)
            os.replace(planted, library)
        else:
            os.rename(cache, tmp_path / "moved")
            cache.mkdir(mode=0o700)
            (cache / library.name).write_bytes(foreign)
        return found

    monkeypatch.setattr(_native.kernel_cache, "open_verified", swapped_after_the_check)
    monkeypatch.setattr(_native, "_build", lambda *args: pytest.fail("the checked library should have been loaded"))
    assert _probe(_native.load_kernel(_SOURCE, "anyoptim_probe")) == 1.0
