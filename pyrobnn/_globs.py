"""Glob patterns over dotted parameter names.

``*`` matches within one name segment, ``**`` matches any number of whole
segments (including none), ``?`` matches one character. Patterns are matched
against the full name: ``"0.weight"`` matches only that parameter, ``"*.weight"``
matches ``"0.weight"`` but not ``"block.0.weight"``, ``"**.weight"`` matches both
(and a top-level ``"weight"``).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["compile_glob", "match", "module_key", "select", "sites_keyword"]


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a dotted glob into a regular expression matching whole names."""
    parts = pattern.split(".")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += ".*" if last else r"(?:[^.]+\.)*"
            continue
        for char in part:
            if char == "*":
                regex += "[^.]*"
            elif char == "?":
                regex += "[^.]"
            else:
                regex += re.escape(char)
        if not last:
            regex += r"\."
    return re.compile(regex + r"\Z")


def match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the dotted glob ``pattern``."""
    return compile_glob(pattern).match(name) is not None


def select(patterns: str | Sequence[str], names: Iterable[str], *, argument: str) -> list[str]:
    """Names matched by any of ``patterns``, in the order of ``names``.

    Every pattern must match at least one name; one that matches nothing is
    almost always a typo, so it is an error that lists the available names.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    names = list(names)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [name for name in names if match(pattern, name)]
        if not hits:
            raise ValueError(
                f"{argument} pattern {pattern!r} matches no parameter. "
                f"Available names: {', '.join(names) or '(none)'}. "
                "Use '*' for one name segment and '**' for any dotted path, "
                "e.g. '**.bias'."
            )
        chosen.update(hits)
    return [name for name in names if name in chosen]


def module_key(name: str) -> str:
    """A dotted name as a key of an ``nn.ModuleDict`` or ``nn.ParameterDict``, which refuse dots."""
    return name.replace(".", "__")


def sites_keyword(function: str, sites: Any, old_value: Any, *, old: str, since: str = "0.2.0") -> Any:
    """The value of ``sites=``, the one keyword for choosing sites by glob, given a deprecated older name.

    ``old_value`` is what the caller of ``function`` passed under the older keyword ``old``
    (``None`` when not passed): it is taken with a ``DeprecationWarning`` that points at the
    first caller outside pyrobnn, however deep inside pyrobnn the keyword arrived; both at
    once is a ``TypeError``.
    """
    if old_value is None:
        return sites
    if sites is not None:
        raise TypeError(f"{function}() got both sites= and {old}=, its deprecated old name; pass sites= only")
    warnings.warn(
        f"{old}= is deprecated; use sites= (the same glob patterns). Deprecated since {since}.",
        DeprecationWarning,
        stacklevel=_first_caller_outside_pyrobnn(),
    )
    return old_value


def _first_caller_outside_pyrobnn() -> int:
    """The ``stacklevel`` of a warning issued by this module's caller that points out of the package."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 2  # level 2: the function that called sites_keyword
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level
