"""The command line's own error, a mistake in its arguments, the argument types that catch some early, and
the guide forms of ``--guides``."""

from __future__ import annotations

import argparse

from pyrobnn.guides import GUIDE_KINDS

__all__ = [
    "DEFAULT_MEMBERS",
    "GUIDE_FORMS",
    "SEVERAL",
    "UsageError",
    "form_of",
    "fraction",
    "parse_guides",
    "positive",
    "several",
    "steps",
]

#: Fits of an ``ensemble:KIND`` or ``best:KIND`` written without a count.
DEFAULT_MEMBERS = 8
#: How many fits a guide of several takes: ``ensemble:KIND:K`` pools K, ``best:KIND:K`` keeps the best of K.
SEVERAL = ("ensemble", "best")
GUIDE_FORMS = (
    f"{', '.join(GUIDE_KINDS)}, ensemble:KIND:K (K fits of one kind pooled, e.g. ensemble:map:8) or best:KIND:K "
    "(the fit with the highest ELBO of K, e.g. best:fullrank:4)"
)


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


def form_of(guide: str) -> str | None:
    """``"ensemble"`` or ``"best"`` for a guide of several fits (``ensemble:map:8``), ``None`` for one fit."""
    head = guide.split(":")[0]
    return head if head in SEVERAL else None


def parse_guides(text: str) -> list[str]:
    """The guides of ``--guides``, checked before any fit: a UsageError names the valid forms."""
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in GUIDE_KINDS and form_of(k) is None]
    if unknown or not kinds:
        raise UsageError(f"unknown guide(s) {', '.join(unknown) or '(none)'}; valid guides: {GUIDE_FORMS}")
    for k in kinds:
        if form_of(k) is not None:
            several(k)  # refuses a malformed one before any fit
    if len(set(kinds)) < len(kinds):
        raise UsageError(f"a guide is listed twice in {text!r}")
    return kinds


def several(text: str) -> tuple[str, str, int]:
    """``("ensemble", "map", 8)`` from ``"ensemble:map:8"`` (or ``"ensemble:map"``; ``best:`` likewise)."""
    parts = text.split(":")
    form = f"write it as ensemble:KIND:K or best:KIND:K, KIND one of {', '.join(GUIDE_KINDS)} and K >= 2 fits"
    if parts[0] not in SEVERAL or not 2 <= len(parts) <= 3 or parts[1] not in GUIDE_KINDS:
        raise UsageError(f"unknown guide {text!r}: {form}")
    if len(parts) == 2:
        return parts[0], parts[1], DEFAULT_MEMBERS
    if not parts[2].isdigit() or int(parts[2]) < 2:
        raise UsageError(f"{text!r} has {parts[2]!r} fits: {form}")
    return parts[0], parts[1], int(parts[2])
