r"""A multilayer perceptron written once against the Array API: forward, backward and losses by hand.

Data are samples first: ``X`` has shape (n_samples, n_features), layer ``l``
computes :math:`z_l = a_{l-1} W_l + b_l` with ``W_l`` of shape
(n_{l-1}, n_l) and ``b_l`` of shape (n_l,), and :math:`a_l = g(z_l)`.  The
parameters are a plain dict ``{"W1", "b1", "W2", "b2", ...}`` that every
optimizer takes as it is.

The activations and the losses (computed from the last layer's *logits*, never
from probabilities) are in :mod:`anyoptim.nn.layers`; every loss is the mean
over the samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._namespace import array_namespace, default_integer_dtype, device_of, is_array, is_floating, is_mutable
from ..engines import matmul  # `@`, or a product a CUDA graph can capture
from .data import check_features, check_int, check_labels, host_rng, host_zeros, resolve_dtype, to_namespace
from .layers import HIDDEN, LOSSES, loss_and_delta, output_activation, row_ones

__all__ = ["ACTIVATIONS", "INITS", "MLP", "OUTPUTS"]

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
OUTPUTS = ("sigmoid", "softmax", "identity")
INITS = ("he", "xavier")


class MLP:
    """A fully connected network with hand-written forward and backward passes.

    Parameters
    ----------
    layer_dims : sequence of int
        Widths from the input to the output, e.g. ``[2, 5, 2, 1]``: two
        features, hidden layers of 5 and 2 units, one output.  At least two.
    hidden_activation : {"relu", "leaky_relu", "tanh", "sigmoid"}, default "relu"
        ``leaky_relu`` has slope 0.01 below zero.
    output : {"sigmoid", "softmax", "identity"}, default "sigmoid"
        With binary cross-entropy (one output unit), categorical cross-entropy
        (two or more units) or mean squared error.
    init : {"he", "xavier"}, default "he"
        Weights drawn from :math:`N(0, 2/n_{in})` (He et al., 2015) or
        :math:`N(0, 2/(n_{in}+n_{out}))` (Glorot & Bengio, 2010); biases zero.

    Notes
    -----
    Labels: for ``sigmoid``, 0/1 (or probabilities) of shape (n,) or (n, 1); for
    ``softmax``, class indices of shape (n,) or one-hot rows of shape (n, K);
    for ``identity``, targets of shape (n,) (one output) or (n, K).

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> model = anyoptim.MLP([2, 5, 2, 1])
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> params = model.init(seed=0, like=X)
    >>> sorted(params), params["W1"].shape
    (['W1', 'W2', 'W3', 'b1', 'b2', 'b3'], (2, 5))
    >>> model.forward(params, X).shape
    (3, 1)
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
        """Number of weight layers (``len(layer_dims) - 1``)."""
        return len(self.layer_dims) - 1

    def _layer_shapes(self) -> list[tuple[int, tuple[int, int]]]:
        """``(layer, (fan_in, fan_out))`` for layers 1 .. L."""
        dims = self.layer_dims
        return [(layer, (dims[layer - 1], dims[layer])) for layer in range(1, len(dims))]

    # -- parameters

    def init(self, seed: Any = 0, like: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> dict:
        """Draw initial parameters on the host and move them to the requested namespace.

        Parameters
        ----------
        seed : int or sequence of int, default 0
            Seed of ``numpy.random.default_rng``; the same seed gives the same
            weights on every backend (drawn in float64, then cast).
        like : array, optional
            Take the namespace, device and (floating) dtype of this array, e.g. ``X``.
        xp, dtype, device : optional
            Namespace, dtype (object or name) and device, when ``like`` is not
            given or to override it.  Default: NumPy float64.

        Returns
        -------
        dict
            ``W1, b1, ..., WL, bL`` with ``W_l`` of shape (n_{l-1}, n_l) and ``b_l`` of shape (n_l,).
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
        """Check that ``params`` has this model's keys and shapes; return their namespace and device."""
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

    # -- labels

    def targets(self, y: Any, xp: Any, dtype: Any) -> Any:
        """Labels as the (n, n_outputs) array of ``dtype`` the loss compares the logits with.

        Checks the labels' shape and range for this model's output (see the class notes).
        """
        k = self.layer_dims[-1]
        if self.output == "softmax" and y.ndim == 1:
            if not bool(xp.all((y >= 0) & (y < k))) or not _integral(xp, y):
                raise ValueError(f"class labels must be integers in [0, {k}) for {k} softmax outputs")
            classes = xp.arange(k, dtype=y.dtype, device=device_of(y))
            return xp.astype(y[:, None] == classes[None, :], dtype)
        if y.ndim == 1:
            y = xp.reshape(y, (-1, 1))
        if y.shape[1] != k:
            raise ValueError(f"y has {y.shape[1]} columns but the model has {k} outputs")
        t = xp.astype(y, dtype)
        if self.output != "identity" and not bool(xp.all((t >= 0) & (t <= 1))):
            raise ValueError(f"labels for a {self.output} output must lie in [0, 1]")
        return t

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

    # -- the passes (unchecked: fit calls these every step)

    def logits(self, xp: Any, params: dict, X: Any) -> Any:
        """The last layer's pre-activation :math:`z_L` (no checks)."""
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
        :math:`\delta_{l-1} = (\delta_l W_l^T) \odot g'(z_{l-1})`.  With ``out`` on a
        library with mutable arrays, the gradients are written into ``out``.

        With the optimizer's step this is all :func:`anyoptim.fit` does per
        mini-batch; on a small network each array call counts, so it makes no
        more than the math needs (one ones vector serves every sum).
        """
        activate, backward = HIDDEN[self.hidden_activation]
        ones = row_ones(X)
        activations = [X]
        kept = []
        a = X
        for W, b in self._keys[:-1]:
            a, info = activate(xp, matmul(a, params[W]) + params[b])
            activations.append(a)
            kept.append(info)
        W, b = self._keys[-1]
        loss, delta = LOSSES[self.output](xp, matmul(a, params[W]) + params[b], t, ones)
        write = out is not None and is_mutable(xp)
        grads = out if write else {}
        for layer in range(self.n_layers - 1, -1, -1):
            W, b = self._keys[layer]
            dW = matmul(activations[layer].T, delta)
            db = matmul(ones, delta)  # 1^T δ, as the losses' sums (layers.py)
            if layer > 0:
                delta = backward(matmul(delta, params[W].T), kept[layer - 1])
            if write:
                grads[W][...] = dW
                grads[b][...] = db
            else:
                grads[W] = dW
                grads[b] = db
        return loss, grads

    # -- the public, checked API

    def forward(self, params: dict, X: Any) -> Any:
        """The network's output: probabilities (sigmoid, softmax) or values (identity), shape (n, n_outputs)."""
        xp, _ = self._check_inputs(params, X)
        return output_activation(xp, self.output, self.logits(xp, params, X))

    def loss(self, params: dict, X: Any, y: Any) -> Any:
        """Mean loss over the samples, a 0-D array."""
        xp, t = self._check_inputs(params, X, y)
        return xp.asarray(loss_and_delta(xp, self.output, self.logits(xp, params, X), t)[0])

    def loss_and_grad(self, params: dict, X: Any, y: Any, out: Any = None) -> tuple[Any, dict]:
        """Mean loss and its gradient with respect to every parameter.

        Parameters
        ----------
        params, X, y
            As for :meth:`loss`.
        out : dict, optional
            Arrays shaped like ``params`` (for instance views made by
            :func:`anyoptim.flatten`) to write the gradients into.  On libraries
            with immutable arrays (JAX) it is ignored.

        Returns
        -------
        loss : 0-D array
        grads : dict
            ``out`` when it was written, else new arrays, with ``params``' keys.
        """
        xp, t = self._check_inputs(params, X, y)
        if out is not None and is_mutable(xp):
            out_xp, _ = self.check_params(out)
            if out_xp is not xp or out["W1"].dtype != params["W1"].dtype:
                raise TypeError("out must hold arrays of the same library and dtype as params")
        loss, grads = self.value_and_grad(xp, params, X, t, out)
        return xp.asarray(loss), grads  # NumPy reductions give scalars; the API promises a 0-D array

    def predict(self, params: dict, X: Any) -> Any:
        """Class labels (n,) for sigmoid (0/1) and softmax (argmax); values for identity ((n,) for one output)."""
        xp, _ = self._check_inputs(params, X)
        return self.predict_unchecked(xp, params, X)

    def predict_unchecked(self, xp: Any, params: dict, X: Any) -> Any:
        z = self.logits(xp, params, X)
        if self.output == "sigmoid":
            # σ(z) > 0.5 exactly when z > 0; labels in the integer dtype argmax would give
            return xp.astype(z[:, 0] > 0, default_integer_dtype(xp, device_of(z)))
        if self.output == "softmax":
            return xp.argmax(z, axis=1)
        return z[:, 0] if z.shape[1] == 1 else z


def _integral(xp: Any, y: Any) -> bool:
    if not is_floating(xp, y.dtype):
        return True
    return bool(xp.all(y == xp.round(y)))
