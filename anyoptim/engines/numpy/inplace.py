"""NumPy's operations that write into given arrays (``out=``), for :func:`anyoptim.engines.inplace.in_place_ops`."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NUMPY_OUT_OPS", "NumpyOutOps"]


class NumpyOutOps:
    """Products and elementwise steps of a neural network, written into given arrays.

    Stateless but for a cache of read-only zero rows keyed by width and dtype,
    so one instance serves every thread.

    Examples
    --------
    >>> import numpy as np
    >>> from anyoptim.engines.inplace import in_place_ops
    >>> ops = in_place_ops(np)
    >>> z = np.array([[-1.0, 2.0]])
    >>> ops.relu(z); z
    array([[0., 2.]])
    >>> d = np.array([[5.0, 5.0]])
    >>> ops.mask_inactive(d, z); d
    array([[0., 5.]])
    """

    def __init__(self) -> None:
        self._zero_rows: dict[tuple[int, Any], Any] = {}

    def _zeros(self, width: int, dtype: Any) -> Any:
        key = (width, dtype)
        row = self._zero_rows.get(key)
        if row is None:
            row = np.zeros(width, dtype=dtype)
            row.flags.writeable = False
            row = self._zero_rows.setdefault(key, row)
        return row

    def matmul(self, a: Any, b: Any, out: Any) -> Any:
        """Write the product ``a @ b`` into ``out``.

        Parameters
        ----------
        a : array of shape (m, n) or (n,)
            The left operand.
        b : array of shape (n, k)
            The right operand, of ``a``'s dtype.
        out : array of shape (m, k) or (k,)
            Where the product goes, of ``a``'s dtype; it may be a view (a slice of a flat buffer).

        Returns
        -------
        array
            ``out``.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.inplace import in_place_ops
        >>> out = np.empty(2)
        >>> in_place_ops(np).matmul(np.ones(3), np.arange(6.0).reshape(3, 2), out)
        array([6., 9.])
        """
        return np.matmul(a, b, out=out)

    def relu(self, z: Any) -> None:
        """Replace ``z`` by :math:`\\max(z, 0)`, in place.

        Parameters
        ----------
        z : array
            Floating point; overwritten.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.inplace import in_place_ops
        >>> z = np.array([-0.5, 0.0, 3.0])
        >>> in_place_ops(np).relu(z); z
        array([0., 0., 3.])
        """
        # Against a row of zeros, not the scalar 0.0: NumPy's vector loop then runs (about 3x faster).
        np.maximum(z, self._zeros(z.shape[-1], z.dtype), out=z)

    def mask_inactive(self, d: Any, a: Any) -> None:
        """Zero ``d`` where ``a <= 0``, in place: the gradient through a ReLU whose output is ``a``.

        ``d * (a > 0)``: the slope of :math:`\\max(z, 0)` is 1 where its output
        is positive, else 0 (also at 0 itself, as :mod:`anyoptim.nn.layers` takes it).

        Parameters
        ----------
        d : array
            The incoming gradient :math:`\\partial \\ell / \\partial a`; overwritten with
            :math:`\\partial \\ell / \\partial z`.
        a : array of ``d``'s shape
            The ReLU's output.

        Examples
        --------
        >>> import numpy as np
        >>> from anyoptim.engines.inplace import in_place_ops
        >>> d = np.array([1.0, 2.0, 3.0])
        >>> in_place_ops(np).mask_inactive(d, np.array([0.0, 0.5, 0.0])); d
        array([0., 2., 0.])
        """
        np.multiply(d, a > 0.0, out=d)


#: The one instance :func:`anyoptim.engines.inplace.in_place_ops` hands out for NumPy namespaces.
NUMPY_OUT_OPS = NumpyOutOps()
