"""What the learning rate does to a default fit under ``num_steps="auto"``: the same fit at several
rates, side by side.

On the built-in regression datasets with the command line's model (one hidden layer of 50 tanh
units, N(0, 1) priors, learned noise, standardised data; ``gap1d`` is ``make demo``'s), per guide
kind, seed and rate: ``pb.fit(model, kind, data, num_steps="auto", seed=seed, lr=lr, init="pretrained")``
(one fit from the network's weights, the default's first start, as ``kl_warm_up.py`` runs it), its ELBO
estimated with ``--particles`` (4096) draws ± its Monte Carlo standard error, the steps the fit took
and its seconds. A fit that diverges is reported as such (the step at which its loss overflowed).

The library's default is the first rate, 0.01. A higher rate that ends higher is a lower bound on
what the guide's family reaches on that data, which the default's own checks cannot see (they
compare a fit with itself).

    OMP_NUM_THREADS=1 python benchmarks/fit_lr.py --datasets friedman --kinds lowrank   # minutes per fit
    python benchmarks/fit_lr.py --quick                                                  # smoke run

Writes ``fit-lr-DATASETS-KINDS-seeds-SEEDS.md`` into ``--out`` after every row.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kl_warm_up import cell
from kl_warm_up import run as fit_and_estimate

import pyrobnn as pb

ROOT = Path(__file__).resolve().parent.parent


def run(args: argparse.Namespace, data: Any, kind: str, seed: int, lr: float) -> str:
    """One table cell: 'ELBO ± se (steps, seconds)', or where the fit diverged."""
    try:
        return cell(fit_and_estimate(args, data, kind, seed, lr=lr))
    except pb.FitError as err:
        return f"diverged at step {err.step}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gap1d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", default=["lowrank"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.02, 0.04])
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, a 1-4-1 net, 64 particles")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.steps = "auto"
    if args.quick:
        args.steps, args.particles, args.hidden = 20, 64, 4
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", pb.FitWarning)  # unsettled fits are what is measured
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = "-".join(map(str, args.seeds))
    stem = f"fit-lr-{'-'.join(args.datasets)}-{'-'.join(args.kinds)}-seeds-{seeds}"
    path = out / f"{stem}{'-quick' if args.quick else ''}.md"
    command = " ".join(["python", "benchmarks/fit_lr.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# The learning rate of a fit under num_steps='auto'",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}), one hidden layer of {args.hidden} tanh units, "
        f"learned noise, num_steps={args.steps!r}; ELBO from {args.particles} particles ± se (the fit's steps, "
        "its seconds).",
        "",
        "| data | seed | guide | " + " | ".join(f"lr {lr:g}" for lr in args.lrs) + " |",
        "|---|---|---|" + "---|" * len(args.lrs),
    ]
    for name in args.datasets:
        data = pb.datasets.standardize(pb.datasets.load(name))
        for seed in args.seeds:
            for kind in args.kinds:
                cells = [run(args, data, kind, seed, lr) for lr in args.lrs]
                lines.append(f"| {name} | {seed} | {kind} | " + " | ".join(cells) + " |")
                print(lines[-1], file=sys.stderr)
                path.write_text("\n".join(lines) + "\n")  # after every row: a run cut short keeps its rows
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
