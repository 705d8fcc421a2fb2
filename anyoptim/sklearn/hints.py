"""What a scikit-learn user's ``MLPClassifier`` settings are called here: one-line hints for the errors.

scikit-learn's ``MLPClassifier`` and ``MLPRegressor`` take settings that
anyoptim's estimators name differently (``solver`` is ``optimizer``) or
express another way (``learning_rate="adaptive"``: a schedule).  A user who
passes them gets the error Python or the checks would give anyway, plus what
to write instead.  Any other unknown keyword names the class called (not
``BaseMLP.__init__``, where Python would find it) and the closest accepted one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from typing import Any

__all__ = [
    "LEARNING_RATE_NAMES",
    "OTHER_NAMES",
    "SKLEARN_SETTINGS",
    "accepted_names",
    "check_learning_rate",
    "check_setting_names",
]

_ON_AN_INSTANCE = "set it on an optimizer instance instead, e.g. optimizer=anyoptim.{example}"
_HEAVY_BALL = "Momentum(0.001, beta=0.9, form='heavy_ball', nesterov=True)"

#: scikit-learn's setting -> what to pass to anyoptim's estimators instead
SKLEARN_SETTINGS = {
    "solver": (
        "anyoptim's estimators take optimizer= instead of solver=: a name of anyoptim.optimizers.REGISTRY "
        "('adam', 'sgd', 'momentum', 'rmsprop', ...) or an optimizer instance such as anyoptim.Adam(0.001)"
    ),
    "learning_rate_init": "pass learning_rate= (a float, or a schedule of anyoptim.schedules counted in steps)",
    "power_t": "pass learning_rate=anyoptim.schedules.inverse_time_decay(...), a schedule counted in steps",
    # scikit-learn's momentum is the heavy ball (v = momentum * v - lr * g), Nesterov's by default.
    "momentum": _ON_AN_INSTANCE.format(example=_HEAVY_BALL)
    + ", scikit-learn's heavy-ball momentum with its default nesterovs_momentum=True",
    "nesterovs_momentum": _ON_AN_INSTANCE.format(example=_HEAVY_BALL)
    + " (nesterov=False for nesterovs_momentum=False)",
    "beta_1": _ON_AN_INSTANCE.format(example="Adam(0.001, beta1=0.9)"),
    "beta_2": _ON_AN_INSTANCE.format(example="Adam(0.001, beta2=0.999)"),
    "epsilon": _ON_AN_INSTANCE.format(example="Adam(0.001, epsilon=1e-8)"),
    "shuffle": "anyoptim's estimators always shuffle every epoch, seeded by random_state",
    "max_fun": "max_fun belongs to solver='lbfgs', which anyoptim does not have; use max_iter= (epochs)",
}

#: Other libraries' names (torch.optim's ``lr``) for a setting of anyoptim's estimators -> what to pass
OTHER_NAMES = {
    "lr": "pass learning_rate= (a float, or a schedule of anyoptim.schedules counted in steps)",
}

#: scikit-learn's ``learning_rate`` names -> what anyoptim takes instead
LEARNING_RATE_NAMES = {
    "constant": "pass the rate itself, e.g. learning_rate=0.001",
    "invscaling": "pass a schedule, e.g. learning_rate=anyoptim.schedules.inverse_time_decay(0.001, 1000, 1.0)",
    "adaptive": (
        "anyoptim has no rate driven by the loss: pass a schedule of anyoptim.schedules counted in steps "
        "(piecewise_constant, exponential_decay, cosine_decay, ...), or stop with early_stopping=True"
    ),
}


def accepted_names(cls: type) -> tuple[str, ...] | None:
    """The keyword names that constructing ``cls`` takes: its ``__init__``'s, or None for any.

    Parameters
    ----------
    cls : type
        An estimator class (a subclass of anyoptim's with an ``__init__`` of its
        own included).

    Returns
    -------
    tuple of str or None
        The parameters of ``cls.__init__`` after ``self``; None when it takes
        ``**kwargs`` (then any name may be meant for a parent, and Python's own
        error stands).

    Examples
    --------
    >>> from anyoptim.sklearn import MLPClassifier
    >>> from anyoptim.sklearn.hints import accepted_names
    >>> accepted_names(MLPClassifier)[:3]
    ('hidden_layer_sizes', 'activation', 'optimizer')
    """
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind is not p.VAR_POSITIONAL)


def check_setting_names(
    estimator: str,
    names: Iterable[str],
    error: type[Exception] = TypeError,
    *,
    accepted: Iterable[str] | None = None,
) -> None:
    """Raise ``error`` with a hint for the first of ``names`` that the estimator does not take.

    Parameters
    ----------
    estimator : str
        The estimator's class name, for the message (the class the user called).
    names : iterable of str
        The keyword names given to the constructor or to ``set_params``.
    error : exception class, default TypeError
        What to raise: TypeError for a constructor (Python's own error for an
        unknown keyword), ValueError for ``set_params`` (scikit-learn's).
    accepted : iterable of str, optional
        The names the estimator takes: any other name is refused too, naming
        ``estimator`` and the closest accepted name.  By default only the names
        of :data:`SKLEARN_SETTINGS` and :data:`OTHER_NAMES` are refused (the
        caller refuses the rest itself).

    Raises
    ------
    TypeError or ValueError
        If a name is one of :data:`SKLEARN_SETTINGS` or :data:`OTHER_NAMES`, or
        not one of ``accepted``.

    Examples
    --------
    >>> from anyoptim.sklearn.hints import check_setting_names
    >>> check_setting_names("MLPClassifier", ["alpha"])  # anyoptim's own names pass
    >>> check_setting_names("MLPClassifier", ["solver"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: MLPClassifier got scikit-learn's setting 'solver': anyoptim's estimators take optimizer= ...
    >>> check_setting_names("MLPClassifier", ["lr"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: MLPClassifier() got an unexpected keyword argument 'lr': pass learning_rate= ...
    >>> check_setting_names("MLPClassifier", ["alpah"], accepted=["alpha", "tol"])
    Traceback (most recent call last):
    TypeError: MLPClassifier() got an unexpected keyword argument 'alpah'; did you mean 'alpha'?
    """
    known = None if accepted is None else tuple(accepted)
    for name in names:
        if known is not None and name in known:
            continue
        if name in SKLEARN_SETTINGS:
            raise error(f"{estimator} got scikit-learn's setting {name!r}: {SKLEARN_SETTINGS[name]}")
        message = f"{estimator}() got an unexpected keyword argument {name!r}"
        if name in OTHER_NAMES:
            raise error(f"{message}: {OTHER_NAMES[name]}")
        if known is not None and name not in known:
            meant = difflib.get_close_matches(name, known, n=1)
            raise error(
                f"{message}; did you mean {meant[0]!r}?"
                if meant
                else f"{message}; {estimator} takes {', '.join(known)}"
            )


def check_learning_rate(value: Any) -> None:
    """Raise a ValueError with a hint when ``learning_rate`` is a string (scikit-learn's schedule names).

    Parameters
    ----------
    value : object
        The estimator's ``learning_rate``.

    Raises
    ------
    ValueError
        If ``value`` is a string.

    Examples
    --------
    >>> from anyoptim.sklearn.hints import check_learning_rate
    >>> check_learning_rate(0.01)
    >>> check_learning_rate("adaptive")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: learning_rate='adaptive' is a scikit-learn schedule name; anyoptim has no rate driven by the loss: ...
    """
    if isinstance(value, str):
        hint = LEARNING_RATE_NAMES.get(value, "pass a float or a schedule of anyoptim.schedules")
        raise ValueError(f"learning_rate={value!r} is a scikit-learn schedule name; {hint}")
