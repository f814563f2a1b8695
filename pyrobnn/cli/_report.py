"""What ``pyrobnn compare/fit --out DIR`` writes: ``report.md``, PNG figures, one ArviZ netCDF file per guide.

The figures are drawn by :mod:`pyrobnn.cli._figures`; without matplotlib the
report says the plots were skipped and the rest is written as usual.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyrobnn.cli._figures import LEVEL, REFERENCE, Figure, write_figures
from pyrobnn.cli._reference import KERNEL_LABELS, Reference, reference_text
from pyrobnn.cli._trust import loo_text, trust_text
from pyrobnn.cli._usage import form_of
from pyrobnn.datasets import Standardized
from pyrobnn.infer.fit import FitResult
from pyrobnn.posterior import Posterior

__all__ = ["write"]

#: The test rows a csv file's default split aims for (the rule lives in the command's default_test_fraction).
MIN_TEST_ROWS = 100
PLOTS_MISSING = "Plots skipped: matplotlib is not installed (`pip install 'pyrobnn[plots]'`)."


def write(
    out: Path,
    args: argparse.Namespace,
    data: Standardized,
    results: Mapping[str, FitResult],
    table: str,
    *,
    reference: Reference | None = None,
    frame: Any = None,
    failed: Mapping[str, str] | None = None,
) -> Path:
    """Write the report folder; return the path of ``report.md``.

    ``results`` are the guides that finished; ``failed`` names those whose fit
    diverged, with the reason. With a ``reference`` (the posterior of
    ``--reference chees`` or ``nuts``) it is exported and drawn beside the guides. ``frame``
    (``pb.compare``'s table) gives the numbers the report's prose reads.
    """
    out.mkdir(parents=True, exist_ok=True)
    items: dict[str, FitResult | Posterior] = {**results}
    if reference is not None:
        items[REFERENCE] = reference.posterior
    exports = write_netcdf(out, data, items, num_samples=args.export_samples, seed=args.seed)
    try:
        post = None if reference is None else reference.posterior
        figures = write_figures(out, data, results, num_samples=args.samples, seed=args.seed, reference=post)
        note = ""
    except ImportError:
        figures, note = [], PLOTS_MISSING
        print(f"pyrobnn: {PLOTS_MISSING}", file=sys.stderr)
    task, points = data.dataset.task, len(data.x_test)
    against = "" if reference is None or frame is None else reference_text(reference, frame, task, points)
    point_mass = [kind for kind, result in results.items() if result.guide.point_mass]
    label = None if reference is None else KERNEL_LABELS[reference.kernel]
    prose = [] if frame is None else [trust_text(frame, task, point_mass, label)]
    prose += [] if frame is None else [loo_text(frame)]
    path = out / "report.md"
    prose = [failed_text(failed or {}), *prose]
    path.write_text(report_text(args, data, results, table, figures, exports, note, against, [p for p in prose if p]))
    return path


def write_netcdf(
    out: Path, data: Standardized, results: Mapping[str, FitResult | Posterior], *, num_samples: int, seed: int
) -> list[str]:
    """One ``<guide>.nc`` per guide (and the reference): :func:`pyrobnn.to_arviz` on the training data.

    An ensemble ``ensemble:map:8`` is written as ``ensemble-map-8.nc`` (no colons in file names).
    """
    from pyrobnn.export import to_arviz

    files = []
    for kind, result in results.items():
        idata = to_arviz(result, data.x_train, data.y_train, num_samples=num_samples, seed=seed)
        name = f"{kind.replace(':', '-')}.nc"
        idata.to_netcdf(str(out / name))
        files.append(name)
    return files


def report_text(
    args: argparse.Namespace,
    data: Standardized,
    results: Mapping[str, FitResult],
    table: str,
    figures: list[Figure],
    exports: list[str],
    note: str,
    against: str = "",
    prose: list[str] | None = None,
) -> str:
    ds = data.dataset
    first = next(iter(results.values()))
    length = f"{args.epochs} epochs ({first.num_steps} steps)" if args.epochs else f"{first.num_steps} steps"
    decay = "decayed over the second half"
    if not args.epochs and getattr(args, "steps", None) in (None, "auto"):  # the default: --steps auto
        length = auto_lengths(results)
        decay = "kept until then, then decayed over half as many steps again"
    batch = f"minibatches of {args.batch_size}" if args.batch_size else "the whole training set per step"
    title = "pyrobnn fit" if getattr(args, "command", "compare") == "fit" else "pyrobnn guide comparison"
    regression = ds.task == "regression"
    lines = [
        f"# {title}: {ds.name}",
        "",
        f"{ds.description}. {len(ds.x_train)} training and {len(ds.x_test)} test points"
        + test_share_text(args, ds.x_test.shape[0] + ds.x_train.shape[0])
        + ", inputs"
        + (" and target" if regression else "")
        + " standardised with the training split's mean and standard deviation for the fit."
        + ("" if regression else " " + labels_text(ds.classes, ds.num_classes)),
        "",
        f"Network: {ds.x_train.shape[1]}-{args.hidden}-{ds.num_classes or 1} tanh MLP, Normal(0, 1) priors on "
        "every weight"
        + (
            ", Gaussian likelihood with a learned noise scale (HalfNormal(1) prior)."
            if regression
            else ", Categorical likelihood."
        ),
        f"Fit: {length}, {batch}, {particles_text(args, results)}, Adam lr {args.lr} {decay}, seed {args.seed}."
        + starts_text(results),
        "",
        table,
        "",
        "Rows are sorted by test log-likelihood, best first. A value ± x gives its standard error over the "
        f"{len(ds.x_test)} test points (over the {len(ds.x_train)} training points for elpd_loo): differences "
        "within about two of them are not resolved by this test set."
        + (" Targets are in original units throughout." if regression else ""),
        "",
        "*final_elbo*: mean per-step ELBO over the last 5% of the fit, on the (standardised) training data;",
        "n/a for MAP, whose objective (the log joint density at the estimate) is not a bound on the evidence.",
        "*test_log_likelihood*: mean over test points of log (1/S) Σ_s p(y | x, θ_s)"
        + (", in original units." if regression else "."),
        *laplace_text(results),
    ]
    if regression:
        lines += [
            "*rmse*: root mean squared error of the predictive mean, in original units.",
            f"*coverage*: share of test targets inside the central {LEVEL:.0%} predictive interval "
            f"(calibrated: {LEVEL:.2f}).",
        ]
    else:
        lines += [
            "*accuracy*: share of test points whose most probable class under the predictive (the average of "
            "the class probabilities over posterior draws) is the true one.",
            "*ece*: expected calibration error, Σ_b (n_b / N) |accuracy_b − confidence_b| over ten equal-width "
            "bins of the predicted class's probability (0: calibrated; no standard error given).",
        ]
    lines += [
        "*khat*: PSIS Pareto k̂ of log p(θ, y) − log q(θ) (< 0.5 good, 0.5-0.7 usable, > 0.7 poor);",
        "*elpd_loo_per_point*: PSIS-LOO expected log predictive density on the training data (ArviZ), divided by "
        "the number of training points so that it reads beside test_log_likelihood"
        + (", in original units" if regression else "")
        + "; *p_loo*: its effective number of parameters; *loo_bad_khat*: the share of training points whose "
        "Pareto k is above ArviZ's threshold (about 0.7), where LOO is unreliable (marked ⚠). n/a for MAP: "
        "over copies of one estimate LOO is the in-sample fit.",
        "",
    ]
    for paragraph in prose or []:
        lines += [paragraph, ""]
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
        + (
            f" ({REFERENCE}.nc: the MCMC chains, without elbo_history; R̂ and ESS apply)"
            if exports[-1] == f"{REFERENCE}.nc"
            else ""
        )
        + ": "
        + ", ".join(f"[{f}]({f})" for f in exports)
        + ". `az.loo` on them is on the standardised scale"
        + (f" (add −n·log {data.y_scale:.4g} for original units)" if regression else "")
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


def auto_lengths(results: Mapping[str, FitResult]) -> str:
    """How long fits under ``num_steps="auto"`` ran, as ranges: over the single fits, and over
    every member of every ensemble (each member levels off at its own step)."""

    def span(lengths: set[int]) -> str:  # "6150" or "5700–6150"
        ordered = sorted(lengths)
        return "–".join(str(n) for n in dict.fromkeys(ordered[:1] + ordered[-1:]))

    singles = {r.num_steps for kind, r in results.items() if form_of(kind) != "ensemble"}
    ensembles = [r for kind, r in results.items() if form_of(kind) == "ensemble"]
    members = {m.num_steps for r in ensembles for m in r.members}  # type: ignore[attr-defined]  # EnsembleResult
    if not singles:
        return f"until each member's ELBO levelled off ({span(members)} steps)"
    return f"until the ELBO levelled off ({span(singles)} steps" + (
        f"; ensemble members {span(members)})" if members else ")"
    )


def starts_text(results: Mapping[str, FitResult]) -> str:
    """Which start each fit from two starts kept (``pb.fit``'s default for the joint guides under ``auto``)."""
    kept = {
        kind: "the net's initial weights" if r.config["start"] == "pretrained" else "a MAP fit's"
        for kind, r in results.items()
        if "start" in r.config
    }
    if not kept:
        return ""
    which = "; ".join(f"{kind} from {start}" for kind, start in kept.items())
    return (
        f" {', '.join(kept)}: each fitted from the net's initial weights and from a MAP fit's, the fit that ended "
        f"with the higher ELBO kept ({which})."
    )


def laplace_text(results: Mapping[str, FitResult]) -> list[str]:
    """What a Laplace row is: its final_elbo is a log evidence, its predictions those of the linearised network."""
    lines = []
    for kind, result in results.items():
        summary = getattr(result.guide, "summary", None)
        if summary is None or getattr(result.guide, "log_evidence", None) is None:
            continue
        s = summary()
        predictive = (
            "the linearised network f(x, θ*) + J(x)(θ − θ*), as are its elpd_loo and khat"
            if s["predictive"] == "linear"
            else "the network itself at each draw"
        )
        structure = f"low-rank (rank {s['rank']}) plus diagonal" if s["structure"] == "lowrank" else s["structure"]
        noise = f"; noise scale {s['noise_scale']:.3g} (standardised) by the evidence" if s["noise_scale"] else ""
        lines.append(
            f"*{kind}*: the Laplace approximation: the MAP fit, then a Gaussian with the {s['curvature']} "
            f"curvature of the log joint there ({structure} precision over {s['block_dim']} weights){noise}. "
            f"Its final_elbo is its estimate of the log evidence, log p(y); its predictions are those of {predictive}. "
            f"The data determine γ = {s['effective_parameters']:.1f} of the {s['block_dim']} weights' directions "
            "(MacKay's effective number of parameters); the prior holds the rest."
        )
    return lines


def particles_text(args: argparse.Namespace, results: Mapping[str, FitResult]) -> str:
    """``"8 particles"``, or each guide's default count when --particles was not given."""
    if args.particles is not None:
        return f"{args.particles} particles per step"
    counts = {kind: result.config.get("num_particles") for kind, result in results.items()}
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} particles per step (the guide's default)"
    return "particles per step as each guide's default (" + ", ".join(f"{k} {n}" for k, n in counts.items()) + ")"


def test_share_text(args: argparse.Namespace, total: int) -> str:
    """For csv data, how the test share was chosen."""
    if not args.data.startswith("csv:"):
        return ""
    if args.test_fraction is not None:
        return f" ({args.test_fraction:.0%} held out, --test-fraction)"
    return (
        f" (the default share held out: enough for {MIN_TEST_ROWS} test rows, at least 10% and at most 30% of "
        f"the {total} rows; --test-fraction to change)"
    )


def labels_text(classes: tuple[str, ...] | None, num_classes: int | None) -> str:
    """How the class labels map to the integers the model predicts."""
    if classes is not None:
        return "Class labels: " + ", ".join(f"{i} = {name}" for i, name in enumerate(classes)) + " (sorted order)."
    return f"Class labels are the integers 0 … {(num_classes or 2) - 1} as the dataset gives them."


def failed_text(failed: Mapping[str, str]) -> str:
    """A section naming each guide whose fit diverged, and why."""
    if not failed:
        return ""
    lines = ["**Failed guides.** Their fits diverged, so they have no numbers, figures or netCDF file:", ""]
    lines += [f"- **{name}**: {reason}" for name, reason in failed.items()]
    return "\n".join(lines)
