"""Export to ArviZ: :func:`to_arviz`.

The export is built in two steps. ``pyrobnn.export._collect`` draws from the
posterior and evaluates it with torch into one dict of numpy arrays laid out
``(chain, draw, ...)``; ``pyrobnn.export._core`` (numpy only, no torch)
hands that dict to a thin adapter for the installed ArviZ line: arviz 0.2x
returns an ``InferenceData``, arviz 1.x an xarray ``DataTree``. ArviZ and
xarray are imported only when an export runs.
"""

from pyrobnn.export import _collect, _core
from pyrobnn.export._collect import to_arviz
from pyrobnn.export._core import arviz_line, convert, psislw, stack_chains

__all__ = [
    "HISTORY_GROUP",
    "MAX_DEFAULT_WEIGHTS",
    "OBS_DIM",
    "arviz_line",
    "convert",
    "psislw",
    "stack_chains",
    "to_arviz",
]

# Restated here with their `#:` comments, which Sphinx reads only from the module it documents.
#: Nets with more random weights than this export only the likelihood's sites and the last layer by default.
MAX_DEFAULT_WEIGHTS: int = _collect.MAX_DEFAULT_WEIGHTS
#: The dimension of observations in the data-indexed groups.
OBS_DIM: str = _collect.OBS_DIM
#: The group with the optimisation history, indexed by ``(chain, step)``.
HISTORY_GROUP: str = _core.HISTORY_GROUP
