"""Adapter for the arviz 1.x line: the groups as an xarray ``DataTree`` (``arviz_base.from_dict``)."""

from __future__ import annotations

from typing import Any

from pyrobnn.export._arviz0 import history_dataset
from pyrobnn.export._core import DATA_GROUPS, HISTORY_GROUP, SAMPLE_GROUPS, Groups

__all__ = ["convert"]


def convert(groups: Groups, *, coords: dict[str, Any], dims: dict[str, list[str]], attrs: dict[str, Any]) -> Any:
    """``arviz_base.from_dict`` for the standard groups, then the history as a child node."""
    import xarray as xr
    from arviz_base import from_dict  # type: ignore[import-not-found]

    standard = {g: groups[g] for g in (*SAMPLE_GROUPS, *DATA_GROUPS) if g in groups}
    tree = from_dict(standard, coords=coords, dims=dims, attrs={g: attrs for g in standard})
    if HISTORY_GROUP in groups:
        tree[HISTORY_GROUP] = xr.DataTree(history_dataset(groups[HISTORY_GROUP], attrs))
    return tree
