"""Held-out metrics of a posterior: log predictive density, RMSE or accuracy, coverage."""

from __future__ import annotations

import math
from typing import Any

import torch

from pyrobnn.likelihoods import Bernoulli, Categorical
from pyrobnn.posterior import Posterior

__all__ = ["evaluate"]


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
        lo, hi = pred.interval(level)
        out["coverage"] = float(((y >= lo) & (y <= hi)).float().mean())
    return out
