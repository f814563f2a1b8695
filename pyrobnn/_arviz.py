"""The installed ArviZ line, and what differs between its lines, for every stage that calls ArviZ.

ArviZ comes in two lines with different APIs: 0.2x (``InferenceData``, ``az.psislw``)
and 1.x (xarray ``DataTree``, ``arviz_stats``). The export, the diagnostics and the
plots ask :func:`arviz_line` which one is installed; :func:`psislw` gives Pareto
smoothing one meaning under both. NumPy only: ArviZ is imported inside the functions.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np

__all__ = ["arviz_line", "psislw"]


def arviz_line() -> int:
    """The major version of the installed ArviZ (0 for the 0.2x line, 1 for 1.x).

    Raises
    ------
    ImportError
        When ArviZ is not installed, naming the packages to install.
    """
    try:
        version = importlib.metadata.version("arviz")
    except importlib.metadata.PackageNotFoundError:
        try:
            importlib.metadata.version("arviz-base")
        except importlib.metadata.PackageNotFoundError as err:
            raise ImportError(
                "exporting to ArviZ needs ArviZ: pip install arviz (0.2x on Python < 3.12, or 1.x)"
            ) from err
        return 1
    return int(version.split(".")[0])


def psislw(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed log weights and the Pareto k̂ of their tail, with either ArviZ line.

    Parameters
    ----------
    log_weights
        Unnormalised log importance weights, one per draw (1-D).

    Returns
    -------
    (smoothed, khat)
        The smoothed, normalised log weights and the shape estimate k̂.

    Notes
    -----
    arviz 0.2x's ``psislw`` takes log weights; ``arviz_stats.psislw`` in the
    1.x line takes log *ratios* to be negated (it is built for LOO, where the
    weights are 1/p(yᵢ | θ)). This wrapper gives both the same meaning.
    """
    log_weights = np.asarray(log_weights, dtype=float)
    if log_weights.ndim != 1:
        raise ValueError(f"psislw takes one log weight per draw (a 1-D array), got shape {log_weights.shape}")
    if not np.isfinite(log_weights).all():
        raise ValueError(
            f"{int((~np.isfinite(log_weights)).sum())} of {log_weights.size} log weights are not finite; "
            "a draw outside the target's support (log p = -inf) or a NaN network output"
        )
    if arviz_line() == 0:
        import arviz as az

        smoothed, khat = az.psislw(log_weights)
        return np.asarray(smoothed), float(khat)
    from arviz_stats.base import array_stats  # type: ignore[import-not-found]

    smoothed, khat = array_stats.psislw(-log_weights, r_eff=1.0)
    return np.asarray(smoothed), float(khat)
