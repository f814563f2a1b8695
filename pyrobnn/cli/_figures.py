"""The PNG figures of ``pyrobnn compare/fit --out DIR``: ELBO, predictions and calibration.

Drawn on matplotlib's Agg canvas without pyplot, so no global backend is switched
and no figure is left open. Regression predictions are drawn in the data's
original units (the fit's standardisation undone), the units of the table's rmse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrobnn.cli._usage import form_of
from pyrobnn.datasets import Standardized
from pyrobnn.infer.fit import FitResult
from pyrobnn.posterior import Posterior

__all__ = ["LEVEL", "REFERENCE", "Figure", "write_figures"]

#: The central predictive interval shown as bands and error bars (the one whose coverage the table gives).
LEVEL = 0.9
#: The row and file name (``reference.nc``) of the reference posterior of ``--reference {chees,nuts}``,
#: whichever kernel sampled it; the one definition the command and its report read.
REFERENCE = "reference"


@dataclass(frozen=True)
class Figure:
    """A PNG written into the report folder, with the paragraph that explains it."""

    file: str
    title: str
    caption: str


def write_figures(
    out: Path,
    data: Standardized,
    results: Mapping[str, FitResult],
    *,
    num_samples: int,
    seed: int,
    reference: Posterior | None = None,
) -> list[Figure]:
    """The ELBO, prediction and calibration figures; ImportError without matplotlib."""
    import matplotlib  # noqa: F401  (the ImportError that says the plots are skipped)

    from pyrobnn import plots

    posts = {kind: result.posterior() for kind, result in results.items()}
    if reference is not None:
        posts[REFERENCE] = reference
    draw: dict[str, Any] = {"num_samples": num_samples, "seed": seed}
    figures = []

    def elbo(axes: Any, kind: str) -> None:
        result = results[kind]
        plots.plot_elbo(result, axes=axes, smooth=max(1, len(result.history) // 50))
        _focus(axes[0], result.history.elbo)
        objective = " (objective: log joint density, not a bound)" if result.guide.point_mass else ""
        axes[0].set_title(f"{kind}{objective}", fontsize="medium", loc="left")

    _save(out / "elbo.png", list(results), elbo, ncols=2, panel=(5, 3.2), per_guide_cols=2)
    point = [kind for kind, result in results.items() if result.guide.point_mass]
    figures.append(
        Figure(
            "elbo.png",
            "ELBO during the fit",
            "Left: the ELBO per step (faint) and its moving average, on the (standardised) training data. Right: its "
            "two parts, the expected log-likelihood and KL(q‖p). The y-range leaves out the first steps."
            + (
                " An ensemble's panel shows its first member's fit."
                if any(form_of(k) == "ensemble" for k in results)
                else ""
            )
            + (
                f" For {', '.join(point)}, a point estimate θ̂, there is no KL: the objective is the log joint "
                "density log p(y, θ̂) and its second part is −log p(θ̂), the negative log prior density."
                if point
                else ""
            ),
        )
    )
    ds, x_tr, y_tr, x_te = data.dataset, data.x_train, data.y_train, data.x_test
    if ds.task == "regression" and x_tr.shape[1] == 1:
        both = torch.cat([x_tr, x_te])
        lo, hi = float(both.min()), float(both.max())
        grid = torch.linspace(lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo), 300).unsqueeze(-1)
        x_raw = grid.reshape(-1).double() * float(data.x_scale[0]) + float(data.x_mean[0])

        def band(ax: Any, kind: str) -> None:
            pred = posts[kind].predict(grid, **draw)
            y_lo, y_hi = pred.interval(LEVEL)
            qs = torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=pred.conditional_mean.dtype)
            f_lo, f_hi = torch.quantile(pred.conditional_mean, qs, dim=0)
            g = x_raw.numpy()
            ax.fill_between(g, _y(data, y_lo), _y(data, y_hi), alpha=0.25, label=f"{LEVEL:.0%} predictive")
            ax.fill_between(g, _y(data, f_lo), _y(data, f_hi), alpha=0.35, label=f"{LEVEL:.0%} of E[y | θ]")
            ax.plot(g, _y(data, pred.mean), lw=1.5, label="predictive mean")
            ax.scatter(ds.x_train.reshape(-1), ds.y_train, s=6, color="k", label="training data")
            ax.scatter(ds.x_test.reshape(-1), ds.y_test, s=8, marker="x", color="C3", label="test data")
            ax.set(title=kind, xlabel="x", ylabel="y")
            ax.legend(fontsize="x-small")

        _save(out / "predictions.png", list(posts), band, ncols=3, panel=(5, 3.5))
        figures.append(
            Figure(
                "predictions.png",
                "Predictions",
                f"Predictive mean, the central {LEVEL:.0%} interval of y (noise included) and of E[y | θ] alone, "
                "over the inputs and a quarter of their range beyond them; training data as dots, test data as "
                "crosses. Original units (those of rmse).",
            )
        )
    elif ds.task == "regression":

        def scatter(ax: Any, kind: str) -> None:
            pred = posts[kind].predict(x_te, **draw)
            y_lo, y_hi = pred.interval(LEVEL)
            mean, lo_, hi_ = _y(data, pred.mean), _y(data, y_lo), _y(data, y_hi)
            obs = ds.y_test.reshape(-1).double().numpy()
            covered = float(np.mean((obs >= lo_) & (obs <= hi_)))
            ax.errorbar(obs, mean, yerr=[mean - lo_, hi_ - mean], fmt="o", ms=3, lw=0.8, alpha=0.7)
            ends = [min(obs.min(), lo_.min()), max(obs.max(), hi_.max())]
            ax.plot(ends, ends, "k--", lw=1, label="predicted = observed")
            ax.set(title=f"{kind}: {covered:.0%} of intervals cover y", xlabel="observed y", ylabel="predicted y")
            ax.legend(loc="upper left", fontsize="small")

        _save(out / "predictions.png", list(posts), scatter, ncols=3, panel=(4.2, 4))
        figures.append(
            Figure(
                "predictions.png",
                "Predictions against the truth",
                f"Predictive mean against the observed target on the test split, with the central {LEVEL:.0%} "
                "predictive interval as error bars; the dashed line is a perfect prediction. Original units "
                "(those of rmse).",
            )
        )
    elif x_tr.shape[1] == 2:

        def surface(ax: Any, kind: str) -> None:
            plots.plot_decision_surface(posts[kind], x_tr, y_tr, num_samples=min(num_samples, 200), seed=seed, ax=ax)
            ax.set(title=kind, xlabel="x₀ (standardised)", ylabel="x₁ (standardised)")

        _save(out / "predictions.png", list(posts), surface, ncols=3, panel=(5, 4))
        figures.append(
            Figure(
                "predictions.png",
                "Predictions",
                "Predictive entropy over the input plane (dark: uncertain) and a quarter of the data's range beyond "
                "it, with the training data coloured by class. Inputs in standardised units (each column minus its "
                "training mean, over its training standard deviation).",
            )
        )
    figures.append(_calibration(out, data, posts, draw))
    return figures


def _calibration(out: Path, data: Standardized, posts: Mapping[str, Posterior], draw: dict[str, Any]) -> Figure:
    from pyrobnn import plots

    x_te, y_te = data.x_test, data.y_test
    if data.dataset.task == "regression":

        def calibration(ax: Any, kind: str) -> None:
            for name, post in posts.items():
                plots.plot_calibration(post, x_te, y_te, label=name, ax=ax, **draw)
            ax.set_title("coverage of central predictive intervals (test split)", fontsize="medium")

        _save(out / "calibration.png", ["all"], calibration, ncols=1, panel=(5, 5))
        caption = (
            "Share of test targets inside the central p predictive interval against p, one line per guide. "
            "Below the diagonal the intervals are too narrow (over-confident), above it too wide."
        )
    else:

        def reliability(ax: Any, kind: str) -> None:
            plots.plot_reliability(posts[kind], x_te, y_te, ax=ax, **draw)
            ax.set_title(f"{kind}: {ax.get_title()}", fontsize="medium")

        _save(out / "calibration.png", list(posts), reliability, ncols=3, panel=(4, 4))
        caption = (
            "Reliability diagrams on the test split: accuracy against confidence of the predicted class, in "
            "ten bins. Bars below the diagonal are over-confident; ECE is the expected calibration error."
        )
    return Figure("calibration.png", "Calibration", caption)


def _y(data: Standardized, values: torch.Tensor) -> np.ndarray:
    """Standardised targets back in original units, as a flat float64 array."""
    return values.reshape(-1).double().cpu().numpy() * data.y_scale + data.y_mean


def _save(
    path: Path,
    names: list[str],
    draw: Callable[[Any, str], None],
    *,
    ncols: int,
    panel: tuple[float, float],
    per_guide_cols: int = 1,
) -> None:
    """One panel (or ``per_guide_cols`` panels) per name on a grid, saved as a PNG through the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    per_row = max(1, ncols // per_guide_cols)
    nrows = -(-len(names) // per_row)
    width = min(len(names), per_row) * per_guide_cols
    fig = MplFigure(figsize=(panel[0] * width, panel[1] * nrows))
    FigureCanvasAgg(fig)
    grid = fig.subplots(nrows, width, squeeze=False)
    panels = [grid[i // per_row, (i % per_row) * per_guide_cols :][:per_guide_cols] for i in range(len(names))]
    for axes, name in zip(panels, names, strict=True):
        draw(axes if per_guide_cols > 1 else axes[0], name)
    for ax in grid.flat[len(names) * per_guide_cols :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _focus(ax: Any, values: np.ndarray) -> None:
    """Fit the y-range to the values after the first 10% of steps (the start would flatten the rest)."""
    tail = values[len(values) // 10 :]
    tail = tail[np.isfinite(tail)]
    if tail.size:
        lo, hi = np.quantile(tail, [0.005, 1.0])
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)
