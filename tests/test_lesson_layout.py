"""The lesson app stays at the top of the house: nothing in the library imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import anyoptim

PACKAGE = Path(anyoptim.__file__).resolve().parent

# `python -m anyoptim` runs the lesson's command: an entry point, never imported by the library itself.
ENTRY_POINTS = {PACKAGE / "__main__.py"}


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, as absolute dotted names (relative imports resolved)."""
    package = ".".join(("anyoptim", *path.relative_to(PACKAGE).with_suffix("").parts))
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    else:
        package = package.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_nothing_outside_the_lesson_imports_it():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "lesson" in path.parents or path in ENTRY_POINTS:
            continue
        lesson = sorted(
            m for m in _imported_modules(path) if m == "anyoptim.lesson" or m.startswith("anyoptim.lesson.")
        )
        if lesson:
            offenders[str(path.relative_to(PACKAGE))] = lesson
    assert offenders == {}


def test_the_import_scan_sees_relative_imports_of_the_lesson():
    assert "anyoptim.lesson.cli" in _imported_modules(PACKAGE / "__main__.py")


def test_importing_anyoptim_imports_neither_the_lesson_nor_matplotlib():
    code = "import anyoptim, sys; print([m for m in sys.modules if 'lesson' in m or 'matplotlib' in m])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
