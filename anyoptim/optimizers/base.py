"""The optimizer base class: checks, gradient processing and the step, the same for every optimizer.

An optimizer names its declared rule and computes its scalars; :class:`Optimizer` does the rest and hands
one :class:`~anyoptim.engines.program.Program` per group of leaves to the engine of the arrays' library.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, ClassVar

from .._checks import SETTING_CHECKS, check_choice, check_count
from .._namespace import check_leaves
from ..engines import check_engine, run_programs, select_engine
from ..engines.program import Program
from ..schedules import Schedule, learning_rate_at
from ..state import OptimizerState
from ..transforms import clip_factor, decay_all, frozen_mask, mask_values
from ..tree import TreeDef, tree_flatten, tree_unflatten
from .contract import check_against_rule, declaration_of
from .groups import leaf_keys, step_scalars
from .keywords import check_keywords
from .precision import init_slots, state_slot_fills
from .prepared import PreparedStep
from .traced import advance, static_of, under_trace
from .validation import apply_nonfinite_policy, check_distinct, check_grads, check_state, separate_grads, state_owner

__all__ = ["NONFINITE_POLICIES", "Optimizer"]

NONFINITE_POLICIES = ("ignore", "raise", "skip")


def _checked_after_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap an ``__init__`` so that the outermost one entered on an instance checks it against its rule.

    Python has no hook after the most derived ``__init__``; no metaclass, so user classes may mix in ``abc.ABC``.
    """

    @functools.wraps(init)
    def __init__(self: Optimizer, *args: Any, **kwargs: Any) -> None:
        if "_initializing" in vars(self):
            return init(self, *args, **kwargs)
        check_keywords(type(self), kwargs)  # names the class called, and the keyword meant
        object.__setattr__(self, "_initializing", True)
        try:
            init(self, *args, **kwargs)
        finally:
            object.__delattr__(self, "_initializing")
        self._check_rule()

    return __init__


class Optimizer:
    """Base class of every optimizer: validation, gradient processing and the step.

    Subclasses set :attr:`rule` (declared with
    :func:`~anyoptim.optimizers.contract.declare`) and override
    :meth:`_options` and :meth:`_step_scalars`; the state slots and their
    initial values come from the rule's declaration (:meth:`_slot_fills`).
    When an optimizer is constructed, its options, slots and scalars are checked
    against the declaration (a rule without one runs unchecked).

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
        Rescale the gradients so that their joint L2 norm is at most this value.  An infinite norm gives the
        factor 0 (as torch.optim and optax): finite leaves take no step, infinite elements become NaN.
    clip_value : float, optional
        Clip every gradient element to ``[-clip_value, clip_value]`` (after global-norm clipping).
    on_nonfinite : {"ignore", "raise", "skip"}, default "ignore"
        What a NaN or infinite gradient does: nothing special (free), raise ``FloatingPointError`` naming the
        leaf, or skip the step leaving params and state untouched and counting it in ``state.skipped``.  The
        last two read a flag back from the device each step.
    engine : {"auto", "generic", "fused"} or engine object, default "auto"
        How the update runs (:mod:`anyoptim.engines`); "auto" takes the fused engine when the arrays' library
        has one.  Tests and benchmarks may pin an engine object of that library (``NumpyEngine(kernels="ufunc")``).
    master_weights : bool, default False
        Keep float32 copies of float16/bfloat16 params, and float32 state (:mod:`anyoptim.optimizers.precision`).

    Raises
    ------
    ValueError
        If a setting is out of range (each is checked by :attr:`setting_checks`
        whenever it is assigned).
    anyoptim.optimizers.contract.RuleMismatchError
        A ``TypeError``: if the optimizer's options, slots or scalars are not
        those its rule declares.

    Examples
    --------
    The shared settings, on any optimizer: clip the gradient to norm 1 and skip
    steps whose gradient is not finite.

    >>> import numpy as np, anyoptim
    >>> opt = anyoptim.SGD(learning_rate=0.1, clip_global_norm=1.0, on_nonfinite="skip")
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, {"w": np.array([3.0, 4.0])}, state)  # norm 5: g becomes [0.6, 0.8]
    >>> params["w"]
    array([ 0.94, -2.08])
    >>> params, state = opt.step(params, {"w": np.array([np.nan, 1.0])}, state)
    >>> params["w"], state.count, state.skipped
    (array([ 0.94, -2.08]), 1, 1)

    A new optimizer is its rule, declared, and a subclass naming it (with
    :meth:`_step_scalars` when the rule reads more scalars than the learning rate):

    >>> from anyoptim.optimizers.contract import declare
    >>> @declare(scalars=("learning_rate",))
    ... def sign_descent(xp, p, g, slots, hp):
    ...     return p - hp["learning_rate"] * xp.sign(g), {}
    >>> class SignDescent(anyoptim.Optimizer):
    ...     rule = staticmethod(sign_descent)
    >>> opt = SignDescent(learning_rate=0.5)
    >>> params, state = opt.step(params, {"w": np.array([-3.0, 0.1])}, opt.init(params))
    >>> params["w"]
    array([ 1.44, -2.58])
    """

    rule: ClassVar[Callable[..., Any]]
    decoupled_weight_decay: ClassVar[bool] = False
    default_weight_decay_mask: ClassVar[Callable[[str, Any], bool]] = staticmethod(decay_all)
    #: How each setting is checked when it is assigned (subclasses add their own).
    setting_checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **SETTING_CHECKS,
        "weight_decay_mask": lambda name, value: frozen_mask(value),
        "on_nonfinite": lambda name, value: check_choice(name, value, NONFINITE_POLICIES),
        "engine": check_engine,
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _checked_after_init(cls.__dict__["__init__"])

    @_checked_after_init
    def __init__(
        self,
        learning_rate: float | Schedule,
        *,
        weight_decay: float = 0.0,
        weight_decay_mask: Any = None,
        clip_global_norm: float | None = None,
        clip_value: float | None = None,
        on_nonfinite: str = "ignore",
        engine: Any = "auto",
        master_weights: bool = False,
    ):
        # Every assignment is checked by __setattr__ (setting_checks), here and after construction.
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.weight_decay_mask = self.default_weight_decay_mask if weight_decay_mask is None else weight_decay_mask
        self.clip_global_norm = clip_global_norm
        self.clip_value = clip_value
        self.on_nonfinite = on_nonfinite
        self.engine = engine
        self.master_weights = master_weights

    # -- what subclasses describe

    def _slot_fills(self) -> dict[str, float]:
        """State slots of the rule and the value each starts at: those its declaration gives for the options."""
        declaration = declaration_of(getattr(type(self), "rule", None))
        return {} if declaration is None else declaration.slot_fills(self._options(), self)

    def _options(self) -> dict[str, Any]:
        """Options that choose the rule's code (fixed for the optimizer's life)."""
        return {}

    def _step_scalars(self, count: int) -> dict[str, float]:
        """Scalars of step ``count + 1`` other than the learning rate (betas, bias corrections)."""
        return {}

    def _check_rule(self) -> None:
        """Refuse an optimizer whose options, slots or scalars disagree with its rule's declaration."""
        rule = getattr(type(self), "rule", None)
        check_against_rule(
            type(self).__name__, rule, lambda: (self._options(), self._slot_fills(), self._step_scalars(0))
        )

    # -- the shared machinery

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"

    def _program(self, decayed: bool) -> Program:
        return Program(
            rule=type(self).rule,
            options=tuple(sorted(self._options().items())),
            slot_names=tuple(self.slot_fills()),
            scale_grad=self.clip_global_norm is not None,
            clip_value=self.clip_value is not None,
            coupled_decay=decayed and not self.decoupled_weight_decay,
            decoupled_decay=decayed and self.decoupled_weight_decay,
            master=self.master_weights,
        )

    def learning_rate_at(self, count: int) -> float:
        """Get the learning rate of the step taken after ``count`` steps (:func:`~anyoptim.schedules.learning_rate_at`).

        Parameters
        ----------
        count : int or array
            The steps taken so far (a traced 0-D integer array under ``jax.jit``).

        Returns
        -------
        float or array
            The constant rate, or the schedule's value at ``count`` (traced with the count).

        Examples
        --------
        >>> import anyoptim
        >>> anyoptim.SGD(lambda count: 0.1 / (1 + count)).learning_rate_at(4)
        0.02
        """
        return learning_rate_at(self.learning_rate, count)

    def init(self, params: Any) -> OptimizerState:
        """Create the state for ``params``: its arrays on the parameters' device, with their dtypes.

        Parameters
        ----------
        params : tree of arrays
            A dict, list or tuple (nested) of floating-point arrays of one library and device.

        Returns
        -------
        OptimizerState
            Step count 0, the first step's learning rate, and each slot as a tree like ``params``.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> anyoptim.Adam(0.1).init({"w": np.zeros(2)}).slots
        {'m': {'w': array([0., 0.])}, 'v': {'w': array([0., 0.])}}
        """
        names, leaves, treedef = tree_flatten(params)
        xp, _ = check_leaves(names, leaves, what="params")
        check_distinct(names, leaves)
        if self.weight_decay:
            mask_values(self.weight_decay_mask, names, leaves, treedef)
        slots = init_slots(select_engine(xp, self.engine), xp, leaves, self.slot_fills())
        slots = {slot: tree_unflatten(treedef, values) for slot, values in slots.items()}
        return OptimizerState(0, self.learning_rate_at(0), slots, 0, treedef, state_owner(type(self)), static_of(self))

    def slot_fills(self) -> dict[str, float | None]:
        """Get the state's slots and the value :meth:`init` fills each with, without making any array.

        Returns
        -------
        dict of str to float or None
            Slot name -> initial value, in the order of ``init(params).slots``; None for ``"master"``
            (``master_weights=True``), which starts as the parameter.

        Examples
        --------
        >>> import anyoptim; anyoptim.Adagrad(initial_accumulator_value=0.1).slot_fills()
        {'s': 0.1}
        """
        return state_slot_fills(self._slot_fills(), self.master_weights)

    def __getstate__(self) -> dict[str, Any]:
        """Settings only: a copy or a pickle drops the step prepared for the last call's arrays."""
        return {**vars(self), "_prepared": None}

    def __setattr__(self, name: str, value: Any) -> None:
        check = self.setting_checks.get(name)
        if check is not None:
            value = check(name, value)  # raises before anything is stored
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            # A changed setting may change programs, masks or slots: validate the next step in full.
            object.__setattr__(self, "_prepared", None)

    def step(self, params: Any, grads: Any, state: OptimizerState) -> tuple[Any, OptimizerState]:
        """Take one step: return the new parameters and state.

        On mutable libraries (NumPy, CuPy, torch) the arrays may be updated in place and returned; on JAX new arrays
        are returned.  The returned values are always the truth.  Every check runs before any array is touched, so a
        call that raises changes nothing.

        A training loop that passes the same arrays every step (the returned params and state, and one gradient
        buffer) takes a fast path: the checks that depend only on which arrays these are, their shapes and dtypes, and
        the tree structures ran on the first such step and are not repeated, and the engine's bound plan is reused.
        It then returns the very params tree and state slots it returned the step before (arrays updated in place).

        Parameters
        ----------
        params, grads : tree of arrays
            The parameters, and their gradients: the same structure, shapes and library.
        state : OptimizerState
            What :meth:`init` or the previous step returned.

        Returns
        -------
        params : tree of arrays
            The updated parameters.
        state : OptimizerState
            The new state (count + 1).

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> opt, params = anyoptim.SGD(0.1), {"w": np.array([1.0, 2.0])}
        >>> params, state = opt.step(params, {"w": np.array([0.5, -1.0])}, opt.init(params))
        >>> params["w"], state.count
        (array([0.95, 2.1 ]), 1)
        """
        prepared = self._prepared
        if prepared is not None and prepared.matches(params, grads, state):
            return self._prepared_step(prepared, params, state)
        names, p_leaves, treedef = tree_flatten(params)
        xp, device = check_leaves(names, p_leaves, what="params")
        check_distinct(names, p_leaves)
        g_leaves = check_grads(xp, device, names, p_leaves, treedef, grads)
        slots = check_state(state_owner(type(self)), tuple(self.slot_fills()), names, p_leaves, treedef, state)
        count = check_count(state.count)
        learning_rate = self.learning_rate_at(count)
        skip = under_trace(self.on_nonfinite, xp, p_leaves, g_leaves, slots)  # jax.jit: "skip" selects, on the device
        skipped = apply_nonfinite_policy(self.on_nonfinite, xp, names, g_leaves, params, state)
        if skipped is not None:
            return skipped
        g_leaves, grads_copied = separate_grads(xp, g_leaves, [*p_leaves, *(s for v in slots.values() for s in v)])
        keys, key_of_leaf, programs = self._leaf_groups(names, p_leaves, treedef)
        hps = self._step_scalars_of_leaves(xp, keys, key_of_leaf, g_leaves, count, learning_rate)
        engine = select_engine(xp, self.engine)
        new_params, new_slots, runs = run_programs(engine, xp, programs, p_leaves, g_leaves, slots, hps)
        new_params, new_slots, count, learning_rate, skips, static = advance(
            skip, (p_leaves, slots), (new_params, new_slots), state, count, learning_rate, self
        )
        slots_out = {slot: tree_unflatten(treedef, values) for slot, values in new_slots.items()}
        new_state = OptimizerState(count, learning_rate, slots_out, skips, treedef, state_owner(type(self)), static)
        params_out = tree_unflatten(treedef, new_params)
        self._prepared = None
        if runs is not None and not grads_copied and all(run.in_place for run, _ in runs):
            self._prepared = PreparedStep(
                xp, names, treedef, p_leaves, g_leaves, slots, keys, key_of_leaf, runs, params_out, new_state, grads
            )
        return params_out, new_state

    def step_again(self, params: Any, grads: Any, state: OptimizerState) -> tuple[Any, OptimizerState]:
        """:meth:`step`, for a loop that passes back, untouched, what the previous step returned.

        The caller promises that ``params`` and ``state`` are exactly the objects the previous call (:meth:`step` or
        this) returned and ``grads`` the very tree it passed then, with the same leaves, shapes and dtypes: only array
        *values* changed in between (a training loop such as :func:`anyoptim.fit` within an epoch, which owns those
        objects between its steps).  Then the previous call's prepared step runs without re-reading the leaves; the
        per-step checks (the schedule's value, ``on_nonfinite``) still run.  Other calls take a full :meth:`step`.

        Parameters
        ----------
        params : tree of arrays
            The params tree the previous call returned.
        grads : tree of arrays
            The grads tree the previous call was given, holding this step's gradients.
        state : OptimizerState
            The state the previous call returned.

        Returns
        -------
        params : tree of arrays
            The same tree, its arrays updated in place, when the prepared step ran;
            else what :meth:`step` returns.
        state : OptimizerState
            The new state.

        Raises
        ------
        FloatingPointError
            Under ``on_nonfinite="raise"``, for a NaN or infinite gradient.
        ValueError
            If a learning-rate schedule returns a negative or non-finite rate;
            on the full path, anything :meth:`step` raises.

        Notes
        -----
        The objects are compared by identity (``params``, ``state.slots`` and the ``grads`` tree must be the very ones
        of the previous call; anything else takes the full :meth:`step`); what is inside them is not re-read.  A
        subclass that replaces :meth:`step` should not be driven through this method (its prepared steps bypass the
        replacement): :func:`anyoptim.fit` calls it only on optimizers whose ``step`` is :meth:`Optimizer.step`.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> opt, params, grads = anyoptim.SGD(0.1), {"w": np.array([1.0, 2.0])}, {"w": np.array([0.5, -1.0])}
        >>> params, state = opt.step(params, grads, opt.init(params))
        >>> params, state = opt.step_again(params, grads, state); params["w"]  # the prepared step runs
        array([0.9, 2.2])
        """
        prepared = self._prepared
        if prepared is not None and prepared.follows(params, grads, state):
            return self._prepared_step(prepared, params, state)
        return self.step(params, grads, state)

    def _prepared_step(self, prepared: PreparedStep, params: Any, state: OptimizerState) -> tuple[Any, OptimizerState]:
        """The step on the arrays ``prepared`` was made for (already checked by :meth:`PreparedStep.matches`)."""
        count = check_count(state.count)
        learning_rate = self.learning_rate_at(count)
        if self.on_nonfinite != "ignore":
            skipped = apply_nonfinite_policy(
                self.on_nonfinite, prepared.xp, prepared.names, prepared.g_leaves, params, state
            )
            if skipped is not None:
                return skipped
        hps = self._step_scalars_of_leaves(
            prepared.xp, prepared.keys, prepared.key_of_leaf, prepared.g_leaves, count, learning_rate
        )
        for run, indices in prepared.runs:
            run(hps if indices is None else [hps[i] for i in indices])
        prepared.params_out, prepared.slots_out = params, state.slots  # the call's trees: matches() read them
        return params, state.stepped(count + 1, learning_rate, prepared.owner)  # owner: state_owner(type(self))

    def host_scalars(self, params: Any) -> Callable[[int], tuple[list[dict[str, Any]], float]]:
        """Each leaf's host scalars as a function of the step count, for code that replays a captured step.

        Parameters
        ----------
        params : tree of arrays
            The parameters the scalars are for (which leaves share scalars, and
            which are decayed, is fixed with them).

        Returns
        -------
        callable
            ``scalars(count) -> (hps, learning_rate)``: one mapping of scalars per
            leaf (in leaf order) for the step taken after ``count`` steps, and that
            step's learning rate.  It never touches the device: global-norm
            clipping's factor is left out (a captured step computes it on the
            device itself).  Settings are read when it is made.

        Examples
        --------
        >>> import numpy as np, anyoptim
        >>> anyoptim.SGD(0.1).host_scalars({"w": np.zeros(2)})(0)  # (hps, learning_rate) of the first step
        ([{'learning_rate': 0.1}], 0.1)
        """
        names, leaves, treedef = tree_flatten(params)
        xp, _ = check_leaves(names, leaves, what="params")
        keys, key_of_leaf, _ = self._leaf_groups(names, leaves, treedef)
        host = copy.copy(self)
        host.clip_global_norm = None

        def scalars(count: int) -> tuple[list[dict[str, Any]], float]:
            learning_rate = self.learning_rate_at(count)
            return host._step_scalars_of_leaves(xp, keys, key_of_leaf, [], count, learning_rate), learning_rate

        return scalars

    def forget_prepared(self) -> None:
        """Drop the step prepared for the arrays of the last call: the next :meth:`step` is validated in full.

        For code that is about to change what a prepared step assumed, such as
        a CUDA-graph capture that must record the full step.

        Examples
        --------
        >>> import anyoptim
        >>> anyoptim.SGD(0.1).forget_prepared()  # its next step is checked in full
        """
        object.__setattr__(self, "_prepared", None)

    # -- helpers of step

    def _leaf_groups(
        self, names: list[str], p_leaves: list[Any], treedef: TreeDef
    ) -> tuple[list[tuple[Any, bool]], list[int], list[tuple[Program, list[int]]]]:
        """What is fixed while the arrays are: which leaves share scalars, and which program each runs.

        Returns the distinct ``(dtype, decayed)`` keys, the index of each leaf's
        key, and the leaves grouped by program.
        """
        decayed = [False] * len(p_leaves)
        if self.weight_decay:
            decayed = mask_values(self.weight_decay_mask, names, p_leaves, treedef)
        keys, key_of_leaf, groups = leaf_keys(p_leaves, decayed)
        return keys, key_of_leaf, [(self._program(is_decayed), indices) for is_decayed, indices in groups.items()]

    def _step_scalars_of_leaves(
        self, xp: Any, keys: list, key_of_leaf: list[int], g_leaves: list, count: int, rate: float
    ) -> list[dict[str, Any]]:
        """Each leaf's scalars for this step; leaves of one dtype and decay share one mapping (:func:`step_scalars`)."""
        grad_scale = None if self.clip_global_norm is None else clip_factor(xp, g_leaves, self.clip_global_norm)
        return step_scalars(
            xp, self._step_scalars, count, rate, self.clip_value, grad_scale, self.weight_decay, keys, key_of_leaf
        )
