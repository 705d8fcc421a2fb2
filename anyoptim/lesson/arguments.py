"""The command line's argument types and parser: every mistake is one line, exit status 2."""

from __future__ import annotations

import argparse
import math

__all__ = [
    "ArgumentParser",
    "UsageError",
    "add_file_arguments",
    "delimiter",
    "file_options",
    "fraction",
    "integer_at_least",
    "label_column",
    "non_negative_float",
    "positive_int",
    "seed",
    "widths",
]


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, raised instead of printed with the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def integer_at_least(text: str, minimum: int, what: str) -> int:
    """``text`` as an integer >= ``minimum``; otherwise an error saying it must be ``what``."""
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    return value


def positive_int(text: str) -> int:
    """A count: an integer >= 1."""
    return integer_at_least(text, 1, "a positive integer")


def seed(text: str) -> int:
    """A seed: an integer >= 0."""
    return integer_at_least(text, 0, "an integer >= 0")


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a rate, a noise level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def widths(text: str) -> tuple[int, ...]:
    """Comma-separated positive layer widths; an empty string for no hidden layer."""
    if not text.strip():
        return ()
    try:
        return tuple(positive_int(part.strip()) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, got {text!r}") from None


def label_column(text: str) -> int | str:
    """A column: an integer index (negative counts from the end) or a header name."""
    try:
        return int(text)
    except ValueError:
        if not text.strip():
            raise argparse.ArgumentTypeError("must be a column index or a header name, got ''") from None
        return text.strip()


_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ", "pipe": "|"}


def delimiter(text: str) -> str:
    """One character, or one of the names tab, comma, semicolon, space, pipe (and ``\\t``)."""
    value = _DELIMITER_NAMES.get(text.lower(), text)
    if len(value) != 1 or value in '"\r\n' or value.isalnum() or value in ".-+":
        raise argparse.ArgumentTypeError(
            f"must be one character such as , ; | or a name ({', '.join(_DELIMITER_NAMES)}), got {text!r}"
        )
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def add_file_arguments(parser: argparse.ArgumentParser, schedules: dict[str, str]) -> None:
    """The ``train`` options for a user's file, the validation split, the schedule and the weight decay."""
    parser.add_argument(
        "--label-column",
        type=label_column,
        default=None,
        metavar="INDEX|NAME",
        help="the .csv column of the labels: an index (0 first, -1 last) or a header name (default: the last)",
    )
    parser.add_argument(
        "--delimiter", type=delimiter, default=None, help="field separator of the .csv (default: detected)"
    )
    parser.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the .csv's first line holds column names (default: detected)",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "regression"),
        default=None,
        help="regression trains the identity output on real-valued targets "
        "(default: classification; labels become classes 0..K-1, the mapping printed)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=fraction,
        default=0.0,
        metavar="F",
        help="hold out this share of the examples and report their cost and accuracy (default: 0)",
    )
    parser.add_argument(
        "--schedule",
        default="constant",
        metavar="NAME[:VALUE]",
        help="learning rate over the run: " + "; ".join(f"{k}: {v}" for k, v in schedules.items()),
    )
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=0.0,
        help="the optimizer's weight decay on the weights, not the biases (default: 0)",
    )


def file_options(args: argparse.Namespace) -> dict:
    """The options of :func:`add_file_arguments`, as keyword arguments of ``run_training``."""
    names = ("label_column", "delimiter", "header", "task", "validation_fraction", "schedule", "weight_decay")
    return {name: getattr(args, name) for name in names}
