"""Export to ArviZ: :func:`to_arviz`.

The export is built in two steps. ``pyrobnn.export._collect`` draws from the
posterior and evaluates it with torch into one dict of numpy arrays laid out
``(chain, draw, ...)``; ``pyrobnn.export._core`` (numpy only, no torch)
hands that dict to a thin adapter for the installed ArviZ line: arviz 0.2x
returns an ``InferenceData``, arviz 1.x an xarray ``DataTree``. ArviZ and
xarray are imported only when an export runs.
"""

from pyrobnn.export._collect import MAX_DEFAULT_WEIGHTS, OBS_DIM, to_arviz
from pyrobnn.export._core import HISTORY_GROUP, arviz_line, convert, psislw, stack_chains

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
