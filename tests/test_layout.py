"""The house rules of the package layout, checked on the source (docs/design.md, "The house").

* arrows point one way: lesson -> nn -> optimizers -> {engines, transforms, schedules, state} -> {tree, _checks}
  -> _namespace; nothing imports the lesson app; engines never import optimizers;
* no import cycles between modules (a package's ``__init__`` counts as a module);
* no module uses another module's private (underscore) names;
* no module over 500 lines, no class over 200 lines of code (docstrings not counted);
* ``import anyoptim`` imports neither the lesson app nor matplotlib nor an optional array library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "anyoptim"

#: Each top-level part of the package and its rank: a module may import modules of its own part or of a
#: part with a lower rank, never a higher one.  ``anyoptim`` itself (the public face) re-exports from all
#: parts but the lesson.
RANKS: dict[str, float] = {
    "__main__": 7,
    "lesson": 6,
    "checkpoint": 5.5,
    "distributed": 5.5,  # above nn (fit takes its team through nn.parallel), below lesson
    "nn": 5,
    "datasets": 5.5,  # the public name of nn.datasets
    "sklearn": 5.5,  # above nn, below lesson (anyoptim.sklearn: the estimators)
    "optimizers": 4,
    "flat": 4,
    "engines": 3,
    "transforms": 3,
    "schedules": 3,
    "schedule_specs": 2.5,  # what anyoptim.schedules' schedules record of themselves (describe, from_spec)
    "state": 3,
    "tree": 2,
    "_checks": 2,
    "count_math": 1.5,  # the step count's arithmetic, on the host or traced (anyoptim/count_math.py)
    "_namespace": 1,
}
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 200


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the import statements under ``if TYPE_CHECKING:`` (annotations only: never executed)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return ids


def _imports(module: str, *, executed_only: bool = False) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or "", line)`` for every import in ``module``, lazy ones included.

    With ``executed_only``, imports under ``if TYPE_CHECKING:`` are left out.
    """
    path = MODULES[module]
    found = []
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree) if executed_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, "", node.lineno))  # importlib.import_module("anyoptim.x")
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, path.name == "__init__.py", node.level, node.module)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, "", node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
    return [(target, name, line) for target, name, line in found if target.split(".")[0] == "anyoptim"]


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_arrows_point_one_way(module):
    part = _part(module)
    for target, name, line in _imports(module):
        target_part = _part(target)
        if target == "anyoptim" and part not in (None, "lesson", "__main__"):
            # the face imports every room: a room importing from it reaches above itself (its version aside)
            assert name == "__version__", f"{module}:{line} imports {name or 'anyoptim'} from the package face"
            continue
        if target_part is None or target_part == part:
            continue
        if part is None:  # the public face re-exports everything but the lesson app
            assert target_part != "lesson", f"{module}:{line} imports the lesson app"
            continue
        assert target_part in RANKS, f"{module}:{line} imports {target}, a part the layout does not know"
        assert RANKS[target_part] < RANKS[part], (
            f"{module}:{line} imports {target}: {part} may import only parts below it "
            f"({', '.join(name for name, rank in RANKS.items() if rank < RANKS[part])})"
        )


def test_no_import_cycles():
    graph = {
        module: sorted({target for target, _, _ in _imports(module, executed_only=True) if target in MODULES})
        for module in MODULES
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_across_modules(module):
    tree = ast.parse(MODULES[module].read_text())
    aliases = {}  # local name -> anyoptim module it stands for
    for target, name, line in _imports(module):
        if name.startswith("_") and not name.startswith("__"):
            pytest.fail(f"{module}:{line} imports the private name {name} of {target}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                source = _resolve(module, MODULES[module].name == "__init__.py", getattr(node, "level", 0), None)
                full = (
                    f"{source}.{alias.name}"
                    if isinstance(node, ast.ImportFrom) and node.module is None
                    else (
                        _resolve(module, MODULES[module].name == "__init__.py", node.level, node.module)
                        + f".{alias.name}"
                        if isinstance(node, ast.ImportFrom)
                        else alias.name
                    )
                )
                if full in MODULES:
                    aliases[alias.asname or alias.name.split(".")[-1]] = full
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            pytest.fail(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}, a private name")


def _names_defined_in(tree: ast.AST) -> set[str]:
    """The names a module defines: functions, classes, assigned names, attributes it stores on ``self``/``cls``
    (a store on any other object does not make the name its own), and ``__slots__`` entries."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__slots__" for t in node.targets):
            names.update(
                c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
        elif _names_attribute(node) and _on_self_or_type(node.args[0]) and node.func.id in ("setattr",):
            names.add(node.args[1].value)  # object.__setattr__(self, "_x", ...) / setattr(self, "_x", ...)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "object.__setattr__"
            and len(node.args) >= 2
            and _on_self_or_type(node.args[0])
            and isinstance(node.args[1], ast.Constant)
        ):
            names.add(node.args[1].value)
    return names


def _on_self_or_type(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls", "mcs")


def _on_self(node: ast.Attribute) -> bool:
    return _on_self_or_type(node.value)


def _names_attribute(node: ast.AST) -> bool:
    """``getattr``/``setattr``/``hasattr``/``delattr`` with a literal attribute name."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_attributes_of_other_modules_objects(module):
    """``obj._name`` (read or written, or through ``getattr(obj, "_name")``) only for a name this module defines:
    another module's internals need a public seam."""
    tree = ast.parse(MODULES[module].read_text())
    own = _names_defined_in(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name, where = node.attr, f".{node.attr}"
        elif _names_attribute(node):
            name, where = node.args[1].value, f'{node.func.id}(..., "{node.args[1].value}")'
        else:
            continue
        if name.startswith("_") and not name.startswith("__") and name not in own:
            pytest.fail(f"{module}:{node.lineno} uses {where}, a private name defined elsewhere")


#: Rooms inside a room that may not import each other (the engines for one library know nothing of the others'),
#: and modules that may import nothing but the standard library.
FORBIDDEN_WITHIN = {
    "anyoptim.engines.trace": ("anyoptim.engines.numpy", "anyoptim.engines.cupy"),
    "anyoptim.engines.numpy": ("anyoptim.engines.cupy",),
    "anyoptim.engines.cupy": ("anyoptim.engines.numpy",),
}
STANDARD_LIBRARY_ONLY = ("anyoptim.optimizers.contract", "anyoptim.engines.program", "anyoptim.engines.trace.c_syntax")
#: The modules that may import numpy or cupy directly (docs/design.md says why each does).
ARRAY_LIBRARY_IMPORTERS = (
    "anyoptim._namespace",
    "anyoptim.engines.numpy",
    "anyoptim.engines.cupy",
    "anyoptim.nn.data",
    "anyoptim.nn.datasets",
    "anyoptim.nn.files",
    "anyoptim.engines.memory",
    "anyoptim.datasets",
    "anyoptim.checkpoint",
    "anyoptim.sklearn",
    "anyoptim.lesson",
    # CuPy's NCCL bindings and CUDA stream for the collectives (no math): the transports of data-parallel training.
    "anyoptim.distributed.comm",
    "anyoptim.distributed.nccl",
)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_rooms_inside_the_engines_and_standard_library_modules(module):
    for room, forbidden in FORBIDDEN_WITHIN.items():
        if module == room or module.startswith(room + "."):
            for target, _, line in _imports(module):
                assert not target.startswith(forbidden), f"{module}:{line} imports {target}"
    tree = ast.parse(MODULES[module].read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    if module in STANDARD_LIBRARY_ONLY:
        assert imported <= set(sys.stdlib_module_names) | {"__future__"}, (
            f"{module} imports {imported - set(sys.stdlib_module_names)}"
        )
    if imported & {"numpy", "cupy"}:
        assert module.startswith(ARRAY_LIBRARY_IMPORTERS), (
            f"{module} imports numpy or cupy directly: the math goes through the Array API namespace "
            "(add it to ARRAY_LIBRARY_IMPORTERS and to docs/design.md only if it is host-side on purpose)"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_classes_stay_small(module):
    source = MODULES[module].read_text()
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines (at most {MAX_MODULE_LINES}): split it by topic"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            size = _code_lines(node)
            assert size <= MAX_CLASS_LINES, f"{module}.{node.name} has {size} lines of code (at most {MAX_CLASS_LINES})"


def _code_lines(node: ast.ClassDef) -> int:
    """The lines of a class, less those of its own and its methods' docstrings."""
    size = node.end_lineno - node.lineno + 1
    for inner in ast.walk(node):
        if isinstance(inner, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and ast.get_docstring(inner):
            docstring = inner.body[0]
            size -= docstring.end_lineno - docstring.lineno + 1
    return size


def test_importing_anyoptim_imports_no_app_and_no_optional_library():
    """Nor the engines of one library (NumPy's, CuPy's, torch's bridge): each loads when its arrays first step."""
    code = (
        "import sys, anyoptim\n"
        "heavy = ('anyoptim.lesson', 'matplotlib', 'torch', 'jax', 'cupy', 'array_api_strict', 'tqdm',"
        " 'safetensors', 'sklearn')\n"
        "lazy = ('anyoptim.lesson', 'anyoptim.engines.torch_bridge', 'anyoptim.engines.numpy',"
        " 'anyoptim.engines.cupy')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(lazy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_registry_is_the_public_optimizers():
    import anyoptim
    from anyoptim.optimizers import REGISTRY

    for name, cls in REGISTRY.items():
        assert name == name.lower()
        assert issubclass(cls, anyoptim.Optimizer)
        assert getattr(anyoptim, cls.__name__) is cls, f"anyoptim.{cls.__name__} is not exported"
        assert cls.__name__ in anyoptim.__all__


def test_the_import_scan_sees_relative_and_lazy_imports():
    """The scan this file relies on finds ``__main__``'s relative import of the lesson and the engines' lazy imports."""
    assert ("anyoptim.lesson.cli", "main") in [(target, name) for target, name, _ in _imports("anyoptim.__main__")]
    assert any(target.startswith("anyoptim.engines.numpy") for target, _, _ in _imports("anyoptim.engines"))
