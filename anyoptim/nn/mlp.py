r"""A multilayer perceptron written once against the Array API: forward, backward and losses by hand.

Data are samples first: ``X`` has shape (n_samples, n_features), layer ``l`` computes :math:`z_l = a_{l-1} W_l + b_l`
with ``W_l`` of shape (n_{l-1}, n_l) and ``b_l`` of shape (n_l,), and :math:`a_l = g(z_l)`.  The parameters are a plain
dict ``{"W1", "b1", "W2", "b2", ...}`` that every optimizer takes as it is.  The activations and the losses (from the
last layer's *logits*, never from probabilities; each the mean over the samples) are in :mod:`anyoptim.nn.layers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._namespace import array_namespace, default_integer_dtype, device_of, is_array, is_floating, is_mutable
from ..engines import matmul  # `@`, or a product a CUDA graph can capture
from .data import check_features, check_int, check_labels, host_rng, host_zeros, resolve_dtype, to_namespace
from .inplace import backprop_into
from .layers import HIDDEN, encode_targets, loss_and_delta, output_activation

__all__ = ["ACTIVATIONS", "INITS", "MLP", "OUTPUTS"]

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
OUTPUTS = ("sigmoid", "softmax", "identity")
INITS = ("he", "xavier")


class MLP:
    """A fully connected network with hand-written forward and backward passes.

    Parameters
    ----------
    layer_dims : sequence of int
        Widths from the input to the output, at least two, e.g. ``[2, 5, 2, 1]``: two features, hidden layers of 5 and
        2 units, one output.
    hidden_activation : {"relu", "leaky_relu", "tanh", "sigmoid"}, default "relu"
        ``leaky_relu`` has slope 0.01 below zero.
    output : {"sigmoid", "softmax", "identity"}, default "sigmoid"
        With binary cross-entropy (one output unit), categorical cross-entropy (two or more) or mean squared error.
    init : {"he", "xavier"}, default "he"
        Weights drawn from :math:`N(0, 2/n_{in})` (He et al., 2015) or :math:`N(0, 2/(n_{in}+n_{out}))` (Glorot &
        Bengio, 2010); biases zero.

    Notes
    -----
    Labels: for ``sigmoid``, 0/1 (or probabilities) of shape (n,) or (n, 1); for ``softmax``, class indices of shape
    (n,) or one-hot rows of shape (n, K); for ``identity``, targets of shape (n,) (one output) or (n, K).

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> model, X = anyoptim.MLP([2, 5, 2, 1]), np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> params = model.init(seed=0, like=X)
    >>> sorted(params), params["W1"].shape, model.forward(params, X).shape
    (['W1', 'W2', 'W3', 'b1', 'b2', 'b3'], (2, 5), (3, 1))
    >>> loss, grads = model.loss_and_grad(params, X, np.array([0, 1, 1]))
    >>> grads["W2"].shape
    (5, 2)
    """

    def __init__(
        self,
        layer_dims: Sequence[int],
        hidden_activation: str = "relu",
        output: str = "sigmoid",
        init: str = "he",
    ):
        if isinstance(layer_dims, (str, bytes)) or not isinstance(layer_dims, Sequence):
            raise TypeError(f"layer_dims must be a sequence of ints, got {layer_dims!r}")
        if len(layer_dims) < 2:
            raise ValueError(f"layer_dims needs at least an input and an output width, got {list(layer_dims)}")
        dims = tuple(check_int(f"layer_dims[{i}]", d) for i, d in enumerate(layer_dims))
        for name, value, choices in (
            ("hidden_activation", hidden_activation, ACTIVATIONS),
            ("output", output, OUTPUTS),
            ("init", init, INITS),
        ):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
        if output == "sigmoid" and dims[-1] != 1:
            raise ValueError(f"output='sigmoid' needs one output unit (binary labels), got layer_dims[-1] = {dims[-1]}")
        if output == "softmax" and dims[-1] < 2:
            raise ValueError(f"output='softmax' needs at least two output units, got layer_dims[-1] = {dims[-1]}")
        self.layer_dims = dims
        self.hidden_activation = hidden_activation
        self.output = output
        # Not ``self.init``: that name is the method that draws the parameters.
        self.init_scheme = init
        self._keys = tuple((f"W{layer}", f"b{layer}") for layer in range(1, len(dims)))

    def __repr__(self) -> str:
        return (
            f"MLP(layer_dims={list(self.layer_dims)}, hidden_activation={self.hidden_activation!r}, "
            f"output={self.output!r}, init={self.init_scheme!r})"
        )

    @property
    def n_layers(self) -> int:
        """Number of weight layers (``len(layer_dims) - 1``).

        Examples
        --------
        >>> import anyoptim
        >>> anyoptim.MLP([2, 5, 2, 1]).n_layers
        3
        """
        return len(self.layer_dims) - 1

    def _layer_shapes(self) -> list[tuple[int, tuple[int, int]]]:
        """``(layer, (fan_in, fan_out))`` for layers 1 .. L."""
        dims = self.layer_dims
        return [(layer, (dims[layer - 1], dims[layer])) for layer in range(1, len(dims))]

    def init(self, seed: Any = 0, like: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> dict:
        """Draw initial parameters on the host and move them to the requested namespace.

        Parameters
        ----------
        seed : int or sequence of int, default 0
            Seed of ``numpy.random.default_rng``; the same seed gives the same weights on every backend (drawn in
            float64, then cast).
        like : array, optional
            Take the namespace, device and (floating) dtype of this array, e.g. ``X``.
        xp, dtype, device : optional
            Namespace, dtype (object or name) and device, when ``like`` is not given or to override it.  Default: NumPy
            float64.

        Returns
        -------
        dict of str to array
            ``W1, b1, ..., WL, bL`` with ``W_l`` of shape (n_{l-1}, n_l) and ``b_l`` of shape (n_l,).

        Raises
        ------
        TypeError
            If ``like`` is not an array.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> params = anyoptim.MLP([2, 3, 1]).init(seed=0, like=np.zeros((1, 2), dtype=np.float32))
        >>> params["b1"], np.round(params["W2"][:, 0], 4)  # He: N(0, 2/3) weights, zero biases; X's dtype
        (array([0., 0., 0.], dtype=float32), array([ 1.0647,  0.7733, -0.5746], dtype=float32))
        """
        if like is not None:
            if not is_array(like):
                raise TypeError(f"like must be an array, got {type(like).__name__}")
            xp = array_namespace(like) if xp is None else xp
            if dtype is None and is_floating(array_namespace(like), like.dtype):
                dtype = like.dtype
            device = device_of(like) if device is None else device
        if xp is not None:
            dtype = resolve_dtype(xp, dtype)
            if dtype is None:
                dtype = xp.float64
        rng = host_rng(seed)
        params = {}
        for layer, (fan_in, fan_out) in self._layer_shapes():
            variance = 2.0 / fan_in if self.init_scheme == "he" else 2.0 / (fan_in + fan_out)
            weights = rng.standard_normal((fan_in, fan_out)) * math.sqrt(variance)
            params[f"W{layer}"] = to_namespace(weights, xp=xp, dtype=dtype, device=device)
            params[f"b{layer}"] = to_namespace(host_zeros(fan_out), xp=xp, dtype=dtype, device=device)
        return params

    def check_params(self, params: Any) -> tuple[Any, Any]:
        """Check that ``params`` has this model's keys, shapes and one dtype; return their namespace and device.

        Parameters
        ----------
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.

        Returns
        -------
        tuple of (namespace, device)
            The Array API namespace and the device of the arrays.

        Raises
        ------
        TypeError, ValueError
            If ``params`` is not a dict of arrays of one library and dtype with this model's keys and shapes.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> anyoptim.MLP([2, 1]).check_params({"W1": np.zeros((2, 1)), "b1": np.zeros(2)})
        Traceback (most recent call last):
        ValueError: params['b1'] has shape (2,), expected (1,)
        """
        if not isinstance(params, dict):
            raise TypeError(f"params must be the dict returned by MLP.init, got {type(params).__name__}")
        expected = [f"{kind}{layer}" for layer in range(1, self.n_layers + 1) for kind in ("W", "b")]
        if sorted(params) != sorted(expected):
            missing = sorted(set(expected) - set(params))
            extra = sorted(set(params) - set(expected))
            raise ValueError(f"params do not fit {self!r}: missing keys {missing}, unexpected keys {extra}")
        first = params["W1"]
        if not is_array(first):
            raise TypeError(f"params['W1'] is a {type(first).__name__}, not an array")
        xp, device = array_namespace(first), device_of(first)
        for layer, (fan_in, fan_out) in self._layer_shapes():
            for key, shape in ((f"W{layer}", (fan_in, fan_out)), (f"b{layer}", (fan_out,))):
                value = params[key]
                if not is_array(value) or array_namespace(value) is not xp:
                    raise TypeError(f"params[{key!r}] must be an array of the same library as params['W1']")
                if tuple(value.shape) != shape:
                    raise ValueError(f"params[{key!r}] has shape {tuple(value.shape)}, expected {shape}")
                if value.dtype != first.dtype:
                    raise TypeError(f"params[{key!r}] has dtype {value.dtype} but params['W1'] has {first.dtype}")
        return xp, device

    def targets(self, y: Any, xp: Any, dtype: Any) -> Any:
        """Encode labels as the targets the loss compares the logits with, checking their shape and range.

        Parameters
        ----------
        y : array of shape (n,) or (n, n_outputs)
            The labels, as the class notes describe them for this model's output.
        xp : namespace
            The Array API namespace of ``y``.
        dtype : dtype
            The floating dtype of the targets (that of ``X``).

        Returns
        -------
        array of shape (n, n_outputs)
            The targets, of ``dtype``: one-hot rows for class indices, else ``y`` as a column or as it is.

        Raises
        ------
        ValueError
            If ``y`` has the wrong number of columns or values outside the range the class notes give.

        Examples
        --------
        >>> import array_api_compat.numpy as xp, anyoptim
        >>> anyoptim.MLP([2, 3], output="softmax").targets(xp.asarray([2, 0]), xp, xp.float32)
        array([[0., 0., 1.],
               [1., 0., 0.]], dtype=float32)
        """
        return encode_targets(y, xp, dtype, output=self.output, n_outputs=self.layer_dims[-1])

    def _check_inputs(self, params: Any, X: Any, y: Any = None) -> tuple[Any, Any]:
        xp, device = self.check_params(params)
        x_xp, x_device = check_features(X)
        if x_xp is not xp:
            raise TypeError("X and params come from different array libraries")
        if x_device != device:
            raise ValueError(f"X is on device {x_device} but params are on {device}")
        if X.shape[1] != self.layer_dims[0]:
            raise ValueError(f"X has {X.shape[1]} features but the model expects {self.layer_dims[0]}")
        if X.dtype != params["W1"].dtype:
            raise TypeError(f"X has dtype {X.dtype} but params have {params['W1'].dtype}")
        if y is None:
            return xp, None
        check_labels(y, X.shape[0], xp, device)
        return xp, self.targets(y, xp, X.dtype)

    def logits(self, xp: Any, params: dict, X: Any) -> Any:
        """The last layer's pre-activation :math:`z_L = a_{L-1} W_L + b_L`, without checking the inputs.

        Parameters
        ----------
        xp : namespace
            The Array API namespace of ``params`` and ``X``.
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.
        X : array of shape (n_samples, n_features)
            The inputs, of the library, device and floating dtype of ``params``.

        Returns
        -------
        array of shape (n_samples, n_outputs)
            The logits, of ``X``'s dtype.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> anyoptim.MLP([2, 1]).logits(np, {"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}, np.eye(2))[:, 0]
        array([ 1., -1.])
        """
        activate = HIDDEN[self.hidden_activation][0]
        a = X
        for W, b in self._keys[:-1]:
            a = activate(xp, matmul(a, params[W]) + params[b])[0]
        W, b = self._keys[-1]
        return matmul(a, params[W]) + params[b]

    def value_and_grad(self, xp: Any, params: dict, X: Any, t: Any, out: Any = None) -> tuple[Any, dict]:
        r"""Loss and gradients for prepared targets ``t`` (see :meth:`targets`); no checks.

        Backpropagation, samples first: with :math:`\delta_L = \partial\ell/\partial z_L`,
        :math:`\nabla W_l = a_{l-1}^T \delta_l`, :math:`\nabla b_l = 1^T \delta_l` and
        :math:`\delta_{l-1} = (\delta_l W_l^T) \odot g'(z_{l-1})`.  With the optimizer's step this is all
        :func:`anyoptim.fit` does per mini-batch; on a small network each array call counts, so it makes no more than
        the math needs (one ones vector serves every sum).

        Parameters
        ----------
        xp : namespace
            The Array API namespace of ``params`` and ``X``.
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.
        X : array of shape (n_samples, n_features)
            The inputs, of the library, device and floating dtype of ``params``.
        t : array of shape (n_samples, n_outputs)
            The targets, of ``X``'s dtype, as :meth:`targets` returns them.
        out : dict of str to array, optional
            Arrays shaped like ``params`` to write the gradients into, on a library with mutable arrays.

        Returns
        -------
        loss : 0-D array or scalar
            The mean loss (a NumPy scalar on NumPy; :meth:`loss_and_grad` makes it a 0-D array).
        grads : dict of str to array
            The gradient of every parameter: ``out`` when it was written.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> model, params, X = anyoptim.MLP([2, 1]), {"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}, np.eye(2)
        >>> loss, grads = model.value_and_grad(np, params, X, np.array([[1.0], [1.0]]))
        >>> round(float(loss), 4), np.round(grads["W1"][:, 0], 4)  # X^T (σ(z) - t) / n
        (0.8133, array([-0.1345, -0.3655]))
        """
        return backprop_into(
            xp, params, X, t, out, keys=self._keys, hidden_activation=self.hidden_activation, output=self.output
        )

    def forward(self, params: dict, X: Any) -> Any:
        """The network's output: probabilities (sigmoid, softmax) or values (identity).

        Parameters
        ----------
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.
        X : array of shape (n_samples, n_features)
            The inputs, of the library, device and floating dtype of ``params``.

        Returns
        -------
        array of shape (n_samples, n_outputs)
            :math:`g(z_L)` for the output activation :math:`g`, of ``X``'s dtype.

        Raises
        ------
        TypeError, ValueError
            If ``params`` do not fit (:meth:`check_params`) or ``X`` is not a finite 2-D array like them.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> model, params, X = anyoptim.MLP([2, 1]), {"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}, np.eye(2)
        >>> np.round(model.forward(params, X)[:, 0], 4)  # σ(1), σ(-1)
        array([0.7311, 0.2689])
        """
        xp, _ = self._check_inputs(params, X)
        return output_activation(xp, self.output, self.logits(xp, params, X))

    def loss(self, params: dict, X: Any, y: Any) -> Any:
        """Mean loss over the samples (each output's loss: :mod:`anyoptim.nn.layers`).

        Parameters
        ----------
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.
        X : array of shape (n_samples, n_features)
            The inputs, of the library, device and floating dtype of ``params``.
        y : array of shape (n_samples,) or (n_samples, n_outputs)
            The labels or targets, as the class notes describe them.

        Returns
        -------
        0-D array
            The mean loss, of ``X``'s dtype.

        Raises
        ------
        TypeError, ValueError
            As :meth:`forward`, or if ``y`` does not fit (:meth:`targets`).

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> model, params, X = anyoptim.MLP([2, 1]), {"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}, np.eye(2)
        >>> round(float(model.loss(params, X, np.array([1, 1]))), 4)  # (softplus(-1) + softplus(1)) / 2
        0.8133
        """
        xp, t = self._check_inputs(params, X, y)
        return xp.asarray(loss_and_delta(xp, self.output, self.logits(xp, params, X), t)[0])

    def loss_and_grad(self, params: dict, X: Any, y: Any, out: Any = None) -> tuple[Any, dict]:
        """Mean loss and its gradient with respect to every parameter.

        Parameters
        ----------
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.
        X : array of shape (n_samples, n_features)
            The inputs, of the library, device and floating dtype of ``params``.
        y : array of shape (n_samples,) or (n_samples, n_outputs)
            The labels or targets, as for :meth:`loss`.
        out : dict of str to array, optional
            Arrays shaped like ``params`` (for instance views made by :func:`anyoptim.flatten`) to write the gradients
            into.  On libraries with immutable arrays (JAX) it is ignored.

        Returns
        -------
        loss : 0-D array
            The mean loss, of ``X``'s dtype.
        grads : dict of str to array
            ``out`` when it was written, else new arrays, with ``params``' keys and shapes.

        Raises
        ------
        TypeError, ValueError
            As :meth:`loss`; TypeError too if ``out`` is not of the library and dtype of ``params``.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> model, params, X = anyoptim.MLP([2, 1]), {"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}, np.eye(2)
        >>> loss, grads = model.loss_and_grad(params, X, np.array([1, 1]))
        >>> loss.shape, np.round(grads["b1"], 4)  # the mean of σ(z) - y
        ((), array([-0.5]))
        """
        xp, t = self._check_inputs(params, X, y)
        if out is not None and is_mutable(xp):
            out_xp, _ = self.check_params(out)
            if out_xp is not xp or out["W1"].dtype != params["W1"].dtype:
                raise TypeError("out must hold arrays of the same library and dtype as params")
        loss, grads = self.value_and_grad(xp, params, X, t, out)
        return xp.asarray(loss), grads  # NumPy reductions give scalars; the API promises a 0-D array

    def predict(self, params: dict, X: Any) -> Any:
        """Class labels for sigmoid (0/1) and softmax (argmax) outputs; values for identity outputs.

        Parameters
        ----------
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.
        X : array of shape (n_samples, n_features)
            The inputs, of the library, device and floating dtype of ``params``.

        Returns
        -------
        array of shape (n_samples,) or (n_samples, n_outputs)
            Labels of the default integer dtype, or values of ``X``'s dtype (1-D for one output).

        Raises
        ------
        TypeError, ValueError
            If ``params`` do not fit (:meth:`check_params`) or ``X`` is not a finite 2-D array like them.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> anyoptim.MLP([2, 1]).predict({"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}, np.eye(2))  # z > 0
        array([1, 0])
        """
        xp, _ = self._check_inputs(params, X)
        return self.predict_unchecked(xp, params, X)

    def predict_unchecked(self, xp: Any, params: dict, X: Any) -> Any:
        """:meth:`predict` without checking the inputs, for code that has checked them once (:meth:`check_params`).

        Parameters
        ----------
        xp : namespace
            The Array API namespace of ``params`` and ``X``.
        params : dict of str to array
            ``W1, b1, ..., WL, bL``, as :meth:`init` returns them.
        X : array of shape (n_samples, n_features)
            The inputs, of the library, device and floating dtype of ``params``.

        Returns
        -------
        array of shape (n_samples,) or (n_samples, n_outputs)
            As :meth:`predict`'s.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> anyoptim.MLP([2, 1]).predict_unchecked(np, {"W1": np.array([[1.0], [-1.0]]), "b1": np.zeros(1)}, np.eye(2))
        array([1, 0])
        """
        z = self.logits(xp, params, X)
        if self.output == "sigmoid":
            # σ(z) > 0.5 exactly when z > 0; labels in the integer dtype argmax would give
            return xp.astype(z[:, 0] > 0, default_integer_dtype(xp, device_of(z)))
        if self.output == "softmax":
            return xp.argmax(z, axis=1)
        return z[:, 0] if z.shape[1] == 1 else z
