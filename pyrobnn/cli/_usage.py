"""The command line's own error, a mistake in its arguments, and the argument types that catch some early."""

from __future__ import annotations

import argparse

__all__ = ["UsageError", "fraction", "positive", "steps"]


class UsageError(ValueError):
    """A mistake in the command's arguments: :func:`pyrobnn.cli.main` prints it and exits with status 2.

    Every other error keeps its own type: a ``ValueError`` from deeper in the library is no
    usage mistake, and is not reported as one.
    """


def positive(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def steps(text: str) -> int | str:
    """A number of steps, or ``auto``: until the ELBO levels off (``pb.fit(num_steps="auto")``)."""
    if text == "auto":
        return text
    try:
        return positive(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text}") from None


def fraction(text: str) -> float:
    """A number in (0, 1)."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return value
