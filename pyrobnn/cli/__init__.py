"""The ``pyrobnn`` command: fit and compare guides on a dataset, write a report.

::

    pyrobnn datasets
    pyrobnn compare --data builtin:gap1d --guides meanfield,lowrank,map --out report/
    pyrobnn compare --data csv:houses.csv --target price --epochs 40 --batch-size 128 --out report/
    pyrobnn fit --data uci:../shared/data/uci/yacht --split 0 --guide meanfield --out report/
    pyrobnn compare --data builtin:gap1d --guides meanfield,fullrank --reference nuts --out report/

A mistake in the arguments (an unknown dataset, column or guide, a missing
``--target`` or ``--split``) prints what is valid and exits with status 2; a
diverged fit exits with status 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from pyrobnn import datasets, likelihoods
from pyrobnn.cli import _report
from pyrobnn.evaluate.compare import compare
from pyrobnn.guides import GUIDE_KINDS
from pyrobnn.infer.fit import FitError, FitResult, fit
from pyrobnn.infer.mcmc import mcmc
from pyrobnn.lift import lift
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Posterior

__all__ = ["main"]

DATA_FORMS = "builtin:NAME (see `pyrobnn datasets`), csv:PATH (with --target COLUMN) or uci:DIR (with --split K)"
#: SVI steps per guide when neither --steps nor --epochs is given.
DEFAULT_STEPS = 3000

#: The row name of the NUTS reference (``--reference nuts``).
REFERENCE = "nuts"

#: Columns of pb.compare's table shown by the command, in this order.
COLUMNS = (
    "final_elbo",
    "test_log_likelihood",
    "rmse",
    "coverage",
    "accuracy",
    "ece",
    "w1",
    "sd_ratio",
    "agreement",
    "total_variation",
    "khat",
    "elpd_loo",
    "fit_seconds",
    "num_variational_params",
)


class UsageError(ValueError):
    """A mistake in the command's arguments (exit status 2)."""


def load_data(args: argparse.Namespace) -> datasets.Dataset:
    """The dataset named by ``--data``, with the options that belong to its form checked."""
    kind, sep, rest = args.data.partition(":")
    if not sep or not rest or kind not in ("builtin", "csv", "uci"):
        raise UsageError(f"unsupported --data {args.data!r}; use {DATA_FORMS}")
    csv_only = [flag for flag, value in (("--target", args.target), ("--task", args.task)) if value is not None]
    if args.test_fraction is not None:
        csv_only.append("--test-fraction")
    if kind != "csv" and csv_only:
        raise UsageError(f"{', '.join(csv_only)} only apply to csv:PATH data, not {args.data!r}")
    if kind != "uci" and args.split is not None:
        raise UsageError(f"--split only applies to uci:DIR data, not {args.data!r}")
    if kind == "builtin":
        return datasets.load(rest)
    if kind == "uci":
        if args.split is None:
            count = datasets.uci_num_splits(rest)
            raise UsageError(f"uci data need --split K; {rest} has {count} splits (0-{count - 1})")
        return datasets.load_uci(rest, args.split)
    if args.target is None:
        raise UsageError(
            f"csv data need --target COLUMN; the columns of {rest} are: {', '.join(datasets.csv_columns(rest))}"
        )
    fraction = 0.1 if args.test_fraction is None else args.test_fraction
    ds = datasets.load_csv(rest, args.target, test_fraction=fraction, seed=args.seed, task=args.task)
    if args.task is None:
        other = "regression" if ds.task == "classification" else "classification"
        print(f"{ds.name}: target {args.target!r} read as {ds.task} (--task {other} to change)", file=sys.stderr)
    return ds


def build_model(data: datasets.Standardized, hidden: int, seed: int) -> BayesianModel:
    """A one-hidden-layer tanh MLP with Normal(0, 1) priors and the task's likelihood."""
    torch.manual_seed(seed)  # the net's initial weights (the guide's starting point)
    d_in = data.x_train.shape[1]
    likelihood: likelihoods.Likelihood
    if data.dataset.task == "classification":
        d_out, likelihood = data.dataset.num_classes or 2, likelihoods.Categorical()
    else:
        d_out, likelihood = 1, likelihoods.Gaussian(scale="learn")
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))
    return BayesianModel(lift(net), likelihood)


def parse_guides(text: str) -> list[str]:
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in GUIDE_KINDS]
    if unknown or not kinds:
        raise UsageError(f"unknown guide(s) {', '.join(unknown) or '(none)'}; valid guides: {', '.join(GUIDE_KINDS)}")
    if len(set(kinds)) < len(kinds):
        raise UsageError(f"a guide is listed twice in {text!r}")
    return kinds


def run(args: argparse.Namespace, kinds: list[str]) -> int:
    data = datasets.standardize(load_data(args))
    length = {"epochs": args.epochs} if args.epochs is not None else {"num_steps": args.steps or DEFAULT_STEPS}
    results: dict[str, FitResult] = {}
    for kind in kinds:
        model = build_model(data, args.hidden, args.seed)
        print(f"fitting {kind} on {data.dataset.name} ...", file=sys.stderr)
        results[kind] = fit(
            model,
            kind,
            (data.x_train, data.y_train),
            **length,
            batch_size=args.batch_size,
            num_particles=args.particles,
            lr=args.lr,
            seed=args.seed,
            progress=not args.quiet,
        )
    reference: Posterior | None = None
    if args.reference == "nuts":
        print(f"sampling the reference posterior with NUTS on {data.dataset.name} ...", file=sys.stderr)
        reference = mcmc(
            build_model(data, args.hidden, args.seed),
            (data.x_train, data.y_train),
            num_samples=args.nuts_samples,
            warmup=args.nuts_warmup,
            num_chains=args.nuts_chains,
            seed=args.seed,
            progress=not args.quiet,
        )
    everything: dict[str, FitResult | Posterior] = {**results}
    if reference is not None:
        everything[REFERENCE] = reference
    frame = compare(
        everything,
        data.x_test,
        data.y_test,
        train=(data.x_train, data.y_train),
        num_samples=args.samples,
        seed=args.seed,
        y_scale=data.y_scale,
        reference=REFERENCE if reference is not None else None,
    )
    columns = [c for c in COLUMNS if c in frame.columns]
    rows = [{"guide": name, **{c: _value(frame.loc[name, c]) for c in columns}} for name in frame.index]
    table = format_table(rows)
    print(table)
    if args.out:
        path = _report.write(Path(args.out), args, data, results, table, reference=reference, frame=frame)
        print(f"report written to {path}", file=sys.stderr)
    return 0


def _value(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A Markdown table, numbers right-aligned to 4 significant digits, missing values as n/a."""
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrobnn", description="Bayesian neural networks on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_fit_options(p: argparse.ArgumentParser) -> None:
        data = p.add_argument_group("data")
        data.add_argument("--data", required=True, help=f"dataset: {DATA_FORMS}")
        data.add_argument("--target", help="csv: the target column")
        data.add_argument("--task", choices=datasets.TASKS, help="csv: override the inferred task")
        data.add_argument("--test-fraction", type=_fraction, help="csv: share of rows held out (0.1), split by --seed")
        data.add_argument("--split", type=int, help="uci: which train/test split, 0 … n_splits − 1")
        model = p.add_argument_group("model and fit")
        model.add_argument("--hidden", type=_positive, default=50, help="hidden units of the one-hidden-layer MLP (50)")
        length = model.add_mutually_exclusive_group()
        length.add_argument("--steps", type=_positive, help=f"SVI steps per guide ({DEFAULT_STEPS})")
        length.add_argument("--epochs", type=_positive, help="passes over the training data per guide")
        model.add_argument("--batch-size", type=_positive, help="minibatch size (default: the whole training set)")
        model.add_argument(
            "--particles",
            type=_positive,
            default=None,
            help="particles per step (default: the guide's, 8 for meanfield and map, 32 for the others)",
        )
        model.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (0.01)")
        model.add_argument("--seed", type=int, default=0, help="seeds the fit, the draws and a csv split (0)")
        ref = p.add_argument_group("reference posterior")
        ref.add_argument(
            "--reference",
            choices=["nuts"],
            help="also sample the posterior with NUTS (pb.mcmc) and measure every guide's distance to it",
        )
        ref.add_argument("--nuts-samples", type=_positive, default=500, help="NUTS draws kept per chain (500)")
        ref.add_argument("--nuts-warmup", type=_positive, default=500, help="NUTS warm-up iterations per chain (500)")
        ref.add_argument("--nuts-chains", type=_positive, default=2, help="NUTS chains, run one after another (2)")
        out = p.add_argument_group("output")
        out.add_argument("--samples", type=_positive, default=1000, help="posterior draws for metrics and plots (1000)")
        out.add_argument(
            "--export-samples", type=_positive, default=200, help="posterior draws in each ArviZ netCDF file (200)"
        )
        out.add_argument("--out", help="directory for report.md, the PNG plots and one <guide>.nc per guide")
        out.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = sub.add_parser("compare", help="fit several guides and compare them on held-out data")
    add_fit_options(compare)
    compare.add_argument("--guides", default=",".join(GUIDE_KINDS), help=f"comma-separated: {', '.join(GUIDE_KINDS)}")
    one = sub.add_parser("fit", help="fit one guide and report its metrics")
    add_fit_options(one)
    one.add_argument("--guide", default="meanfield", help=f"one of {', '.join(GUIDE_KINDS)}")
    sub.add_parser("datasets", help="list the built-in datasets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage and the error (or --help)
        return exit_.code if isinstance(exit_.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # quoted in the report
    if args.command == "datasets":
        for name in datasets.names():
            print(f"{name:10s} {datasets.load(name).task:15s} {datasets.describe(name)}")
        return 0
    try:
        kinds = parse_guides(args.guides if args.command == "compare" else args.guide)
        if args.command == "fit" and len(kinds) != 1:
            raise UsageError(f"fit takes one --guide, got {args.guide!r}; use compare for several")
        return run(args, kinds)
    except ValueError as err:
        print(f"pyrobnn: error: {err}", file=sys.stderr)
        return 2
    except FitError as err:
        print(f"pyrobnn: the fit diverged: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
