"""The optimizers package's structure: declared rules, the check at construction, the Adam family, the state.

* Every rule declares its slots, scalars and options once
  (:func:`anyoptim.optimizers.contract.declare`); a rule whose declaration
  disagrees with its signature is refused where it is defined, and an optimizer
  whose options, slots or scalars disagree with its rule where it is
  constructed, before any step.
* Adam, NAdam and RAdam are siblings in :class:`AdamFamily`: each fixes the
  family settings it does not offer, and refuses them as options.
* :class:`OptimizerState` stays a frozen dataclass made by its constructor.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import pytest

import anyoptim
from anyoptim.optimizers import REGISTRY
from anyoptim.optimizers.adam import AdamFamily, adam
from anyoptim.optimizers.adaptive import rmsprop
from anyoptim.optimizers.contract import RuleMismatchError, Scalar, Slot, declaration_of, declare
from anyoptim.optimizers.sgd import sgd

# --------------------------------------------------------------------------- declarations of the built-in rules

#: Settings that switch on every optional slot and scalar.
EVERYTHING_ON: dict[str, dict[str, Any]] = {
    "rmsprop": {"centered": True, "momentum": 0.5, "eps_in_sqrt": True},
    "adam": {"amsgrad": True, "eps_root": 1e-8},
    "adamw": {"amsgrad": True, "eps_root": 1e-8},
    "nadam": {"eps_root": 1e-8},
    "momentum": {"nesterov": True, "form": "heavy_ball"},
}


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("options", [False, True], ids=["defaults", "everything-on"])
def test_every_optimizer_matches_its_declared_rule(name, options):
    cls = REGISTRY[name]
    declaration = declaration_of(cls.rule)
    assert declaration is not None, f"{cls.__name__}'s rule is not declared"
    optimizer = cls(**(EVERYTHING_ON.get(name, {}) if options else {}))
    rule_options = optimizer._options()
    assert set(rule_options) == set(declaration.options)
    # The state holds exactly the declared slots, and a step gives the rule every scalar it reads.
    params = {"w": np.ones(3)}
    state = optimizer.init(params)
    assert list(state.slots) == list(declaration.slot_fills(rule_options, optimizer))
    read: list[str] = []

    class Recording(dict):
        def __getitem__(self, key: str) -> Any:
            read.append(key)
            return super().__getitem__(key)

    def spy(xp, p, g, slots, hp, **kwargs):
        assert list(slots) == list(state.slots)
        return cls.rule(xp, p, g, slots, Recording(hp), **kwargs)

    spy.declaration = declaration  # type: ignore[attr-defined]
    optimizer.__class__ = type("Spying" + cls.__name__, (cls,), {"rule": staticmethod(spy)})
    optimizer.engine = "generic"  # the same settings, the rule called with a mapping that records what it reads
    optimizer.step(params, {"w": np.full(3, 0.5)}, state)
    assert sorted(set(read)) == sorted(declaration.scalars_read(rule_options))


def test_optional_slots_follow_their_options():
    assert list(anyoptim.RMSprop()._slot_fills()) == ["s"]
    assert list(anyoptim.RMSprop(centered=True, momentum=0.9)._slot_fills()) == ["s", "mean_g", "buf"]
    assert list(anyoptim.Adam(amsgrad=True)._slot_fills()) == ["m", "v", "v_max"]
    assert anyoptim.Adagrad(initial_accumulator_value=0.1)._slot_fills() == {"s": 0.1}
    optimizer = anyoptim.RMSprop()
    optimizer.momentum = 0.5  # a setting changed later changes the slots with it
    assert list(optimizer._slot_fills()) == ["s", "buf"]


# --------------------------------------------------------------------------- a class that disagrees with its rule


def _spare_scalars(count: int) -> dict[str, float]:
    t = count + 1
    return {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "bias_correction1": 1 - 0.9**t}


class _MissesAScalar(anyoptim.Optimizer):
    """Adam's rule without the second bias correction."""

    rule = staticmethod(adam)

    def _options(self) -> dict[str, Any]:
        return {"amsgrad": False, "with_eps_root": False}

    def _step_scalars(self, count: int) -> dict[str, float]:
        return _spare_scalars(count)


class _WrongOptions(anyoptim.Optimizer):
    rule = staticmethod(adam)

    def _options(self) -> dict[str, Any]:
        return {"amsgrad": False}


class _WrongSlots(anyoptim.Optimizer):
    rule = staticmethod(sgd)

    def _slot_fills(self) -> dict[str, float]:
        return {"v": 0.0}


class _MomentumScalarMissing(anyoptim.RMSprop):
    """RMSprop without its momentum scalar: fine until momentum is on."""

    def _step_scalars(self, count: int) -> dict[str, float]:
        return {"beta": self.beta, "epsilon": self.epsilon}


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: _MissesAScalar(0.1), r"_MissesAScalar does not match its rule adam: .*scalars \['bias_correction2'\]"),
        (
            lambda: _WrongOptions(0.1),
            r"_WrongOptions .* options \['amsgrad'\] but the rule takes \['amsgrad', 'with_eps",
        ),
        (lambda: _WrongSlots(0.1), r"_WrongSlots .* creates the slots \['v'\] but the rule reads \[\]"),
        (lambda: _MomentumScalarMissing(momentum=0.5), r"scalars \['momentum'\]"),
    ],
    ids=["missing-scalar", "wrong-options", "wrong-slots", "conditional-scalar"],
)
def test_a_class_that_disagrees_with_its_rule_is_refused_at_construction(make, pattern):
    with pytest.raises(RuleMismatchError, match=pattern):
        make()
    assert issubclass(RuleMismatchError, TypeError)


def test_a_conditional_scalar_is_needed_only_under_its_option():
    optimizer = _MomentumScalarMissing()  # momentum off: the rule does not read it
    params = {"w": np.ones(2)}
    params, _ = optimizer.step(params, {"w": np.ones(2)}, optimizer.init(params))
    assert np.all(params["w"] < 1)


def test_an_undeclared_rule_runs_unchecked():
    def halve(xp, p, g, slots, hp):
        return p * 0.5, {"k": slots["k"]}

    class Halving(anyoptim.Optimizer):
        rule = staticmethod(halve)

        def _slot_fills(self) -> dict[str, float]:
            return {"k": 1.0}

    optimizer = Halving(0.1)
    params = {"w": np.ones(2)}
    params, state = optimizer.step(params, {"w": np.ones(2)}, optimizer.init(params))
    np.testing.assert_array_equal(params["w"], [0.5, 0.5])
    assert list(state.slots) == ["k"]


# --------------------------------------------------------------------------- a rule that disagrees with its signature


def _two_step(xp, p, g, slots, hp, *, fast):
    return p, {}


@pytest.mark.parametrize(
    ("decorate", "pattern"),
    [
        (lambda: declare(options=())(_two_step), r"rule _two_step takes .*fast.* declared options \[\]"),
        (lambda: declare(options=("fast", "slow"))(_two_step), r"declared options \['fast', 'slow'\]"),
        (lambda: declare(slots=("m", "m"), options=("fast",))(_two_step), r"declares a slot twice"),
        (lambda: declare(scalars=("a", "a"), options=("fast",))(_two_step), r"declares a scalar twice"),
        (
            lambda: declare(slots=(Slot("m", when="slow"),), options=("fast",))(_two_step),
            r"'m' when 'slow', which is not one of its options \['fast'\]",
        ),
        (
            lambda: declare(scalars=(Scalar("a", when="slow"),), options=("fast",))(_two_step),
            r"'a' when 'slow'",
        ),
        (lambda: declare()(lambda xp, p, g, hp: (p, {})), r"takes \(xp, p, g, hp, \*, \)"),
    ],
    ids=["option-missing", "option-extra", "slot-twice", "scalar-twice", "slot-when", "scalar-when", "positional"],
)
def test_a_rule_that_disagrees_with_its_declaration_is_refused_where_it_is_defined(decorate, pattern):
    with pytest.raises(RuleMismatchError, match=pattern):
        decorate()


def test_declare_returns_the_rule_itself():
    def rule(xp, p, g, slots, hp):
        return p, {}

    assert declare()(rule) is rule
    assert declaration_of(rule) is not None
    assert declaration_of(lambda: None) is None
    assert declaration_of(rmsprop).scalars_read({"use_momentum": False}) == ("learning_rate", "beta", "epsilon")


# --------------------------------------------------------------------------- the Adam family


def test_adam_nadam_radam_are_siblings_and_adamw_is_adam():
    for cls in (anyoptim.Adam, anyoptim.NAdam, anyoptim.RAdam):
        assert cls.__bases__ == (AdamFamily,)
    assert anyoptim.AdamW.__bases__ == (anyoptim.Adam,)
    assert not issubclass(anyoptim.Adamax, AdamFamily)
    assert anyoptim.NAdam.fixed == {"amsgrad": False}
    assert anyoptim.RAdam.fixed == {"amsgrad": False, "eps_root": 0.0}


@pytest.mark.parametrize(
    ("cls", "option", "value"),
    [
        (anyoptim.NAdam, "amsgrad", True),
        (anyoptim.NAdam, "amsgrad", False),
        (anyoptim.RAdam, "amsgrad", False),
        (anyoptim.RAdam, "eps_root", 0.0),
    ],
)
def test_a_fixed_setting_is_refused_as_an_option(cls, option, value):
    with pytest.raises(TypeError, match=rf"^{cls.__name__} has no '{option}' option \(got {option}={value}\)$"):
        cls(**{option: value})


def test_the_family_members_hold_the_fixed_settings():
    radam = anyoptim.RAdam()
    assert (radam.eps_root, radam.amsgrad, radam.threshold) == (0.0, False, 5.0)
    assert anyoptim.NAdam(eps_root=1e-3).eps_root == 1e-3
    adamw = anyoptim.AdamW(amsgrad=True, eps_root=1e-6)
    assert (adamw.amsgrad, adamw.eps_root, adamw.weight_decay) == (True, 1e-6, 0.01)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_a_class_signature_is_its_constructor(name):
    cls = REGISTRY[name]
    parameters = list(inspect.signature(cls).parameters)
    assert parameters[0] == "learning_rate" and parameters[-1] == "options"


# --------------------------------------------------------------------------- the state and the prepared step


def test_the_state_constructor_makes_a_frozen_dataclass():
    # (moved here from tests/test_numpy_engine.py's test of the former next_state)
    slots = {"m": {"w": np.zeros(2)}}
    made = anyoptim.OptimizerState(3, 0.5, slots, 1, None)
    assert made == anyoptim.OptimizerState(count=3, learning_rate=0.5, slots=slots, skipped=1, structure=None)
    assert type(made) is anyoptim.OptimizerState
    assert (made.count, made.learning_rate, made.slots, made.skipped, made.structure) == (3, 0.5, slots, 1, None)
    with pytest.raises(AttributeError):
        made.count = 4  # still frozen
    with pytest.raises(AttributeError):
        del made.count
    assert dataclasses.replace(made, skipped=2).skipped == 2
    assert [field.name for field in dataclasses.fields(made)] == [
        "count",
        "learning_rate",
        "slots",
        "skipped",
        "structure",
        "optimizer",  # the class name of the optimizer that made the state (None by default)
        "static",  # what JAX holds as static data, not leaves (nothing by default; not compared, not shown)
    ]
    assert made.optimizer is None and made.static == ()
    assert (
        repr(anyoptim.OptimizerState(1, 0.1, {})) == "OptimizerState(count=1, learning_rate=0.1, slots={}, skipped=0)"
    )


def test_step_again_is_public_and_documented():
    doc = anyoptim.Optimizer.step_again.__doc__
    assert doc and "Parameters" in doc and "Returns" in doc
    assert not hasattr(anyoptim.Optimizer, "_step_again")


# --------------------------------------------------------------------------- review fixes of the layout change


def test_user_optimizers_may_mix_in_abc():
    """No metaclass: a user subclass can be an ABC (or have a metaclass of its own) and is still checked."""
    import abc

    class Mine(anyoptim.Adam, abc.ABC):
        pass

    assert Mine(0.1).learning_rate == 0.1


def test_an_init_that_skips_super_is_a_clear_error():
    class NoSuper(anyoptim.Adam):
        def __init__(self):
            pass

    with pytest.raises(RuleMismatchError, match=r"NoSuper could not describe its rule adam: .*super\(\).__init__"):
        NoSuper()


@pytest.mark.parametrize(
    ("make", "name", "value"),
    [(anyoptim.NAdam, "amsgrad", True), (anyoptim.RAdam, "eps_root", 1e-3), (anyoptim.RAdam, "amsgrad", True)],
)
def test_fixed_settings_are_refused_after_construction_too(make, name, value):
    optimizer = make()
    with pytest.raises(TypeError, match=f"{make.__name__} has no '{name}' option"):
        setattr(optimizer, name, value)
    setattr(optimizer, name, make.fixed[name])  # the fixed value itself is fine
    assert getattr(optimizer, name) == make.fixed[name]


def test_copies_and_pickles_of_a_stepped_optimizer_keep_settings_and_drop_the_prepared_step():
    import copy
    import pickle

    optimizer = anyoptim.Adam(0.1, clip_global_norm=1.0)
    params = anyoptim.flatten({"w": np.ones(3)})
    optimizer.step(params, {"w": np.ones(3)}, optimizer.init(params))
    for clone in (copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer)), copy.copy(optimizer)):
        assert repr(clone) == repr(optimizer)
        assert clone._prepared is None
    assert optimizer._prepared is not None  # the original keeps its own
