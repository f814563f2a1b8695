"""The warnings a statistical diagnostic raises: :class:`DiagnosticWarning` and its kinds.

A diagnostic reads a result (a fit's ELBO trace, a sampler's trajectories, the importance
ratios of a guide) and says when the result should not be trusted as it stands. It reports on
numbers that one run produced, so whether it fires can depend on a single trajectory: it is
information for the person reading the result, never an error. Every such warning in
pyrobnn is a subclass of :class:`DiagnosticWarning`, so it can be filtered as one kind
(``warnings.simplefilter("ignore", pb.DiagnosticWarning)``) and told apart from warnings
about the code or the data (a dtype converted, a network that cannot be vectorized), which
are ordinary ``UserWarning``s.
"""

from __future__ import annotations

__all__ = ["DiagnosticWarning"]


class DiagnosticWarning(UserWarning):
    """A statistical diagnostic flagged a result (a fit, a sampler's draws, a guide's fit to the posterior).

    The message names what was measured, against what threshold, and what to do about it.
    """
