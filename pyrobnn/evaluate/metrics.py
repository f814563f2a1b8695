"""Held-out metrics of a posterior: log predictive density, RMSE or accuracy, coverage, distance to a reference."""

from __future__ import annotations

import math
from typing import Any

import torch

from pyrobnn.posterior import Posterior, Prediction

__all__ = [
    "calibration_bins",
    "evaluate",
    "expected_calibration_error",
    "reference_distance",
    "summarize",
    "wasserstein1",
]


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
    post: Posterior, pred: Prediction, y: Any, *, y_scale: float = 1.0, level: float = 0.9, se: bool = False
) -> dict[str, float]:
    r"""The summaries of :func:`evaluate` for a prediction already made at the held-out inputs.

    With ``se=True`` each summary also gets its standard error over the test
    points, as ``<name>_se``: for the mean log density and a share (coverage,
    accuracy) the standard error of a mean of independent per-point values,
    :math:`\mathrm{sd}/\sqrt{n}` (for a share :math:`\sqrt{p(1-p)/n}`), and
    for RMSE the delta method on the mean squared error,
    :math:`\mathrm{se}(\mathrm{MSE}) / (2\,\mathrm{RMSE})`. They measure how
    much the test split's draw moves the number, not the Monte Carlo error of
    the posterior draws.
    """
    y = torch.as_tensor(y, device=pred.output.device)
    y = post.model.likelihood.prepare_y(pred.output_shape, y)
    log_lik = pred.log_prob(y).double()
    per_obs = y[0].numel() if y.dim() > 1 else 1
    out = {"test_log_likelihood": float(log_lik.mean()) - per_obs * math.log(y_scale)}
    errors = {"test_log_likelihood_se": _mean_se(log_lik)}
    if post.model.likelihood.predicts_classes:
        correct = (pred.probs.argmax(-1) == y).double()
        out["accuracy"] = float(correct.mean())
        errors["accuracy_se"] = _share_se(out["accuracy"], correct.numel())
    else:
        y = y.to(pred.mean.dtype)
        squared = (pred.mean - y).double().pow(2).reshape(-1)
        rmse = float(squared.mean().sqrt())
        out["rmse"] = rmse * y_scale
        errors["rmse_se"] = _mean_se(squared) / (2 * rmse) * y_scale if rmse > 0 else 0.0
        out["coverage"] = pred.coverage(y, level)
        errors["coverage_se"] = _share_se(out["coverage"], y.numel())
    return {**out, **errors} if se else out


def _mean_se(values: torch.Tensor) -> float:
    """Standard error of the mean of independent values (0 for a single value)."""
    n = values.numel()
    return float(values.reshape(-1).std() / math.sqrt(n)) if n > 1 else 0.0


def _share_se(share: float, n: int) -> float:
    """Binomial standard error of a share of n."""
    return math.sqrt(share * (1 - share) / n)


def _confidence(pred: Prediction, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence and correctness per point (predictions of classes)."""
    if not pred.likelihood.predicts_classes:
        raise ValueError(
            "calibration is defined for class predictions (Categorical, Bernoulli), not "
            f"{type(pred.likelihood).__name__}"
        )
    conf, label = pred.probs.max(-1)  # a tie goes to the first class, as p > 0.5 decides for Bernoulli
    return conf, (label == y).to(conf.dtype)


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


def wasserstein1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""W1 between the empirical distributions of ``a`` and ``b`` along dim 0, per remaining element.

    In one dimension :math:`W_1 = \int_0^1 |F_a^{-1}(u) - F_b^{-1}(u)|\,du`. With as many
    draws in ``a`` as in ``b`` this is exactly the mean absolute difference of the
    sorted draws; otherwise both quantile functions are read at the midpoints
    (k + ½)/M, M the larger number of draws.
    """
    if len(a) == len(b):
        return (a.sort(0).values - b.sort(0).values).abs().mean(0)
    m = max(len(a), len(b))
    dtype = torch.promote_types(a.dtype, torch.float32)
    u = (torch.arange(m, dtype=dtype, device=a.device) + 0.5) / m
    return (torch.quantile(a.to(dtype), u, dim=0) - torch.quantile(b.to(dtype), u, dim=0)).abs().mean(0)


def reference_distance(pred: Prediction, ref: Prediction) -> dict[str, float]:
    """How far a posterior predictive is from a reference one (e.g. NUTS) at the same inputs.

    Returns
    -------
    dict
        For real targets: ``w1`` (the Wasserstein-1 distance between the two
        predictives' draws of y at each point, per output, averaged over points;
        in the units of y) and ``sd_ratio`` (predictive standard deviation over
        the reference's, averaged over points: below 1 is overconfident). For
        class labels: ``agreement`` (share of points where the two predict the same
        class) and ``total_variation`` (½ Σ_c ``|p_c − p_ref,c|`` per point, averaged).

    References
    ----------
    Wilson, Izmailov, Hoffman, Gal, Li, Pradier, Vikram, Foong, Lotfi & Farquhar (2022).
    Evaluating approximate inference in Bayesian deep learning. Proceedings of the NeurIPS
    2021 Competitions and Demonstrations Track, PMLR 176: the competition's metrics.
    """
    if pred.output.shape[1:] != ref.output.shape[1:] or type(pred.likelihood) is not type(ref.likelihood):
        raise ValueError(
            f"the prediction ({tuple(pred.output.shape[1:])} outputs, {type(pred.likelihood).__name__}) and the "
            f"reference ({tuple(ref.output.shape[1:])}, {type(ref.likelihood).__name__}) are not of the same "
            "model at the same inputs"
        )
    if pred.likelihood.predicts_classes:
        p, q = pred.probs, ref.probs
        return {
            "agreement": float((p.argmax(-1) == q.argmax(-1)).double().mean()),
            "total_variation": float(0.5 * (p - q).abs().sum(-1).mean()),
        }
    return {
        "w1": float(wasserstein1(pred.samples, ref.samples).mean()),
        "sd_ratio": float((pred.std / ref.std).mean()),
    }
