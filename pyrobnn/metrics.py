"""Held-out metrics of a posterior: log predictive density, RMSE or accuracy, coverage."""

from __future__ import annotations

import math
from typing import Any

import torch

from pyrobnn.likelihoods import Bernoulli, Categorical
from pyrobnn.posterior import Posterior, Prediction

__all__ = ["calibration_bins", "evaluate", "expected_calibration_error", "summarize"]


def evaluate(
    post: Posterior,
    x: Any,
    y: Any,
    *,
    num_samples: int = 1000,
    seed: int | None = 0,
    y_scale: float = 1.0,
    level: float = 0.9,
) -> dict[str, float]:
    """Summaries of the posterior predictive on held-out data.

    Parameters
    ----------
    post
        The fitted posterior.
    x, y
        Held-out inputs and targets (on the scale the model was fitted on).
    num_samples, seed
        Posterior draws used, and their seed.
    y_scale
        The standard deviation a regression target was divided by before
        fitting: RMSE is multiplied by it and the log density shifted by
        ``−log(y_scale)`` per scalar target, so both are in original units.
    level
        Probability of the central interval whose empirical coverage is reported.

    Returns
    -------
    dict
        ``test_log_likelihood`` (mean per observation of the log-mean-exp over
        draws), and ``rmse`` and ``coverage`` for real targets or ``accuracy``
        for class labels.
    """
    pred = post.predict(x, num_samples=num_samples, seed=seed)
    return summarize(post, pred, y, y_scale=y_scale, level=level)


def summarize(
    post: Posterior, pred: Prediction, y: Any, *, y_scale: float = 1.0, level: float = 0.9
) -> dict[str, float]:
    """The summaries of :func:`evaluate` for a prediction already made at the held-out inputs."""
    y = torch.as_tensor(y, device=pred.output.device)
    y = post.model.likelihood.prepare_y(pred.output_shape, y)
    log_lik = pred.log_prob(y)
    per_obs = y[0].numel() if y.dim() > 1 else 1
    out = {"test_log_likelihood": float(log_lik.mean()) - per_obs * math.log(y_scale)}
    if isinstance(post.model.likelihood, Categorical):
        out["accuracy"] = float((pred.probs.argmax(-1) == y).float().mean())
    elif isinstance(post.model.likelihood, Bernoulli):
        out["accuracy"] = float(((pred.mean > 0.5).to(y.dtype) == y).float().mean())
    else:
        y = y.to(pred.mean.dtype)
        out["rmse"] = float((pred.mean - y).pow(2).mean().sqrt()) * y_scale
        out["coverage"] = pred.coverage(y, level)
    return out


def _confidence(pred: Prediction, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence and correctness per point (Categorical or Bernoulli predictions)."""
    if isinstance(pred.likelihood, Categorical):
        conf, label = pred.probs.max(-1)
        return conf, (label == y).to(conf.dtype)
    if isinstance(pred.likelihood, Bernoulli):
        p1 = pred.mean
        label = (p1 > 0.5).to(y.dtype)
        return torch.where(p1 > 0.5, p1, 1 - p1), (label == y).to(p1.dtype)
    raise ValueError(
        f"calibration is defined for class predictions (Categorical, Bernoulli), not {type(pred.likelihood).__name__}"
    )


def calibration_bins(pred: Prediction, y: Any, num_bins: int = 10) -> dict[str, torch.Tensor]:
    """Reliability-diagram bins: mean confidence, accuracy and count per equal-width confidence bin.

    Confidence is the predictive probability of the predicted class (for
    Bernoulli, max(p, 1 − p)). Empty bins have NaN confidence and accuracy.
    """
    if not (isinstance(num_bins, int) and num_bins >= 1):
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    y = pred.likelihood.prepare_y(pred.output_shape, torch.as_tensor(y, device=pred.output.device))
    conf, correct = _confidence(pred, y)
    index = torch.clamp((conf * num_bins).long(), max=num_bins - 1)
    count = torch.bincount(index, minlength=num_bins).to(conf.dtype)
    total_conf = torch.zeros(num_bins, dtype=conf.dtype, device=conf.device).index_add_(0, index, conf)
    total_acc = torch.zeros(num_bins, dtype=conf.dtype, device=conf.device).index_add_(0, index, correct)
    edges = torch.linspace(0, 1, num_bins + 1, dtype=conf.dtype)
    return {"confidence": total_conf / count, "accuracy": total_acc / count, "count": count, "edges": edges}


def expected_calibration_error(pred: Prediction, y: Any, num_bins: int = 10) -> float:
    r"""Expected calibration error of class predictions, with equal-width confidence bins.

    Notes
    -----
    :math:`\mathrm{ECE} = \sum_b (n_b / N)\, |\mathrm{acc}_b - \mathrm{conf}_b|` over bins b of the top-label
    confidence (Naeini, Cooper & Hauskrecht 2015; Guo, Pleiss, Sun &
    Weinberger 2017). 0 is perfectly calibrated.

    References
    ----------
    Guo, Pleiss, Sun & Weinberger (2017). On calibration of modern neural networks. ICML.
    """
    bins = calibration_bins(pred, y, num_bins)
    full = bins["count"] > 0
    gap = (bins["accuracy"][full] - bins["confidence"][full]).abs()
    return float((bins["count"][full] * gap).sum() / bins["count"].sum())
