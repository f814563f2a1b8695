"""Standardisation: :func:`standardize` puts a dataset on the scale a network is fitted on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyrobnn.datasets._dataset import Dataset

__all__ = ["Standardized", "standardize"]


@dataclass(frozen=True)
class Standardized:
    """A dataset put on the scale a network is fitted on, with what it takes to undo it.

    ``x = (x_raw − x_mean) / x_scale`` for both splits; for regression also
    ``y = (y_raw − y_mean) / y_scale`` (class labels are left as they are, with
    ``y_mean = 0`` and ``y_scale = 1``). Pass ``y_scale`` to
    :func:`pyrobnn.compare` or :func:`pyrobnn.evaluate.metrics.evaluate` to report RMSE and
    log-likelihood in the original units.
    """

    dataset: Dataset
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_mean: torch.Tensor
    x_scale: torch.Tensor
    y_mean: float
    y_scale: float


def standardize(ds: Dataset) -> Standardized:
    """Standardise inputs (and a regression target) with the training split's mean and standard deviation.

    The statistics come from the training split only, so nothing about the test
    split leaks into the fit. The standard deviation is the population one
    (``ddof=0``), and a constant column (standard deviation 0, e.g. naval's
    columns 8 and 11) keeps scale 1 — the protocol of the UCI benchmark
    (Hernández-Lobato & Adams 2015); a constant regression target is an error,
    since it leaves nothing to learn. Arithmetic is in float64; the results have
    the dataset's dtype.

    Examples
    --------
    >>> import pyrobnn as pb
    >>> data = pb.datasets.standardize(pb.datasets.load("friedman"))
    >>> bool(data.x_train.mean(0).abs().max() < 1e-5), round(float(data.y_train.std(unbiased=False)), 4)
    (True, 1.0)
    """
    x_mean, x_scale = _moments(ds.x_train.double(), dim=0)
    dtype = ds.x_train.dtype

    def scale_x(x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - x_mean) / x_scale).to(dtype)

    x_train, x_test = scale_x(ds.x_train), scale_x(ds.x_test)
    if ds.task == "classification":
        return Standardized(ds, x_train, ds.y_train, x_test, ds.y_test, x_mean.to(dtype), x_scale.to(dtype), 0.0, 1.0)
    y_mean, y_scale = _moments(ds.y_train.double(), dim=0)
    if _constant(ds.y_train.double(), dim=0).all():
        raise ValueError(
            f"{ds.name}: every training target is {float(y_mean):g}, so there is nothing to learn and no "
            "scale to standardise the target by; choose another target column (target=... in load_csv, "
            "--target on the command line)"
        )
    ydtype = ds.y_train.dtype

    def scale_y(y: torch.Tensor) -> torch.Tensor:
        return ((y.double() - y_mean) / y_scale).to(ydtype)

    return Standardized(
        ds,
        x_train,
        scale_y(ds.y_train),
        x_test,
        scale_y(ds.y_test),
        x_mean.to(dtype),
        x_scale.to(dtype),
        float(y_mean),
        float(y_scale),
    )


def _moments(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = t.mean(dim)
    std = t.std(dim, unbiased=False)
    # a constant column keeps scale 1 (unscaled)
    return mean, torch.where(_constant(t, dim), torch.ones_like(std), std)


def _constant(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Which columns are constant: their spread is rounding error around their mean."""
    return t.std(dim, unbiased=False) <= 1e-12 * t.mean(dim).abs().clamp_min(1.0)
