"""The public API that the docs site documents and ``tests/test_docstrings.py`` validates: one list for both.

Every name is given at its stable public home (``anyoptim.Adam``, not the module
that defines it today), so the pages and the test survive modules moving inside
``anyoptim.optimizers`` and ``anyoptim.engines``.  The optimizers come from
:data:`anyoptim.optimizers.REGISTRY`, so a new optimizer gets its page and its
docstring check by its registry row alone.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

#: Modules whose ``__all__`` is documented whole, and the section title of each.
MODULE_SECTIONS: tuple[tuple[str, str], ...] = (
    ("anyoptim.schedules", "Learning-rate schedules"),
    ("anyoptim.transforms", "Gradient transforms and masks"),
    ("anyoptim.datasets", "Data sets"),
    ("anyoptim.tree", "Parameter trees"),
    ("anyoptim.checkpoint", "Checkpoints"),
    ("anyoptim.distributed", "Data-parallel training"),
    ("anyoptim.count_math", "The step count's arithmetic (jitted steps)"),
)

#: The rule contract: what a new optimizer's update rule declares, and how it is checked.
CONTRACT_NAMES: tuple[str, ...] = (
    "anyoptim.optimizers.contract.declare",
    "anyoptim.optimizers.contract.Slot",
    "anyoptim.optimizers.contract.Scalar",
    "anyoptim.optimizers.contract.RuleDeclaration",
    "anyoptim.optimizers.contract.declaration_of",
    "anyoptim.optimizers.contract.check_against_rule",
    "anyoptim.optimizers.contract.RuleMismatchError",
)

#: Engine protocols, classes and functions at their public homes: what an engine is, then the engines.
ENGINE_NAMES: tuple[str, ...] = (
    "anyoptim.engines.Engine",
    "anyoptim.engines.PreparingEngine",
    "anyoptim.engines.PreparedRun",
    "anyoptim.engines.program.Program",
    "anyoptim.engines.check_engine",
    "anyoptim.engines.run_programs",
    "anyoptim.engines.select_engine",
    "anyoptim.engines.GenericEngine",
    "anyoptim.engines.matmul",
    "anyoptim.engines.muladd.muladd",
    "anyoptim.engines.inplace.in_place_ops",
    "anyoptim.engines.numpy.NumpyEngine",
    "anyoptim.engines.cupy.CupyEngine",
    "anyoptim.engines.cupy.GraphedStep",
    "anyoptim.engines.torch_bridge.TorchEngine",
)

#: The scikit-learn estimators (the ``sklearn`` extra).
SKLEARN_NAMES: tuple[str, ...] = (
    "anyoptim.sklearn.MLPClassifier",
    "anyoptim.sklearn.MLPRegressor",
)


def resolve(dotted: str) -> Any:
    """The object a dotted public name refers to (the longest importable module prefix, then attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def optimizer_names() -> list[str]:
    """``anyoptim.<Class>`` for every optimizer of the registry, in the registry's order."""
    import anyoptim
    from anyoptim.optimizers import REGISTRY

    names = []
    for cls in REGISTRY.values():
        home = "anyoptim" if getattr(anyoptim, cls.__name__, None) is cls else "anyoptim.optimizers"
        names.append(f"{home}.{cls.__name__}")
    return names


def sections() -> list[tuple[str, list[str]]]:
    """(title, dotted names) for every section of the API reference, in page order."""
    import anyoptim

    optimizers = optimizer_names()
    modules = {name for name, _ in MODULE_SECTIONS}
    top = [
        f"anyoptim.{name}"
        for name in anyoptim.__all__
        if f"anyoptim.{name}" not in optimizers
        and f"anyoptim.{name}" not in modules
        and not inspect.ismodule(getattr(anyoptim, name))
    ]
    # Names re-exported from a module documented whole (decay_all...) get their page there.
    elsewhere = {
        name for module, _ in MODULE_SECTIONS for name in getattr(importlib.import_module(module), "__all__", [])
    }
    top = [n for n in top if n.rsplit(".", 1)[1] not in elsewhere]
    core = [n for n in top if n.rsplit(".", 1)[1] in ("Optimizer", "OptimizerState", "flatten")]
    training = [n for n in top if n not in core]
    result = [
        ("Optimizers", optimizers),
        ("The optimizer base class and its state", [*core, "anyoptim.optimizers.REGISTRY"]),
        ("Writing an optimizer", list(CONTRACT_NAMES)),
        ("Networks and training", training),
    ]
    for module, title in MODULE_SECTIONS:
        names = getattr(importlib.import_module(module), "__all__", [])
        result.append((title, [f"{module}.{name}" for name in names]))
    result.append(("Engines", list(ENGINE_NAMES)))
    result.append(("scikit-learn estimators", list(SKLEARN_NAMES)))
    return result


def all_names() -> list[str]:
    """Every documented public name, each once."""
    seen: dict[str, None] = {}
    for _, names in sections():
        seen.update(dict.fromkeys(names))
    return list(seen)
