"""The command line's argument types and parser: every mistake is one line, exit status 2."""

from __future__ import annotations

import argparse
import math

__all__ = ["ArgumentParser", "UsageError", "integer_at_least", "non_negative_float", "positive_int", "seed", "widths"]


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
