"""The torch-free core of the ArviZ export: one dict of numpy arrays, one thin adapter per ArviZ line.

Everything pyrobnn exports is first gathered into a plain nested dict
``{group: {variable: numpy array}}``:

* the *sample groups* (``posterior``, ``posterior_predictive``,
  ``log_likelihood``, ``sample_stats``, and ``prior`` when asked for) hold
  arrays laid out ``(chain, draw, *shape)``;
* the *data groups* (``observed_data``, ``constant_data``) hold arrays as they
  are;
* the history group (:data:`HISTORY_GROUP`) holds per-step arrays laid out
  ``(chain, step)``.

:func:`convert` hands that dict to the adapter of the installed ArviZ: arviz
0.2x (``InferenceData``) or arviz 1.x (an xarray ``DataTree``). This module
imports numpy only, so it can be tested in a small environment without torch;
ArviZ and xarray are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pyrobnn._arviz import arviz_line, psislw

__all__ = [
    "DATA_GROUPS",
    "HISTORY_GROUP",
    "SAMPLE_GROUPS",
    "Groups",
    "arviz_line",
    "convert",
    "psislw",
    "stack_chains",
]

#: Groups whose arrays are laid out ``(chain, draw, ...)``.
SAMPLE_GROUPS: tuple[str, ...] = ("posterior", "posterior_predictive", "log_likelihood", "sample_stats", "prior")
#: Groups holding data as they are (no chain or draw dims).
DATA_GROUPS: tuple[str, ...] = ("observed_data", "constant_data")
#: The group with the optimisation history, indexed by ``(chain, step)``.
HISTORY_GROUP = "elbo_history"
#: The history's step dimension.
STEP_DIM = "step"

#: ``{group: {variable: array}}``, the one layout every adapter reads.
Groups = dict[str, dict[str, np.ndarray]]


def stack_chains(chains: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> Groups:
    """Stack per-chain groups (sample arrays ``(draw, ...)``) into ``(chain, draw, ...)``.

    Each element of ``chains`` is the dict one independent fit gives. Sample
    groups are stacked along a new leading chain axis; data groups must agree
    between chains and are kept once; histories of different lengths are padded
    with NaN at the end to the longest, laid out ``(chain, step)``.

    Examples
    --------
    >>> a = {"posterior": {"w": np.zeros((5, 2))}, "observed_data": {"obs": np.ones(3)}}
    >>> b = {"posterior": {"w": np.ones((5, 2))}, "observed_data": {"obs": np.ones(3)}}
    >>> out = stack_chains([a, b])
    >>> out["posterior"]["w"].shape, out["observed_data"]["obs"].shape
    ((2, 5, 2), (3,))
    """
    if not chains:
        raise ValueError("stack_chains needs at least one chain")
    first = chains[0]
    groups = list(first)
    for index, chain in enumerate(chains[1:], start=1):
        if list(chain) != groups:
            raise ValueError(f"chain {index} has groups {list(chain)} but chain 0 has {groups}: export the same way")
    out: Groups = {}
    for group in groups:
        names = list(first[group])
        for index, chain in enumerate(chains):
            if list(chain[group]) != names:
                raise ValueError(
                    f"chain {index} has {group} variables {list(chain[group])} but chain 0 has {names}; "
                    "chains must come from posteriors of the same model"
                )
        if group in DATA_GROUPS:
            for name in names:
                ref = np.asarray(first[group][name])
                for index, chain in enumerate(chains[1:], start=1):
                    other = np.asarray(chain[group][name])
                    if other.shape != ref.shape or not np.array_equal(other, ref, equal_nan=True):
                        raise ValueError(
                            f"{group} variable {name!r} differs between chain 0 and chain {index}; "
                            "chains must be exported on the same data"
                        )
            out[group] = {name: np.asarray(first[group][name]) for name in names}
        elif group == HISTORY_GROUP:
            out[group] = {name: _pad_stack([np.asarray(c[group][name], dtype=float) for c in chains]) for name in names}
        else:
            stacked = {}
            for name in names:
                arrays = [np.asarray(c[group][name]) for c in chains]
                shapes = {a.shape for a in arrays}
                if len(shapes) != 1:
                    raise ValueError(
                        f"{group} variable {name!r} has shapes {sorted(shapes)} across chains; every chain "
                        "needs the same number of draws and the same parameter shapes"
                    )
                stacked[name] = np.stack(arrays)
            out[group] = stacked
    check_layout(out)
    return out


def _pad_stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    length = max(len(a) for a in arrays)
    out = np.full((len(arrays), length), np.nan)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def check_layout(groups: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[int, int]:
    """Check that every sample group shares one ``(chain, draw)`` shape; return it."""
    lead: tuple[int, int] | None = None
    for group in SAMPLE_GROUPS:
        for name, value in groups.get(group, {}).items():
            shape = np.shape(value)
            if len(shape) < 2:
                raise ValueError(f"{group} variable {name!r} has shape {shape}; expected (chain, draw, ...)")
            if lead is None:
                lead = (shape[0], shape[1])
            elif shape[:2] != lead:
                raise ValueError(
                    f"{group} variable {name!r} has (chain, draw) = {shape[:2]} but other variables have {lead}"
                )
    unknown = set(groups) - set(SAMPLE_GROUPS) - set(DATA_GROUPS) - {HISTORY_GROUP}
    if unknown:
        raise ValueError(f"unknown groups {sorted(unknown)}; known: {[*SAMPLE_GROUPS, *DATA_GROUPS, HISTORY_GROUP]}")
    if lead is None:
        raise ValueError("nothing to export: no sample group holds a variable")
    return lead


def convert(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    *,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    attrs: Mapping[str, Any] | None = None,
    line: int | None = None,
) -> Any:
    """Hand the groups to the adapter of the installed ArviZ line.

    Parameters
    ----------
    groups
        ``{group: {variable: array}}`` as described in the module docstring.
    coords, dims
        ArviZ's coordinates and dims: ``dims[var]`` names the axes after
        ``(chain, draw)`` for sample groups, and every axis for data groups.
    attrs
        Attributes stored on every group (strings and numbers: they must
        survive netCDF).
    line
        0 or 1 to force an adapter; default: the installed ArviZ's.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
    """
    check_layout(groups)
    line = arviz_line() if line is None else line
    module = {0: "_arviz0", 1: "_arviz1"}.get(line)
    if module is None:
        raise ValueError(f"no adapter for ArviZ {line}.x; pyrobnn supports 0.2x and 1.x")
    adapter = importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.{module}")
    return adapter.convert(
        {g: dict(v) for g, v in groups.items()},
        coords=dict(coords or {}),
        dims={k: list(v) for k, v in (dims or {}).items()},
        attrs=dict(attrs or {}),
    )
