"""The ``pyrobnn`` command: fit and compare guides on a dataset, write a report."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pyrobnn import datasets, likelihoods
from pyrobnn.compare import compare
from pyrobnn.fit import fit
from pyrobnn.guides import GUIDE_KINDS
from pyrobnn.lift import lift
from pyrobnn.model import BayesianModel

__all__ = ["main"]

DATA_FORMS = "builtin:NAME (see `pyrobnn datasets`)"


@dataclass(frozen=True)
class Prepared:
    """A dataset standardised on its training split."""

    dataset: datasets.Dataset
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_scale: float


def _load(spec: str) -> Prepared:
    kind, _, name = spec.partition(":")
    if kind != "builtin" or not name:
        raise ValueError(f"unsupported --data {spec!r}; use {DATA_FORMS}")
    ds = datasets.load(name)
    mean, std = ds.x_train.mean(0), ds.x_train.std(0).clamp_min(1e-8)
    x_train, x_test = (ds.x_train - mean) / std, (ds.x_test - mean) / std
    if ds.task == "classification":
        return Prepared(ds, x_train, ds.y_train, x_test, ds.y_test, 1.0)
    y_mean, y_std = ds.y_train.mean(), ds.y_train.std()
    return Prepared(ds, x_train, (ds.y_train - y_mean) / y_std, x_test, (ds.y_test - y_mean) / y_std, float(y_std))


def _model(data: Prepared, hidden: int, seed: int) -> BayesianModel:
    torch.manual_seed(seed)  # the net's initial weights (the guide's starting point)
    d_in = data.x_train.shape[1]
    likelihood: likelihoods.Likelihood
    if data.dataset.task == "classification":
        d_out, likelihood = data.dataset.num_classes or 2, likelihoods.Categorical()
    else:
        d_out, likelihood = 1, likelihoods.Gaussian(scale="learn")
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))
    return BayesianModel(lift(net), likelihood)


def _guides(text: str) -> list[str]:
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in GUIDE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown guide(s) {', '.join(unknown) or '(none)'}; valid guides: {', '.join(GUIDE_KINDS)}")
    return kinds


def _compare(args: argparse.Namespace, kinds: list[str]) -> int:
    data = _load(args.data)
    results = {}
    for kind in kinds:
        model = _model(data, args.hidden, args.seed)
        print(f"fitting {kind} on {data.dataset.name} ...", file=sys.stderr)
        results[kind] = fit(
            model,
            kind,
            (data.x_train, data.y_train),
            num_steps=args.steps,
            num_particles=args.particles,
            lr=args.lr,
            seed=args.seed,
            progress=not args.quiet,
        )
    frame = compare(
        results,
        data.x_test,
        data.y_test,
        train=(data.x_train, data.y_train),
        num_samples=args.samples,
        seed=args.seed,
        y_scale=data.y_scale,
    )
    columns = [c for c in COLUMNS if c in frame.columns]
    rows = [{"guide": name, **{c: _value(frame.loc[name, c]) for c in columns}} for name in frame.index]
    table = _table(rows)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(_report(args, data, table))
        print(f"report written to {out / 'report.md'}", file=sys.stderr)
    return 0


#: Columns of pb.compare's table shown by the command, in this order.
COLUMNS = (
    "final_elbo",
    "test_log_likelihood",
    "rmse",
    "coverage",
    "accuracy",
    "ece",
    "khat",
    "elpd_loo",
    "fit_seconds",
    "num_variational_params",
)


def _value(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _table(rows: Sequence[Mapping[str, object]]) -> str:
    columns = list(rows[0])
    cells = [[_fmt(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _report(args: argparse.Namespace, data: Prepared, table: str) -> str:
    ds = data.dataset
    return "\n".join(
        [
            f"# pyrobnn guide comparison: {ds.name}",
            "",
            f"{ds.description}. {len(ds.x_train)} training and {len(ds.x_test)} test points, inputs"
            + (" and target" if ds.task == "regression" else "")
            + " standardised on the training split.",
            "",
            f"Network: {ds.x_train.shape[1]}-{args.hidden}-{ds.num_classes or 1} tanh MLP, Normal(0, 1) priors on "
            "every weight"
            + (
                ", Gaussian likelihood with a learned noise scale (HalfNormal(1) prior)."
                if ds.task == "regression"
                else ", Categorical likelihood."
            ),
            f"Fit: {args.steps} steps, {args.particles} particles, Adam lr {args.lr} decayed over the second half, "
            f"seed {args.seed}.",
            "",
            table,
            "",
            "*final_elbo*: mean per-step ELBO over the last 5% of the fit, on the (standardised) training data;",
            "n/a for MAP, whose objective (the log joint density at the estimate) is not a bound on the evidence.",
            "*test_log_likelihood*: mean over test points of log (1/S) Σ_s p(y | x, θ_s), in original units.",
            "*coverage*: share of test targets inside the central 90% predictive interval.",
            "*khat*: PSIS Pareto k̂ of log p(θ, y) − log q(θ) (< 0.5 good, 0.5-0.7 usable, > 0.7 poor);",
            "*elpd_loo*: PSIS-LOO expected log predictive density on the training data (ArviZ).",
            "",
            f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `pyrobnn {' '.join(sys.argv[1:])}`.",
            "",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrobnn", description="Bayesian neural networks on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_fit_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help=f"dataset: {DATA_FORMS}")
        p.add_argument("--hidden", type=int, default=50, help="hidden units of the one-hidden-layer MLP (50)")
        p.add_argument("--steps", type=int, default=3000, help="SVI steps per guide (3000)")
        p.add_argument("--particles", type=int, default=8, help="particles per step (8)")
        p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (0.01)")
        p.add_argument("--samples", type=int, default=1000, help="posterior draws for the test metrics (1000)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", help="directory for report.md")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = sub.add_parser("compare", help="fit several guides and compare them on held-out data")
    add_fit_options(compare)
    compare.add_argument("--guides", default=",".join(GUIDE_KINDS), help=f"comma-separated: {', '.join(GUIDE_KINDS)}")
    one = sub.add_parser("fit", help="fit one guide and report its metrics")
    add_fit_options(one)
    one.add_argument("--guide", default="meanfield", help=f"one of {', '.join(GUIDE_KINDS)}")
    sub.add_parser("datasets", help="list the built-in datasets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "datasets":
        for name in datasets.names():
            print(f"{name:10s} {datasets.load(name).task:15s} {datasets.describe(name)}")
        return 0
    try:
        kinds = _guides(args.guides if args.command == "compare" else args.guide)
        return _compare(args, kinds)
    except ValueError as err:
        print(f"pyrobnn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
