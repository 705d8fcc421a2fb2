"""The one table of optimizer configurations that every test derives its cases from.

A row (:class:`Case`) is one configuration of one optimizer class: how to build
it, its independent reference transcription (:mod:`tests.references`), a
Hypothesis strategy for its hyperparameters, the promises the tests check
(decoupled decay, biases spared by default, scale-freeness, convergence
settings, which hyperparameters are betas and epsilons) and its documented
torch.optim and optax equivalents.  The test modules read the table through
comprehensions and filters, never through lists of their own, so that adding an
optimizer is one row here (and its reference in ``tests/references.py``);
``test_reference.test_every_registered_optimizer_has_a_case`` fails until it is
added.

:data:`CONFIGS` derives the engine tests' settings from the same rows: every row
as :meth:`Case.make` builds it, plus the gradient processing of
:data:`PROCESSED` on top of a few rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st

import anyoptim
from tests.references import (
    Reference,
    ref_adadelta,
    ref_adagrad,
    ref_adam,
    ref_adamax,
    ref_lion,
    ref_momentum,
    ref_nadam,
    ref_radam,
    ref_rmsprop,
    ref_sgd,
)

# Hyperparameters the reference tests draw.
BETAS = st.sampled_from([0.0, 0.5, 0.9, 0.99])
BETA2S = st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999])
EPSILONS = st.sampled_from([1e-8, 1e-4, 0.1])


@dataclass(frozen=True)
class Equivalent:
    """A documented equality with another library, checked in ``tests/test_reference.py``.

    anyoptim's side is ``case.make(**ours)``; ``theirs(params, torch)`` builds the
    torch.optim optimizer over a list of tensors, ``theirs(optax)`` the optax
    gradient transformation.
    """

    label: str
    ours: Mapping[str, Any]
    theirs: Callable[..., Any]


@dataclass(frozen=True)
class Case:
    """One optimizer configuration and everything the tests need to know about it.

    ``settings`` are the fixed keyword arguments that select this configuration
    (``form``, ``nesterov``, ``amsgrad``, ...); ``hyper`` draws the remaining
    hyperparameters (keyword arguments of both the class and the reference), and
    ``example`` is the point of that space that :meth:`make` uses, with
    ``learning_rate``.
    """

    id: str
    cls: type[anyoptim.Optimizer]
    reference: Callable[..., Reference]
    hyper: st.SearchStrategy[dict[str, Any]]
    example: dict[str, Any]
    learning_rate: float
    settings: dict[str, Any] = field(default_factory=dict)
    #: Hyperparameters that must lie in [0, 1), and those that must be finite and >= 0 (validation tests).
    betas: tuple[str, ...] = ()
    epsilons: tuple[str, ...] = ()
    #: Weight decay subtracted from the parameters (AdamW, Lion) rather than added to the gradient.
    decoupled: bool = False
    #: The default weight_decay_mask is decay_weights_only (biases and 1-D leaves are not decayed).
    spares_biases: bool = False
    #: The class decays by default (weight_decay = 0.01).
    decays_by_default: bool = False
    #: The options (on top of make's) under which gradients times 2**k give bit-identical steps; None: never.
    scale_free: dict[str, Any] | None = None
    #: (learning rate on the convex quadratic, learning rate on Rosenbrock's function); None: not tested.
    convergence: tuple[float, float] | None = None
    torch: tuple[Equivalent, ...] = ()
    optax: tuple[Equivalent, ...] = ()

    def make(self, learning_rate: Any = None, **options: Any) -> anyoptim.Optimizer:
        """The example configuration; ``options`` (engine, clipping, decay, hyperparameters) override it."""
        rate = self.learning_rate if learning_rate is None else learning_rate
        return self.cls(rate, **{**self.settings, **self.example, **options})

    def optimizer(self, learning_rate: Any, hyper: dict[str, Any], **options: Any) -> anyoptim.Optimizer:
        """The configuration with drawn hyperparameters ``hyper`` (a value of :attr:`hyper`)."""
        return self.cls(learning_rate, **self.settings, **hyper, **options)

    def ref(self, hyper: dict[str, Any]) -> Reference:
        """The reference transcription with the same hyperparameters."""
        return self.reference(**self.settings, **hyper)


# --------------------------------------------------------------------------- families with several rows


def _momentum(form: str, nesterov: bool, convergence: tuple[float, float], torch=()) -> Case:
    return Case(
        f"momentum-{form}{'-nesterov' if nesterov else ''}",
        anyoptim.Momentum,
        ref_momentum,
        hyper=st.fixed_dictionaries({"beta": BETAS}),
        example={"beta": 0.9},
        learning_rate=0.1,
        settings={"form": form, "nesterov": nesterov},
        betas=("beta",),
        convergence=convergence,
        torch=torch,
    )


def _rmsprop(
    eps_in_sqrt: bool = False, centered: bool = False, momentum: float = 0.0, convergence=None, torch=(), optax=()
) -> Case:
    settings = {"eps_in_sqrt": eps_in_sqrt, "centered": centered, "momentum": momentum}
    return Case(
        "-".join(["rmsprop", *(name for name, value in settings.items() if value)]),
        anyoptim.RMSprop,
        ref_rmsprop,
        hyper=st.fixed_dictionaries({"beta": BETAS, "epsilon": EPSILONS}),
        example={"beta": 0.9, "epsilon": 1e-8},
        learning_rate=0.01,
        settings=settings,
        betas=("beta", "momentum"),
        epsilons=("epsilon",),
        scale_free={"epsilon": 0.0},
        convergence=convergence,
        torch=torch,
        optax=optax,
    )


ADAM_HYPER = st.fixed_dictionaries({"beta1": BETAS, "beta2": BETA2S, "epsilon": EPSILONS})
ADAM_EPS_ROOT_HYPER = st.fixed_dictionaries(
    {"beta1": BETAS, "beta2": BETA2S, "epsilon": EPSILONS, "eps_root": EPSILONS}
)
ADAM_EXAMPLE = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}


def _adam(amsgrad: bool, eps_root: bool, scale_free=None, convergence=None, torch=(), optax=()) -> Case:
    return Case(
        "adam" + ("-amsgrad" if amsgrad else "") + ("-eps_root" if eps_root else ""),
        anyoptim.Adam,
        ref_adam,
        hyper=ADAM_EPS_ROOT_HYPER if eps_root else ADAM_HYPER,
        example={**ADAM_EXAMPLE, "eps_root": 1e-8} if eps_root else ADAM_EXAMPLE,
        learning_rate=0.01,
        settings={"amsgrad": True} if amsgrad else {},
        betas=("beta1", "beta2"),
        epsilons=("epsilon", "eps_root"),
        scale_free=scale_free,
        convergence=convergence,
        torch=torch,
        optax=optax,
    )


# --------------------------------------------------------------------------- the table

CASES: list[Case] = [
    Case(
        "sgd",
        anyoptim.SGD,
        ref_sgd,
        hyper=st.just({}),
        example={},
        learning_rate=0.1,
        convergence=(0.15, 0.003),
        torch=(Equivalent("SGD", {"learning_rate": 0.1}, lambda p, torch: torch.optim.SGD(p, lr=0.1)),),
    ),
    _momentum("ema", False, convergence=(0.15, 0.03)),
    _momentum("ema", True, convergence=(0.15, 0.01)),
    _momentum(
        "heavy_ball",
        False,
        convergence=(0.02, 0.003),
        torch=(
            Equivalent(
                "Momentum heavy_ball",
                {"learning_rate": 0.1, "beta": 0.8},
                lambda p, torch: torch.optim.SGD(p, lr=0.1, momentum=0.8),
            ),
        ),
    ),
    _momentum(
        "heavy_ball",
        True,
        convergence=(0.02, 0.001),
        torch=(
            Equivalent(
                "Momentum heavy_ball nesterov",
                {"learning_rate": 0.1, "beta": 0.8},
                lambda p, torch: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True),
            ),
        ),
    ),
    _rmsprop(
        convergence=(0.1, 0.01),
        torch=(
            Equivalent(
                "RMSprop",
                {"learning_rate": 0.01, "beta": 0.99, "epsilon": 1e-8},
                lambda p, torch: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8),
            ),
        ),
    ),
    _rmsprop(
        eps_in_sqrt=True,
        convergence=(0.1, 0.01),
        optax=(
            Equivalent(
                "rmsprop eps_in_sqrt",
                {"learning_rate": 0.01, "beta": 0.9, "epsilon": 1e-6},
                lambda optax: optax.rmsprop(learning_rate=0.01, decay=0.9, eps=1e-6),
            ),
        ),
    ),
    _rmsprop(centered=True),
    _rmsprop(momentum=0.9),
    _rmsprop(
        centered=True,
        momentum=0.5,
        convergence=(0.1, 0.003),
        torch=(
            Equivalent(
                "RMSprop centered momentum",
                {"learning_rate": 0.01, "beta": 0.95, "epsilon": 1e-6},
                lambda p, torch: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-6, centered=True, momentum=0.5),
            ),
        ),
    ),
    _rmsprop(eps_in_sqrt=True, centered=True, momentum=0.5),
    _adam(
        False,
        False,
        scale_free={"epsilon": 0.0},
        convergence=(0.3, 0.03),
        torch=(
            Equivalent("Adam", {"learning_rate": 0.01}, lambda p, torch: torch.optim.Adam(p, lr=0.01)),
            Equivalent(
                "Adam weight_decay",
                {"learning_rate": 0.01, "weight_decay": 0.1},
                lambda p, torch: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
            ),
        ),
    ),
    _adam(
        True,
        False,
        scale_free={"epsilon": 0.0},
        convergence=(0.3, 0.03),
        torch=(
            Equivalent(
                "Adam amsgrad",
                {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.9, "epsilon": 1e-6},
                lambda p, torch: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.9), eps=1e-6, amsgrad=True),
            ),
        ),
    ),
    _adam(
        False,
        True,
        optax=(
            Equivalent(
                "adam eps_root",
                {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.9, "epsilon": 1e-6, "eps_root": 1e-4},
                lambda optax: optax.adam(learning_rate=0.01, b1=0.8, b2=0.9, eps=1e-6, eps_root=1e-4),
            ),
        ),
    ),
    _adam(True, True),
    Case(
        "adamw",
        anyoptim.AdamW,
        ref_adam,
        hyper=ADAM_HYPER,
        example=ADAM_EXAMPLE,
        learning_rate=0.01,
        betas=("beta1", "beta2"),
        epsilons=("epsilon",),
        decoupled=True,
        spares_biases=True,
        decays_by_default=True,
        convergence=(0.3, 0.03),
        torch=(
            Equivalent(
                "AdamW decay_all",
                {"learning_rate": 0.01, "weight_decay": 0.1, "weight_decay_mask": anyoptim.decay_all},
                lambda p, torch: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
            ),
        ),
    ),
    Case(
        "adagrad",
        anyoptim.Adagrad,
        ref_adagrad,
        hyper=st.fixed_dictionaries({"epsilon": EPSILONS, "initial_accumulator_value": st.sampled_from([0.0, 0.1])}),
        example={"epsilon": 1e-10, "initial_accumulator_value": 0.1},
        learning_rate=0.1,
        epsilons=("epsilon", "initial_accumulator_value"),
        scale_free={"epsilon": 0.0, "initial_accumulator_value": 0.0},
        convergence=(1.0, 0.3),
        torch=(
            Equivalent(
                "Adagrad",
                {"learning_rate": 0.1, "epsilon": 1e-10, "initial_accumulator_value": 0.1},
                lambda p, torch: torch.optim.Adagrad(p, lr=0.1, eps=1e-10, initial_accumulator_value=0.1),
            ),
        ),
    ),
    Case(
        "adadelta",
        anyoptim.Adadelta,
        ref_adadelta,
        hyper=st.fixed_dictionaries({"rho": BETAS, "epsilon": EPSILONS}),
        example={"rho": 0.9, "epsilon": 1e-6},
        learning_rate=1.0,
        betas=("rho",),
        epsilons=("epsilon",),
        convergence=None,
        torch=(
            Equivalent(
                "Adadelta L2",
                {"learning_rate": 0.5, "rho": 0.8, "epsilon": 1e-4, "weight_decay": 0.1},
                lambda p, torch: torch.optim.Adadelta(p, lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1),
            ),
        ),
        optax=(
            Equivalent(
                "adadelta",
                {"learning_rate": 0.5, "rho": 0.8, "epsilon": 1e-4},
                lambda optax: optax.adadelta(learning_rate=0.5, rho=0.8, eps=1e-4),
            ),
        ),
    ),
    Case(
        "adamax",
        anyoptim.Adamax,
        ref_adamax,
        hyper=ADAM_HYPER,
        example=ADAM_EXAMPLE,
        learning_rate=0.01,
        betas=("beta1", "beta2"),
        epsilons=("epsilon",),
        scale_free={"epsilon": 0.0},
        convergence=(0.3, 0.1),
        # optax (like torch) puts Adamax's epsilon inside the max, anyoptim (like Keras) adds it to u:
        # the two agree when epsilon is 0.
        optax=(
            Equivalent(
                "adamax",
                {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.9, "epsilon": 0.0},
                lambda optax: optax.adamax(learning_rate=0.01, b1=0.8, b2=0.9, eps=0.0),
            ),
        ),
    ),
    Case(
        "nadam",
        anyoptim.NAdam,
        ref_nadam,
        hyper=st.fixed_dictionaries({"beta1": BETAS, "beta2": BETA2S, "epsilon": EPSILONS, "eps_root": st.just(0.0)}),
        example={**ADAM_EXAMPLE, "eps_root": 0.0},
        learning_rate=0.01,
        betas=("beta1", "beta2"),
        epsilons=("epsilon", "eps_root"),
        scale_free={"epsilon": 0.0},
        convergence=(0.3, 0.03),
        optax=(
            Equivalent(
                "nadam",
                {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.9, "epsilon": 1e-6},
                lambda optax: optax.nadam(learning_rate=0.01, b1=0.8, b2=0.9, eps=1e-6),
            ),
        ),
    ),
    Case(
        "radam",
        anyoptim.RAdam,
        ref_radam,
        hyper=st.fixed_dictionaries(
            {
                "beta1": BETAS,
                # beta2 = 0.8 and 0.9 leave the warm-up (rho_t > threshold) within a few steps.
                "beta2": st.sampled_from([0.5, 0.8, 0.9, 0.999]),
                "epsilon": EPSILONS,
                "threshold": st.sampled_from([4.0, 5.0]),
            }
        ),
        example={**ADAM_EXAMPLE, "threshold": 5.0},
        learning_rate=0.01,
        betas=("beta1", "beta2"),
        epsilons=("epsilon",),
        # Not scale-free: its warm-up steps are momentum SGD, which follows the scale.
        convergence=(0.3, 0.003),
        optax=(
            Equivalent(
                "radam",
                {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.9, "epsilon": 1e-6},
                lambda optax: optax.radam(learning_rate=0.01, b1=0.8, b2=0.9, eps=1e-6),
            ),
        ),
    ),
    Case(
        "lion",
        anyoptim.Lion,
        ref_lion,
        hyper=st.fixed_dictionaries({"beta1": BETAS, "beta2": BETAS}),
        example={"beta1": 0.9, "beta2": 0.99},
        learning_rate=0.01,
        betas=("beta1", "beta2"),
        decoupled=True,
        spares_biases=True,
        scale_free={},
        convergence=(0.1, 0.01),
        optax=(
            Equivalent(
                "lion decay_all",
                {
                    "learning_rate": 0.01,
                    "beta1": 0.8,
                    "beta2": 0.9,
                    "weight_decay": 0.1,
                    "weight_decay_mask": anyoptim.decay_all,
                },
                lambda optax: optax.lion(learning_rate=0.01, b1=0.8, b2=0.9, weight_decay=0.1),
            ),
        ),
    ),
]

CASE_BY_ID: dict[str, Case] = {case.id: case for case in CASES}
assert len(CASE_BY_ID) == len(CASES), "two rows share an id"


def case_params(cases: list[Case] | None = None) -> list[Any]:
    """``pytest.param(case, id=case.id)`` for each case (default: every row)."""
    return [pytest.param(case, id=case.id) for case in (CASES if cases is None else cases)]


# --------------------------------------------------------------------------- the engine tests' settings


def _schedule(count: int) -> float:
    return 0.05 * 0.9**count


#: Gradient processing on top of a row, for the engine tests: (row id, suffix, options).
PROCESSED: list[tuple[str, str, dict[str, Any]]] = [
    ("sgd", "l2", {"weight_decay": 0.01}),
    ("sgd", "clip-value", {"clip_value": 0.5}),
    ("sgd", "clip-norm", {"clip_global_norm": 1.0}),
    ("sgd", "l2-clip", {"weight_decay": 0.01, "clip_value": 0.5}),
    ("adam", "clipped-l2", {"clip_value": 1.0, "clip_global_norm": 2.0, "weight_decay": 1e-3}),
    ("adam", "clip-norm-l2", {"clip_global_norm": 1.0, "weight_decay": 1e-3}),
    ("adam", "schedule", {"learning_rate": _schedule}),
    ("adamw", "decay-all", {"weight_decay_mask": anyoptim.decay_all}),
    ("lion", "decay", {"weight_decay": 0.5}),
    ("lion", "decay-clip", {"weight_decay": 0.5, "clip_global_norm": 0.5}),
]


@dataclass(frozen=True)
class Config:
    """One concrete optimizer setting for the engine tests; ``make(engine)`` builds it."""

    id: str
    make: Callable[[Any], anyoptim.Optimizer]


def _config(case: Case, suffix: str = "", options: Mapping[str, Any] | None = None) -> Config:
    return Config(case.id + suffix, lambda engine: case.make(engine=engine, **(options or {})))


#: Every row as :meth:`Case.make` builds it, then the rows of :data:`PROCESSED`.
CONFIGS: list[Config] = [_config(case) for case in CASES] + [
    _config(CASE_BY_ID[case_id], f"-{suffix}", options) for case_id, suffix, options in PROCESSED
]
CONFIG_PARAMS = [pytest.param(config, id=config.id) for config in CONFIGS]
