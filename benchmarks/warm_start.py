"""Starting at a MAP fit: what it does to a single fit's ELBO and to an ensemble's held-out fit.

On the built-in datasets of ``make demo`` (``gap1d``; ``hetero1d``), each with the command
line's model (1-50-1 tanh, N(0, 1) priors, learned noise, standardised data) and its 3000 steps:

- single fits: the ELBO (4096 particles, ± its Monte Carlo standard error) of ``pb.fit(model,
  kind, data)`` from the default start and from ``init=map_fit.guide.median()``, a MAP fit of
  the same length and seed;
- ensembles: the held-out log-likelihood per test point of ``pb.ensemble(model, kind, data,
  num_members=K)`` with ``init="map"`` (the default for members with a spread) and
  ``init="reset"``, and its seconds.

    OMP_NUM_THREADS=1 python benchmarks/warm_start.py            # about 15 minutes on one core
    python benchmarks/warm_start.py --quick                      # smoke run

Writes ``warm-start.md`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

import pyrobnn as pb
from pyrobnn.cli import build_model

ROOT = Path(__file__).resolve().parent.parent


def single_rows(args: argparse.Namespace, name: str, seed: int) -> list[str]:
    data = pb.datasets.standardize(pb.datasets.load(name))
    train = (data.x_train, data.y_train)
    start = pb.fit(build_model(data, args.hidden, seed), "map", train, num_steps=args.steps, seed=seed, progress=False)
    rows = []
    for kind in args.kinds:
        for label, options in (("default", {}), ("MAP fit", {"init": start.guide.median()})):
            model = build_model(data, args.hidden, seed)
            result = pb.fit(model, kind, train, num_steps=args.steps, seed=seed, progress=False, **options)
            terms, se = pb.estimate_elbo(model, result.guide, *train, num_particles=args.particles)
            rows.append(f"| {name} | {seed} | {kind} | {label} | {terms.elbo:.1f} ± {se:.2f} |")
    return rows


def ensemble_rows(args: argparse.Namespace, name: str, seed: int) -> list[str]:
    data = pb.datasets.standardize(pb.datasets.load(name))
    train = (data.x_train, data.y_train)
    rows = []
    for kind, k in (("meanfield", args.members), ("fullrank", max(2, args.members // 2))):
        for init in ("map", "reset"):
            model = build_model(data, args.hidden, seed)
            result = pb.ensemble(
                model, kind, train, num_members=k, num_steps=args.steps, seed=seed, init=init, progress=False
            )
            pred = result.posterior().predict(data.x_test, num_samples=1000, seed=0)
            ll = float(pred.log_prob(data.y_test).mean())
            rows.append(f"| {name} | {seed} | {kind}:{k} | {init} | {ll:.3f} | {result.elapsed_s:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gap1d", "hetero1d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--kinds", nargs="+", default=["meanfield", "fullrank"], help="single fits' guide kinds")
    parser.add_argument("--steps", type=int, default=3000)  # the command line's fixed length when measured
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--members", type=int, default=8, help="mean-field members (full-rank: half as many)")
    parser.add_argument("--particles", type=int, default=4096, help="for the ELBO estimates")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, small estimates")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.particles, args.members, args.hidden = 20, 64, 2, 8
        args.datasets, args.seeds = args.datasets[:1], args.seeds[:1]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", pb.FitWarning)  # short or unsettled fits are part of what is measured
    singles, ensembles = [], []
    for name in args.datasets:
        for seed in args.seeds:
            singles += single_rows(args, name, seed)
            ensembles += ensemble_rows(args, name, seed)
            print(f"{name}, seed {seed} done", file=sys.stderr)
    text = "\n".join(
        [
            "# Starting at a MAP fit",
            "",
            f"Command: `{' '.join(['python', 'benchmarks/warm_start.py', *sys.argv[1:]])}` "
            f"({time.strftime('%Y-%m-%d')}), 1-{args.hidden}-1 tanh, learned noise, {args.steps} steps.",
            "",
            f"## Single fits: the ELBO ({args.particles} particles)",
            "",
            "| data | seed | guide | start | ELBO |",
            "|---|---|---|---|---|",
            *singles,
            "",
            "## Ensembles: held-out log-likelihood per test point",
            "",
            "| data | seed | members | init | test log-lik | seconds |",
            "|---|---|---|---|---|---|",
            *ensembles,
        ]
    )
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("warm-start-quick.md" if args.quick else "warm-start.md")).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
