"""numpydoc validation of every public docstring: the names of the API reference (docs/public_api.py).

Every public class and function passes every check listed in CHECKS: a new
public name is documented before it is listed in docs/public_api.py.
"""

from __future__ import annotations

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


def _documented() -> list[str]:
    """Public classes and functions; data (REGISTRY, the Schedule type alias) have no docstring of their own."""
    names = []
    for name in public_api.all_names():
        obj = public_api.resolve(name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            names.append(name)
    return names


DOCUMENTED = _documented()


def test_every_public_name_resolves():
    for name in public_api.all_names():
        public_api.resolve(name)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_numpydoc(name):
    result = numpydoc_validate.validate(name)
    messages = [f"{code} ({CHECKS[code]}): {text}" for code, text in result["errors"] if code in CHECKS]
    assert not messages, f"{name} fails numpydoc checks:\n" + "\n".join(messages)


@pytest.mark.parametrize("name", public_api.optimizer_names())
def test_optimizer_docstrings_give_the_math(name):
    doc = inspect.getdoc(public_api.resolve(name)) or ""
    assert ":math:" in doc or ".. math::" in doc, f"{name}: the update's math is missing"
