"""The command line's own error: a mistake in its arguments."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A mistake in the command's arguments: :func:`pyrobnn.cli.main` prints it and exits with status 2.

    Every other error keeps its own type: a ``ValueError`` from deeper in the library is no
    usage mistake, and is not reported as one.
    """
