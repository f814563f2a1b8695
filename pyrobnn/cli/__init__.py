"""The ``pyrobnn`` command: fit and compare guides on a dataset, write a report.

::

    pyrobnn datasets
    pyrobnn compare --data builtin:gap1d --guides meanfield,lowrank,map --out report/
    pyrobnn compare --data csv:houses.csv --target price --epochs 40 --batch-size 128 --out report/
    pyrobnn fit --data uci:../shared/data/uci/yacht --split 0 --guide meanfield --out report/
    pyrobnn compare --data builtin:gap1d --guides meanfield,fullrank --reference chees --out report/
    pyrobnn compare --data builtin:gap1d --guides fullrank,ensemble:map:8,ensemble:meanfield:4 --out report/

A mistake in the arguments (an unknown dataset, column or guide, a missing
``--target`` or ``--split``) prints what is valid and exits with status 2. A
guide whose fit diverges is reported as failed (named, with the reason) while
the others go on: the table, report and netCDF files of every finished guide
are written, and the command then exits with status 1.

``--reference chees`` or ``--reference nuts`` also samples the posterior with
:func:`pyrobnn.mcmc` and adds it as the row ``reference`` (``reference.nc``), the
one each guide's distance is measured to (:mod:`pyrobnn.cli._reference`).

A guide written ``ensemble:KIND:K`` (``ensemble:map:8``, a deep ensemble) fits K
members of that kind from independent starts with :func:`pyrobnn.ensemble` and
compares their mixture as one row; ``ensemble:KIND`` has 8 members. ``best:KIND:K``
fits K the same way and keeps the one whose ELBO ended highest
(:meth:`pyrobnn.EnsembleResult.best`): restarts, for an ELBO with several optima.
Under the default ``--steps auto`` a ``lowrank`` or ``fullrank`` row is already the better
of two fits, from the net's initial weights and from a MAP fit's (:func:`pyrobnn.fit`'s
default), and the report says which start each kept.
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
from pyrobnn.cli._figures import REFERENCE
from pyrobnn.cli._reference import Reference, add_reference_options, reference_options, sample_reference
from pyrobnn.cli._usage import GUIDE_FORMS, UsageError, form_of, fraction, parse_guides, positive, several, steps
from pyrobnn.evaluate.compare import compare
from pyrobnn.guides import GUIDE_KINDS
from pyrobnn.infer.ensemble import ensemble
from pyrobnn.infer.fit import FitError, FitResult, fit
from pyrobnn.lift import lift
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Posterior

__all__ = ["main"]

DATA_FORMS = "builtin:NAME (see `pyrobnn datasets`), csv:PATH (with --target COLUMN) or uci:DIR (with --split K)"
#: SVI steps per guide when neither --steps nor --epochs is given: until the ELBO levels off.
DEFAULT_STEPS = "auto"
#: ... and per member of an ensemble, whose members then train as one batch.
DEFAULT_MEMBER_STEPS = 3000

#: Columns of pb.compare's table shown by the command, in this order; a column with a
#: ``<column>_se`` beside it is shown as "value ± se".
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
    "elpd_loo_per_point",
    "p_loo",
    "loo_bad_khat",
    "fit_seconds",
    "num_variational_params",
)

#: Marks an elpd_loo whose Pareto k are too high for PSIS-LOO to be trusted (loo_bad_khat > 0).
UNRELIABLE = "⚠"

#: csv data: the held-out share when --test-fraction is not given is enough for MIN_TEST_ROWS test
#: rows, within [0.1, 0.3], so a small file still gets a test set its metrics can be read from.
MIN_TEST_ROWS = _report.MIN_TEST_ROWS


def load_data(args: argparse.Namespace) -> datasets.Dataset:
    """The dataset named by ``--data``, with the options that belong to its form checked.

    What the data's readers refuse (a missing file, an unknown column) is a :class:`UsageError` too.
    """
    try:
        return _read_data(args)
    except UsageError:
        raise
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from err


def _read_data(args: argparse.Namespace) -> datasets.Dataset:
    kind, sep, rest = args.data.partition(":")
    if not sep or not rest or kind not in ("builtin", "csv", "uci"):
        raise UsageError(f"unsupported --data {args.data!r}; use {DATA_FORMS}")
    given = (("--target", args.target), ("--task", args.task), ("--features", args.features))
    csv_only = [flag for flag, value in given if value is not None]
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
    fraction = default_test_fraction(rest) if args.test_fraction is None else args.test_fraction
    features = None if args.features is None else [c.strip() for c in args.features.split(",") if c.strip()]
    if features is not None and not features:
        raise UsageError(
            f"--features names no column; the columns of {rest} are: {', '.join(datasets.csv_columns(rest))}"
        )
    ds = datasets.load_csv(rest, args.target, features=features, test_fraction=fraction, seed=args.seed, task=args.task)
    if args.task is None:
        other = "regression" if ds.task == "classification" else "classification"
        print(f"{ds.name}: target {args.target!r} read as {ds.task} (--task {other} to change)", file=sys.stderr)
    return ds


def default_test_fraction(path: str) -> float:
    """The share of a csv file's rows held out by default: MIN_TEST_ROWS rows, within [0.1, 0.3]."""
    try:
        with open(path) as file:
            rows = sum(1 for line in file if line.strip()) - 1  # less the header
    except OSError:  # load_csv says what is wrong with the path
        return 0.1
    return min(0.3, max(0.1, MIN_TEST_ROWS / max(rows, 1)))


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


def run(args: argparse.Namespace, kinds: list[str]) -> int:
    reference_options(args)  # misplaced --chees-*/--nuts-* options refused before any fit
    data = datasets.standardize(load_data(args))
    length = {"epochs": args.epochs} if args.epochs is not None else {"num_steps": args.steps or DEFAULT_STEPS}
    member_length = length if args.epochs is not None or args.steps else {"num_steps": DEFAULT_MEMBER_STEPS}
    results: dict[str, FitResult] = {}
    failed: dict[str, str] = {}
    for kind in kinds:
        model = build_model(data, args.hidden, args.seed)
        print(f"fitting {kind} on {data.dataset.name} ...", file=sys.stderr)
        settings = dict(batch_size=args.batch_size, num_particles=args.particles, lr=args.lr, seed=args.seed)
        try:
            if form_of(kind) is not None:
                form, member, count = several(kind)
                runs = ensemble(
                    model,
                    member,
                    (data.x_train, data.y_train),
                    num_members=count,
                    **(member_length if form == "ensemble" else length),  # best: restarts of a single fit
                    **settings,
                    progress=not args.quiet,
                )
                results[kind] = runs if form == "ensemble" else runs.best()
            else:
                train = (data.x_train, data.y_train)
                results[kind] = fit(model, kind, train, **length, **settings, progress=not args.quiet)
        except FitError as err:  # the others go on; this guide becomes a failed row
            failed[kind] = f"{err} Try a lower --lr than {args.lr}."
            print(f"pyrobnn: {kind} failed: {failed[kind]}", file=sys.stderr)
    if not results:
        print(f"pyrobnn: every guide failed ({', '.join(failed)}); no table or report to write", file=sys.stderr)
        return 1
    reference: Reference | None = None
    if args.reference is not None:
        reference = sample_reference(args, build_model(data, args.hidden, args.seed), data)
    everything: dict[str, FitResult | Posterior] = {**results}
    if reference is not None:
        everything[REFERENCE] = reference.posterior
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
    table = table_text(frame, failed)
    print(table)
    if args.out:
        path = _report.write(
            Path(args.out), args, data, results, table, reference=reference, frame=frame, failed=failed
        )
        print(f"report written to {path}", file=sys.stderr)
    if failed:
        print(f"pyrobnn: {len(failed)} of {len(kinds)} guides failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def table_text(frame: object, failed: Mapping[str, str] | None = None) -> str:
    """pb.compare's table as the command shows it: COLUMNS, "value ± se", failed guides as rows of n/a.

    An ``elpd_loo_per_point`` whose Pareto k are too high (``loo_bad_khat`` > 0) is marked
    UNRELIABLE; each failed guide gets a row with ``status`` failed and a footnote with the reason.
    """
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    failed = dict(failed or {})
    columns = [c for c in COLUMNS if c in frame.columns]
    rows: list[dict[str, object]] = []
    for name in frame.index:
        row: dict[str, object] = {"guide": name}
        for c in columns:
            value = _value(frame.loc[name, c])
            se = _value(frame.loc[name, f"{c}_se"]) if f"{c}_se" in frame.columns else None
            if isinstance(value, float) and isinstance(se, float):
                value = f"{value:.4g} ± {se:.2g}"
            if c == "elpd_loo_per_point" and value is not None and _value(frame.loc[name, "loo_bad_khat"]):
                value = f"{_fmt(value)} {UNRELIABLE}"
            row[c] = value
        rows.append(row)
    rows += [{"guide": name, **dict.fromkeys(columns)} for name in failed]
    if failed:
        for row in rows:
            row["status"] = "failed" if row["guide"] in failed else "ok"
    notes = []
    if any(UNRELIABLE in str(row.get("elpd_loo_per_point")) for row in rows):
        notes.append(
            f"{UNRELIABLE}: some Pareto k of PSIS-LOO are too high (loo_bad_khat > 0): elpd_loo is unreliable."
        )
    notes += [f"failed: {name}: {reason}" for name, reason in failed.items()]
    return "\n\n".join([format_table(rows), *notes])


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrobnn", description="Bayesian neural networks on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_fit_options(p: argparse.ArgumentParser) -> None:
        data = p.add_argument_group("data")
        data.add_argument("--data", required=True, help=f"dataset: {DATA_FORMS}")
        data.add_argument("--target", help="csv: the target column")
        data.add_argument("--task", choices=datasets.TASKS, help="csv: override the inferred task")
        data.add_argument(
            "--features",
            help="csv: the input columns, comma-separated (default: every column but the target); "
            "leave out columns that are not numbers",
        )
        data.add_argument(
            "--test-fraction",
            type=fraction,
            help=f"csv: share of rows held out, split by --seed (default: enough for {MIN_TEST_ROWS} test rows, "
            "at least 0.1 and at most 0.3)",
        )
        data.add_argument("--split", type=int, help="uci: which train/test split, 0 … n_splits − 1")
        model = p.add_argument_group("model and fit")
        model.add_argument("--hidden", type=positive, default=50, help="hidden units of the one-hidden-layer MLP (50)")
        length = model.add_mutually_exclusive_group()
        length.add_argument(
            "--steps",
            type=steps,
            help=f"SVI steps per guide, or auto: until the ELBO levels off ({DEFAULT_STEPS}; "
            f"{DEFAULT_MEMBER_STEPS} per ensemble member)",
        )
        length.add_argument("--epochs", type=positive, help="passes over the training data per guide")
        model.add_argument("--batch-size", type=positive, help="minibatch size (default: the whole training set)")
        model.add_argument(
            "--particles",
            type=positive,
            default=None,
            help="particles per step (default: the guide's, 8 for meanfield and map, 32 for the others)",
        )
        model.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (0.01)")
        model.add_argument("--seed", type=int, default=0, help="seeds the fit, the draws and a csv split (0)")
        add_reference_options(p.add_argument_group("reference posterior (pb.mcmc)"), positive)
        out = p.add_argument_group("output")
        out.add_argument("--samples", type=positive, default=1000, help="posterior draws for metrics and plots (1000)")
        out.add_argument(
            "--export-samples", type=positive, default=200, help="posterior draws in each ArviZ netCDF file (200)"
        )
        out.add_argument("--out", help="directory for report.md, the PNG plots and one <guide>.nc per guide")
        out.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = sub.add_parser("compare", help="fit several guides and compare them on held-out data")
    add_fit_options(compare)
    compare.add_argument("--guides", default=",".join(GUIDE_KINDS), help=f"comma-separated: {GUIDE_FORMS}")
    one = sub.add_parser("fit", help="fit one guide and report its metrics")
    add_fit_options(one)
    one.add_argument("--guide", default="meanfield", help=f"one of {GUIDE_FORMS}")
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
    except UsageError as err:
        print(f"pyrobnn: error: {err}", file=sys.stderr)
        return 2
    except FitError as err:  # anything outside the per-guide loop
        print(f"pyrobnn: the fit diverged: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
