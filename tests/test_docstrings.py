"""numpydoc validation of every public docstring: the names of the API reference (docs/public_api.py).

The checks enforced are listed in CHECKS.  Names that fail some of them today are
listed in EXPECTED_FAILURES with the checks they fail: the test passes while
those exact failures remain, fails on any new failure, and fails too when a
listed failure has been fixed (so the list only shrinks).  Fix a docstring, then
delete its entry.
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

#: Failures today, name -> the checks it fails; for the integrator to fix and then remove.
EXPECTED_FAILURES: dict[str, set[str]] = {
    "anyoptim.SGD": {"PR07"},
    "anyoptim.Momentum": {"EX01", "PR07"},
    "anyoptim.RMSprop": {"EX01", "PR07"},
    "anyoptim.Adagrad": {"EX01", "PR07"},
    "anyoptim.Adam": {"PR07"},
    "anyoptim.AdamW": {"EX01", "PR07"},
    "anyoptim.Adamax": {"EX01", "PR07"},
    "anyoptim.NAdam": {"EX01", "PR07"},
    "anyoptim.RAdam": {"EX01", "PR07"},
    "anyoptim.Lion": {"EX01", "PR02", "PR07"},
    "anyoptim.Optimizer": {"EX01"},
    "anyoptim.OptimizerState": {"EX01", "PR01"},
    "anyoptim.flatten": {"PR04"},
    "anyoptim.FitResult": {"EX01", "PR01"},
    "anyoptim.History": {"EX01", "PR01"},
    "anyoptim.accuracy": {"PR01", "RT01"},
    "anyoptim.fit": {"PR07"},
    "anyoptim.minibatches": {"PR07"},
    "anyoptim.predict": {"PR01", "RT01"},
    "anyoptim.schedules.constant": {"EX01", "PR01", "RT01"},
    "anyoptim.schedules.cosine_decay": {"EX01", "PR01", "RT01"},
    "anyoptim.schedules.exponential_decay": {"PR01", "RT01"},
    "anyoptim.schedules.inverse_time_decay": {"PR01", "RT01"},
    "anyoptim.schedules.join": {"PR01", "RT01"},
    "anyoptim.schedules.piecewise_constant": {"PR01", "RT01"},
    "anyoptim.schedules.warmup_cosine_decay": {"EX01", "PR01", "RT01"},
    "anyoptim.transforms.clip_factor": {"EX01", "PR01", "RT01"},
    "anyoptim.transforms.decay_all": {"EX01", "PR01", "RT01"},
    "anyoptim.transforms.decay_weights_only": {"EX01", "PR01", "RT01"},
    "anyoptim.transforms.first_nonfinite": {"EX01", "PR01", "RT01"},
    "anyoptim.transforms.frozen_mask": {"EX01", "PR01", "RT01"},
    "anyoptim.transforms.mask_values": {"EX01", "PR01", "RT01"},
    "anyoptim.datasets.load_csv": {"PR04", "PR07", "RT03"},
    "anyoptim.datasets.load_npz": {"PR04", "PR07", "RT03"},
    "anyoptim.datasets.make_blobs": {"PR04", "PR07", "RT03"},
    "anyoptim.datasets.make_circles": {"PR04", "PR07", "RT03"},
    "anyoptim.datasets.make_moons": {"PR07", "RT03"},
    "anyoptim.datasets.make_spirals": {"PR04", "PR07", "RT03"},
    "anyoptim.tree.TreeDef": {"EX01", "PR01"},
    "anyoptim.tree.check_same_structure": {"EX01", "PR01"},
    "anyoptim.tree.leaf_names": {"EX01", "PR01", "RT01"},
    "anyoptim.tree.map_leaves": {"EX01", "PR01", "RT01"},
    "anyoptim.tree.tree_flatten": {"EX01", "PR04"},
    "anyoptim.tree.tree_unflatten": {"EX01", "PR01", "RT01"},
    "anyoptim.engines.select_engine": {"EX01", "PR01", "RT01"},
    "anyoptim.engines.GenericEngine": {"EX01"},
    "anyoptim.engines.matmul": {"EX01", "PR01", "RT01"},
    "anyoptim.engines.numpy.NumpyEngine": {"EX01"},
    "anyoptim.engines.cupy.CupyEngine": {"EX01"},
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


def test_expected_failures_name_public_objects():
    assert set(EXPECTED_FAILURES) <= set(DOCUMENTED)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_numpydoc(name):
    result = numpydoc_validate.validate(name)
    failing = {code for code, _ in result["errors"] if code in CHECKS}
    messages = [f"{code} ({CHECKS[code]}): {text}" for code, text in result["errors"] if code in CHECKS]
    expected = EXPECTED_FAILURES.get(name, set())
    assert failing <= expected, f"{name} fails numpydoc checks:\n" + "\n".join(messages)
    assert failing == expected, f"{name} now passes {sorted(expected - failing)}: remove them from EXPECTED_FAILURES"


@pytest.mark.parametrize("name", public_api.optimizer_names())
def test_optimizer_docstrings_give_the_math(name):
    doc = inspect.getdoc(public_api.resolve(name)) or ""
    assert ":math:" in doc or ".. math::" in doc, f"{name}: the update's math is missing"
