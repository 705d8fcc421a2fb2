"""Optimizer classes: hyperparameters, validation, state, and one step.

Each class names its rule (:mod:`anyoptim.rules`), the state slots the rule
needs, and the scalars of a step; :class:`Optimizer` does everything else the
same way for all of them: it validates input before touching any array,
processes gradients (clipping, weight decay, non-finite policy) and hands one
:class:`~anyoptim.rules.Program` to the engine chosen for the arrays' library.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from . import rules
from ._namespace import check_leaves, device_of
from .engines import ENGINE_CHOICES, select_engine
from .schedules import Schedule
from .tree import TreeDef, check_same_structure, tree_flatten, tree_unflatten

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Momentum",
    "NAdam",
    "Optimizer",
    "OptimizerState",
    "RAdam",
    "RMSprop",
    "decay_all",
    "decay_weights_only",
]

NONFINITE_POLICIES = ("ignore", "raise", "skip")


@dataclass(frozen=True)
class OptimizerState:
    """What an optimizer carries from one step to the next.

    Attributes
    ----------
    count : int
        Optimizer steps taken (skipped steps not included).
    learning_rate : float
        The learning rate the last step used (the first step's rate before any step).
    slots : dict
        One tree per state slot, shaped like the parameters (``slots["m"]["W1"]``).
    skipped : int
        Steps skipped by ``on_nonfinite="skip"``.
    structure : TreeDef
        The parameters' tree structure, to check every later call against.
    """

    count: int
    learning_rate: float
    slots: dict[str, Any]
    skipped: int = 0
    structure: TreeDef | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- validation


def _finite(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _non_negative(name: str, value: Any) -> float:
    number = _finite(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def _positive(name: str, value: Any) -> float:
    number = _finite(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def _beta(name: str, value: Any) -> float:
    number = _finite(name, value)
    if not 0 <= number < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return number


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _learning_rate(value: Any) -> float | Schedule:
    if callable(value):
        return value
    return _non_negative("learning_rate", value)


# --------------------------------------------------------------------------- weight-decay masks

_BIAS_NAME = re.compile(r"^(b\d*|bias(es)?)$", re.IGNORECASE)


def decay_all(name: str, leaf: Any) -> bool:
    """Weight-decay mask that decays every parameter (torch.optim's behaviour)."""
    return True


def decay_weights_only(name: str, leaf: Any) -> bool:
    """Weight-decay mask that spares biases and normalisation scales.

    A leaf is decayed when it has at least two dimensions and the last part of
    its name is not bias-like (``b``, ``b1``, ``b2``, ..., ``bias``, ``biases``;
    any case).  So the course's ``W1`` is decayed and ``b1`` is not, whatever
    its shape, and a 1-D scale or offset is never decayed.
    """
    return len(leaf.shape) >= 2 and not _BIAS_NAME.match(name.rsplit(".", 1)[-1])


def _mask_values(mask: Any, names: list[str], leaves: list[Any], treedef: TreeDef) -> list[bool]:
    if callable(mask):
        return [bool(mask(name, leaf)) for name, leaf in zip(names, leaves)]
    _, flags, mask_def = tree_flatten(mask)
    check_same_structure(treedef, mask_def, what="weight_decay_mask", like="params")
    for name, flag in zip(names, flags):
        if not isinstance(flag, bool):
            raise TypeError(f"weight_decay_mask[{name!r}] must be a bool, got {flag!r}")
    return flags


# --------------------------------------------------------------------------- the base class


class Optimizer:
    """Base class of every optimizer: validation, gradient processing and the step.

    Subclasses set :attr:`rule` and override :meth:`_slot_fills`,
    :meth:`_options` and :meth:`_step_scalars`.

    Parameters
    ----------
    learning_rate : float or callable
        A rate >= 0, or a schedule ``f(count) -> float`` (:mod:`anyoptim.schedules`).
    weight_decay : float, default 0
        L2 penalty added to the gradient (``g + λθ``), or for AdamW and Lion decoupled decay.
    weight_decay_mask : callable or tree of bool, optional
        Which parameters are decayed: ``mask(name, array) -> bool`` or a tree of
        bools shaped like the parameters.  Default: every parameter
        (:func:`decay_all`), except for AdamW and Lion (:func:`decay_weights_only`).
    clip_global_norm : float, optional
        Rescale the gradients so that their joint L2 norm is at most this value.
    clip_value : float, optional
        Clip every gradient element to ``[-clip_value, clip_value]`` (after global-norm clipping).
    on_nonfinite : {"ignore", "raise", "skip"}, default "ignore"
        What a NaN or infinite gradient does: nothing special (free), raise
        ``FloatingPointError`` naming the leaf, or skip the step leaving params and
        state untouched and counting it in ``state.skipped``.  The last two read a
        flag back from the device each step.
    engine : {"auto", "generic", "fused"}, default "auto"
        How the update runs (:mod:`anyoptim.engines`); "auto" takes the fused
        engine when the arrays' library has one.
    """

    rule: ClassVar[Callable[..., Any]]
    decoupled_weight_decay: ClassVar[bool] = False
    default_weight_decay_mask: ClassVar[Callable[[str, Any], bool]] = staticmethod(decay_all)

    def __init__(
        self,
        learning_rate: float | Schedule,
        *,
        weight_decay: float = 0.0,
        weight_decay_mask: Any = None,
        clip_global_norm: float | None = None,
        clip_value: float | None = None,
        on_nonfinite: str = "ignore",
        engine: str = "auto",
    ):
        self.learning_rate = _learning_rate(learning_rate)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.weight_decay_mask = self.default_weight_decay_mask if weight_decay_mask is None else weight_decay_mask
        if not callable(self.weight_decay_mask):
            tree_flatten(self.weight_decay_mask)  # a malformed tree fails here, not at the first step
        self.clip_global_norm = None if clip_global_norm is None else _positive("clip_global_norm", clip_global_norm)
        self.clip_value = None if clip_value is None else _positive("clip_value", clip_value)
        self.on_nonfinite = _choice("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        self.engine = _choice("engine", engine, ENGINE_CHOICES)

    # -- what subclasses describe

    def _slot_fills(self) -> dict[str, float]:
        """State slots of the rule and the value each starts at."""
        return {}

    def _options(self) -> dict[str, Any]:
        """Options that choose the rule's code (fixed for the optimizer's life)."""
        return {}

    def _step_scalars(self, count: int) -> dict[str, float]:
        """Scalars of step ``count + 1`` other than the learning rate (betas, bias corrections)."""
        return {}

    # -- the shared machinery

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"

    def _program(self, decayed: bool) -> rules.Program:
        return rules.Program(
            rule=type(self).rule,
            options=tuple(sorted(self._options().items())),
            slot_names=tuple(self._slot_fills()),
            scale_grad=self.clip_global_norm is not None,
            clip_value=self.clip_value is not None,
            coupled_decay=decayed and not self.decoupled_weight_decay,
            decoupled_decay=decayed and self.decoupled_weight_decay,
        )

    def learning_rate_at(self, count: int) -> float:
        """The learning rate of the step taken after ``count`` steps, validated."""
        if not callable(self.learning_rate):
            return self.learning_rate
        value = self.learning_rate(count)
        try:
            return _non_negative("learning_rate", value)
        except ValueError:
            raise ValueError(f"the learning-rate schedule returned {value!r} at step count {count}: it must be a finite number >= 0") from None

    def init(self, params: Any) -> OptimizerState:
        """Create the state for ``params`` (a tree of floating-point arrays).

        State arrays are created on the parameters' device with their dtype.
        """
        names, leaves, treedef = tree_flatten(params)
        xp, _ = check_leaves(names, leaves, what="params")
        if self.weight_decay:
            _mask_values(self.weight_decay_mask, names, leaves, treedef)
        engine = select_engine(xp, self.engine)
        slots = engine.init_slots(xp, leaves, self._slot_fills())
        return OptimizerState(
            count=0,
            learning_rate=self.learning_rate_at(0),
            slots={slot: tree_unflatten(treedef, values) for slot, values in slots.items()},
            structure=treedef,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            # A changed setting may change programs, masks or slots: validate the next step in full.
            object.__setattr__(self, "_prepared", None)

    def step(self, params: Any, grads: Any, state: OptimizerState) -> tuple[Any, OptimizerState]:
        """Take one step: return the new parameters and state.

        On mutable libraries (NumPy, CuPy, torch) the arrays may be updated in
        place and returned; on JAX new arrays are returned.  The returned values
        are always the truth.  Every check runs before any array is touched, so a
        call that raises changes nothing.

        A training loop that passes the same arrays every step (the returned
        params and state, and one gradient buffer) takes a fast path: the checks
        that depend only on which arrays these are, their shapes and dtypes, and
        the tree structures ran on the first such step and are not repeated, and
        the engine's bound plan is reused.  It then returns the very params tree
        and state slots it returned the step before (their arrays updated in place).
        """
        prepared = self._prepared
        if prepared is not None and prepared.matches(params, grads, state):
            return self._prepared_step(prepared, params, state)
        names, p_leaves, treedef = tree_flatten(params)
        xp, device = check_leaves(names, p_leaves, what="params")
        g_leaves = self._check_grads(xp, device, names, p_leaves, treedef, grads)
        slots = self._check_state(names, p_leaves, treedef, state)
        learning_rate = self.learning_rate_at(state.count)
        skipped = self._nonfinite(xp, names, g_leaves, params, state)
        if skipped is not None:
            return skipped
        keys, key_of_leaf, programs = self._leaf_groups(names, p_leaves, treedef)
        hps = self._step_scalars_of_leaves(xp, keys, key_of_leaf, g_leaves, state.count, learning_rate)
        engine = select_engine(xp, self.engine)
        prepare = getattr(engine, "prepare", None)
        runs = []
        new_params = list(p_leaves)
        new_slots = {slot: list(values) for slot, values in slots.items()}
        for program, indices in programs:
            arguments = (
                program,
                xp,
                [p_leaves[i] for i in indices],
                [g_leaves[i] for i in indices],
                {slot: [values[i] for i in indices] for slot, values in slots.items()},
                [hps[i] for i in indices],
            )
            if prepare is None:
                updated_p, updated_slots = engine.apply(*arguments)
            else:
                run = prepare(*arguments)
                runs.append((run, indices))
                updated_p, updated_slots = run(arguments[-1])
            for position, i in enumerate(indices):
                new_params[i] = updated_p[position]
                for slot in slots:
                    new_slots[slot][i] = updated_slots[slot][position]
        new_state = OptimizerState(
            count=state.count + 1,
            learning_rate=learning_rate,
            slots={slot: tree_unflatten(treedef, values) for slot, values in new_slots.items()},
            skipped=state.skipped,
            structure=treedef,
        )
        params_out = tree_unflatten(treedef, new_params)
        self._prepared = None
        if prepare is not None and all(run.in_place for run, _ in runs):
            self._prepared = _Prepared(
                xp, names, treedef, p_leaves, g_leaves, slots, keys, key_of_leaf, runs, params_out, new_state.slots
            )
        return params_out, new_state

    def _prepared_step(self, prepared: _Prepared, params: Any, state: OptimizerState) -> tuple[Any, OptimizerState]:
        """The step on the arrays ``prepared`` was made for (already checked by :meth:`_Prepared.matches`)."""
        learning_rate = self.learning_rate_at(state.count)
        if self.on_nonfinite != "ignore":
            skipped = self._nonfinite(prepared.xp, prepared.names, prepared.g_leaves, params, state)
            if skipped is not None:
                return skipped
        hps = self._step_scalars_of_leaves(
            prepared.xp, prepared.keys, prepared.key_of_leaf, prepared.g_leaves, state.count, learning_rate
        )
        for run, indices in prepared.runs:
            run(hps if indices is None else [hps[i] for i in indices])
        return prepared.params_out, _next_state(
            state.count + 1, learning_rate, prepared.slots_out, state.skipped, prepared.treedef
        )

    # -- helpers of step

    def _check_grads(
        self, xp: Any, device: Any, names: list[str], p_leaves: list[Any], treedef: TreeDef, grads: Any
    ) -> list[Any]:
        grad_names, g_leaves, grad_def = tree_flatten(grads)
        check_same_structure(treedef, grad_def, what="grads", like="params")
        g_xp, g_device = check_leaves(grad_names, g_leaves, what="grads")
        if g_xp is not xp:
            raise TypeError("grads and params must come from the same array library")
        if g_device != device:
            raise ValueError(f"grads are on device {g_device} but params are on {device}")
        for name, p, g in zip(names, p_leaves, g_leaves):
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"grads[{name!r}] has shape {tuple(g.shape)} but params[{name!r}] has shape {tuple(p.shape)}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{name!r}] has dtype {g.dtype} but params[{name!r}] has dtype {p.dtype}")
        return g_leaves

    def _check_state(
        self, names: list[str], p_leaves: list[Any], treedef: TreeDef, state: OptimizerState
    ) -> dict[str, list[Any]]:
        if not isinstance(state, OptimizerState):
            raise TypeError(f"state must be the OptimizerState returned by init or step, got {type(state).__name__}")
        if state.structure is not None:
            check_same_structure(state.structure, treedef, what="params", like="the params this state was made for")
        expected = tuple(self._slot_fills())
        if tuple(state.slots) != expected:
            raise ValueError(f"state has slots {list(state.slots)} but {type(self).__name__} needs {list(expected)}: was it made by another optimizer?")
        slots: dict[str, list[Any]] = {}
        for slot, tree in state.slots.items():
            _, leaves, _ = tree_flatten(tree)
            for name, p, s in zip(names, p_leaves, leaves):
                if tuple(s.shape) != tuple(p.shape) or s.dtype != p.dtype:
                    raise ValueError(
                        f"state slot {slot!r} of {name!r} has shape {tuple(s.shape)} and dtype {s.dtype}, "
                        f"but the parameter has {tuple(p.shape)} and {p.dtype}"
                    )
            slots[slot] = leaves
        return slots

    def _nonfinite(
        self, xp: Any, names: list[str], g_leaves: list[Any], params: Any, state: OptimizerState
    ) -> tuple[Any, OptimizerState] | None:
        """Apply ``on_nonfinite``: raise, or the result of a skipped step, or None to go on."""
        if self.on_nonfinite == "ignore":
            return None
        bad = _first_nonfinite(xp, names, g_leaves)
        if bad is None:
            return None
        if self.on_nonfinite == "raise":
            raise FloatingPointError(f"grads[{bad!r}] holds NaN or infinity (on_nonfinite='raise')")
        return params, replace(state, skipped=state.skipped + 1)

    def _leaf_groups(
        self, names: list[str], p_leaves: list[Any], treedef: TreeDef
    ) -> tuple[list[tuple[Any, bool]], list[int], list[tuple[rules.Program, list[int]]]]:
        """What is fixed while the arrays are: which leaves share scalars, and which program each runs.

        Returns the distinct ``(dtype, decayed)`` keys, the index of each leaf's
        key, and the leaves grouped by program.
        """
        decayed = (
            _mask_values(self.weight_decay_mask, names, p_leaves, treedef)
            if self.weight_decay
            else [False] * len(p_leaves)
        )
        keys: list[tuple[Any, bool]] = []
        key_of_leaf = []
        for p, is_decayed in zip(p_leaves, decayed, strict=True):
            key = (p.dtype, is_decayed)
            if key not in keys:
                keys.append(key)
            key_of_leaf.append(keys.index(key))
        groups: dict[bool, list[int]] = {}
        for index, is_decayed in enumerate(decayed):
            groups.setdefault(is_decayed, []).append(index)
        return keys, key_of_leaf, [(self._program(is_decayed), indices) for is_decayed, indices in groups.items()]

    def _step_scalars_of_leaves(
        self,
        xp: Any,
        keys: list[tuple[Any, bool]],
        key_of_leaf: list[int],
        g_leaves: list[Any],
        count: int,
        learning_rate: float,
    ) -> list[dict[str, Any]]:
        """Each leaf's scalars for this step.

        Leaves with equal dtype and weight decay share one scalars mapping (the
        same object), which lets fused engines join them into one span.
        """
        common: dict[str, Any] = {"learning_rate": learning_rate, **self._step_scalars(count)}
        if self.clip_value is not None:
            common["clip_value"] = self.clip_value
        grad_scale = None
        if self.clip_global_norm is not None:
            grad_scale = _clip_factor(xp, g_leaves, self.clip_global_norm)
        shared = []
        for dtype, is_decayed in keys:
            hp = common if len(keys) == 1 else dict(common)
            if grad_scale is not None:
                hp["grad_scale"] = xp.astype(grad_scale, dtype)
            if is_decayed:
                hp["weight_decay"] = self.weight_decay
                hp["decay"] = learning_rate * self.weight_decay
            shared.append(hp)
        if len(shared) == 1:
            return shared * len(key_of_leaf)
        return [shared[index] for index in key_of_leaf]


def _next_state(
    count: int, learning_rate: float, slots: dict[str, Any], skipped: int, structure: TreeDef
) -> OptimizerState:
    """``OptimizerState(count=..., ...)`` made without the frozen dataclass's per-field ``object.__setattr__``.

    The result is the same object the constructor makes (OptimizerState has no
    ``__post_init__`` and no ``__slots__``); it saves half a microsecond of the
    few that a small model's step costs.
    """
    state = object.__new__(OptimizerState)
    fields = state.__dict__
    fields["count"] = count
    fields["learning_rate"] = learning_rate
    fields["slots"] = slots
    fields["skipped"] = skipped
    fields["structure"] = structure
    return state


class _Prepared:
    """What a validated step established about its arrays, for the steps that pass the same ones.

    Holds the leaves of params, grads and state slots, the shapes and dtypes of
    params and grads, the tree structure, and the engine's prepared runs.
    :meth:`matches` is the whole check of a later call: the same structure
    (exact container types), the very same leaf objects, unchanged shapes and
    dtypes.  Anything else takes the fully validated path.
    """

    __slots__ = (
        "g_leaves",
        "key_of_leaf",
        "keys",
        "layout",
        "leaves",
        "leaves_of",
        "names",
        "params_out",
        "runs",
        "slot_names",
        "slots_out",
        "treedef",
        "xp",
    )

    def __init__(self, xp, names, treedef, p_leaves, g_leaves, slots, keys, key_of_leaf, runs, params_out, slots_out):
        self.xp = xp
        self.names = names
        self.treedef = treedef
        self.leaves_of = _leaf_getter(treedef)
        self.g_leaves = list(g_leaves)
        self.slot_names = tuple(slots)
        # Every leaf in the order matches() gathers them: params, grads, then each slot.
        self.leaves = (*p_leaves, *g_leaves, *(leaf for values in slots.values() for leaf in values))
        self.layout = list(map(_shape_and_dtype, (*p_leaves, *g_leaves)))
        self.keys = keys
        self.key_of_leaf = key_of_leaf
        everything = list(range(len(p_leaves)))
        # A prepared step is called with this step's scalars; update() does the same without building results.
        self.runs = [
            (getattr(run, "update", run), None if indices == everything else indices) for run, indices in runs
        ]
        self.params_out = params_out
        self.slots_out = slots_out

    def matches(self, params: Any, grads: Any, state: Any) -> bool:
        """Whether a call passes exactly the arrays (and structures) this was made for."""
        if type(state) is not OptimizerState or state.structure is not self.treedef:
            return False
        slots = state.slots
        if type(slots) is not dict or tuple(slots) != self.slot_names:
            return False
        leaves_of = self.leaves_of
        try:  # a getter gives None for another structure, and None + tuple raises
            found = leaves_of(params) + leaves_of(grads)
            for name in self.slot_names:
                found += leaves_of(slots[name])
        except TypeError:
            return False
        if len(found) != len(self.leaves) or not all(map(operator.is_, found, self.leaves)):
            return False
        # NumPy lets code set .shape and .dtype of an existing array: check those of params and grads.
        return list(map(_shape_and_dtype, found[: len(self.layout)])) == self.layout


_shape_and_dtype = operator.attrgetter("shape", "dtype")


def _leaf_getter(treedef: TreeDef) -> Callable[[Any], tuple | None]:
    """A fast ``tree -> leaves`` for trees of exactly this structure (exact container types), else None."""
    if treedef.kind == "dict" and treedef.keys and all(child.kind == "leaf" for child in treedef.children):
        keys, count = treedef.keys, len(treedef.keys)
        get = operator.itemgetter(*keys)

        def leaves_of_dict(tree: Any) -> tuple | None:
            if type(tree) is not dict or len(tree) != count:
                return None
            try:
                found = get(tree)
            except KeyError:
                return None
            return found if count > 1 else (found,)

        return leaves_of_dict

    def leaves_of(tree: Any) -> tuple | None:
        found: list[Any] = []
        return tuple(found) if _collect_leaves(treedef, tree, found) else None

    return leaves_of


def _collect_leaves(treedef: TreeDef, node: Any, found: list[Any]) -> bool:
    if treedef.kind == "leaf":
        found.append(node)
        return True
    if treedef.kind == "dict":
        if type(node) is not dict or len(node) != len(treedef.keys):
            return False
        return all(
            key in node and _collect_leaves(child, node[key], found)
            for key, child in zip(treedef.keys, treedef.children, strict=True)
        )
    expected = list if treedef.kind == "list" else (treedef.node_type or tuple)
    if type(node) is not expected or len(node) != len(treedef.children):
        return False
    return all(_collect_leaves(child, value, found) for child, value in zip(treedef.children, node, strict=True))


def _first_nonfinite(xp: Any, names: list[str], leaves: list[Any]) -> str | None:
    for name, leaf in zip(names, leaves):
        if not bool(xp.all(xp.isfinite(leaf))):
            return name
    return None


def _clip_factor(xp: Any, leaves: list[Any], max_norm: float) -> Any:
    r"""The global-norm clip factor :math:`\min(1, c / \lVert g \rVert_2)` over all leaves, a 0-D array.

    The norm is accumulated in the widest dtype of the tree, and every leaf is
    divided by the largest magnitude first, so that neither float32 rounding nor
    overflow of the squares (gradients near the dtype's maximum) changes the
    factor: :math:`c/\lVert g\rVert = (c/a) / \lVert g/a \rVert` with :math:`a = \max|g|`.
    The scaled copy is one leaf at a time, so the extra memory is one leaf's.
    Computed with device-side operations only: no value is read back to the host.
    """
    wide = xp.result_type(*(leaf.dtype for leaf in leaves))
    flat = [xp.reshape(leaf, (-1,)) for leaf in leaves if math.prod(leaf.shape)]
    if not flat:
        return xp.ones((), dtype=wide, device=device_of(leaves[0]))
    largest = None
    for leaf in flat:
        # max and -min instead of max(abs(.)): no leaf-sized temporary.
        magnitude = xp.astype(xp.maximum(xp.max(leaf), -xp.min(leaf)), wide)
        largest = magnitude if largest is None else xp.maximum(largest, magnitude)
    one = xp.ones_like(largest)
    scale = xp.where(largest > 0, largest, one)
    total = None
    for leaf in flat:
        scaled = xp.astype(leaf, wide, copy=False) / scale
        part = xp.vecdot(scaled, scaled)
        total = part if total is None else total + part
    norm_of_scaled = xp.where(total > 0, xp.sqrt(total), one)
    return xp.where(total > 0, xp.minimum((max_norm / scale) / norm_of_scaled, one), one)


# --------------------------------------------------------------------------- the optimizers


class SGD(Optimizer):
    r"""Gradient descent: :math:`\theta \leftarrow \theta - \alpha g`.

    Batch, mini-batch and stochastic gradient descent differ only in the data the
    gradients are computed on (see :func:`anyoptim.minibatches`), not in the update.

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
    **options
        ``weight_decay``, ``weight_decay_mask``, ``clip_global_norm``, ``clip_value``,
        ``on_nonfinite``, ``engine``: see :class:`Optimizer`.

    Notes
    -----
    torch.optim.SGD with ``momentum=0``; optax.sgd; Keras SGD with ``momentum=0``.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.SGD(learning_rate=0.1)
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, {"w": np.array([1.0, 1.0])}, state)
    >>> params["w"]
    array([ 0.9, -2.1])
    """

    rule = staticmethod(rules.sgd)

    def __init__(self, learning_rate: float | Schedule = 0.01, **options: Any):
        super().__init__(learning_rate, **options)


class Momentum(Optimizer):
    r"""Gradient descent with momentum (Polyak, 1964), optionally Nesterov's (Sutskever et al., 2013).

    .. math::

        v \leftarrow \beta v + c\, g, \qquad \theta \leftarrow \theta - \alpha v
        \quad(\text{Nesterov: } \theta \leftarrow \theta - \alpha(\beta v + c\, g))

    with :math:`c = 1 - \beta` in the ``"ema"`` form (the course's
    :math:`v = \beta v + (1-\beta) g`) and :math:`c = 1` in the ``"heavy_ball"``
    form, and :math:`v_0 = 0`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
    beta : float, default 0.9
        Momentum coefficient, in [0, 1).
    form : {"ema", "heavy_ball"}, default "ema"
    nesterov : bool, default False
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Conventions elsewhere:

    * torch.optim.SGD(momentum=μ, dampening=0) is ``form="heavy_ball", beta=μ``
      (torch's first buffer is ``g``, which is ours too, since :math:`v_0 = 0`);
      torch's ``dampening=μ`` after its first step is the EMA form.
    * optax.sgd(momentum=μ) is ``form="heavy_ball"`` (``m = g + μ m``).
    * Keras SGD keeps :math:`v = μv - αg`: the heavy ball with the rate inside
      the velocity; equal to ours for a constant rate.
    * The EMA form's velocity is :math:`1-\beta` times the heavy ball's, so it
      needs a rate :math:`1/(1-\beta)` times larger for the same steps.
    """

    rule = staticmethod(rules.momentum)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.01,
        beta: float = 0.9,
        *,
        form: str = "ema",
        nesterov: bool = False,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta = _beta("beta", beta)
        self.form = _choice("form", form, ("ema", "heavy_ball"))
        self.nesterov = bool(nesterov)

    def _slot_fills(self) -> dict[str, float]:
        return {"v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {"nesterov": self.nesterov}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "dampening": 1.0 - self.beta if self.form == "ema" else 1.0}


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton, 2012, Lecture 6.5).

    .. math::

        s \leftarrow \beta s + (1-\beta) g^2, \qquad
        \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}

    ``eps_in_sqrt=True`` uses :math:`\sqrt{s + \epsilon}`; ``centered=True``
    divides by :math:`\sqrt{s - \bar g^2}` with :math:`\bar g` the moving mean of
    the gradient (Graves, 2013); ``momentum=μ > 0`` keeps
    :math:`b \leftarrow \mu b + g/\sqrt{\cdot}` and steps by :math:`\alpha b`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta : float, default 0.9
        Decay of the squared-gradient average (the course's β).
    epsilon : float, default 1e-8
    eps_in_sqrt : bool, default False
    centered : bool, default False
    momentum : float, default 0
    **options
        See :class:`Optimizer`.

    Notes
    -----
    * torch.optim.RMSprop calls β ``alpha`` (default 0.99) and puts ε outside the
      root: ``RMSprop(alpha=a, eps=e)`` is ``beta=a, epsilon=e``.
    * optax.rmsprop calls β ``decay`` (0.9) and puts ε inside the root by default
      (``eps_in_sqrt=True``).
    * Keras RMSprop calls β ``rho`` (0.9), ε inside the root, 1e-7.
    """

    rule = staticmethod(rules.rmsprop)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta: float = 0.9,
        epsilon: float = 1e-8,
        *,
        eps_in_sqrt: bool = False,
        centered: bool = False,
        momentum: float = 0.0,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta = _beta("beta", beta)
        self.epsilon = _non_negative("epsilon", epsilon)
        self.eps_in_sqrt = bool(eps_in_sqrt)
        self.centered = bool(centered)
        self.momentum = _beta("momentum", momentum)

    def _slot_fills(self) -> dict[str, float]:
        fills = {"s": 0.0}
        if self.centered:
            fills["mean_g"] = 0.0
        if self.momentum:
            fills["buf"] = 0.0
        return fills

    def _options(self) -> dict[str, Any]:
        return {"eps_in_sqrt": self.eps_in_sqrt, "centered": self.centered, "use_momentum": bool(self.momentum)}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "epsilon": self.epsilon, "momentum": self.momentum}


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with bias correction exactly as the course.

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2

        \hat m = \frac{m}{1-\beta_1^t}, \qquad \hat v = \frac{v}{1-\beta_2^t}, \qquad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{\hat v + \epsilon_{root}} + \epsilon}

    At step 1 the corrected moments are exactly ``g`` and ``g**2``, so the first
    update is :math:`\alpha g / (|g| + \epsilon)`.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta1, beta2 : float, default 0.9, 0.999
    epsilon : float, default 1e-8
        Added outside the square root (course, torch.optim, optax).
    eps_root : float, default 0
        Added inside the square root (optax's ``eps_root``).
    amsgrad : bool, default False
        Use the running maximum of :math:`v` (Reddi et al., 2018), as torch.optim
        does: the maximum of the *uncorrected* :math:`v`, then corrected.
    **options
        See :class:`Optimizer`; ``weight_decay`` here is L2 added to the gradient
        (torch.optim.Adam's); for decoupled decay use :class:`AdamW`.

    Notes
    -----
    Same as torch.optim.Adam and optax.adam with equal arguments.  Keras 3 Adam
    uses the "ε-hat" form, :math:`\alpha\sqrt{1-\beta_2^t}/(1-\beta_1^t) \cdot m/(\sqrt v + \hat\epsilon)`,
    with :math:`\hat\epsilon = 10^{-7}`: ε there is not scaled by the correction.

    Examples
    --------
    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.Adam(learning_rate=0.1)
    >>> params = {"w": np.array([1.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, {"w": np.array([0.5])}, state)
    >>> round(float(params["w"][0]), 6), state.count
    (0.9, 1)
    """

    rule = staticmethod(rules.adam)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        eps_root: float = 0.0,
        amsgrad: bool = False,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta1 = _beta("beta1", beta1)
        self.beta2 = _beta("beta2", beta2)
        self.epsilon = _non_negative("epsilon", epsilon)
        self.eps_root = _non_negative("eps_root", eps_root)
        self.amsgrad = bool(amsgrad)

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "v": 0.0, "v_max": 0.0} if self.amsgrad else {"m": 0.0, "v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {"amsgrad": self.amsgrad}

    def _step_scalars(self, count: int) -> dict[str, float]:
        t = count + 1
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
            "eps_root": self.eps_root,
            "bias_correction1": 1.0 - self.beta1**t,
            "bias_correction2": 1.0 - self.beta2**t,
        }


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    .. math::

        \theta \leftarrow \theta - \alpha \left(\frac{\hat m}{\sqrt{\hat v + \epsilon_{root}} + \epsilon} + \lambda \theta\right)

    The decay is multiplied by the (scheduled) learning rate, as in torch.optim.AdamW
    and optax.adamw.  By default biases and other vectors are not decayed
    (:func:`decay_weights_only`); pass ``weight_decay_mask=anyoptim.decay_all``
    for torch.optim's behaviour.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta1, beta2, epsilon : see :class:`Adam`
    weight_decay : float, default 0.01
        λ, as torch.optim.AdamW (optax's default is 1e-4).
    **options
        See :class:`Adam` and :class:`Optimizer`.
    """

    decoupled_weight_decay = True
    default_weight_decay_mask = staticmethod(decay_weights_only)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        weight_decay: float = 0.01,
        **options: Any,
    ):
        super().__init__(learning_rate, beta1, beta2, epsilon, weight_decay=weight_decay, **options)


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer, 2011).

    .. math::

        s \leftarrow s + g^2, \qquad \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}

    Parameters
    ----------
    learning_rate : float or callable, default 0.01
    epsilon : float, default 1e-10
    initial_accumulator_value : float, default 0
        :math:`s_0` (torch.optim: 0; optax: 0.1).
    **options
        See :class:`Optimizer`.

    Notes
    -----
    torch.optim.Adagrad with ``lr_decay=0`` (use a schedule instead); optax.adagrad
    puts ε inside the root.
    """

    rule = staticmethod(rules.adagrad)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.01,
        epsilon: float = 1e-10,
        *,
        initial_accumulator_value: float = 0.0,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.epsilon = _non_negative("epsilon", epsilon)
        self.initial_accumulator_value = _non_negative("initial_accumulator_value", initial_accumulator_value)

    def _slot_fills(self) -> dict[str, float]:
        return {"s": self.initial_accumulator_value}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"epsilon": self.epsilon}


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, 2015, Algorithm 2).

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad u \leftarrow \max(\beta_2 u, |g|), \quad
        \theta \leftarrow \theta - \frac{\alpha}{1-\beta_1^t} \frac{m}{u + \epsilon}

    Parameters
    ----------
    learning_rate : float or callable, default 0.002
    beta1, beta2 : float, default 0.9, 0.999
    epsilon : float, default 1e-8
        Added to :math:`u`, as Keras; torch.optim.Adamax and optax.adamax put it
        inside the max (:math:`\max(\beta_2 u, |g| + \epsilon)`), which differs
        from ours only while :math:`|g|` is within ε of :math:`\beta_2 u`.
    **options
        See :class:`Optimizer`.
    """

    rule = staticmethod(rules.adamax)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.002,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta1 = _beta("beta1", beta1)
        self.beta2 = _beta("beta2", beta2)
        self.epsilon = _non_negative("epsilon", epsilon)

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "u": 0.0}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
            "bias_correction1": 1.0 - self.beta1 ** (count + 1),
        }


class NAdam(Adam):
    r"""NAdam: Adam with Nesterov momentum (Dozat, 2016), in optax's form.

    .. math::

        \hat m = \frac{\beta_1 m_t}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g}{1-\beta_1^t}, \qquad
        \theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    Parameters
    ----------
    learning_rate : float or callable, default 0.002
    beta1, beta2, epsilon, eps_root : see :class:`Adam`
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Equal to optax.nadam.  torch.optim.NAdam and Keras Nadam also decay the
    momentum over time (``momentum_decay``, Dozat's :math:`\mu_t` schedule); this
    class does not.
    """

    rule = staticmethod(rules.nadam)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.002,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        eps_root: float = 0.0,
        **options: Any,
    ):
        super().__init__(learning_rate, beta1, beta2, epsilon, eps_root=eps_root, **options)

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {}

    def _step_scalars(self, count: int) -> dict[str, float]:
        scalars = super()._step_scalars(count)
        scalars["bias_correction1_next"] = 1.0 - self.beta1 ** (count + 2)
        return scalars


class RAdam(Adam):
    r"""Rectified Adam (Liu et al., 2020).

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`: while
    :math:`\rho_t \le` ``threshold`` the step is momentum SGD with the corrected
    :math:`\hat m`; after, Adam's step scaled by

    .. math:: r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}.

    Parameters
    ----------
    learning_rate : float or callable, default 0.001
    beta1, beta2, epsilon : see :class:`Adam`
    threshold : float, default 5
        optax and torch.optim use 5; the paper 4.
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Equal to optax.radam; torch.optim.RAdam adds ε to :math:`\sqrt{v}` before
    the bias correction instead of to :math:`\sqrt{\hat v}`.
    """

    rule = staticmethod(rules.radam)

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        *,
        threshold: float = 5.0,
        **options: Any,
    ):
        super().__init__(learning_rate, beta1, beta2, epsilon, **options)
        self.threshold = _finite("threshold", threshold)
        if self.threshold < 4:
            # r_t has the factor (rho_t - 4): below 4 its square root is undefined.
            raise ValueError(f"threshold must be >= 4, got {threshold!r}")

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0, "v": 0.0}

    def _options(self) -> dict[str, Any]:
        return {}

    def _step_scalars(self, count: int) -> dict[str, float]:
        scalars = super()._step_scalars(count)
        t = count + 1
        rho_inf = 2.0 / (1.0 - self.beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * self.beta2**t / (1.0 - self.beta2**t)
        if rho_t > self.threshold:
            ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            scalars.update(rectification=math.sqrt(ratio), unrectified=0.0)
        else:
            scalars.update(rectification=0.0, unrectified=1.0)
        return scalars


class Lion(Optimizer):
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    .. math::

        \theta \leftarrow \theta - \alpha\left(\mathrm{sign}(\beta_1 m + (1-\beta_1) g) + \lambda\theta\right), \qquad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    Parameters
    ----------
    learning_rate : float or callable, default 1e-4
        Lion wants a rate 3-10x smaller than AdamW's.
    beta1, beta2 : float, default 0.9, 0.99
    weight_decay : float, default 0
        Decoupled, multiplied by the learning rate, biases spared by default.
    **options
        See :class:`Optimizer`.

    Notes
    -----
    Equal to optax.lion; Keras Lion the same.
    """

    rule = staticmethod(rules.lion)
    decoupled_weight_decay = True
    default_weight_decay_mask = staticmethod(decay_weights_only)

    def __init__(
        self,
        learning_rate: float | Schedule = 1e-4,
        beta1: float = 0.9,
        beta2: float = 0.99,
        **options: Any,
    ):
        super().__init__(learning_rate, **options)
        self.beta1 = _beta("beta1", beta1)
        self.beta2 = _beta("beta2", beta2)

    def _slot_fills(self) -> dict[str, float]:
        return {"m": 0.0}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta1": self.beta1, "beta2": self.beta2}
