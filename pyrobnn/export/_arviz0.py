"""Adapter for the arviz 0.2x line: the groups as an ``arviz.InferenceData``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from pyrobnn.export._core import DATA_GROUPS, HISTORY_GROUP, SAMPLE_GROUPS, STEP_DIM, Groups

__all__ = ["convert"]


def convert(groups: Groups, *, coords: dict[str, Any], dims: dict[str, list[str]], attrs: dict[str, Any]) -> Any:
    """``az.from_dict`` for the standard groups, then the history as its own group."""
    import arviz as az

    standard = {g: groups[g] for g in (*SAMPLE_GROUPS, *DATA_GROUPS) if g in groups}
    with warnings.catch_warnings():
        # ArviZ guesses that more chains than draws means swapped axes; here the axes are named,
        # and many short chains (pb.mcmc's ChEES default: 64 × 32) are meant
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        idata = az.from_dict(**standard, coords=coords, dims=dims)  # type: ignore[arg-type]
    for group in idata.groups():
        idata[group].attrs.update(attrs)
    if HISTORY_GROUP in groups:
        idata.add_groups({HISTORY_GROUP: history_dataset(groups[HISTORY_GROUP], attrs)})
    return idata


def history_dataset(history: dict[str, np.ndarray], attrs: dict[str, Any]) -> Any:
    """The per-step history, ``(chain, step)``, as an xarray Dataset."""
    import xarray as xr

    num_chains, num_steps = next(iter(history.values())).shape
    return xr.Dataset(
        {name: (("chain", STEP_DIM), np.asarray(value)) for name, value in history.items()},
        coords={"chain": np.arange(num_chains), STEP_DIM: np.arange(num_steps)},
        attrs=attrs,
    )
