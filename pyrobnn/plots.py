"""Figures for a fit: ELBO history, predictive bands, predicted vs observed, calibration, prior vs posterior.

matplotlib (and ArviZ, where it has the plot) are imported when a function is
called, never when pyrobnn is imported. Every function takes an optional
``ax`` (or ``axes``) and returns what it drew on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pyrobnn import _globs
from pyrobnn._rng import seeded
from pyrobnn.evaluate.metrics import calibration_bins, expected_calibration_error
from pyrobnn.infer.fit import FitResult, History
from pyrobnn.posterior import Posterior

__all__ = [
    "plot_calibration",
    "plot_decision_surface",
    "plot_elbo",
    "plot_predicted_vs_observed",
    "plot_predictive",
    "plot_prior_posterior",
    "plot_reliability",
]


def plot_elbo(history: FitResult | History, *, axes: Sequence[Any] | None = None, smooth: int = 0) -> Any:
    """The ELBO per step (left) and its components, expected log-likelihood and KL (right).

    For a fit of a point-mass guide (``guide.point_mass``, e.g. MAP) there is no
    KL(q‖p): the term in its place is −log p(θ̂), the negative log prior density
    at the estimate, and the "ELBO" is the log joint density log p(y, θ̂), not a
    bound; the labels say so. (Given only a ``History``, which does not know its
    guide, the labels are the ELBO's.)

    Parameters
    ----------
    history
        A fit result or its ``history``.
    axes
        Two matplotlib axes; default: a new 1 x 2 figure.
    smooth
        Width of a moving average drawn over the noisy per-step values (0: none).
    """
    import matplotlib.pyplot as plt

    hist = history.history if isinstance(history, FitResult) else history
    if not isinstance(hist, History):
        raise TypeError(f"plot_elbo takes a pb.FitResult or its history, got {type(history).__name__}")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    assert axes is not None
    steps = np.arange(len(hist))
    point = isinstance(history, FitResult) and history.guide.point_mass
    objective, penalty = ("log joint density", "−log p(θ̂) (negative log prior)") if point else ("ELBO", "KL(q‖p)")
    likelihood = "log-likelihood at θ̂" if point else "expected log-likelihood"
    series = [(objective, hist.elbo, 0), (likelihood, hist.log_likelihood, 1), (penalty, hist.kl, 1)]
    for label, values, i in series:
        line = axes[i].plot(steps, values, lw=0.6, alpha=0.5 if smooth else 1.0, label=label)
        if smooth > 1 and len(values) >= smooth:
            kernel = np.ones(smooth) / smooth
            axes[i].plot(steps[smooth - 1 :], np.convolve(values, kernel, mode="valid"), color=line[0].get_color())
    axes[0].set(xlabel="step", ylabel=f"{objective} (nats)")
    axes[1].set(xlabel="step", ylabel="nats")
    axes[1].legend()
    return axes


def plot_predictive(
    post: Posterior,
    x: Any,
    y: Any = None,
    *,
    x_grid: Any = None,
    num_samples: int = 1000,
    level: float = 0.9,
    seed: int | None = 0,
    ax: Any = None,
) -> Any:
    """Predictive mean and central band at a 1-D input, with the data as points.

    The band is the central ``level`` interval of the posterior predictive of
    y (observation noise included), the same interval whose coverage
    :func:`pyrobnn.compare` reports; the inner band is the same interval of
    E[y | θ] alone (the epistemic part).
    """
    import matplotlib.pyplot as plt

    x = torch.as_tensor(np.asarray(x))
    if x.dim() > 2 or (x.dim() == 2 and x.shape[1] != 1):
        raise ValueError(f"plot_predictive draws 1-D inputs, got x of shape {tuple(x.shape)}; pass one input column")
    grid = torch.linspace(float(x.min()), float(x.max()), 200) if x_grid is None else torch.as_tensor(x_grid)
    grid = grid.reshape(-1, 1).to(torch.get_default_dtype())
    pred = post.predict(grid, num_samples=num_samples, seed=seed)
    lo, hi = pred.interval(level)
    mean = pred.conditional_mean
    qs = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=mean.dtype)
    f_lo, f_hi = torch.quantile(mean, qs, dim=0)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    g = grid.reshape(-1).numpy()
    ax.fill_between(g, lo.reshape(-1).numpy(), hi.reshape(-1).numpy(), alpha=0.25, label=f"{level:.0%} predictive")
    ax.fill_between(g, f_lo.reshape(-1).numpy(), f_hi.reshape(-1).numpy(), alpha=0.35, label=f"{level:.0%} of E[y | θ]")
    ax.plot(g, pred.mean.reshape(-1).numpy(), lw=1.5, label="predictive mean")
    if y is not None:
        ax.scatter(x.reshape(-1).numpy(), np.asarray(y).reshape(-1), s=6, color="k", label="data")
    ax.set(xlabel="x", ylabel="y")
    ax.legend(fontsize="small")
    return ax


def plot_predicted_vs_observed(
    post: Posterior,
    x: Any,
    y: Any,
    *,
    num_samples: int = 1000,
    level: float = 0.9,
    seed: int | None = 0,
    ax: Any = None,
) -> Any:
    """Predictive mean against the observed target, with the central ``level`` interval as error bars.

    For inputs of any dimension: points on the diagonal are predicted exactly,
    and about ``level`` of the error bars should cross it (the title gives the
    share that do, the coverage of :func:`pyrobnn.compare`).
    """
    import matplotlib.pyplot as plt

    pred = post.predict(x, num_samples=num_samples, seed=seed)
    y_t = _real_targets(post, pred, y, "plot_predicted_vs_observed")
    lo_t, hi_t = pred.interval(level)
    mean, lo, hi, obs = (t.reshape(-1).double().cpu().numpy() for t in (pred.mean, lo_t, hi_t, y_t))
    covered = pred.coverage(y_t, level)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.errorbar(obs, mean, yerr=[mean - lo, hi - mean], fmt="o", ms=3, lw=0.8, alpha=0.7, label=f"{level:.0%} interval")
    ends = [min(obs.min(), lo.min()), max(obs.max(), hi.max())]
    ax.plot(ends, ends, "k--", lw=1, label="predicted = observed")
    ax.set(xlabel="observed y", ylabel="predicted y", title=f"{covered:.0%} of intervals cover y")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_calibration(
    post: Posterior,
    x: Any,
    y: Any,
    *,
    levels: Sequence[float] | None = None,
    num_samples: int = 1000,
    seed: int | None = 0,
    label: str | None = None,
    ax: Any = None,
) -> Any:
    """Calibration of a real-valued prediction: observed against nominal coverage of central intervals.

    For each level p the share of targets inside the central p predictive
    interval is plotted against p. A calibrated predictive lies on the
    diagonal; below it the intervals are too narrow (over-confident), above it
    too wide. Call it again on the same ``ax`` with another ``label`` to
    compare posteriors. For class predictions use :func:`plot_reliability`.

    Parameters
    ----------
    levels
        The nominal levels; default 0.05, 0.10, …, 0.95.
    """
    import matplotlib.pyplot as plt

    pred = post.predict(x, num_samples=num_samples, seed=seed)
    y_t = _real_targets(post, pred, y, "plot_calibration")
    nominal = np.arange(1, 20) / 20 if levels is None else np.asarray(levels, dtype=float)
    observed = [pred.coverage(y_t, float(p)) for p in nominal]
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if not any(line.get_label() == "calibrated" for line in ax.lines):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.plot(nominal, observed, "o-", ms=3, label=label or "observed")
    ax.set(xlabel="nominal coverage of the central interval", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_decision_surface(
    post: Posterior,
    x: Any,
    y: Any = None,
    *,
    grid_size: int = 100,
    num_samples: int = 200,
    seed: int | None = 0,
    ax: Any = None,
) -> Any:
    """Predictive entropy of a classifier over a 2-D input plane, with the data coloured by class.

    Dark is uncertain: the entropy H[E_θ p(y | x, θ)] (nats) of the predictive
    class probabilities on a ``grid_size`` × ``grid_size`` grid spanning the
    data and a quarter of its range beyond, which is where a Bayesian net
    should grow uncertain and a point estimate often does not.
    """
    import matplotlib.pyplot as plt

    x = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())
    if not post.model.likelihood.predicts_classes:
        raise ValueError(
            f"plot_decision_surface draws class predictions (Categorical, Bernoulli), not "
            f"{type(post.model.likelihood).__name__}"
        )
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_decision_surface draws 2-D inputs, got x of shape {tuple(x.shape)}")
    lo, hi = x.min(0).values, x.max(0).values
    pad = 0.25 * (hi - lo)
    g0 = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), grid_size)
    g1 = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), grid_size)
    mesh = torch.stack(torch.meshgrid(g0, g1, indexing="xy"), dim=-1).reshape(-1, 2)
    pred = post.predict(mesh, num_samples=num_samples, seed=seed)
    entropy = pred.entropy.reshape(grid_size, grid_size).double().cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    levels = np.linspace(0.0, np.log(pred.probs.shape[-1]), 11)
    filled = ax.contourf(g0.numpy(), g1.numpy(), entropy, levels=levels, cmap="Greys")
    ax.figure.colorbar(filled, ax=ax, label="predictive entropy (nats)")
    if y is not None:
        labels = np.asarray(y).reshape(-1)
        for k in np.unique(labels):
            pts = x[torch.as_tensor(labels == k)].numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=6, label=f"class {k}")
        ax.legend(loc="upper right", fontsize="x-small")
    ax.set(xlabel="x₀", ylabel="x₁")
    return ax


def _real_targets(post: Posterior, pred: Any, y: Any, caller: str) -> torch.Tensor:
    """``y`` in the prediction's layout, for real-valued (not class) likelihoods."""
    if post.model.likelihood.predicts_classes:
        raise ValueError(
            f"{caller} draws real-valued predictions; for {type(post.model.likelihood).__name__} "
            "class predictions use pb.plots.plot_reliability"
        )
    y_t = torch.as_tensor(np.asarray(y), device=pred.output.device)
    return post.model.likelihood.prepare_y(pred.output_shape, y_t).to(pred.mean.dtype)


def plot_reliability(
    post: Posterior,
    x: Any,
    y: Any,
    *,
    num_bins: int = 10,
    num_samples: int = 1000,
    seed: int | None = 0,
    ax: Any = None,
) -> Any:
    """Reliability diagram of class predictions: accuracy against confidence per bin.

    Bars on the diagonal are calibrated; below it, over-confident. The title
    gives the expected calibration error (see
    :func:`pyrobnn.evaluate.metrics.expected_calibration_error`).
    """
    import matplotlib.pyplot as plt

    pred = post.predict(x, num_samples=num_samples, seed=seed)
    bins = calibration_bins(pred, y, num_bins)
    ece = expected_calibration_error(pred, y, num_bins)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    edges = bins["edges"].numpy()
    acc = torch.nan_to_num(bins["accuracy"]).numpy()
    ax.bar(edges[:-1], acc, width=np.diff(edges), align="edge", edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"ECE = {ece:.3f}")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_prior_posterior(
    post: Posterior,
    sites: str | Sequence[str],
    *,
    num_samples: int = 1000,
    seed: int | None = 0,
    axes: Sequence[Any] | None = None,
) -> Any:
    """Prior and posterior marginals of chosen sites, one panel per site (ArviZ's ``plot_dist``).

    All elements of a tensor site are pooled: for an i.i.d. prior the pooled
    prior is the per-weight prior, and the pooled posterior shows how the
    layer's weights as a whole moved away from it.
    """
    import matplotlib.pyplot as plt

    from pyrobnn._arviz import arviz_line

    names = _globs.select(sites, post.source.site_names, argument="sites")
    if axes is None:
        _, axes_arr = plt.subplots(1, len(names), figsize=(3.5 * len(names), 3), squeeze=False)
        axes = list(axes_arr[0])
    if len(axes) != len(names):
        raise ValueError(f"{len(names)} sites ({', '.join(names)}) need {len(names)} axes, got {len(axes)}")
    draws = post.sample(num_samples, seed=seed)
    latent = post.model.latent_sites()
    for ax, name in zip(axes, names, strict=True):
        site = latent[name]
        with seeded(None if seed is None else seed + 1), torch.no_grad():
            prior = site.prior.distribution(site.shape).sample((num_samples,))
        values = {"prior": prior, "posterior": draws[name]}
        for label, value in values.items():
            flat = value.reshape(-1).double().cpu().numpy()
            if arviz_line() == 0:
                import arviz as az

                az.plot_dist(flat, ax=ax, label=label, color="C1" if label == "prior" else "C0")
            else:  # arviz 1.x has no single-array plot_dist: a density histogram
                ax.hist(flat, bins=50, density=True, histtype="step", label=label)
        ax.set(title=name)
        ax.legend(fontsize="small")
    return axes
