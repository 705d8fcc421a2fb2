"""numpydoc validation of every public docstring: the names of the API reference (docs/public_api.py).

Every public class and function passes every check listed in CHECKS: a new
public name is documented before it is listed in docs/public_api.py.

So does every public method of those classes (a name without a leading
underscore, defined in anyoptim rather than inherited from ``object`` or a
builtin; functions, static and class methods, and properties).  A method is
checked once, at the listed class that defines it (``Optimizer.step``, not again
as ``Adam.step``), or at the first listed class that inherits it from an
unlisted base.  One relaxation, and only one: the methods of the ``Protocol``
classes (``Engine.apply``, ``PreparedRun.update``, ...) need no Examples section
(EX01), because a protocol's method has no code to run; an example would be
the example of some engine, which each engine's own method gives.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
import public_api  # noqa: E402

#: The numpydoc checks every public docstring must pass (numpydoc.validate.ERROR_MSGS has the texts).
CHECKS = {
    "GL02": "closing quotes on their own line",
    "GL03": "no double blank lines",
    "GL05": "no tabs",
    "GL06": "known section names only",
    "GL07": "sections in the numpydoc order",
    "GL08": "a docstring",
    "GL10": "backticks balanced",
    "SS01": "a summary line",
    "SS02": "the summary starts with a capital letter",
    "SS03": "the summary ends with a period",
    "SS04": "the summary has no leading whitespace",
    "SS05": "the summary is not in the third person ('Returns')",
    "SS06": "the summary fits on one line",
    "PR01": "every parameter documented",
    "PR02": "no unknown parameters",
    "PR03": "parameters in signature order",
    "PR04": "every parameter has a type",
    "PR05": "types do not end with a period",
    "PR06": "standard type names (int, bool, str)",
    "PR07": "every parameter has a description",
    "PR10": "a space before the colon of 'name : type'",
    "RT01": "a Returns section",
    "RT02": "the Returns section gives the type first",
    "RT03": "every return value has a description",
    "YD01": "a Yields section for generators",
    "EX01": "an Examples section",
}


#: Optional libraries some public names need (the extras); without one, its names are not checked here.
OPTIONAL = {"anyoptim.sklearn": "sklearn", "anyoptim.checkpoint": "safetensors", "anyoptim.distributed": "mpi4py"}


def _available(name: str) -> bool:
    return all(
        importlib.util.find_spec(library) is not None for prefix, library in OPTIONAL.items() if name.startswith(prefix)
    )


def _documented() -> list[str]:
    """Public classes and functions; data (REGISTRY, the Schedule type alias) have no docstring of their own."""
    names = []
    for name in filter(_available, public_api.all_names()):
        obj = public_api.resolve(name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            names.append(name)
    return names


DOCUMENTED = _documented()


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False))


def _methods() -> list[tuple[str, bool]]:
    """(dotted name, is a protocol's method) of every public method of every documented class, each once."""
    classes = {public_api.resolve(name): name for name in DOCUMENTED if inspect.isclass(public_api.resolve(name))}
    seen: dict[tuple[type, str], None] = {}
    methods = []
    for cls, home in classes.items():
        for attribute in dir(cls):
            if attribute.startswith("_"):
                continue
            owner = next((base for base in cls.__mro__ if attribute in vars(base)), None)
            if owner is None or not owner.__module__.startswith("anyoptim") or (owner, attribute) in seen:
                continue
            raw = vars(owner)[attribute]
            if not isinstance(raw, (property, staticmethod, classmethod)) and not inspect.isfunction(raw):
                continue  # data: a class constant, a dataclass field's default
            seen[owner, attribute] = None
            methods.append((f"{classes.get(owner, home)}.{attribute}", _is_protocol(owner)))
    return methods


METHODS = _methods()


def test_every_public_name_resolves():
    for name in filter(_available, public_api.all_names()):
        public_api.resolve(name)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_numpydoc(name):
    result = numpydoc_validate.validate(name)
    messages = [f"{code} ({CHECKS[code]}): {text}" for code, text in result["errors"] if code in CHECKS]
    assert not messages, f"{name} fails numpydoc checks:\n" + "\n".join(messages)


@pytest.mark.parametrize(("name", "in_protocol"), METHODS, ids=[name for name, _ in METHODS])
def test_numpydoc_methods(name, in_protocol):
    result = numpydoc_validate.validate(name)
    relaxed = {"EX01"} if in_protocol else set()
    messages = [
        f"{code} ({CHECKS[code]}): {text}" for code, text in result["errors"] if code in CHECKS and code not in relaxed
    ]
    assert not messages, f"{name} fails numpydoc checks:\n" + "\n".join(messages)


@pytest.mark.parametrize("name", public_api.optimizer_names())
def test_optimizer_docstrings_give_the_math(name):
    doc = inspect.getdoc(public_api.resolve(name)) or ""
    assert ":math:" in doc or ".. math::" in doc, f"{name}: the update's math is missing"
