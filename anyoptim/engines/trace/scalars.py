"""Host scalars: the scalar nodes of a trace, computed in Python as the generic engine computes them.

Scalar subexpressions of a rule (``1 - beta1``, bias corrections) are evaluated
**on the host**, in double precision, by the statements of
:func:`scalar_statements`, which both fused engines compile into their step;
only the values the kernel needs (``trace.kernel_scalars``) enter it.

This module is pure Python: it imports neither NumPy nor CuPy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .tracer import Trace

__all__ = ["fold_scalars", "scalar_folder", "scalar_statements"]

_PYTHON_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}


def scalar_statements(trace: Trace) -> tuple[list[str], dict[str, Any]]:
    """Python statements that compute the host scalars of a trace from ``hp``, and the names they read.

    Statement ``v{i} = ...`` computes scalar node ``i`` with Python's own
    operators on the values in ``hp``, exactly as the generic engine evaluates
    ``1 - beta1``; after them, ``v{i}`` is bound for every ``i`` in
    ``trace.kernel_scalars``.  Hyperparameter names and constants enter as values
    of the returned names (``K``, ``C``), never as source text.  Engines embed the
    statements in code they generate (:func:`scalar_folder`, the NumPy engine's
    step), so a step costs a few Python statements, not a walk of the graph.
    """
    needed: set[int] = set()
    pending = list(trace.kernel_scalars)
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(trace.nodes[index].args)
    keys: list[Any] = []
    constants: list[Any] = []
    lines = []
    for index in sorted(needed):  # node order is topological
        node = trace.nodes[index]
        if node.op == "hp_scalar":
            lines.append(f"v{index} = hp[K[{len(keys)}]]")
            keys.append(node.value)
        elif node.op == "const":
            lines.append(f"v{index} = C[{len(constants)}]")
            constants.append(node.value)
        elif node.op == "neg":
            lines.append(f"v{index} = -v{node.args[0]}")
        elif node.op in _PYTHON_OPERATORS:
            a, b = node.args
            lines.append(f"v{index} = v{a} {_PYTHON_OPERATORS[node.op]} v{b}")
        else:  # pragma: no cover - the tracer builds no other scalar nodes
            raise AssertionError(f"node {index} ({node.op}) is not a host scalar")
    return lines, {"K": tuple(keys), "C": tuple(constants)}


def scalar_folder(trace: Trace) -> Callable[[Mapping[str, Any]], list[Any]]:
    """Compile the host part of a trace into a Python function ``hp -> [c0, c1, ...]``.

    The function runs :func:`scalar_statements` and returns the value of each
    node of ``trace.kernel_scalars``; it is built once per trace (as
    ``collections.namedtuple`` builds its classes, from generated source).
    """
    statements, namespace = scalar_statements(trace)
    lines = ["def fold(hp):", *(f"    {line}" for line in statements)]
    lines.append(f"    return [{', '.join(f'v{index}' for index in trace.kernel_scalars)}]")
    # The source is generated above from the trace's structure; names and constants are passed as values.
    exec(compile("\n".join(lines), f"<scalars of {trace.name}>", "exec"), namespace)
    return namespace["fold"]


def fold_scalars(trace: Trace, hp: Mapping[str, Any]) -> list[Any]:
    """The host values of the kernel's scalar arguments, computed as the generic engine computes them.

    Returns one Python number per entry of ``trace.kernel_scalars`` (see
    :func:`scalar_folder`, which engines keep to avoid recompiling each step).
    """
    return scalar_folder(trace)(hp)
