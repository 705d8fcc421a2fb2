"""The trace interpreter of the tests: a traced graph run with an Array API namespace, as the CUDA kernel runs it.

It is how the tests prove on a CPU that the traced graph is the rule, and what
the NumPy stand-in of the CuPy engine's ElementwiseKernel computes with.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from anyoptim.engines.muladd import muladd
from anyoptim.engines.trace import SCALAR, Trace, fold_scalars


def evaluate(
    trace: Trace,
    xp: Any,
    p: Any,
    g: Any,
    slots: Mapping[str, Any],
    hp: Mapping[str, Any],
    *,
    scalars: Sequence[Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run a traced graph with Array API namespace ``xp``, as the CUDA kernel computes it.

    Host scalars come from :func:`~anyoptim.engines.trace.fold_scalars` (or ``scalars``, the kernel's
    ``c{k}`` values, when given) and are rounded to the parameter's dtype, as are
    constants; operations follow :func:`~anyoptim.engines.cupy.printer.cuda_source`'s choices (``x**2`` as
    ``x*x``, clip as maximum then minimum).  ``hp`` needs only the 0-D array
    entries when ``scalars`` is given.  Returns ``(new_p, new_slots)`` like a rule.
    """
    dtype = p.dtype
    host = fold_scalars(trace, hp) if scalars is None else list(scalars)
    folded = dict(zip(trace.kernel_scalars, host, strict=True))
    values: dict[int, Any] = {}

    def typed(number: Any) -> Any:
        return xp.asarray(number, dtype=dtype)

    def arg(index: int) -> Any:
        node = trace.nodes[index]
        if node.op == "const":
            return typed(node.value)
        if node.kind == SCALAR:
            return typed(folded[index])
        return values[index]

    for index in trace.live_nodes():
        node = trace.nodes[index]
        if node.kind == SCALAR:
            continue
        a = [arg(i) for i in node.args]
        op = node.op
        if op == "param":
            result = p
        elif op == "grad":
            result = g
        elif op == "slot":
            result = slots[node.value]
        elif op == "hp_array":
            result = xp.astype(hp[node.value], dtype)
        elif op in ("add", "sub", "mul", "div", "lt", "le", "gt", "ge", "eq", "ne"):
            result = getattr(operator, {"div": "truediv"}.get(op, op))(a[0], a[1])
        elif op == "neg":
            result = -a[0]
        elif op == "pow":
            exponent = trace.nodes[node.args[1]]
            constant = float(exponent.value) if exponent.op == "const" else None
            if constant == 2.0:
                result = a[0] * a[0]
            elif constant == 1.0:
                result = a[0]
            elif constant == 0.5:
                result = xp.sqrt(a[0])
            elif constant == 0.0:
                result = xp.ones_like(a[0])
            elif constant == -1.0:
                result = typed(1) / a[0]
            else:
                result = a[0] ** a[1]
        elif op in ("sqrt", "abs", "sign"):
            result = getattr(xp, op)(a[0])
        elif op in ("maximum", "minimum"):
            result = getattr(xp, op)(a[0], a[1])
        elif op == "where":
            result = xp.where(a[0], a[1], a[2])
        elif op == "muladd":
            result = muladd(xp, a[0], a[1], a[2])
        else:  # pragma: no cover
            raise AssertionError(op)
        values[index] = result

    def output(index: int) -> Any:
        result = arg(index)
        if tuple(result.shape) != tuple(p.shape):
            result = xp.broadcast_to(result, tuple(p.shape))
        return result

    return output(trace.param_output), {
        name: output(index) for name, index in zip(trace.slot_names, trace.slot_outputs, strict=True)
    }
