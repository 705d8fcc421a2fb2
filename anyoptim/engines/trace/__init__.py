"""The one tracer of the fused engines: a :class:`~anyoptim.engines.program.Program` as an expression graph.

Neither fused engine types an update formula: each calls the very program the
generic engine runs, with a *symbolic* namespace and symbolic arrays, and the
operators the rule applies record an expression graph (a DAG, :class:`Trace`,
made by :func:`trace_program`).  That one graph is then

* printed as the body of one ``cupy.ElementwiseKernel``
  (:func:`anyoptim.engines.cupy.printer.cuda_source`) by the CuPy engine: one
  typed temporary per node, parameter and state slots as in-out arguments
  written at the end;
* turned by the NumPy engine (:mod:`anyoptim.engines.numpy`) into ufunc calls
  with ``out=`` on cache-sized blocks, each node given the dtype NumPy's own
  promotion gives it, or printed as one C loop
  (:mod:`anyoptim.engines.numpy.c_printer`).

The tests prove on a CPU that the traced graph is the rule by evaluating it
with NumPy (``tests/trace_evaluator.py``).

Three kinds of values flow through a rule, and the graph keeps them apart:

``array``
    elementwise values of the parameter's dtype ``T``: the parameter, its
    gradient, the state slots, hyperparameters that are 0-D arrays (the
    global-norm clip factor, which stays on the device), and every result that
    depends on one of them;
``bool``
    the elementwise results of comparisons, consumed by ``xp.where``;
``scalar``
    Python numbers: hyperparameters such as the learning rate, constants of
    the rule, and arithmetic among them (``1 - beta1``).

Scalar subexpressions are evaluated **on the host, in Python**, exactly as the
generic engine evaluates them (``1 - beta1`` in double precision), by the
statements of :func:`scalar_statements` (which both engines compile into their
step), and only their values enter the kernel, converted to ``T``.  This
matters in float32: ``1 - 0.999`` rounded once to float32 differs from
``1.0f - 0.999f`` by 1.3e-5 relative, which a fused Adam would otherwise carry
into every second moment.  A bare constant that meets an array (``0.5 * g``)
becomes a literal of ``T`` (``0.5f`` in a float32 kernel), so a kernel never
computes in double or half precision by accident.  (The NumPy engine instead
casts each scalar as NumPy would where it meets an array, so that it matches
the generic engine bit for bit.)

The package: :mod:`~anyoptim.engines.trace.tracer` (the tracer, the rule
contract), :mod:`~anyoptim.engines.trace.scalars` (host-scalar folding) and
:mod:`~anyoptim.engines.trace.c_syntax` (what the C and CUDA printers share).
It imports neither NumPy nor CuPy, and no printer.
"""

from __future__ import annotations

from .c_syntax import C_OPERATORS, FUSED_DTYPES, c_literal
from .scalars import fold_scalars, scalar_folder, scalar_statements
from .tracer import ARRAY, BOOL, SCALAR, Node, Symbol, Trace, hp_signature, kernel_name, trace_program

__all__ = [
    "ARRAY",
    "BOOL",
    "C_OPERATORS",
    "FUSED_DTYPES",
    "SCALAR",
    "Node",
    "Symbol",
    "Trace",
    "c_literal",
    "fold_scalars",
    "hp_signature",
    "kernel_name",
    "scalar_folder",
    "scalar_statements",
    "trace_program",
]
