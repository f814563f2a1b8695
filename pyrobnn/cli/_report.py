"""What ``pyrobnn compare/fit --out DIR`` writes: ``report.md``, PNG figures, one ArviZ netCDF file per guide.

The figures are drawn on matplotlib's Agg canvas without pyplot, so no global
backend is switched and no figure is left open; without matplotlib the report
says the plots were skipped and the rest is written as usual.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrobnn.datasets import Standardized
from pyrobnn.infer.fit import FitResult
from pyrobnn.posterior import Posterior

__all__ = ["write"]

#: The central predictive interval shown as bands and error bars (the one whose coverage the table gives).
LEVEL = 0.9
#: The row and file name of the NUTS reference posterior.
REFERENCE = "nuts"
PLOTS_MISSING = "Plots skipped: matplotlib is not installed (`pip install 'pyrobnn[plots]'`)."


@dataclass(frozen=True)
class Figure:
    """A PNG written into the report folder, with the paragraph that explains it."""

    file: str
    title: str
    caption: str


def write(
    out: Path,
    args: argparse.Namespace,
    data: Standardized,
    results: Mapping[str, FitResult],
    table: str,
    *,
    reference: Posterior | None = None,
    frame: Any = None,
) -> Path:
    """Write the report folder; return the path of ``report.md``.

    With a ``reference`` (the NUTS posterior of ``--reference nuts``) it is exported,
    drawn beside the guides, and ``frame`` (``pb.compare``'s table) gives the
    distances the report's prose reads.
    """
    out.mkdir(parents=True, exist_ok=True)
    items: dict[str, FitResult | Posterior] = {**results}
    if reference is not None:
        items[REFERENCE] = reference
    exports = write_netcdf(out, data, items, num_samples=args.export_samples, seed=args.seed)
    try:
        figures = write_figures(out, data, results, num_samples=args.samples, seed=args.seed, reference=reference)
        note = ""
    except ImportError:
        figures, note = [], PLOTS_MISSING
        print(f"pyrobnn: {PLOTS_MISSING}", file=sys.stderr)
    against = reference_text(args, frame, data.dataset.task) if reference is not None and frame is not None else ""
    path = out / "report.md"
    path.write_text(report_text(args, data, results, table, figures, exports, note, against))
    return path


def write_netcdf(
    out: Path, data: Standardized, results: Mapping[str, FitResult | Posterior], *, num_samples: int, seed: int
) -> list[str]:
    """One ``<guide>.nc`` per guide (and the reference): :func:`pyrobnn.to_arviz` on the training data."""
    from pyrobnn.export import to_arviz

    files = []
    for kind, result in results.items():
        idata = to_arviz(result, data.x_train, data.y_train, num_samples=num_samples, seed=seed)
        idata.to_netcdf(str(out / f"{kind}.nc"))
        files.append(f"{kind}.nc")
    return files


def reference_text(args: argparse.Namespace, frame: Any, task: str) -> str:
    """The paragraph that reads the distances to NUTS: which guide is closest, and why the others are not."""
    guides = frame.drop(index=REFERENCE)
    draws = frame.loc[REFERENCE]
    lines = [
        f"**Against NUTS.** The row *{REFERENCE}* is the posterior sampled by NUTS (`pb.mcmc`: "
        f"{args.nuts_chains} chains × {args.nuts_samples} draws after {args.nuts_warmup} warm-up iterations, "
        f"{draws['fit_seconds']:.0f} s), the reference each guide approximates.",
    ]
    if task == "regression":
        best = guides["w1"].idxmin()
        lines += [
            "*w1*: Wasserstein-1 distance between a guide's predictive draws of y and NUTS's at each test point, "
            "averaged (original units); *sd_ratio*: predictive standard deviation over NUTS's, averaged over test "
            "points.",
            "",
            f"Closest to NUTS: **{best}** (w1 {guides.loc[best, 'w1']:.3g}, sd_ratio "
            f"{guides.loc[best, 'sd_ratio']:.2f}). {_WHY_CLOSEST.get(best, '')}",
        ]
        narrow = [name for name in guides.index if guides.loc[name, "sd_ratio"] < 0.9]
        if narrow:
            lines.append(
                f"{_listing(narrow)} predict{'s' if len(narrow) == 1 else ''} narrower than NUTS (sd_ratio < 0.9): "
                "maximising the ELBO minimises KL(q‖p), which costs q nothing for missing posterior mass, so q "
                "settles inside the posterior's bulk. The fewer correlations a family can hold (mean-field none, "
                "low-rank a few directions, full-rank all), the narrower it is where the data say little, and MAP, "
                "a single point, keeps only the noise."
            )
        wide = [name for name in guides.index if guides.loc[name, "sd_ratio"] > 1.1]
        if wide:
            lines.append(
                f"{_listing(wide)} predict{'s' if len(wide) == 1 else ''} wider than NUTS (sd_ratio > 1.1), "
                "the mark of a variational fit that explains part of the signal as noise: weights kept near "
                "their prior cost less KL than the fit they would need, so with a learned noise scale the ELBO "
                "favours a larger one than the posterior holds. Check that the ELBO curve has levelled off (more "
                "steps help only if it has not), and that NUTS mixed (R̂ of the predictions in nuts.nc near 1)."
            )
    else:
        best = guides["total_variation"].idxmin()
        lines += [
            "*agreement*: share of test points where a guide predicts the same class as NUTS; *total_variation*: "
            "½ Σ_c |p_c − p_NUTS,c| per test point, averaged.",
            "",
            f"Closest to NUTS: **{best}** (total variation {guides.loc[best, 'total_variation']:.3g}, agreement "
            f"{guides.loc[best, 'agreement']:.1%}).",
        ]
    return "\n".join(lines)


_WHY_CLOSEST = {
    "map": "A point estimate comes closest when most test points lie among the data, where the posterior "
    "predictive is mostly the noise and the weights' uncertainty adds little; where the data say little it "
    "is too narrow, so read its sd_ratio there before trusting it.",
    "fullrank": "Its family holds every correlation between the weights, so it can follow the posterior's "
    "bulk around one mode.",
    "lowrank": "Its family holds the strongest correlations between the weights, which mean-field misses.",
    "flow": "Its family can bend and skew where a Gaussian cannot.",
    "meanfield": "Here the correlations the richer families can hold did not matter for the predictions.",
}


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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
        objective = " (objective: log joint density, not a bound)" if kind == "map" else ""
        axes[0].set_title(f"{kind}{objective}", fontsize="medium", loc="left")

    _save(out / "elbo.png", list(results), elbo, ncols=2, panel=(5, 3.2), per_guide_cols=2)
    figures.append(
        Figure(
            "elbo.png",
            "ELBO during the fit",
            "Left: the ELBO per step (faint) and its moving average, on the training data. Right: its two parts, "
            "the expected log-likelihood and KL(q‖p). The y-range leaves out the first steps.",
        )
    )
    ds, x_tr, y_tr, x_te, y_te = data.dataset, data.x_train, data.y_train, data.x_test, data.y_test
    if ds.task == "regression" and x_tr.shape[1] == 1:
        both = torch.cat([x_tr, x_te])
        lo, hi = float(both.min()), float(both.max())
        grid = torch.linspace(lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo), 300)

        def band(ax: Any, kind: str) -> None:
            plots.plot_predictive(posts[kind], x_tr, y_tr, x_grid=grid, level=LEVEL, ax=ax, **draw)
            ax.scatter(x_te.reshape(-1), y_te, s=8, marker="x", color="C3", label="test data")
            ax.set(title=kind, xlabel="x (standardised)", ylabel="y (standardised)")
            ax.legend(fontsize="x-small")

        _save(out / "predictions.png", list(posts), band, ncols=3, panel=(5, 3.5))
        figures.append(
            Figure(
                "predictions.png",
                "Predictions",
                f"Predictive mean, the central {LEVEL:.0%} interval of y (noise included) and of E[y | θ] alone, "
                "over the inputs and a quarter of their range beyond them; training data as dots, test data as "
                "crosses. Standardised units.",
            )
        )
    elif ds.task == "regression":

        def scatter(ax: Any, kind: str) -> None:
            plots.plot_predicted_vs_observed(posts[kind], x_te, y_te, level=LEVEL, ax=ax, **draw)
            ax.set(title=f"{kind}: {ax.get_title()}", xlabel="observed y (standardised)", ylabel="predicted y")

        _save(out / "predictions.png", list(posts), scatter, ncols=3, panel=(4.2, 4))
        figures.append(
            Figure(
                "predictions.png",
                "Predictions against the truth",
                f"Predictive mean against the observed target on the test split, with the central {LEVEL:.0%} "
                "predictive interval as error bars; the dashed line is a perfect prediction. Standardised units.",
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
                "it, with the training data coloured by class. Standardised units.",
            )
        )
    if ds.task == "regression":

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
    figures.append(Figure("calibration.png", "Calibration", caption))
    return figures


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


def report_text(
    args: argparse.Namespace,
    data: Standardized,
    results: Mapping[str, FitResult],
    table: str,
    figures: list[Figure],
    exports: list[str],
    note: str,
    against: str = "",
) -> str:
    ds = data.dataset
    first = next(iter(results.values()))
    length = f"{args.epochs} epochs ({first.num_steps} steps)" if args.epochs else f"{first.num_steps} steps"
    batch = f"minibatches of {args.batch_size}" if args.batch_size else "the whole training set per step"
    lines = [
        f"# pyrobnn guide comparison: {ds.name}",
        "",
        f"{ds.description}. {len(ds.x_train)} training and {len(ds.x_test)} test points, inputs"
        + (" and target" if ds.task == "regression" else "")
        + " standardised with the training split's mean and standard deviation.",
        "",
        f"Network: {ds.x_train.shape[1]}-{args.hidden}-{ds.num_classes or 1} tanh MLP, Normal(0, 1) priors on "
        "every weight"
        + (
            ", Gaussian likelihood with a learned noise scale (HalfNormal(1) prior)."
            if ds.task == "regression"
            else ", Categorical likelihood."
        ),
        f"Fit: {length}, {batch}, {args.particles} particles, Adam lr {args.lr} decayed over the second half, "
        f"seed {args.seed}.",
        "",
        table,
        "",
        "*final_elbo*: mean per-step ELBO over the last 5% of the fit, on the (standardised) training data;",
        "n/a for MAP, whose objective (the log joint density at the estimate) is not a bound on the evidence.",
        "*test_log_likelihood*: mean over test points of log (1/S) Σ_s p(y | x, θ_s), in original units.",
        f"*coverage*: share of test targets inside the central {LEVEL:.0%} predictive interval.",
        "*khat*: PSIS Pareto k̂ of log p(θ, y) − log q(θ) (< 0.5 good, 0.5-0.7 usable, > 0.7 poor);",
        "*elpd_loo*: PSIS-LOO expected log predictive density on the training data (ArviZ).",
        "",
    ]
    if against:
        lines += [against, ""]
    for fig in figures:
        lines += [f"## {fig.title}", "", f"![{fig.title}]({fig.file})", "", fig.caption, ""]
    if note:
        lines += [note, ""]
    lines += [
        "## ArviZ files",
        "",
        f"One netCDF file per guide, {args.export_samples} posterior draws each on the (standardised) training "
        "data, with the groups posterior, posterior_predictive, log_likelihood, observed_data, sample_stats and "
        "elbo_history"
        + (" (NUTS: its chains, without elbo_history; R̂ and ESS apply)" if exports[-1] == f"{REFERENCE}.nc" else "")
        + ": "
        + ", ".join(f"[{f}]({f})" for f in exports)
        + ".",
        "",
        "```python",
        "import arviz as az",
        f'idata = az.from_netcdf("{exports[0]}")',
        "az.loo(idata)",
        "```",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `pyrobnn {shlex.join(args.argv)}`.",
        "",
    ]
    return "\n".join(lines)
